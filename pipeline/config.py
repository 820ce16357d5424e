"""`openwit curate` options: one frozen config, never mutated.

Every flag is declared on the config field it sets (pipeline/common/flags.py): its name,
default, help and parsing, here and in the stage configs CurateConfig nests. The config is
built from argv (parse_curate_command, used by pipeline/curate/commands.py), directly in code (CurateConfig(inputs=..., output=...),
the demo) or from a manifest (CurateConfig.from_dict, --retry-failed and --extend); its
__post_init__ holds every check of values, check_files() the checks that read files.

Flags openwit does not know pass through to Beam's PipelineOptions (--runner,
--direct_num_workers, --direct_running_mode, --temp_location, --setup_file, ...). Local
runs default to FnApiRunner: Beam's DirectRunner first tries to download the Prism binary.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Optional

from openwit.pipeline.common import flags, progress
from openwit.pipeline.common.errors import OneLineParser
from openwit.pipeline.common.flags import nested, opt
from openwit.pipeline.common.neardup import DEFAULT_DISTANCE
from openwit.pipeline.download.client import DownloadConfig
from openwit.pipeline.stages.dedup import DEDUP_KEYS, hash_method_of
from openwit.pipeline.stages.image import ImageConfig
from openwit.pipeline.stages.read import ReadConfig
from openwit.pipeline.stages.text import TextConfig
from openwit.query_lists.build import shipped_list_path

DEFAULT_RUNNER = "FnApiRunner"
SCORE = "model score (DataComp's CLIP-score filter, with a model you trained)"
# The help groups of `openwit curate --help`, in order; a field names its group in its flag.
GROUPS = ("input", "text rules", "download", "image", "dedup", SCORE)


@dataclass(frozen=True, kw_only=True)
class CurateConfig:
    inputs: tuple[str, ...] = opt(help_text="input file or glob (repeatable)", flag="--input", append=True,
                                  required=True)
    # None: the shipped list, resolved here so that the manifest records its path
    vocab: Optional[str] = opt(None, "vocabulary file: one entry a line (.txt or .txt.gz); "
                               "default: the shipped 450K list")
    worldwide: bool = opt(False, "match each caption against its language's list: --vocab for en, the shipped "
                          "worldwide list (41 languages, docs/vocabulary.md) for the others; use with --languages")
    worldwide_lists: Optional[str] = opt(None, "with --worldwide: the per-language lists to match with instead of "
                                         "the shipped one (a file `openwit vocab build --worldwide` wrote, e.g. "
                                         "with --extra th=FILE)")
    output: str = opt(help_text="output directory", required=True)
    seed: int = opt(0, "seed of the balancing draw")
    # ignored when tail_fraction is set
    threshold: int = opt(20_000, "balancing cap t per vocabulary entry (20K at 400M)", exclusive="cap")
    tail_fraction: Optional[float] = opt(None, "choose t so that entries with fewer than t matches hold this share "
                                         "of all matches (MetaCLIP: ~0.06)", type=float, exclusive="cap")
    pre_download_slack: float = opt(2.0, "balance at t x slack before download, at t after dedup "
                                    "(docs/balancing.md)")
    samples_per_shard: int = opt(10_000)
    # 0: ceil(kept / samples_per_shard); fixed by --retry-failed and --extend
    shard_count: int = opt(0, "number of shard buckets (0: kept / --samples-per-shard); the manifest records it, "
                           "and --retry-failed and --extend keep it so the layout stays stable")
    staging_dir: Optional[str] = None  # default OUT/staging
    blocklist: Optional[str] = None  # takedowns to apply; default OUT/.openwit/blocklist.json (a rebuild names OUT's)
    ledger_parts: int = opt(8, "number of ledger Parquet parts")
    overwrite: bool = opt(False, "replace a different openwit command's output in OUT (only openwit's own "
                               "files: an OUT holding anything else is refused)")
    exact_dedup: str = opt("image", "image: one sample per image sha256; image+caption: only identical image "
                           "and caption", choices=DEDUP_KEYS, group="dedup")
    # -1: no near-duplicate dedup
    near_dup_distance: int = opt(DEFAULT_DISTANCE, "pHash Hamming distance (of 64 bits) at which images are "
                                 "near-duplicates; -1: off", group="dedup")
    decontaminate: Optional[str] = opt(None, "hashes.parquet from `openwit hashes export`: drop candidates within "
                                       "--near-dup-distance of an eval image (exact pHash matches only when "
                                       "near-dup dedup is off)", group="dedup")
    # an openwit checkpoint: score image-caption pairs
    score_model: Optional[str] = opt(None, "an openwit checkpoint (openwit train): record the image-caption cosine "
                                     "of every pair that passes the image rules (before dedup), in the ledger's "
                                     "clip_score", group=SCORE)
    # cosine below which --score-model drops a pair (-1: record only)
    min_score: float = opt(-1.0, "drop pairs whose --score-model cosine is below this (reason low_clip_score); "
                           "-1 records scores without dropping", group=SCORE)
    read: ReadConfig = nested(ReadConfig, group="input")
    text: TextConfig = nested(TextConfig, group="text rules")
    download: DownloadConfig = nested(DownloadConfig, group="download")
    image: ImageConfig = nested(ImageConfig, group="image")

    def __post_init__(self):
        if not self.vocab:
            object.__setattr__(self, "vocab", shipped_list_path())
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> Optional[str]:
        """What is wrong with the values, in the flags' words (None: nothing). Here and not in
        the stage configs: a message names the curate flag, and the download config is shared."""
        d = self.download
        rules = (
            (self.pre_download_slack < 1,
             "--pre-download-slack must be >= 1: a smaller pre-download cap would starve entries"),
            (not 0 <= d.breaker_failure_ratio <= 1, "--breaker-failure-ratio is a share: between 0 and 1 (0: off)"),
            (d.host_rate < 0, "--max-host-rate must be >= 0"),
            (bool(d.dns_server) and not re.fullmatch(r"[^\s:]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5}", d.dns_server),
             f"--dns-server takes HOST:PORT, got {d.dns_server!r}"),
            (not -1 <= self.min_score <= 1, "--min-score is a cosine: between -1 and 1"),
            (self.min_score > -1 and not self.score_model, "--min-score needs --score-model"),
            (not 0 <= self.text.min_language_score <= 1,
             "--min-language-score is a probability: between 0 and 1"),
            (self.near_dup_distance > 32, "--near-dup-distance above 32 of 64 bits would merge unrelated images"),
            (self.worldwide and tuple(self.text.languages) == ("en",),
             "--worldwide matches captions in other languages, which --languages en drops first: "
             "add --languages all (or the languages you want)"),
            (bool(self.worldwide_lists) and not self.worldwide, "--worldwide-lists needs --worldwide"),
        )
        return next((message for broken, message in rules if broken), None)

    def check_files(self) -> None:
        """The checks that read files (ValueError): run before a run starts, not on every copy."""
        if self.decontaminate:
            check_eval_hashes(self.decontaminate, self.image.hash_method)
        if self.score_model and not os.path.isfile(self.score_model):
            raise ValueError(f"--score-model: no such file {self.score_model}")
        if self.worldwide_lists and not os.path.isfile(self.worldwide_lists):
            raise ValueError(f"--worldwide-lists: no such file {self.worldwide_lists}")
        if self.worldwide_lists:  # a user's file: read it whole now, not as a traceback mid-run
            from openwit.query_lists.worldwide import read_sections

            try:
                read_sections(self.worldwide_lists)
            except (OSError, EOFError, UnicodeDecodeError, ValueError) as err:
                raise ValueError(f"--worldwide-lists: {err}") from err

    @property
    def worldwide_path(self) -> Optional[str]:
        """The per-language lists a --worldwide run matches with; None without --worldwide."""
        if not self.worldwide:
            return None
        from openwit.query_lists.worldwide import shipped_worldwide_path

        return self.worldwide_lists or shipped_worldwide_path()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "CurateConfig":
        """The config of a manifest's "config" (to_dict() read back from JSON)."""
        return flags.from_dict(cls, values)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="openwit curate",
        description="Curate web (image url, caption) candidates into WebDataset shards with a ledger. "
        "Unknown flags go to Beam (e.g. --runner, --direct_num_workers, --direct_running_mode).",
        epilog="Later, on a finished output: `openwit curate --retry-failed OUT` re-attempts its transient "
        "failures; `openwit curate --extend OUT --input NEW` adds candidates (docs/incremental.md).",
    )
    flags.add_flags(p, CurateConfig)
    p.add_argument("--dry-run", action="store_true",
                   help="check inputs and options, print the stage plan and offline-stage counts on a sample; "
                        "download and write nothing")
    for title in GROUPS:
        flags.add_flags(p.add_argument_group(title), CurateConfig, group=title)
    # How the run shows its progress; not config (no effect on the output or its fingerprint).
    progress.add_flags(p)
    return p


