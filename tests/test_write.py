import io
import json
import tarfile
from collections import Counter

import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image

from openwit.pipeline.output.shards import write_sizes
from openwit.pipeline.stages.write import TAR_MTIME, build_tar, shard_count, shard_of, text_members, write_shard
from openwit.schemas.record import Record, sample_metadata


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
    kept = {r.uid: r for r in write_shard(0, records, str(tmp_path))}
    samples = list(wds.WebDataset(str(tmp_path / "00000.tar"), shardshuffle=False).decode("pil"))
    assert [s["__key__"] for s in samples] == sorted(r.uid for r in records)
    for sample in samples:
        record = kept[sample["__key__"]]
        assert set(sample) == {"__key__", "__url__", "jpg", "txt", "json"}
        assert sample["jpg"].size == (8, 8)
        assert sample["jpg"].getpixel((0, 0)) == Image.open(record.image_path).getpixel((0, 0))
        assert sample["txt"] == record.caption
        assert sample["json"] == sample_metadata(record) and sample["json"]["uid"] == sample["__key__"]
    index = pq.read_table(tmp_path / "00000.parquet")
    assert index.column("key").to_pylist() == [s["__key__"] for s in samples]


def test_shard_members_raw_bytes_and_headers(tmp_path):
    # What readers that skip decoding (open_clip's tarfile_to_samples) see: every member's bytes,
    # and the fixed header fields that make reruns byte-identical.
    records = staged_records(tmp_path, 3)
    kept = {r.uid: r for r in write_shard(0, records, str(tmp_path))}
    raw = list(wds.DataPipeline(wds.SimpleShardList([str(tmp_path / "00000.tar")]), wds.tarfile_to_samples()))
    assert [s["__key__"] for s in raw] == sorted(kept)
    for sample in raw:
        record = kept[sample["__key__"]]
        assert sample["jpg"] == open(record.image_path, "rb").read()
        assert {ext: sample[ext] for ext in ("txt", "json")} == text_members(record)
    with tarfile.open(tmp_path / "00000.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [f"{k}.{ext}" for k in sorted(kept) for ext in ("jpg", "json", "txt")]
    assert {(m.mtime, m.mode, m.uname, m.gname, m.uid, m.gid, m.type) for m in members} == {
        (TAR_MTIME, 0o444, "openwit", "openwit", 0, 0, tarfile.REGTYPE)}
    assert all(m.name.count(".") == 1 for m in members)  # dot-free keys, as open_clip splits them


def test_tar_bytes_equal_webdatasets_tarwriter(tmp_path):
    # The writer no longer imports webdataset (it imports torch); its tar must stay what
    # webdataset.TarWriter wrote, byte for byte, so earlier shards and digests still match.
    records = [r.update(key=r.uid) for r in staged_records(tmp_path, 5)]
    records[2] = records[2].update(caption="légende ✓ " * 40)  # non-ASCII, multi-block text
    expected = io.BytesIO()
    writer = wds.TarWriter(expected, encoder=False, mtime=TAR_MTIME, user="openwit", group="openwit")
    for r in records:
        writer.write({"__key__": r.key, "jpg": open(r.image_path, "rb").read(), **text_members(r)})
    writer.close()
    assert build_tar(records, lambda path: open(path, "rb").read()) == expected.getvalue()
    assert build_tar([], lambda path: b"") == empty_tarwriter_bytes()


def empty_tarwriter_bytes():
    out = io.BytesIO()
    wds.TarWriter(out, encoder=False, mtime=TAR_MTIME, user="openwit", group="openwit").close()
    return out.getvalue()


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
