"""File access for everything openwit writes and reads back: plain os calls for local paths,
Beam's FileSystems for remote ones (gs://, s3://, ... with Beam's extras installed).

Local paths keep the os calls because they are ~5x cheaper per file than FileSystems, and
staging writes one file per image.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import threading

import pyarrow as pa
import pyarrow.parquet as pq
from openwit.pipeline.output import layout


class _LazyFileSystems:
    """Beam's FileSystems, imported on first use: a process that only touches local paths
    (a fetch worker, pipeline/download/pool.py) does not pay Beam's ~4 s import."""

    def __getattr__(self, name):
        from apache_beam.io.filesystems import FileSystems

        return getattr(FileSystems, name)


FileSystems = _LazyFileSystems()


def is_remote(path: str) -> bool:
    return "://" in path


def exists(path: str) -> bool:
    return FileSystems.exists(path) if is_remote(path) else os.path.exists(path)


def write_atomically(path: str, data: bytes) -> None:
    """Write to a temporary name, then rename: readers never see a partial file."""
    # pid and thread in the temporary name: two workers may stage the same image at once.
    temporary = layout.partial_path(path, f"{os.getpid()}-{threading.get_ident()}")
    if not is_remote(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(temporary, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
        return
    with FileSystems.create(temporary) as f:
        f.write(data)
    FileSystems.rename([temporary], [path])  # replaces an existing file on gs://, s3:// and local


def read_file(path: str) -> bytes:
    if not is_remote(path):  # plain open: a fetch worker reading receipts never imports Beam
        with open(path, "rb") as f:
            return f.read()
    with FileSystems.open(path, compression_type="uncompressed") as f:
        return f.read()


def sha256(path: str) -> str:
    """A file's sha256, read in 1 MiB blocks: shards may be far larger than memory allows twice."""
    digest = hashlib.sha256()
    with (open(path, "rb") if not is_remote(path) else FileSystems.open(path, compression_type="uncompressed")) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str):
    """A JSON file (manifest, sizes.json, balance.json, ...), or None if it is missing."""
    if not exists(path):
        return None
    return json.loads(read_file(path))


def read_parquet(path: str, columns=None) -> pa.Table:
    if is_remote(path):
        return pq.read_table(pa.BufferReader(read_file(path)), columns=columns)
    return pq.read_table(path, columns=columns)


def matching(pattern: str) -> list[str]:
    """Sorted paths matching a glob pattern (`*` stays inside one path segment)."""
    if not is_remote(pattern):  # only the last segment is a pattern: escape the directories
        return sorted(glob.glob(os.path.join(glob.escape(os.path.dirname(pattern)), os.path.basename(pattern))))
    return sorted(meta.path for meta in FileSystems.match([pattern])[0].metadata_list)


def _below(directory: str) -> list[str]:
    """Every file under a remote directory (object stores list prefixes, at any depth)."""
    return matching(directory.rstrip("/") + "/**")


def names_in(directory: str) -> set[str]:
    """The names directly inside a directory (for a remote one: first path segments)."""
    if not is_remote(directory):
        return set(os.listdir(directory)) if os.path.isdir(directory) else set()
    prefix = directory.rstrip("/") + "/"
    return {path[len(prefix):].split("/", 1)[0] for path in _below(directory)}


def remove(path: str) -> None:
    """Remove a file or a whole directory; a missing path is fine."""
    if is_remote(path):
        doomed = _below(path) + ([path] if FileSystems.exists(path) else [])
        if doomed:
            FileSystems.delete(doomed)
    elif os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)
