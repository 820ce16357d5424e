"""Write WebDataset shards and their Parquet indexes (sizes.json: output/shards.py).

Fixed-size shards would need a global rank, which does not scale. Instead a sample's shard
is a keyed hash of its uid modulo a shard count derived from the kept count, so sizes vary
a little (sizes.json records them). Inside a shard, samples are sorted by key and every tar
member has the same fixed mtime, owner and mode: the same samples give the same bytes.
The tar is written with Python's tarfile, header for header what webdataset.TarWriter writes
(tests/test_write.py compares the bytes): importing webdataset imports torch, seconds of a
curate run's startup for a writer that is twenty lines.
Each shard is written under a temporary name and renamed when complete; the writer returns
each file's sha256 (of the bytes it wrote) for the record the manifest's digests come from.
"""
from __future__ import annotations

import io
import json
import math
import tarfile
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from openwit.pipeline.common.keyed import bucket
from openwit.pipeline.output import layout
from openwit.pipeline.output.files import read_file
from openwit.pipeline.output.shards import write_recorded
from openwit.schemas.record import KEPT, SHARD_INDEX_SCHEMA, Record, sample_metadata

# 2020-01-01T00:00:00Z: any constant works; this one keeps tools from warning about 1970.
TAR_MTIME = 1577836800
# The rest of every member's header: read-only, owned by openwit (uid and gid 0, as
# webdataset's TarWriter leaves them). PAX is tarfile's default, the format TarWriter writes.
TAR_MODE = 0o444
TAR_OWNER = "openwit"


def shard_count(kept: int, samples_per_shard: int) -> int:
    return math.ceil(kept / samples_per_shard)


def shard_of(uid: str, n_shards: int) -> int:
    return bucket(uid, b"openwit-shard", n_shards)


def sample_key(record: Record) -> str:
    # uids are hex: dot-free and short, which webdataset and open_clip need of keys.
    return record.uid


def text_members(record: Record) -> dict[str, bytes]:
    """A sample's members besides its image (KEY.<image_format>): KEY.txt and KEY.json.
    audit verify rebuilds them from the ledger row with this and expects exactly these."""
    return {
        "txt": record.caption.encode("utf-8"),
        "json": json.dumps(sample_metadata(record), sort_keys=True, ensure_ascii=False).encode("utf-8"),
    }


def build_tar(records: list[Record], read_image: Callable[[str], bytes]) -> bytes:
    """The tar bytes of one shard; `records` must already carry their keys, sorted."""
    out = io.BytesIO()
    # "w|" (a stream, as TarWriter opens it) pads the end to a whole 10 KiB record, as it does.
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        for record in records:
            members = {record.image_format: read_image(record.image_path), **text_members(record)}
            for extension in sorted(members):  # TarWriter's order: by extension
                add_member(tar, f"{record.key}.{extension}", members[extension])
    return out.getvalue()


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = TAR_MTIME
    info.mode = TAR_MODE
    info.uname = info.gname = TAR_OWNER
    tar.addfile(info, io.BytesIO(data))


def build_index(records: list[Record]) -> bytes:
    table = pa.Table.from_pylist([sample_metadata(r) for r in records], schema=SHARD_INDEX_SCHEMA)
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def write_shard(shard: int, records: list[Record], shards_dir: str) -> list[Record]:
    """Write one shard (tar + parquet index) and return its records marked kept."""
    return write_shard_recorded(shard, records, shards_dir)[0]


def write_shard_recorded(shard: int, records: list[Record], shards_dir: str) -> tuple[list[Record], list]:
    """write_shard, and the (name, sha256) of both files written, from the bytes in memory
    (for shards.record_digests: the manifest does not read the shards again)."""
    name = layout.shard_name(shard)
    kept = sorted(
        (r.update(status=KEPT, shard=name, key=sample_key(r)) for r in records), key=lambda r: r.key
    )
    digests = [write_recorded(layout.shard_index(shards_dir, name), build_index(kept)),
               write_recorded(layout.shard_tar(shards_dir, name), build_tar(kept, read_file))]
    return kept, digests
