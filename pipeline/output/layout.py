"""The layout of an output directory (OUT): the one place that names its folders and files.

    OUT/manifest.json           the run: command, inputs, funnel, shard sizes, later changes,
                                the sha256 of every file in shards/, ledger/ and stats/
    OUT/shards/NNNNN.tar        WebDataset shards, each with its index NNNNN.parquet
    OUT/shards/sizes.json       samples per shard (by tar name)
    OUT/ledger/revRRR-partPPPPP.parquet
    OUT/stats/entries.parquet   per vocabulary entry; OUT/stats/balance.json: the threshold
    OUT/staging/                staged images; OUT/staging/fetched/: download receipts
    OUT/.openwit/run.json       the command's fingerprint; OUT/.openwit/rebuild/: the
                                rebuild of --retry-failed and --extend;
                                OUT/.openwit/blocklist.json: what takedowns removed;
                                OUT/.openwit/shard-digests.json: each shard file's sha256,
                                recorded by its writer (the manifest takes them from there)
                                OUT/.openwit/progress/: live progress counters, per worker
    OUT/croissant.json          `openwit audit croissant`'s default place

OWNED lists these top-level names: openwit removes or replaces nothing else in OUT, and
refuses an OUT that holds anything else (docs/design.md, "Output directory rule").

Other modules ask here for a path instead of spelling one. Only names live here (no I/O,
no Beam import), so the trainer can use it too. Paths are joined with os.path.join, remote
ones included: for every path openwit builds (no base ending in "//", no name starting with
"/") it gives what Beam's FileSystems.join gives.
"""
from __future__ import annotations

import os

SHARDS = "shards"
LEDGER = "ledger"
STATS = "stats"
STAGING = "staging"
MANIFEST = "manifest.json"
CROISSANT = "croissant.json"
SIZES = "sizes.json"
ENTRY_STATS = "entries.parquet"
BALANCE = "balance.json"
# The folder name is kept: receipts of outputs written before must stay reusable.
RECEIPTS = "fetched"
TAR = ".tar"
INDEX = ".parquet"
# The folders the manifest's digests cover, every file in them (output/manifest.py): the
# dataset itself. Staging and openwit's own bookkeeping are working state, not the release.
DIGESTED = (SHARDS, LEDGER, STATS)
# openwit's own bookkeeping, apart from the dataset
STATE = ".openwit"
RUN_FILE = os.path.join(STATE, "run.json")
REBUILD = os.path.join(STATE, "rebuild")
# What takedowns removed, applied by every later run on this OUT (stages/blocklist.py). Under
# STATE: it survives restarts, --retry-failed and --extend; --overwrite replaces it with OUT.
BLOCKLIST = os.path.join(STATE, "blocklist.json")
# The sha256 of every shard file (tar, index) as its writer wrote it: the manifest's digests
# take them from here instead of reading terabytes again (output/shards.py). Under STATE, so
# no digest covers it (it is not the release, and could not digest itself).
SHARD_DIGESTS = os.path.join(STATE, "shard-digests.json")
# The live progress side channel: one counters file per worker process while a run goes
# (common/progress.py); emptied when the run ends. Under STATE: working state, never released.
PROGRESS = os.path.join(STATE, "progress")
# Every top-level name openwit creates in OUT, and the only ones it ever removes or replaces
# (docs/design.md, "Output directory rule"). croissant.json is `audit croissant`'s default
# place, so it is openwit's there; anything the user adds under another name is foreign.
OWNED = (SHARDS, LEDGER, STATS, STAGING, MANIFEST, STATE, CROISSANT)
# files.write_atomically's temporary suffix: a crash may leave "manifest.json.partial-..." in OUT.
PARTIAL = ".partial-"


# ------------------------------------------------------------------ OUT


def shards_dir(out: str) -> str:
    return os.path.join(out, SHARDS)


def ledger_dir(out: str) -> str:
    return os.path.join(out, LEDGER)


def stats_dir(out: str) -> str:
    return os.path.join(out, STATS)


def staging_dir(out: str) -> str:
    return os.path.join(out, STAGING)


def staged_image(staging: str, sha256: str, extension: str) -> str:
    """A processed image, content-addressed by its original bytes' sha256."""
    return os.path.join(staging, sha256[:2], f"{sha256}.{extension}")


