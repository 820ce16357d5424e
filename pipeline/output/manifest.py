"""OUT/manifest.json: its one writer and reader.

`openwit curate` writes it whole at the end of a run (curate/run.py builds the content).
Later changes to OUT (takedown, --retry-failed, --extend) refresh it with
`update_manifest`: the funnel and the shard sizes are read again from the files, and the
change is appended to a log list. The bytes are sorted-key JSON with indent 1, written
atomically.
"""
from __future__ import annotations

import json
from typing import Optional

from openwit.pipeline.output import files, layout, ledger, shards


def read_manifest(out_dir: str) -> Optional[dict]:
    """OUT's manifest, or None if it has none (yet)."""
    return files.read_json(layout.manifest_path(out_dir))


def write_manifest(out_dir: str, manifest: dict) -> None:
    files.write_atomically(layout.manifest_path(out_dir), json.dumps(manifest, indent=1, sort_keys=True).encode())


def update_manifest(out_dir: str, entry: dict, log: str = "takedowns", changes=None) -> None:
    """The manifest after a later change to OUT: funnel and shard sizes from the files, the
    given fields replaced, and `entry` appended to the `log` list."""
    manifest = {**read_manifest(out_dir), **ledger.outcomes(out_dir), **(changes or {})}
    manifest["shards"] = shards.read_sizes(layout.shards_dir(out_dir))
    manifest.setdefault(log, []).append(entry)
    write_manifest(out_dir, manifest)
