"""The `openwit` command: a table of subcommands. Each entry names the module and function
that parse and run it; nothing else is parsed here."""
from __future__ import annotations

import importlib
import logging
import sys
import warnings

from openwit.pipeline.common import errors

# name -> (module, function, one-line help). A command's module is imported only when it
# runs: `openwit --help` stays fast, and `openwit train` never imports Beam.
COMMANDS = {
    "demo": ("openwit.pipeline.demo.run", "main",
             "build a small synthetic web on 127.0.0.1, curate it, train on the shards"),
    "extract": ("openwit.pipeline.curate.commands", "extract_main",
                "image/alt-text candidates from Common Crawl WARC or WAT files into Parquet"),
    "curate": ("openwit.pipeline.curate.commands", "main", "curate (image url, caption) candidates into WebDataset shards with a ledger"),
    "audit": ("openwit.pipeline.audit.commands", "main",
              "answers from an output directory: summary | trace | verify | report | explorer | croissant"),
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
    debug = errors.debug_wanted(argv)
    argv = [arg for arg in argv if arg != errors.DEBUG_FLAG]
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    name = ALIASES.get(argv[0], argv[0])
    if name not in COMMANDS:
        print(f"openwit: unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    quiet_imports()
    module, function, _ = COMMANDS[name]
    try:
        return getattr(importlib.import_module(module), function)(argv[1:]) or 0
    except Exception as err:  # a user's mistake is one line; anything else keeps its traceback
        status = errors.report(name, err, debug)
        if status is None:
            raise
        return status


# Import-time noise that says nothing about the run (issue 25): Beam logs this on the root
# logger when the optional BigQuery client is absent, which openwit never uses.
_IMPORT_NOISE = ("apitools not found",)


class _DropImportNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_IMPORT_NOISE)


def quiet_imports() -> None:
    """Silence the known import-time notices, narrowly: the one Beam log line (by its text)
    and Beam's and its dependencies' deprecation warnings. Every other warning still shows."""
    root = logging.getLogger()
    if not any(isinstance(f, _DropImportNoise) for f in root.filters):
        root.addFilter(_DropImportNoise())
    for module in ("apache_beam", "google", "proto", "pkg_resources", "hdfs", "orjson"):
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning, module=module)


if __name__ == "__main__":
    sys.exit(main())
