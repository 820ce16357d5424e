"""The `openwit` command: demo, curate, audit, train, evaluate."""
from __future__ import annotations

import argparse
import sys

USAGE = """usage: openwit COMMAND [options]

commands:
  demo       build a small synthetic web on 127.0.0.1, curate it, train on the shards
  curate     curate (image url, caption) candidates into WebDataset shards with a ledger
  audit      read an output directory's ledger (audit summary DIR)
  hashes     perceptual hashes of an eval set for curate --decontaminate (hashes export DIR -o F)
  vocab      build or verify the shipped query vocabulary (vocab build | vocab verify)
  train      train the contrastive model on a directory of shards
  evaluate   zero-shot accuracy of a checkpoint on a labelled held-out directory

Run `openwit COMMAND --help` for a command's options."""


def curate_main(argv: list[str]) -> int:
    from openwit.pipeline.curate import OutputConflict, curate
    from openwit.pipeline.audit import summary_text
    from openwit.pipeline.options import parse_curate_args

    cfg, beam_args = parse_curate_args(argv)
    try:
        curate(cfg, beam_args, ["curate"] + argv)
    except OutputConflict as err:
        print(f"openwit curate: {err}", file=sys.stderr)
        return 2
    print(summary_text(cfg.output))
    return 0


def audit_main(argv: list[str]) -> int:
    from openwit.pipeline.audit import summary_text

    parser = argparse.ArgumentParser(prog="openwit audit", description="Read an output directory's ledger.")
    sub = parser.add_subparsers(dest="what", required=True)
    summary = sub.add_parser("summary", help="funnel per stage and top drop reasons")
    summary.add_argument("dir", help="output directory of openwit curate")
    summary.add_argument("--top", type=int, default=10, help="how many drop reasons to list")
    args = parser.parse_args(argv)
    print(summary_text(args.dir, args.top))
    return 0


def hashes_main(argv: list[str]) -> int:
    from openwit.pipeline.hashes import main

    return main(argv)


def demo_main(argv: list[str]) -> int:
    from openwit.pipeline.demo import main

    return main(argv)


def vocab_main(argv: list[str]) -> int:
    from openwit.query_lists.build import main

    return main(argv)


def train_main(argv: list[str]) -> int:
    from openwit.trainer.train import main

    return main(argv)


def evaluate_main(argv: list[str]) -> int:
    from openwit.trainer.evaluate import main

    return main(argv)


COMMANDS = {"demo": demo_main, "curate": curate_main, "audit": audit_main, "hashes": hashes_main, "vocab": vocab_main, "train": train_main,
            "evaluate": evaluate_main}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"openwit: unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return command(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
