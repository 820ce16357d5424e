import json
import tarfile
from collections import Counter

import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image

from openwit.pipeline.output.shards import write_sizes
from openwit.pipeline.stages.write import shard_count, shard_of, write_shard
from openwit.schemas.record import Record


def staged_records(tmp_path, n):
    records = []
    for i in range(n):
        path = tmp_path / f"img{i}.jpg"
        Image.new("RGB", (8, 8), (i * 20 % 256, 0, 0)).save(path)
        records.append(Record(uid=f"{i:020x}", url=f"http://127.0.0.1/{i}.jpg", caption=f"caption {i}",
                              source=f"in.csv:{i}", entry_ids=(i,), sha256=f"{i:064x}", width=8, height=8,
                              image_format="jpg", image_path=str(path)))
    return records


def test_shard_is_byte_identical_whatever_the_input_order(tmp_path):
    records = staged_records(tmp_path, 6)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    kept_a = write_shard(3, records, str(tmp_path / "a"))
    kept_b = write_shard(3, records[::-1], str(tmp_path / "b"))
    assert (tmp_path / "a" / "00003.tar").read_bytes() == (tmp_path / "b" / "00003.tar").read_bytes()
    assert (tmp_path / "a" / "00003.parquet").read_bytes() == (tmp_path / "b" / "00003.parquet").read_bytes()
    assert kept_a == kept_b and all(r.status == "kept" and r.shard == "00003" for r in kept_a)
    assert not list((tmp_path / "a").glob("*.partial*"))


def test_shard_reads_back_with_webdataset(tmp_path):
    records = staged_records(tmp_path, 4)
    write_shard(0, records, str(tmp_path))
    samples = list(wds.WebDataset(str(tmp_path / "00000.tar"), shardshuffle=False).decode("pil").to_tuple("__key__", "jpg", "txt", "json"))
    assert [s[0] for s in samples] == sorted(r.uid for r in records)
    key, image, text, meta = samples[1]
    assert image.size == (8, 8) and text == "caption 1" and meta["uid"] == key and meta["entry_ids"] == [1]
    with tarfile.open(tmp_path / "00000.tar") as tar:
        assert {m.mtime for m in tar.getmembers()} == {1577836800}
        assert all(m.name.count(".") == 1 for m in tar.getmembers())  # dot-free keys
    index = pq.read_table(tmp_path / "00000.parquet")
    assert index.column("key").to_pylist() == [s[0] for s in samples]


def test_shard_assignment_is_stable_and_spread():
    assert shard_count(0, 100) == 0 and shard_count(100, 100) == 1 and shard_count(101, 100) == 2
    uids = [f"{i:020x}" for i in range(10000)]
    assert [shard_of(u, 10) for u in uids[:50]] == [shard_of(u, 10) for u in uids[:50]]
    sizes = Counter(shard_of(u, 10) for u in uids)
    assert len(sizes) == 10 and min(sizes.values()) > 850


def test_sizes_json(tmp_path):
    write_sizes([("00001", 5), ("00000", 7)], str(tmp_path))
    assert json.loads((tmp_path / "sizes.json").read_text()) == {"00000.tar": 7, "00001.tar": 5}


def test_an_empty_shard_is_a_valid_empty_tar(tmp_path):
    assert write_shard(4, [], str(tmp_path)) == []
    assert list(wds.WebDataset(str(tmp_path / "00004.tar"), shardshuffle=False)) == []
    assert pq.read_table(tmp_path / "00004.parquet").num_rows == 0
