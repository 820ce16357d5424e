"""The shards of an output once written: sizes.json, reading a shard tar, and rewriting a
shard without some of its samples.

The write stage (stages/write.py) builds a new shard's bytes; everything that reads shards
back (verify, the report, the trainer's count) or changes them afterwards (takedown, the
merge of --retry-failed and --extend) goes through here.
"""
from __future__ import annotations

import io
import json
import tarfile
from typing import IO, Iterator, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from openwit.pipeline.output import files, layout


def write_sizes(shard_sizes: list[tuple[str, int]], shards_dir: str) -> None:
    """sizes.json from (shard name, samples) pairs: keyed by tar name, in shard order."""
    sizes = {layout.tar_name(name): count for name, count in sorted(shard_sizes)}
    files.write_atomically(layout.sizes_path(shards_dir), json.dumps(sizes, indent=1).encode())


def read_sizes(shards_dir: str) -> Optional[dict]:
    """sizes.json (tar name -> samples), or None if it is missing."""
    return files.read_json(layout.sizes_path(shards_dir))


def update_sizes(shards_dir: str, sizes: dict) -> None:
    """sizes.json with the given shards' counts (shard name -> samples) replaced."""
    recorded = {layout.shard_of_tar(name): n for name, n in read_sizes(shards_dir).items()}
    write_sizes(list({**recorded, **sizes}.items()), shards_dir)


def tar_paths(shards_dir: str) -> list[str]:
    """Every shard tar of the folder, in shard order."""
    return files.matching(layout.tar_pattern(shards_dir))


def tar_members(path: str) -> Iterator[tuple[str, str, tarfile.TarInfo, Optional[IO[bytes]]]]:
    """(key, extension, member, data) of every member of a shard tar, in tar order. `data`
    is the member's content (None for a non-file), readable until the next member."""
    with tarfile.open(path) as tar:
        for member in tar:
            key, _, extension = member.name.partition(".")
            yield key, extension, member, tar.extractfile(member) if member.isfile() else None


def rewrite_shard(shards_dir: str, shard: str, remove: set) -> int:
    """Rewrite one tar and its index without the samples of `remove`; -> samples left.
    Every other member keeps its header and bytes (local files only)."""
    tar_path = layout.shard_tar(shards_dir, shard)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as dest:
        for key, _, member, data in tar_members(tar_path):
            if key not in remove:
                dest.addfile(member, data)
    files.write_atomically(tar_path, out.getvalue())
    index_path = layout.shard_index(shards_dir, shard)
    index = pq.read_table(index_path)
    index = index.filter(pc.invert(pc.is_in(index.column("key"), value_set=pa.array(sorted(remove), pa.string()))))
    buffer = io.BytesIO()
    pq.write_table(index, buffer)
    files.write_atomically(index_path, buffer.getvalue())
    return index.num_rows
