"""`openwit curate --retry-failed OUT` and `openwit curate --extend OUT --input NEW`.

Both rebuild, then merge:
1. The original command (from OUT/manifest.json) runs again into OUT/.openwit/rebuild, with
   extra inputs for --extend. Three things make it cheap and stable:
   - OUT's staging is reused. Every download with a lasting outcome (a success, or a
     permanent failure such as 404 or not_image) has a receipt and is not fetched again.
     Only transient failures (TRANSIENT_REASONS) and never-seen URLs are downloaded.
   - The shard count recorded at the first run is kept, so the layout stays stable.
   - Balancing, dedup and sharding are decided again over everything, with the same seed.
     The result is what one run would have given if those URLs had answered the first time
     (or if NEW had been there from the start).
2. The merge appends a ledger row, at a new revision, for every candidate whose outcome
   changed or that is new. It replaces only the shard files whose bytes changed, and updates
   the stats and the manifest (with a log entry).
   - Taken-down candidates stay taken down, and their samples stay out of the shards. The
     rebuild applies OUT's takedown blocklist (stages/blocklist.py): a new candidate with a
     taken-down URL, domain or picture is dropped as `taken_down`.
   - The merge is idempotent: after a crash, run the same command again.

The inputs are read again (CPU stages only; no download repeats). Paths in the manifest are as
they were given: run from the same directory, or give absolute paths.
"""
from __future__ import annotations

import dataclasses
import os

from openwit.pipeline.common import progress
from openwit.pipeline.common.clock import utc_now
from openwit.pipeline.output import files, layout, ledger, shards
from openwit.pipeline.output.manifest import read_manifest, update_manifest
from openwit.pipeline.curate.run import curate, describe_inputs
from openwit.pipeline.config import CurateConfig, with_default_runner
from openwit.schemas.reasons import REASONS

# The drop reasons a later attempt can change (REASONS marks them): --retry-failed re-asks
# exactly these; the others are lasting and never retried.
TRANSIENT_REASONS = sorted(name for name, r in REASONS.items() if r.transient)
_NOT_COMPARED = ("revision", "recorded_at")
# Fields a newer openwit records: an old row without one has not changed because of it.
_ADDED_LATER = ("colour_sig",)


class CannotUpdate(ValueError):
    pass


def original_config(out_dir: str) -> tuple[CurateConfig, list[str], dict]:
    if files.is_remote(out_dir):  # the merge rewrites tars in place with local file calls
        raise CannotUpdate("--retry-failed and --extend need a local OUT (copy it, or mount the bucket)")
    manifest = read_manifest(out_dir)
    if manifest is None:
        raise CannotUpdate(f"{out_dir} has no manifest.json: finish (rerun) the original command first")
    # The config the first run recorded, not its argv parsed again: the recorded vocabulary
    # path and blocklist terms stay what they were, whatever this installation's defaults.
    cfg = CurateConfig.from_dict(manifest["config"])
    cfg.check_files()
    return cfg, list(manifest["beam_args"]), manifest


def _args(argv: list[str]) -> list[str]:
    """The curate flags of a recorded argv, without a leading 'curate'."""
    return argv[1:] if argv and argv[0] == "curate" else list(argv)


def check_inputs_unchanged(cfg: CurateConfig, manifest: dict) -> None:
    """The old inputs must be what the first run read: otherwise its rows would not be rebuilt."""
    now = describe_inputs(cfg)
    if now != manifest["inputs"]:
        raise CannotUpdate("the original inputs changed since OUT was built (files added, removed or edited); "
                           "curate them into a new output instead")


def rebuild(out_dir: str, action: str, new_inputs=(), beam_args=None, show=None) -> dict:
    """Rebuild OUT with its own command (plus new inputs), then merge; -> the log entry."""
    cfg, original_beam_args, manifest = original_config(out_dir)
    check_inputs_unchanged(cfg, manifest)
    new_inputs = [p for p in new_inputs if p not in cfg.inputs]  # a rerun after a crash adds nothing twice
    temp = layout.rebuild_dir(out_dir)
    files.remove(temp)
    cfg = dataclasses.replace(cfg, inputs=cfg.inputs + tuple(new_inputs), output=temp, overwrite=True,
                              shard_count=manifest.get("shard_count") or len(manifest.get("shards") or {}),
                              staging_dir=layout.staging_dir(out_dir), blocklist=layout.blocklist_path(out_dir))
    argv = ["curate", *_argv_with(manifest["argv"], new_inputs)]
    rebuilt = curate(cfg, with_default_runner(original_beam_args + list(beam_args or [])), argv, show=show)
    entry = merge(out_dir, temp, action, show)
    entry["inputs_added"] = list(new_inputs)
    update_manifest(out_dir, entry, log="updates", changes=manifest_changes(manifest, rebuilt, argv))
    files.remove(temp)
    return entry


