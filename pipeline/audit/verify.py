"""`openwit audit verify DIR`: re-read every shard and check it against the ledger and the
manifest, and every file of the dataset against the manifest's digests. Each check is a
small function returning violations (plain strings); nothing is fixed, only reported, and
any violation makes the command exit non-zero.

What the checks prove, and what they cannot, is written down in docs/provenance.md."""
from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections import Counter, defaultdict
from typing import Iterator

import pyarrow.parquet as pq

from openwit.pipeline.common import progress
from openwit.pipeline.output import layout, ledger, manifest as manifests, shards
from openwit.pipeline.stages import match, write
from openwit.pipeline.stages.blocklist import Blocklist
from openwit.pipeline.stages.dedup import content_distance
from openwit.schemas.reasons import REASONS
from openwit.schemas.record import SHARD_INDEX_SCHEMA, sample_metadata

NO_DIGESTS = (f"{layout.MANIFEST} records no file digests (written before openwit recorded them): the bytes of "
              "the ledger, shards and stats were checked against each other, not against the manifest. "
              "Any takedown, --retry-failed or --extend records them.")


def read_shard(path: str) -> tuple[dict, list[str]]:
    """key -> {extension: bytes} of one tar, and the problems met reading it."""
    samples, problems, name = defaultdict(dict), [], os.path.basename(path)
    try:
        for key, extension, member, data in shards.tar_members(path):
            if data is None:  # a folder, link or device: nothing openwit writes
                problems.append(f"{name}: member {member.name} is not a regular file")
            elif extension in samples[key]:  # readers would see one of the two, unpredictably
                problems.append(f"{name}: member {member.name} appears more than once")
            else:
                samples[key][extension] = data.read()
    except (tarfile.TarError, OSError, EOFError) as err:
        problems.append(f"{name}: unreadable tar ({type(err).__name__}: {err})")
    return dict(samples), problems


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def compare_fields(where: str, found: dict, expected: dict) -> Iterator[str]:
    """Field by field: what a file says against what the writer makes of the ledger row."""
    for name in sorted(set(found) | set(expected)):
        if name not in expected:
            yield f"{where}: field {name} is not one openwit writes"
        elif name not in found:
            yield f"{where}: field {name} is missing"
        elif found[name] != expected[name]:
            yield f"{where}: {name} is {short(found[name])}, the ledger's row says {short(expected[name])}"


def check_metadata(where: str, data: bytes, expected: bytes, fields: dict) -> Iterator[str]:
    """KEY.json: every field, then the exact bytes (the writer's encoding of those fields)."""
    try:
        found = json.loads(data)
    except ValueError:
        found = None
    if not isinstance(found, dict):
        yield f"{where}: not a JSON object"
        return
    differences = list(compare_fields(where, found, fields))
    yield from differences
    if not differences and data != expected:
        yield f"{where}: the fields match, but the bytes are not the writer's encoding of them"


def check_sample(shard: str, key: str, files: dict, row) -> Iterator[str]:
    """One sample against its ledger row (None: no kept row for it): exactly the members the
    writer makes of that row, each with the bytes or fields the row says."""
    where = f"{shard}/{key}"
    if row is None:
        yield f"{where}: sample in the shard without a kept ledger row"
        return
    record = ledger.to_record(row)
    expected = {row["image_format"]: None, **write.text_members(record)}
    for extension in sorted(set(files) - set(expected)):
        yield (f"{where}.{extension}: unexpected member of {layout.tar_name(shard)} (a sample is "
               f"{', '.join(f'{key}.{e}' for e in expected)})")
    for extension in sorted(set(expected) - set(files)):
        yield f"{where}.{extension}: missing from {layout.tar_name(shard)}"
    image = files.get(row["image_format"])
    if image is not None and hashlib.sha256(image).hexdigest() != row["stored_sha256"]:
        yield f"{where}: image bytes differ from the ledger's stored_sha256 {row['stored_sha256']}"
    if "txt" in files and files["txt"] != expected["txt"]:
        yield f"{where}: caption differs from the ledger's"
    if "json" in files:
        yield from check_metadata(f"{where}.json", files["json"], expected["json"], sample_metadata(record))


def check_shards(out_dir: str, kept: dict, shown=None) -> Iterator[str]:
    """Every sample of every shard against the kept rows, sizes.json and the Parquet index.
    `kept`: (shard, key) -> ledger row of every currently kept candidate. `shown`: a
    progress.LoopProgress over the shards (None: no progress)."""
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
        yield from check_index(layout.shard_index(shards_dir, shard), set(samples), shard, kept)
        if shown is not None:
            shown.advance(samples=len(seen))
    for shard, key in sorted(set(kept) - seen):
        yield f"{shard}/{key}: kept in the ledger but missing from the shards"
    yield from check_sizes(shards_dir, sizes_found)


def check_index(index_path: str, keys: set, shard: str, kept: dict) -> Iterator[str]:
    """A shard's Parquet index: its schema, one row per sample of the tar, and every column
    of every row as the writer makes it from the sample's ledger row."""
    name = os.path.basename(index_path)
    if not os.path.exists(index_path):
        yield f"{name}: missing Parquet index"
        return
    table = pq.read_table(index_path)
    if not table.schema.equals(SHARD_INDEX_SCHEMA, check_metadata=False):
        yield f"{name}: schema {table.schema.names} is not the shard index schema"
    rows = table.to_pylist()
    indexed = [row.get("key") for row in rows]
    if sorted(indexed) != sorted(keys):
        yield f"{name}: index keys differ from the tar's samples"
    for key, n in sorted(Counter(indexed).items()):
        if n > 1:
            yield f"{name}: key {key} has {n} rows"
    for row in rows:
        expected = kept.get((shard, row.get("key")))
        if expected is not None:  # a key without a kept row is reported above
            yield from compare_fields(f"{name} [{row['key']}]", row, sample_metadata(ledger.to_record(expected)))


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
        complete = row["shard"] and row["key"] and row["sha256"] and row["stored_sha256"] and row["image_format"]
        if not complete or row["reason"]:
            yield f"ledger: kept uid {uid} lacks shard, key, image format or hashes, or has a drop reason"
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


