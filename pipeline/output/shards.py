"""The shards of an output once written: sizes.json, the record of each shard file's sha256,
reading a shard tar, and rewriting a shard without some of its samples.

Whoever writes a shard file records its sha256 from the bytes it wrote (`write_recorded`,
`record_digests`) in OUT/.openwit/shard-digests.json; the manifest's digests take them from
there (output/manifest.py), so no manifest write reads the shards again.

The write stage (stages/write.py) builds a new shard's bytes; everything that reads shards
back (verify, the report, the trainer's count) or changes them afterwards (takedown, the
merge of --retry-failed and --extend) goes through here.
"""
from __future__ import annotations

import hashlib
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


def write_recorded(path: str, data: bytes) -> tuple[str, str]:
    """Write a shard file atomically; -> (its name in the manifest's digests, sha256 of the
    bytes written), for `record_digests`."""
    files.write_atomically(path, data)
    return layout.digest_name(layout.SHARDS, path), hashlib.sha256(data).hexdigest()


def recorded_digests(shards_dir: str) -> dict:
    """name ("shards/00000.tar") -> sha256 of every shard file its writer recorded ({} if none)."""
    return files.read_json(layout.shard_digests_path(shards_dir)) or {}


def record_digests(shards_dir: str, digests, replace: bool = False) -> None:
    """Record (name, sha256) pairs of shard files just written: added to the record, or
    (replace) as the whole record, which a full write of the shards does."""
    recorded = {} if replace else recorded_digests(shards_dir)
    recorded.update(dict(digests))
    files.write_atomically(layout.shard_digests_path(shards_dir),
                           json.dumps(recorded, indent=0, sort_keys=True).encode())


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
    Every other member keeps its header and bytes (local files only). Both files' sha256s
    are recorded after they are written: a crash in between leaves the ledger without the
    change's rows, so the command runs again and rewrites (and records) the shard again."""
    tar_path = layout.shard_tar(shards_dir, shard)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as dest:
        for key, _, member, data in tar_members(tar_path):
            if key not in remove:
                dest.addfile(member, data)
    written = [write_recorded(tar_path, out.getvalue())]
    index_path = layout.shard_index(shards_dir, shard)
    index = pq.read_table(index_path)
    index = index.filter(pc.invert(pc.is_in(index.column("key"), value_set=pa.array(sorted(remove), pa.string()))))
    buffer = io.BytesIO()
    pq.write_table(index, buffer)
    written.append(write_recorded(index_path, buffer.getvalue()))
    record_digests(shards_dir, written)
    return index.num_rows