def _argv_with(argv: list[str], new_inputs) -> list[str]:
    args = _args(argv)
    for path in new_inputs:
        args += ["--input", path]
    return args


def merge(out_dir: str, temp: str, action: str, show=None) -> dict:
    """Merge the rebuild in `temp` into OUT. `show`: progress.Options for a display over the
    files compared and copied, the long part (None: no display)."""
    old_table = ledger.read_ledger(out_dir)
    old = {row["uid"]: row for row in ledger.current_state(old_table).to_pylist()}
    new = ledger.current_state(ledger.read_ledger(temp)).to_pylist()
    missing = set(old) - {row["uid"] for row in new}
    if missing:  # cannot happen with unchanged inputs; never leave rows that point at nothing
        raise CannotUpdate(f"{len(missing)} candidates of OUT are not in the rebuild (e.g. {sorted(missing)[0]})")
    taken_down = {uid for uid, row in old.items() if row["reason"] == "takedown"}
    _remove_samples(temp, [row for row in new if row["uid"] in taken_down and row["status"] == "kept"])
    shard_files, stats_files = (files.matching(os.path.join(folder, "*"))
                                for folder in (layout.shards_dir(temp), layout.stats_dir(temp)))
    with progress.LoopProgress("merge", len(shard_files) + len(stats_files), show or progress.Options(quiet=True)) \
            as shown:
        rewritten = _replace_changed_files(shard_files, layout.shards_dir(out_dir), shown)
        # every shard file of the rebuild is now OUT's too, byte for byte: its writers' record holds
        shards.record_digests(layout.shards_dir(out_dir), shards.recorded_digests(layout.shards_dir(temp)))
        _replace_changed_files(stats_files, layout.stats_dir(out_dir), shown)
    changed = [row for row in new if row["uid"] not in taken_down and _differs(old.get(row["uid"]), row)]
    revision = ledger.next_revision(old_table)
    at = utc_now()
    if changed:
        ledger.append_rows(out_dir, [ledger.to_record(row) for row in changed], revision, at)
    return {"action": action, "at": at, "revision": revision if changed else None, "rows_appended": len(changed),
            "new_candidates": sum(1 for row in new if row["uid"] not in old), "shards_rewritten": rewritten}


def _differs(old_row, new_row) -> bool:
    if old_row is None:
        return True
    return any(old_row.get(k) != v for k, v in new_row.items()
               if k not in _NOT_COMPARED and not (k in _ADDED_LATER and old_row.get(k) is None))


def _remove_samples(temp: str, rows: list) -> None:
    """Keep takedowns in force: their samples leave the rebuilt shards too."""
    by_shard = {}
    for row in rows:
        by_shard.setdefault(row["shard"], set()).add(row["key"])
    shards_dir = layout.shards_dir(temp)
    sizes = {shard: shards.rewrite_shard(shards_dir, shard, keys) for shard, keys in sorted(by_shard.items())}
    if sizes:
        shards.update_sizes(shards_dir, sizes)


def _replace_changed_files(paths: list[str], target_dir: str, shown) -> list[str]:
    """Copy every file of `paths` whose bytes differ into target_dir (atomically); -> names.
    `shown`: the merge's progress.LoopProgress, one step a file."""
    replaced = []
    for path in paths:
        name = os.path.basename(path)
        data = files.read_file(path)
        target = os.path.join(target_dir, name)
        changed = not files.exists(target) or files.read_file(target) != data
        if changed:
            files.write_atomically(target, data)
            replaced.append(name)
        shown.advance(replaced=shown.counts.get("replaced", 0) + changed)  # shards and stats together
    return replaced


def manifest_changes(old: dict, rebuilt: dict, argv: list[str]) -> dict:
    """What the manifest of OUT takes from the rebuild."""
    return {
        "argv": argv,  # with --extend's inputs: the command OUT now stands for
        "config": {**old["config"], "inputs": rebuilt["config"]["inputs"]},
        "inputs": rebuilt["inputs"],
        "balancing": rebuilt["balancing"],  # its stats files were just copied into OUT
        # the rebuild's Beam counters describe the whole dataset now (takedowns aside)
        "funnel_from_metrics": rebuilt["funnel_from_metrics"],
        "beam_counters": rebuilt["beam_counters"],
    }