def check_manifest(out_dir: str, manifest, state, show=None) -> Iterator[str]:
    if manifest is None:
        yield f"{layout.MANIFEST}: missing"
        return
    funnel = dict(ledger.funnel(state))
    if manifest.get("funnel") != funnel:
        yield f"{layout.MANIFEST}: funnel {manifest.get('funnel')} differs from the ledger's {funnel}"
    sizes = shards.read_sizes(layout.shards_dir(out_dir)) or {}
    if (manifest.get("shards") or {}) != sizes:
        yield f"{layout.MANIFEST}: shard sizes differ from {layout.SIZES}'s"
    vocab = manifest.get("vocab", {})
    if not vocab.get("path") or not os.path.exists(vocab["path"]):
        yield f"vocabulary: {vocab.get('path')} not found, its sha256 cannot be checked"
    elif match.vocab_sha256(vocab["path"]) != vocab.get("sha256"):
        yield f"vocabulary: {vocab['path']} no longer has the sha256 the run used ({vocab.get('sha256')})"
    yield from check_worldwide_list(vocab.get("worldwide"))
    if "digests" in manifest:
        yield from check_digests(out_dir, manifest["digests"], show)


def check_worldwide_list(worldwide) -> Iterator[str]:
    """A --worldwide run's lists (vocab.worldwide in the manifest) still have their sha256."""
    if not worldwide:
        return
    if not worldwide.get("path") or not os.path.exists(worldwide["path"]):
        yield f"worldwide lists: {worldwide.get('path')} not found, their sha256 cannot be checked"
    elif match.vocab_sha256(worldwide["path"]) != worldwide.get("sha256"):
        yield (f"worldwide lists: {worldwide['path']} no longer have the sha256 the run used "
               f"({worldwide.get('sha256')})")


def check_digests(out_dir: str, recorded: dict, show=None) -> Iterator[str]:
    """Every file under shards/, ledger/ and stats/ against the manifest's digests: a changed,
    missing or added file is a violation; a changed ledger part names its changed columns.
    Every file is read: `show` (progress.Options) shows that pass, file by file."""
    if recorded.get("algorithm") != manifests.DIGEST_ALGORITHM:
        yield f"{layout.MANIFEST}: unknown digest algorithm {recorded.get('algorithm')!r}"
        return
    with progress.LoopProgress("digests", len(manifests.digested_files(out_dir)),
                               show or progress.Options(quiet=True)) as shown:
        now = manifests.file_digests(out_dir, each=shown.advance)
    expected, found = recorded.get("files", {}), now["files"]
    for name in sorted(set(expected) | set(found)):
        if name not in found:
            yield f"{name}: in the manifest's digests, missing from the output"
        elif name not in expected:
            yield f"{name}: not in the manifest's digests (added after the manifest was written)"
        elif found[name] != expected[name]:
            yield (f"{name}: sha256 {found[name]} differs from the manifest's {expected[name]}"
                   + changed_columns(recorded.get("ledger_columns", {}).get(name), now["ledger_columns"].get(name)))


def changed_columns(expected, found) -> str:
    """Which columns of a changed ledger part differ: the field that was edited."""
    if expected is None or found is None:
        return ""
    names = sorted(c for c in set(expected) | set(found) if expected.get(c) != found.get(c))
    return f" (changed columns: {', '.join(names)})" if names else " (no column's data changed: its metadata did)"


def check_blocklist(out_dir: str, manifest, kept: dict) -> Iterator[str]:
    """No kept sample is on OUT's takedown blocklist: not by uid, URL or domain, and not by
    its picture (sha256, or a near-duplicate by the dedup rule: stages/blocklist.py)."""
    blocklist = Blocklist.load(layout.blocklist_path(out_dir))
    if not blocklist:
        return
    near = ((manifest or {}).get("config") or {}).get("near_dup_distance", 0)
    k = content_distance(near if isinstance(near, int) else 0)
    for (shard, key), row in sorted(kept.items()):
        why = (blocklist.named(row["uid"], row["url"], row["page_url"])
               or blocklist.row_content(row, k))
        if why:
            yield f"{shard}/{key}: published, but on the takedown blocklist ({why})"


def verify_output(out_dir: str, show=None) -> tuple[list[str], list[str]]:
    """(violations, notes) of OUT. Notes say what could not be checked and are no failure.
    `show`: progress.Options for a display over the two long parts, the files' digests and
    the shards' samples (None: none)."""
    table = ledger.read_ledger(out_dir)
    state = ledger.current_state(table)
    kept = {(r["shard"], r["key"]): r for r in state.to_pylist() if r["status"] == "kept"}
    manifest = manifests.read_manifest(out_dir)
    notes = [NO_DIGESTS] if manifest is not None and "digests" not in manifest else []
    violations = [*check_ledger(table, state), *check_manifest(out_dir, manifest, state, show)]
    with progress.LoopProgress("verify", len(shards.tar_paths(layout.shards_dir(out_dir))),
                               show or progress.Options(quiet=True), unit="shards") as shown:
        violations += check_shards(out_dir, kept, shown)
    violations += check_blocklist(out_dir, manifest, kept)
    return violations, notes


def verify(out_dir: str) -> list[str]:
    """Every violation found in OUT; an empty list means the output is what the ledger says
    and, where the manifest has digests, what the manifest pins."""
    return verify_output(out_dir)[0]