def receipt(staging: str, key: str) -> str:
    """A download's receipt (pipeline/download/staging.py), by its receipt key."""
    return os.path.join(staging, RECEIPTS, key[:2], f"{key}.json")


def manifest_path(out: str) -> str:
    return os.path.join(out, MANIFEST)


def croissant_path(out: str) -> str:
    return os.path.join(out, CROISSANT)


def run_file(out: str) -> str:
    return os.path.join(out, RUN_FILE)


def rebuild_dir(out: str) -> str:
    return os.path.join(out, REBUILD)


def blocklist_path(out: str) -> str:
    return os.path.join(out, BLOCKLIST)


def progress_dir(out: str) -> str:
    return os.path.join(out, PROGRESS)


def partial_path(path: str, tag: str) -> str:
    """The temporary name a file is written under before it is renamed into place."""
    return f"{path}{PARTIAL}{tag}"


def is_owned(name: str) -> bool:
    """Whether a top-level name of OUT is one openwit writes (or its unfinished temporary)."""
    return name in OWNED or any(name.startswith(owned + PARTIAL) for owned in OWNED)


def foreign_names(names) -> list[str]:
    """The top-level names of OUT that openwit did not write, sorted. Without OUT/.openwit
    (written before anything else) none is openwit's: a folder of the user's own files may
    hold a "stats" or a "manifest.json" too."""
    names = set(names)
    if STATE not in names:
        return sorted(names)
    return sorted(name for name in names if not is_owned(name))


def owned_removal_order(names) -> list[str]:
    """openwit's own names of OUT, in the order --overwrite removes them: .openwit last, so
    that a crash midway leaves either the mark (the rest is still openwit's) or an empty OUT."""
    return sorted((name for name in names if is_owned(name)), key=lambda name: (name == STATE, name))


def restart_paths(out: str) -> list[str]:
    """What rerunning the same command removes before it runs again. Staging stays (its
    images are content-addressed, its receipts reused) and so does the fingerprint."""
    return [shards_dir(out), ledger_dir(out), stats_dir(out), manifest_path(out), shard_digests_path(shards_dir(out))]


# ---------------------------------------------------------------- stats


def entry_stats_path(out: str) -> str:
    return os.path.join(stats_dir(out), ENTRY_STATS)


def balance_path(out: str) -> str:
    return os.path.join(stats_dir(out), BALANCE)


# --------------------------------------------------------------- shards


def shard_name(shard: int) -> str:
    return f"{shard:05d}"


def tar_name(shard: str) -> str:
    """A shard's tar file name: the keys of sizes.json."""
    return shard + TAR


def shard_of_tar(path: str) -> str:
    """The shard name of a tar path or file name ("00003" of ".../00003.tar")."""
    return os.path.basename(path)[: -len(TAR)]


def shard_tar(shards: str, shard: str) -> str:
    return os.path.join(shards, tar_name(shard))


def shard_index(shards: str, shard: str) -> str:
    return os.path.join(shards, shard + INDEX)


def tar_pattern(shards: str) -> str:
    return os.path.join(shards, "*" + TAR)


def index_pattern(shards: str) -> str:
    return os.path.join(shards, "*" + INDEX)


def sizes_path(shards: str) -> str:
    return os.path.join(shards, SIZES)


def shard_digests_path(shards: str) -> str:
    """The record of the shard files' sha256s, beside the shards folder: OUT/.openwit/..."""
    return os.path.join(os.path.dirname(shards), SHARD_DIGESTS)


def digest_name(folder: str, path: str) -> str:
    """A file's name in the manifest's digests: FOLDER/FILE with "/" on every system."""
    return f"{folder}/{os.path.basename(path)}"


# --------------------------------------------------------------- ledger


def revision_prefix(revision: int) -> str:
    """The name prefix of a revision's ledger parts."""
    return f"rev{revision:03d}-"


def ledger_part_path(ledger: str, part: int, revision: int = 0) -> str:
    return os.path.join(ledger, f"{revision_prefix(revision)}part{part:05d}.parquet")


def ledger_pattern(out: str) -> str:
    return os.path.join(ledger_dir(out), "*.parquet")
