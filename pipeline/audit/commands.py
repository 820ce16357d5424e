"""The `openwit audit` command: summary, trace, verify, report and croissant of an output."""
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
    from openwit.pipeline.audit.verify import verify_output
    from openwit.pipeline.output.manifest import manifest_sha256

    violations, notes = verify_output(args.dir)
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
