"""OUT/manifest.json: its one writer and reader.

`openwit curate` writes it whole at the end of a run (curate/run.py builds the content).
Later changes to OUT (takedown, --retry-failed, --extend) refresh it with
`update_manifest`: the funnel and the shard sizes are read again from the files, and the
change is appended to a log list. The bytes are sorted-key JSON with indent 1, written
atomically.

Every write records `digests`: the sha256 of every file under shards/, ledger/ and stats/
(layout.DIGESTED), and per ledger part a digest of each column. `write_manifest` sets them,
so every writer of the manifest gets them, and each writer writes the manifest last: the
digests describe the final bytes. The shard files (terabytes at scale) are not read again:
their sha256s come from the record their writers keep (shards.recorded_digests: the write
stage, rewrite_shard, the merge of --retry-failed and --extend), each the sha256 of the bytes
written. A shard file the record lacks, and every other file (ledger parts, sizes.json, the
stats: small), is hashed here. `openwit audit verify` recomputes them all from the bytes with
`file_digests`; the manifest's own sha256 is what pins a release.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

from openwit.pipeline.output import files, layout, ledger, shards

DIGEST_ALGORITHM = "sha256"
# A column digest only names which column of an edited ledger part changed; the part's full
# sha256 is what proves the change, so 64 bits per column keep the manifest small.
COLUMN_DIGEST_HEX = 16


def read_manifest(out_dir: str) -> Optional[dict]:
    """OUT's manifest, or None if it has none (yet)."""
    return files.read_json(layout.manifest_path(out_dir))


def manifest_sha256(out_dir: str) -> str:
    """The sha256 of manifest.json's bytes: publish it to pin a release."""
    return files.sha256(layout.manifest_path(out_dir))


def write_manifest(out_dir: str, manifest: dict) -> None:
    """Write `manifest` with the digests of OUT's files (set on `manifest` too, so a caller
    that returns it returns what the file says): the shard files' as their writers recorded
    them, the others' as they are now."""
    manifest["digests"] = file_digests(out_dir, shards.recorded_digests(layout.shards_dir(out_dir)))
    files.write_atomically(layout.manifest_path(out_dir), json.dumps(manifest, indent=1, sort_keys=True).encode())


def update_manifest(out_dir: str, entry: dict, log: str = "takedowns", changes=None) -> None:
    """The manifest after a later change to OUT: funnel and shard sizes from the files, the
    given fields replaced, and `entry` appended to the `log` list."""
    manifest = {**read_manifest(out_dir), **ledger.outcomes(out_dir), **(changes or {})}
    manifest["shards"] = shards.read_sizes(layout.shards_dir(out_dir))
    manifest.setdefault(log, []).append(entry)
    write_manifest(out_dir, manifest)


def digested_files(out_dir: str) -> dict[str, str]:
    """name -> path of every file the digests cover. Names are FOLDER/FILE with "/" on every
    system, so a manifest checks the same on any machine and in any bucket."""
    found = {}
    for folder in layout.DIGESTED:
        for path in files.matching(os.path.join(out_dir, folder, "*")):
            if files.is_remote(path) or os.path.isfile(path):  # object stores hold no folders
                found[layout.digest_name(folder, path)] = path
    return found


def file_digests(out_dir: str, recorded: Optional[dict] = None, each=None) -> dict:
    """The manifest's `digests`: sha256 of every digested file, and column digests of every
    ledger part (so an edited part names the column that changed). `recorded`: name -> sha256
    of shard files as written, taken instead of reading them; without it (verify) every file
    is read. Only files present now are listed, whatever the record holds."""
    parts = set(files.matching(layout.ledger_pattern(out_dir)))
    recorded = recorded or {}
    digests = {"algorithm": DIGEST_ALGORITHM, "files": {}, "ledger_columns": {}}
    for name, path in sorted(digested_files(out_dir).items()):
        if path in parts:  # ledger parts are small next to shards: read once for both digests
            data = files.read_file(path)
            digests["files"][name] = hashlib.sha256(data).hexdigest()
            digests["ledger_columns"][name] = column_digests(data)
        elif name in recorded and name.startswith(layout.SHARDS + "/"):
            digests["files"][name] = recorded[name]
        else:
            digests["files"][name] = files.sha256(path)
        if each is not None:  # verify's progress display (issue 25): one call a file
            each()
    return digests


def column_digests(parquet: bytes) -> dict[str, str]:
    """Per top-level column of a Parquet file, a digest of its column chunks as stored. The
    footer gives each chunk's byte range, so nothing is decoded; changing a value rewrites
    only its own column's chunks (pages and their statistics)."""
    meta = pq.ParquetFile(pa.BufferReader(parquet)).metadata
    digests = {}
    for group in range(meta.num_row_groups):
        for column in range(meta.num_columns):
            chunk = meta.row_group(group).column(column)
            start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
            name = chunk.path_in_schema.split(".")[0]  # entry_ids.list.element -> entry_ids
            digests.setdefault(name, hashlib.sha256()).update(parquet[start:start + chunk.total_compressed_size])
    return {name: digest.hexdigest()[:COLUMN_DIGEST_HEX] for name, digest in digests.items()}
