"""The `openwit curate` and `openwit extract` commands: their argument parsing and dispatch.

`curate` runs a new curation (pipeline/curate/run.py), its --dry-run (dry_run.py), or
--retry-failed / --extend of a finished output (incremental.py); `extract` writes the
candidates of WARC/WAT files (or any curate input) to one Parquet file.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from openwit.pipeline.common import progress
from openwit.pipeline.common.errors import OneLineParser, UserError


def main(argv: list[str]) -> int:
    """`curate`: a new output, its --dry-run, or --retry-failed / --extend of a finished one."""
    if asks_for_update(argv):
        return incremental_main(argv)
    from openwit.pipeline.config import parse_curate_command

    cfg, beam_args, dry_run = parse_curate_command(argv)
    if dry_run:
        return dry_run_main(cfg)
    from openwit.pipeline.curate.run import OutputConflict, curate
    from openwit.pipeline.audit.summary import summary_text

    started = time.monotonic()
    try:
        manifest = curate(cfg, beam_args, ["curate"] + argv, show=progress.options_from(argv))
    except OutputConflict as err:
        print(f"openwit curate: {err}", file=sys.stderr)
        return 2
    print(summary_text(cfg.output))
    print(speed_line(time.monotonic() - started, dict(manifest["funnel"]).get("balance_pre", 0)))
    for line in warning_lines(manifest["drop_reasons"], cfg.output):
        print(line, file=sys.stderr)
    return 0


# Drop reasons that deserve a word after the summary (once, with their count): something the
# user may act on, rather than the web being the web.
WARNINGS = {
    "domain_unavailable": "candidates were not attempted because their hosts were paused by the circuit "
                          "breaker; `openwit curate --retry-failed {out}` tries them again",
    "malformed_row": "input rows or damaged archive regions could not be read (the ledger's detail names "
                     "file and place: `openwit audit summary {out}`)",
    "internal_error": "candidates hit an unexpected error in openwit (a bug: please report it with the "
                      "ledger's detail)",
}


def warning_lines(drop_reasons: list[dict], out: str) -> list[str]:
    counts = {}
    for row in drop_reasons:
        counts[row["reason"]] = counts.get(row["reason"], 0) + row["count"]
    return [f"warning: {counts[reason]:,} {text.format(out=out)}" for reason, text in WARNINGS.items()
            if counts.get(reason)]


def speed_line(seconds: float, downloads: int) -> str:
    """The run's wall time and its downloads per second (over the whole run)."""
    rate = downloads / seconds if seconds > 0 else 0.0
    return f"\nwall time {progress.clock(seconds)} ({seconds:.1f} s); {downloads:,} downloads, {rate:.1f} images/s"


def asks_for_update(argv: list[str]) -> bool:
    """Whether the curate command line has --retry-failed or --extend (with or without OUT:
    incremental_main's parser checks the rest and words the errors)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in ("--retry-failed", "--extend"):
        parser.add_argument(flag, nargs="?", const="")
    found, _ = parser.parse_known_args(argv)
    return found.retry_failed is not None or found.extend is not None


def incremental_main(argv: list[str]) -> int:
    """`curate --retry-failed OUT` or `curate --extend OUT --input NEW ...` (pipeline/curate/incremental.py)."""
    from openwit.pipeline.curate import incremental
    from openwit.pipeline.audit.summary import summary_text

    parser = OneLineParser(prog="openwit curate", description=incremental.__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--retry-failed", metavar="OUT", help="re-attempt the transient failures of OUT: "
                       + ", ".join(incremental.TRANSIENT_REASONS))
    which.add_argument("--extend", metavar="OUT", help="add the --input files to OUT's dataset")
    parser.add_argument("--input", action="append", default=[], help="new input file or glob (with --extend)")
    progress.add_flags(parser)
    args, beam_args = parser.parse_known_args(argv)
    if args.extend and not args.input:
        parser.error("--extend needs --input NEW")
    if args.retry_failed and args.input:
        parser.error("--retry-failed takes no --input: it retries OUT's own candidates")
    from openwit.pipeline.config import unknown_beam_args

    unknown = unknown_beam_args(beam_args)
    if unknown:
        parser.error(f"unrecognized arguments (Beam options only here): {' '.join(unknown)}")
    out = args.retry_failed or args.extend
    try:
        entry = incremental.rebuild(out, "retry_failed" if args.retry_failed else "extend", args.input, beam_args,
                                    show=progress.Options(args.quiet, args.progress_every, args.progress_json))
    except (incremental.CannotUpdate, FileNotFoundError, ValueError) as err:
        print(f"openwit curate: {err}", file=sys.stderr)
        return 2
    print(f"{entry['action']}: {entry['rows_appended']} ledger rows appended (revision {entry['revision']}), "
          f"{entry['new_candidates']} new candidates, files rewritten: {', '.join(entry['shards_rewritten']) or 'none'}")
    print(summary_text(out))
    return 0


def dry_run_main(cfg) -> int:
    from openwit.pipeline.curate.dry_run import dry_run

    try:
        print(dry_run(cfg))
    except (FileNotFoundError, ValueError) as err:
        print(f"openwit curate --dry-run: {err}", file=sys.stderr)
        return 2
    return 0


def extract_main(argv: list[str]) -> int:
    """Candidates from WARC/WAT files (or any curate input) into one Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from openwit.pipeline.stages import read
    from openwit.schemas.record import DROPPED

    parser = OneLineParser(prog="openwit extract", description=extract_main.__doc__)
    parser.add_argument("inputs", nargs="+", help="WARC/WAT files or globs (.warc.gz, .wat.gz, ...)")
    parser.add_argument("-o", "--output", required=True, help="candidates.parquet to write")
    parser.add_argument("--input-format", choices=read.FORMATS, default=None)
    progress.add_flags(parser)
    args = parser.parse_args(argv)
    from openwit.pipeline.curate.run import expanded_inputs

    inputs = expanded_inputs(args.inputs)
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        raise UserError(f"-o {args.output}: its folder does not exist; create it or choose another path")
    cfg = read.ReadConfig(input_format=args.input_format)
    rows = []
    with progress.LoopProgress("extract", len(inputs), progress.options_from(argv)) as shown:
        for path, name in inputs:
            for r in read.read_candidates(path, name, cfg):
                rows.append({"url": r.url, "caption": r.caption, "page_url": r.page_url, "source": r.source,
                             "error": None if r.status != DROPPED else f"{r.reason}: {r.detail or ''}".strip(": ")})
                if len(rows) % 1000 == 0:  # a big archive shows progress inside the file too
                    shown.advance(0, candidates=len(rows))
            shown.advance(candidates=len(rows))
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([(c, pa.string()) for c in
                                                                 ("url", "caption", "page_url", "source", "error")])),
                   args.output)
    errors = sum(1 for row in rows if row["error"])
    print(f"{len(rows) - errors} candidates, {errors} unusable rows (with their error) -> {args.output}")
    return 0
