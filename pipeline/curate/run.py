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

import contextlib
import csv
import hashlib
import io
import json
import os
import sys
import tempfile
from typing import Optional

from apache_beam.io.filesystems import FileSystems

from openwit.pipeline import __version__
from openwit.pipeline.common import progress
from openwit.pipeline.common.clock import utc_now
from openwit.pipeline.common.errors import UserError
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


def describe_worldwide(cfg: CurateConfig):
    """The per-language lists of --worldwide (path and sha256), or None."""
    path = cfg.worldwide_path
    return {"path": path, "sha256": match.vocab_sha256(path)} if path else None


def describe_score_model(cfg: CurateConfig):
    """The --score-model checkpoint decides drops and scores, so it is hashed like an input."""
    if not cfg.score_model:
        return None
    return {"path": cfg.score_model, "sha256": files.sha256(cfg.score_model), "min_score": cfg.min_score}


def fingerprint(cfg: CurateConfig, inputs: list[dict], vocab_sha: str, eval_hashes, score_model=None) -> str:
    config = cfg.to_dict()
    config.pop("overwrite")
    config.pop("output")
    config.pop("worldwide_lists")  # its content is hashed with the vocabulary's (describe_worldwide)
    blob = json.dumps({"config": config, "inputs": inputs, "vocab": vocab_sha, "eval_hashes": eval_hashes,
                       "score_model": score_model}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def files_read(cfg: CurateConfig) -> list[str]:
    """Every file the command reads: OUT must neither be one nor hold one."""
    inputs = [path for path, _ in expanded_inputs(cfg.inputs)]
    return inputs + [path for path in (cfg.vocab, cfg.worldwide_lists, cfg.decontaminate, cfg.score_model) if path]


def expanded_inputs(patterns) -> list[tuple[str, str]]:
    """read.expand_inputs, its refusals worded as the user's to fix (UserError)."""
    try:
        return read.expand_inputs(list(patterns))
    except FileNotFoundError as err:
        raise UserError(f"{err}; check the --input path or glob (quote a glob so the shell leaves it)") from err
    except ValueError as err:
        raise UserError(f"{err}; give inputs from different folders distinct file names") from err


def check_inputs(cfg: CurateConfig) -> None:
    """Before anything is written or hashed: every input matches, has a known format, and
    (for CSV, TSV, Parquet) has the url column, so that a typo ends the command at once with
    one line instead of failing inside the pipeline."""
    for path, _ in expanded_inputs(cfg.inputs):
        try:
            fmt = cfg.read.input_format or read.detect_format(path)
        except ValueError as err:
            raise UserError(str(err)) from err
        columns = input_columns(path, fmt)
        if columns is not None and cfg.read.url_col not in columns:
            raise UserError(f"{path}: no url column {cfg.read.url_col!r} (columns: {columns[:20]}); "
                            "pass --url-col with the name of its URL column")


def input_columns(path: str, fmt: str):
    """The column names of a CSV/TSV header or a Parquet schema; None for formats whose
    rows name their own fields (JSONL, WARC, WAT), and for a file whose columns cannot be
    read (a damaged Parquet footer): the reader makes that one dead letter, as documented,
    so only what is certainly the user's mistake refuses the run. Reads only the header."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            with FileSystems.open(path) as raw:
                return list(pq.ParquetFile(raw).schema_arrow.names)
        except Exception:  # noqa: BLE001 - damaged or not Parquet: a dead letter in the run
            return None
    if fmt not in ("csv", "tsv"):
        return None
    try:
        with FileSystems.open(path) as raw:
            head = raw.read(1 << 20)
    except Exception:  # noqa: BLE001 - damaged compressed data: the reader makes it a dead letter
        return None
    options = {"delimiter": ","} if fmt == "csv" else {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
    try:
        return next(csv.reader(io.StringIO(header_line(path, head)), strict=True, **options), [])
    except csv.Error as err:
        raise UserError(f"{path}: malformed {fmt} header line ({err}); the first line must name the "
                        "columns") from err


def header_line(path: str, head: bytes) -> str:
    """The first line of head, decoded as strictly as the reader does (stages/read.py), so
    that a header the reader cannot decode is refused here, with its reason."""
    line = head.split(b"\n", 1)[0]
    try:
        return line.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        if b"\n" not in head and err.start >= len(line) - 3:  # a character cut by the 1 MiB read
            return line[:err.start].decode("utf-8-sig")
        raise UserError(f"{path}: the header line is not UTF-8 (byte {err.start + 1}); save the file "
                        "as UTF-8") from None


def check_writable(out: str) -> None:
    """OUT can be created and written (local paths; a remote store answers at the first write)."""
    if files.is_remote(out):
        return
    where = os.path.abspath(out)
    while not os.path.exists(where):
        where = os.path.dirname(where)
    if not os.path.isdir(where):
        raise UserError(f"{where} is a file, so --output {out} cannot be created; choose another folder")
    if not os.access(where, os.W_OK | os.X_OK):
        raise UserError(f"{where} is not writable for this user; choose a folder you can write for --output")


@contextlib.contextmanager
def progress_shown(out: str, show: Optional[progress.Options]):
    """The live progress of a run into OUT (common/progress.py); its side channel lives in
    OUT/.openwit/progress, or in a local temporary folder when OUT is remote."""
    if show is None:
        yield
    elif not files.is_remote(out):
        with progress.Reporter(layout.progress_dir(out), show):
            yield
    else:
        with tempfile.TemporaryDirectory(prefix="openwit-progress-", ignore_errors=True) as folder, progress.Reporter(folder, show):
            yield


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


def curate(cfg: CurateConfig, beam_args: list[str], argv: list[str], show: Optional[progress.Options] = None) -> dict:
    """Run one curation and return its manifest (also written to OUT/manifest.json).
    `show`: how to show progress while the pipeline runs (None: not at all)."""
    started = utc_now()
    # Before the inputs are hashed (terabytes, maybe), so that a refusal comes at once;
    # prepare_output checks the contents again where it removes.
    check_inputs(cfg)
    check_place(cfg.output, files_read(cfg))
    check_contents(cfg.output, files.names_in(cfg.output))
    check_writable(cfg.output)
    inputs = describe_inputs(cfg)
    vocab_sha = match.vocab_sha256(cfg.vocab)
    worldwide = describe_worldwide(cfg)
    if worldwide:  # the per-language lists decide matches too: a different list, a different run
        vocab_sha = f"{vocab_sha}+{worldwide['sha256']}"
    eval_hashes = describe_eval_hashes(cfg)
    score_model = describe_score_model(cfg)
    try:
        action = prepare_output(cfg.output, fingerprint(cfg, inputs, vocab_sha, eval_hashes, score_model), cfg.overwrite)
    except PermissionError as err:  # e.g. a read-only mount that os.access did not reveal
        raise UserError(f"cannot write into --output {cfg.output}: {err.strerror}; choose a folder you can write")
    with progress_shown(cfg.output, show):
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
        "vocab": {"path": cfg.vocab, "sha256": match.vocab_sha256(cfg.vocab), "entries": len(match.read_vocab(cfg.vocab)),
                  **({"worldwide": worldwide} if worldwide else {})},
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