def parse_curate_command(argv: list[str]) -> tuple[CurateConfig, list[str], bool]:
    """(config, Beam arguments, --dry-run); Beam gets every flag openwit does not define.
    A bad value, file or flag ends the command as a usage error (exit 2)."""
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    config = flags.parsed(parser, CurateConfig, args)
    try:
        config.check_files()
    except ValueError as err:
        parser.error(str(err))
    unknown = unknown_beam_args(beam_args)
    if unknown:
        parser.error(f"unrecognized arguments (neither openwit's nor Beam's): {' '.join(unknown)}")
    beam_args = with_default_runner(beam_args)
    check_beam_values(parser, beam_args)
    return config, beam_args, args.dry_run


def check_beam_values(parser, beam_args: list[str]) -> None:
    """openwit's own Beam options (pipeline/beam/options.py) checked before a run starts."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from openwit.pipeline.beam.options import fetch_workers

    try:
        fetch_workers(PipelineOptions(beam_args))
    except ValueError as err:
        parser.error(str(err))


def parse_curate_args(argv: list[str]) -> tuple[CurateConfig, list[str]]:
    """(config, Beam arguments) of a curate command line."""
    config, beam_args, _ = parse_curate_command(argv)
    return config, beam_args


def unknown_beam_args(beam_args: list[str]) -> list[str]:
    """Flags that no Beam PipelineOptions class defines: a typo like --theshold must fail
    loudly instead of being dropped by Beam with a log line while the run uses defaults."""
    from apache_beam.options import pipeline_options as po

    from openwit.pipeline.beam import options  # noqa: F401 - registers openwit's own (--fetch_workers)

    parser = po._BeamArgumentParser(allow_abbrev=False)  # the parser Beam itself uses
    for cls in {str(c): c for c in po.PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(beam_args)
    return [arg for arg in unknown if arg.startswith("-")]


def check_eval_hashes(path: str, hash_method: str) -> None:
    """The --decontaminate file exists, is ours, and holds hashes of `hash_method` (ValueError)."""
    if not os.path.isfile(path):
        raise ValueError(f"--decontaminate: no such file {path}")
    try:
        method = hash_method_of(path)
    except Exception as err:  # not Parquet, or not ours
        raise ValueError(f"--decontaminate: {err}") from err
    if method != hash_method:
        raise ValueError(f"--decontaminate: {path} holds {method} hashes but --hash-method is {hash_method}; "
                         f"export them again with --hash-method {hash_method}")


def with_default_runner(beam_args: list[str]) -> list[str]:
    if any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        return list(beam_args)
    return ["--runner", DEFAULT_RUNNER] + list(beam_args)
