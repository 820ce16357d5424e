"""`openwit audit verify DIR`: re-read every shard and check it against the ledger and the
manifest. Each check is a small function returning violations (plain strings); nothing is
fixed, only reported, and any violation makes the command exit non-zero."""
from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections import Counter, defaultdict
from typing import Iterator

import pyarrow.parquet as pq

from openwit.pipeline.output import layout, ledger, shards
from openwit.pipeline.output.manifest import read_manifest
from openwit.pipeline.stages import match
from openwit.pipeline.stages.image import OUTPUT_FORMATS
from openwit.schemas.reasons import REASONS



def read_shard(path: str) -> tuple[dict, list[str]]:
    """key -> {extension: bytes} of one tar, and the problems met reading it."""
    samples, problems = defaultdict(dict), []
    try:
        for key, extension, _, data in shards.tar_members(path):
            if data is not None:  # a file
                samples[key][extension] = data.read()
    except (tarfile.TarError, OSError, EOFError) as err:
        problems.append(f"{os.path.basename(path)}: unreadable tar ({type(err).__name__}: {err})")
    return dict(samples), problems


def check_sample(shard: str, key: str, files: dict, row) -> Iterator[str]:
    """One sample against its ledger row (None: no kept row for it)."""
    where = f"{shard}/{key}"
    if row is None:
        yield f"{where}: sample in the shard without a kept ledger row"
        return
    images = [ext for ext in OUTPUT_FORMATS if ext in files]
    if len(images) != 1:
        yield f"{where}: expected one image member, found {images or 'none'}"
    elif hashlib.sha256(files[images[0]]).hexdigest() != row["stored_sha256"]:
        yield f"{where}: image bytes differ from the ledger's stored_sha256 {row['stored_sha256']}"
    if files.get("txt", b"").decode("utf-8", "replace") != row["caption"]:
        yield f"{where}: caption differs from the ledger's"
    try:
        meta = json.loads(files.get("json", b"{}"))
    except ValueError:
        meta = {}
    if meta.get("uid") != row["uid"] or meta.get("sha256") != row["sha256"]:
        yield f"{where}: json metadata does not name the ledger's uid and sha256"


def check_shards(out_dir: str, kept: dict) -> Iterator[str]:
    """Every sample of every shard against the kept rows, sizes.json and the Parquet index.
    `kept`: (shard, key) -> ledger row of every currently kept candidate."""
    shards_dir = layout.shards_dir(out_dir)
    seen, sizes_found = set(), {}
    for path in shards.tar_paths(shards_dir):
        shard = layout.shard_of_tar(path)
        samples, problems = read_shard(path)
        yield from problems
        sizes_found[os.path.basename(path)] = len(samples)
        for key, files in sorted(samples.items()):
            seen.add((shard, key))
            yield from check_sample(shard, key, files, kept.get((shard, key)))
        yield from check_index(layout.shard_index(shards_dir, shard), set(samples))
    for shard, key in sorted(set(kept) - seen):
        yield f"{shard}/{key}: kept in the ledger but missing from the shards"
    yield from check_sizes(shards_dir, sizes_found)


def check_index(index_path: str, keys: set) -> Iterator[str]:
    if not os.path.exists(index_path):
        yield f"{os.path.basename(index_path)}: missing Parquet index"
        return
    indexed = pq.read_table(index_path, columns=["key"]).column("key").to_pylist()
    if sorted(indexed) != sorted(keys):
        yield f"{os.path.basename(index_path)}: index keys differ from the tar's samples"


def check_sizes(shards_dir: str, sizes_found: dict) -> Iterator[str]:
    recorded = shards.read_sizes(shards_dir)
    if recorded is None:
        yield f"{layout.SIZES}: missing"
        return
    for name in sorted(set(recorded) | set(sizes_found)):
        if recorded.get(name) != sizes_found.get(name):
            yield f"{layout.SIZES}: {name} says {recorded.get(name)}, the shard holds {sizes_found.get(name)}"


def check_ledger(table, state) -> Iterator[str]:
    """One row per uid per revision; every current row terminal and consistent."""
    keys = Counter(zip(table.column("uid").to_pylist(), table.column("revision").to_pylist()))
    for (uid, revision), n in sorted(keys.items()):
        if n > 1:
            yield f"ledger: uid {uid} has {n} rows at revision {revision}"
    uids = set(state.column("uid").to_pylist())
    for row in state.to_pylist():
        yield from check_row(row, uids)


def check_row(row: dict, uids: set) -> Iterator[str]:
    uid = row["uid"]
    if row["status"] == "kept":
        if not (row["shard"] and row["key"] and row["sha256"] and row["stored_sha256"]) or row["reason"]:
            yield f"ledger: kept uid {uid} lacks shard, key or hashes, or has a drop reason"
    elif row["status"] == "dropped":
        why = REASONS.get(row["reason"])
        if why is None:
            yield f"ledger: uid {uid} dropped with unknown reason {row['reason']!r}"
        elif why.stage not in ("*", row["stage"]):
            yield f"ledger: uid {uid} reason {row['reason']} belongs to stage {why.stage}, not {row['stage']}"
        if row["duplicate_of"] and row["duplicate_of"] not in uids:
            yield f"ledger: uid {uid} is a duplicate of unknown uid {row['duplicate_of']}"
    else:
        yield f"ledger: uid {uid} has non-terminal status {row['status']!r}"


def check_manifest(out_dir: str, state) -> Iterator[str]:
    manifest = read_manifest(out_dir)
    if manifest is None:
        yield f"{layout.MANIFEST}: missing"
        return
    funnel = dict(ledger.funnel(state))
    if manifest.get("funnel") != funnel:
        yield f"{layout.MANIFEST}: funnel {manifest.get('funnel')} differs from the ledger's {funnel}"
    vocab = manifest.get("vocab", {})
    if not vocab.get("path") or not os.path.exists(vocab["path"]):
        yield f"vocabulary: {vocab.get('path')} not found, its sha256 cannot be checked"
    elif match.vocab_sha256(vocab["path"]) != vocab.get("sha256"):
        yield f"vocabulary: {vocab['path']} no longer has the sha256 the run used ({vocab.get('sha256')})"


def verify(out_dir: str) -> list[str]:
    """Every violation found in OUT; an empty list means the output is what the ledger says."""
    table = ledger.read_ledger(out_dir)
    state = ledger.current_state(table)
    kept = {(r["shard"], r["key"]): r for r in state.to_pylist() if r["status"] == "kept"}
    return [*check_ledger(table, state), *check_manifest(out_dir, state), *check_shards(out_dir, kept)]
