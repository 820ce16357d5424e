"""The `openwit` command: demo, curate, audit, train, evaluate."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, function, one-line help). A command's module is imported only when it
# runs: `openwit --help` stays fast, and `openwit train` never imports Beam.
COMMANDS = {
    "demo": ("openwit.pipeline.demo.run", "main",
             "build a small synthetic web on 127.0.0.1, curate it, train on the shards"),
    "extract": (__name__, "extract_main",
                "image/alt-text candidates from Common Crawl WARC or WAT files into Parquet"),
    "curate": (__name__, "curate_main", "curate (image url, caption) candidates into WebDataset shards with a ledger"),
    "audit": (__name__, "audit_main",
              "answers from an output directory: summary | trace | verify | report | croissant"),
    "takedown": ("openwit.pipeline.audit.takedown", "main",
                 "remove candidates (by URL, uid or domain) from a released output"),
    "hashes": ("openwit.pipeline.audit.hashes", "main",
               "perceptual hashes of an eval set for curate --decontaminate (hashes export DIR -o F)"),
    "vocab": ("openwit.query_lists.build", "main",
              "build or verify the shipped query vocabulary (vocab build | vocab verify)"),
    "train": ("openwit.trainer.train", "main", "train the contrastive model on a directory of shards"),
    "eval": ("openwit.trainer.evaluate", "main",
             "zero-shot accuracy and retrieval recall of a checkpoint (alias: evaluate)"),
    "plot": ("openwit.trainer.plot", "main", "training curves of a run's metrics (CKPT.jsonl) as one HTML page"),
}
ALIASES = {"evaluate": "eval"}

USAGE = "\n".join([
    "usage: openwit COMMAND [options]", "", "commands:",
    *(f"  {name:<11}{help_text}" for name, (_, _, help_text) in COMMANDS.items()),
    "", "Run `openwit COMMAND --help` for a command's options.",
])


def curate_main(argv: list[str]) -> int:
    """`curate`: a new output, its --dry-run, or --retry-failed / --extend of a finished one."""
    if asks_for_update(argv):
        return incremental_main(argv)
    from openwit.pipeline.config import parse_curate_command

    cfg, beam_args, dry_run = parse_curate_command(argv)
    if dry_run:
        return dry_run_main(cfg)
    from openwit.pipeline.curate.run import OutputConflict, curate
    from openwit.pipeline.audit.summary import summary_text

    try:
        curate(cfg, beam_args, ["curate"] + argv)
    except OutputConflict as err:
        print(f"openwit curate: {err}", file=sys.stderr)
        return 2
    print(summary_text(cfg.output))
    return 0


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

    parser = argparse.ArgumentParser(prog="openwit curate", description=incremental.__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--retry-failed", metavar="OUT", help="re-attempt the transient failures of OUT: "
                       + ", ".join(incremental.TRANSIENT_REASONS))
    which.add_argument("--extend", metavar="OUT", help="add the --input files to OUT's dataset")
    parser.add_argument("--input", action="append", default=[], help="new input file or glob (with --extend)")
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
        entry = incremental.rebuild(out, "retry_failed" if args.retry_failed else "extend", args.input, beam_args)
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


def audit_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="openwit audit", description="Answers about an output directory, "
                                     "from its ledger, manifest and shards only.")
    sub = parser.add_subparsers(dest="what", required=True)
    summary = sub.add_parser("summary", help="funnel per stage, top drop reasons, languages, balancing effect")
    summary.add_argument("dir", help="output directory of openwit curate")
    summary.add_argument("--top", type=int, default=10, help="how many drop reasons to list")
    trace = sub.add_parser("trace", help="everything known about one candidate")
    trace.add_argument("dir")
    trace.add_argument("query", help="a uid, an image URL, or SHARD/KEY")
    verify = sub.add_parser("verify", help="re-read every shard and check it against ledger and manifest")
    verify.add_argument("dir")
    report = sub.add_parser("report", help="one self-contained HTML page with plots and sample images")
    report.add_argument("dir")
    report.add_argument("-o", "--output", required=True, help="report.html to write")
    croissant = sub.add_parser("croissant", help="Croissant (ML Commons) metadata for the shards")
    croissant.add_argument("dir")
    croissant.add_argument("-o", "--output", default=None,
                           help="croissant.json to write (default: DIR/croissant.json; its paths are relative to DIR)")
    croissant.add_argument("--license", default=None, help="licence statement or URL for the metadata")
    args = parser.parse_args(argv)
    return AUDIT_COMMANDS[args.what](args)


def audit_summary(args) -> int:
    from openwit.pipeline.audit.summary import summary_text

    print(summary_text(args.dir, args.top))
    return 0


def audit_trace(args) -> int:
    from openwit.pipeline.audit.summary import trace_text

    try:
        print(trace_text(args.dir, args.query))
    except LookupError as err:
        print(f"openwit audit trace: {err}", file=sys.stderr)
        return 1
    return 0


def audit_verify(args) -> int:
    from openwit.pipeline.audit.verify import verify

    violations = verify(args.dir)
    for violation in violations:
        print(violation)
    print(f"{len(violations)} violation(s)" if violations else f"{args.dir}: shards, ledger and manifest agree")
    return 1 if violations else 0


def audit_report(args) -> int:
    from openwit.pipeline.audit.report import write_report

    write_report(args.dir, args.output)
    print(f"report -> {args.output}")
    return 0


def audit_croissant(args) -> int:
    from openwit.pipeline.audit.croissant import write_croissant
    from openwit.pipeline.output import layout

    output = args.output or layout.croissant_path(args.dir)
    if os.path.dirname(os.path.abspath(output)) != os.path.abspath(args.dir):
        print("openwit audit croissant: note: the file's paths are relative to DIR; keep it in DIR to load it",
              file=sys.stderr)
    write_croissant(args.dir, output, args.license)
    print(f"croissant -> {output}")
    return 0


AUDIT_COMMANDS = {"summary": audit_summary, "trace": audit_trace, "verify": audit_verify, "report": audit_report,
                  "croissant": audit_croissant}


def extract_main(argv: list[str]) -> int:
    """Candidates from WARC/WAT files (or any curate input) into one Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from openwit.pipeline.stages import read

    parser = argparse.ArgumentParser(prog="openwit extract", description=extract_main.__doc__)
    parser.add_argument("inputs", nargs="+", help="WARC/WAT files or globs (.warc.gz, .wat.gz, ...)")
    parser.add_argument("-o", "--output", required=True, help="candidates.parquet to write")
    parser.add_argument("--input-format", choices=read.FORMATS, default=None)
    args = parser.parse_args(argv)
    cfg = read.ReadConfig(input_format=args.input_format)
    rows = [{"url": r.url, "caption": r.caption, "page_url": r.page_url, "source": r.source,
             "error": None if r.status != "dropped" else f"{r.reason}: {r.detail or ''}".strip(": ")}
            for path, name in read.expand_inputs(args.inputs) for r in read.read_candidates(path, name, cfg)]
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([(c, pa.string()) for c in
                                                                 ("url", "caption", "page_url", "source", "error")])),
                   args.output)
    errors = sum(1 for row in rows if row["error"])
    print(f"{len(rows) - errors} candidates, {errors} unusable rows (with their error) -> {args.output}")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    name = ALIASES.get(argv[0], argv[0])
    if name not in COMMANDS:
        print(f"openwit: unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    module, function, _ = COMMANDS[name]
    return getattr(importlib.import_module(module), function)(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
