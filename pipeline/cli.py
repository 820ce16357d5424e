"""The `openwit` command: a table of subcommands. Each entry names the module and function
that parse and run it; nothing else is parsed here."""
from __future__ import annotations

import importlib
import sys

# name -> (module, function, one-line help). A command's module is imported only when it
# runs: `openwit --help` stays fast, and `openwit train` never imports Beam.
COMMANDS = {
    "demo": ("openwit.pipeline.demo.run", "main",
             "build a small synthetic web on 127.0.0.1, curate it, train on the shards"),
    "extract": ("openwit.pipeline.curate.commands", "extract_main",
                "image/alt-text candidates from Common Crawl WARC or WAT files into Parquet"),
    "curate": ("openwit.pipeline.curate.commands", "main", "curate (image url, caption) candidates into WebDataset shards with a ledger"),
    "audit": ("openwit.pipeline.audit.commands", "main",
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
