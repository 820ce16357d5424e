"""`openwit curate`: guard the output directory, run the pipeline, write the manifest.

Output rule: an output directory belongs to one command. The command's fingerprint (its
config and the sha256 of its inputs and vocabulary) is written to OUT/.openwit/run.json
before the pipeline starts. Rerunning the same command restarts cleanly: previous shards,
ledger and manifest are removed and rebuilt (staged images are content-addressed and kept).
A different openwit command's output is refused unless --overwrite, which replaces it.
openwit removes only what it wrote (curate/output_guard.py): an OUT holding other files,
or one that is home, a root, an input or a folder above one, is refused before anything
is written.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys

from apache_beam.io.filesystems import FileSystems

from openwit.pipeline import __version__
from openwit.pipeline.common.clock import utc_now
from openwit.pipeline.output import files, layout, ledger, shards
from openwit.pipeline.output.manifest import write_manifest
from openwit.pipeline.beam.stage import beam_counters, funnel_from_counters
from openwit.pipeline.config import CurateConfig
# OutputConflict is caught from here by commands.py and the demo.
from openwit.pipeline.curate.output_guard import OutputConflict, check_contents, check_place
from openwit.pipeline.beam.graph import run_pipeline
from openwit.pipeline.stages import dedup, match, read
from openwit.schemas.record import LEDGER_SCHEMA_VERSION


def describe_inputs(cfg: CurateConfig) -> list[dict]:
    """Check every input (exists, known format) and fingerprint it, before anything is written."""
    described = []
    for path, name in read.expand_inputs(list(cfg.inputs)):
        described.append({"path": path, "source_name": name, "format": cfg.read.input_format or read.detect_format(path),
                          **input_digest(path)})
    return described


def input_digest(path: str) -> dict:
    """A local file's sha256. A remote file (gs://, s3://, ...) is not read again on the
    launching machine, which may be terabytes away: its store's checksum and size stand in."""
    if not files.is_remote(path):
        return {"sha256": files.sha256(path)}
    (meta,) = FileSystems.match([path])[0].metadata_list
    return {"checksum": FileSystems.checksum(path), "size": meta.size_in_bytes}


def describe_eval_hashes(cfg: CurateConfig):
    """The --decontaminate file: its content decides drops, so it is hashed like an input."""
    if not cfg.decontaminate:
        return None
    return {"path": cfg.decontaminate, "sha256": files.sha256(cfg.decontaminate),
            "images": len(dedup.EvalHashes.load(cfg.decontaminate).items)}


def describe_score_model(cfg: CurateConfig):
    """The --score-model checkpoint decides drops and scores, so it is hashed like an input."""
    if not cfg.score_model:
        return None
    return {"path": cfg.score_model, "sha256": files.sha256(cfg.score_model), "min_score": cfg.min_score}


def fingerprint(cfg: CurateConfig, inputs: list[dict], vocab_sha: str, eval_hashes, score_model=None) -> str:
    config = cfg.to_dict()
    config.pop("overwrite")
    config.pop("output")
    blob = json.dumps({"config": config, "inputs": inputs, "vocab": vocab_sha, "eval_hashes": eval_hashes,
                       "score_model": score_model}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def files_read(cfg: CurateConfig) -> list[str]:
    """Every file the command reads: OUT must neither be one nor hold one."""
    inputs = [path for path, _ in read.expand_inputs(list(cfg.inputs))]
    return inputs + [path for path in (cfg.vocab, cfg.decontaminate, cfg.score_model) if path]


def prepare_output(out_dir: str, run_fingerprint: str, overwrite: bool) -> str:
    """Make out_dir ready for this command; returns 'new', 'restart' or 'overwrite'.
    Only openwit's own names are ever removed: anything else makes the command refuse."""
    entries = files.names_in(out_dir)
    check_contents(out_dir, entries)
    if not entries:
        action = "new"
    elif _previous_fingerprint(out_dir) == run_fingerprint:
        action = "restart"
        for path in layout.restart_paths(out_dir):
            files.remove(path)
    elif overwrite:
        action = "overwrite"
        for name in layout.owned_removal_order(entries):
            files.remove(os.path.join(out_dir, name))
    else:
        raise OutputConflict(f"{out_dir} holds the output of a different openwit command; choose another --output, "
                             "or pass --overwrite to replace it (only openwit's own files there are removed)")
    files.write_atomically(layout.run_file(out_dir), json.dumps({"fingerprint": run_fingerprint}).encode())
    return action


def _previous_fingerprint(out_dir: str):
    try:
        return json.loads(files.read_file(layout.run_file(out_dir))).get("fingerprint")
    except (OSError, ValueError):
        return None


def curate(cfg: CurateConfig, beam_args: list[str], argv: list[str]) -> dict:
    """Run one curation and return its manifest (also written to OUT/manifest.json)."""
    started = utc_now()
    # Before the inputs are hashed (terabytes, maybe), so that a refusal comes at once;
    # prepare_output checks the contents again where it removes.
    check_place(cfg.output, files_read(cfg))
    check_contents(cfg.output, files.names_in(cfg.output))
    inputs = describe_inputs(cfg)
    vocab_sha = match.vocab_sha256(cfg.vocab)
    eval_hashes = describe_eval_hashes(cfg)
    score_model = describe_score_model(cfg)
    action = prepare_output(cfg.output, fingerprint(cfg, inputs, vocab_sha, eval_hashes, score_model), cfg.overwrite)
    counters = beam_counters(run_pipeline(cfg, beam_args))
    outcomes = ledger.outcomes(cfg.output)
    sizes = shards.read_sizes(layout.shards_dir(cfg.output)) or {}
    manifest = {
        "openwit_version": __version__,
        "argv": argv,
        "beam_args": beam_args,
        "config": cfg.to_dict(),
        "seed": cfg.seed,
        "output_action": action,
        "vocab": {"path": cfg.vocab, "sha256": vocab_sha, "entries": len(match.read_vocab(cfg.vocab))},
        "inputs": inputs,
        "decontaminate": eval_hashes,
        "score_model": score_model,
        "ledger_schema": LEDGER_SCHEMA_VERSION,
        **outcomes,  # funnel, drop_reasons
        "funnel_from_metrics": dict(funnel_from_counters(counters)),
        "beam_counters": counters,
        "balancing": files.read_json(layout.balance_path(cfg.output)) or {},
        "shards": sizes,
        "shard_count": len(sizes),
        "started_at": started,
        "finished_at": utc_now(),
        "python": sys.version.split()[0],
    }
    write_manifest(cfg.output, manifest)
    return manifest

