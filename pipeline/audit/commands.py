"""The `openwit audit` command: summary, trace, verify, report, explorer and croissant of an output."""
from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="openwit audit", description="Answers about an output directory, "
                                     "from its ledger, manifest and shards only.")
    sub = parser.add_subparsers(dest="what", required=True)
    summary = sub.add_parser("summary", help="funnel per stage, top drop reasons, languages, balancing effect")
    summary.add_argument("dir", help="output directory of openwit curate")
    summary.add_argument("--top", type=int, default=10, help="how many drop reasons to list")
    trace = sub.add_parser("trace", help="everything known about one candidate")
    trace.add_argument("dir")
    trace.add_argument("query", help="a uid, an image URL, or SHARD/KEY")
    verify = sub.add_parser("verify", help="check every sample and index row against the ledger, and every "
                            "file against the manifest's digests")
    verify.add_argument("dir")
    from openwit.pipeline.common import progress

    progress.add_flags(verify)
    report = sub.add_parser("report", help="one self-contained HTML page with plots and sample images")
    report.add_argument("dir")
    report.add_argument("-o", "--output", required=True, help="report.html to write")
    report.add_argument("--explorer", default=None, help="the explorer's index.html as seen from the report "
                        "(a relative path or URL): drop reasons and duplicate clusters link into it")
    explorer = sub.add_parser("explorer", help="a static folder (opens from disk, no server) to browse every "
                              "candidate, kept or dropped, and why; with its own report.html linking into it")
    explorer.add_argument("dir")
    explorer.add_argument("-o", "--output", required=True, help="folder to write: new, empty, or an explorer written before (replaced)")
    explorer.add_argument("--max-images", type=non_negative, default=None,
                          help="thumbnails for at most the first N candidates in explorer order (default: all)")
    croissant = sub.add_parser("croissant", help="Croissant (ML Commons) metadata for the shards")
    croissant.add_argument("dir")
    croissant.add_argument("-o", "--output", default=None,
                           help="croissant.json to write (default: DIR/croissant.json; its paths are relative to DIR)")
    croissant.add_argument("--license", default=None, help="licence statement or URL for the metadata")
    args = parser.parse_args(argv)
    from openwit.pipeline.common.errors import check_output_dir
    from openwit.pipeline.output import layout

    if getattr(args, "dir", None):  # a wrong DIR is one line (exit 2), not a traceback
        check_output_dir(args.dir, layout.ledger_dir(args.dir))
        check_audit_paths(args)
    return AUDIT_COMMANDS[args.what](args)


def non_negative(text: str) -> int:
    """An int >= 0 (a negative --max-images would slice from the end)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give 0 or more")
    return value


def inside(path: str, folder: str) -> bool:
    """path is folder or below it, after resolving symbolic links on both sides."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_audit_paths(args) -> None:
    """A local DIR without ledger parts, or a report/croissant -o that is a folder, is one
    line (issue 25), not a traceback from deep in the reader or writer."""
    from openwit.pipeline.common.errors import UserError
    from openwit.pipeline.output import files, layout

    if "://" not in args.dir and not files.matching(layout.ledger_pattern(args.dir)):
        raise UserError(f"{layout.ledger_dir(args.dir)} holds no ledger part (.parquet), so {args.dir} is not a "
                        "finished `openwit curate` output; pass the --output folder of a finished run")
    output = getattr(args, "output", None)
    if args.what in ("report", "croissant") and output and os.path.isdir(output):
        raise UserError(f"-o {output}: is a folder; give the path of the file to write")


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
    from openwit.pipeline.audit.verify import verify_output
    from openwit.pipeline.output.manifest import manifest_sha256

    from openwit.pipeline.common import progress

    violations, notes = verify_output(args.dir, progress.options_of(args))
    for note in notes:
        print(f"note: {note}")
    for violation in violations:
        print(violation)
    if violations:
        print(f"{len(violations)} violation(s)")
        return 1
    print(f"{args.dir}: shards, ledger and manifest agree")
    # Everything verified hangs on the manifest's bytes: publishing this pins the release.
    print(f"manifest.json sha256 {manifest_sha256(args.dir)} (publish it to pin this release)")
    return 0


def audit_report(args) -> int:
    from openwit.pipeline.audit.report import write_report

    write_report(args.dir, args.output, args.explorer)
    print(f"report -> {args.output}")
    return 0


def audit_explorer(args) -> int:
    from openwit.pipeline.audit.explorer import NotAnExplorer, write_explorer

    if "://" not in args.dir and inside(args.output, args.dir):
        # OUT holds only openwit's own names (docs/design.md, "Output directory rule")
        print("openwit audit explorer: write the explorer outside DIR", file=sys.stderr)
        return 2
    try:
        made = write_explorer(args.dir, args.output, args.max_images)
    except NotAnExplorer as err:
        print(f"openwit audit explorer: {err}", file=sys.stderr)
        return 2
    print(f"explorer -> {os.path.join(args.output, 'index.html')} ({made['candidates']:,} candidates, "
          f"{made['images']:,} thumbnails, {made['clusters']:,} duplicate clusters)")
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
                  "explorer": audit_explorer, "croissant": audit_croissant}
