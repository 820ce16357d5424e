"""`openwit curate` options: one frozen config built once from argv, never mutated.

Flags openwit does not know pass through to Beam's PipelineOptions (--runner,
--direct_num_workers, --direct_running_mode, --temp_location, --setup_file, ...). Local
runs default to FnApiRunner: Beam's DirectRunner first tries to download the Prism binary.
"""
from __future__ import annotations

import argparse
import os
import re
import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from openwit.pipeline.stages.dedup import DEDUP_KEYS
from openwit.pipeline.download.client import DownloadConfig
from openwit.pipeline.common.neardup import DEFAULT_DISTANCE
from openwit.pipeline.stages.image import HASH_METHODS, RESIZE_MODES, ImageConfig
from openwit.pipeline.stages.read import FORMATS, ReadConfig
from openwit.pipeline.stages.text import TextConfig
from openwit.query_lists.build import shipped_list_path

DEFAULT_RUNNER = "FnApiRunner"


@dataclass(frozen=True)
class CurateConfig:
    inputs: tuple[str, ...]
    vocab: str
    output: str
    seed: int = 0
    threshold: int = 20_000  # ignored when tail_fraction is set
    tail_fraction: Optional[float] = None
    pre_download_slack: float = 2.0
    samples_per_shard: int = 10_000
    shard_count: int = 0  # 0: ceil(kept / samples_per_shard); fixed by --retry-failed and --extend
    staging_dir: Optional[str] = None  # default OUT/staging
    ledger_parts: int = 8
    overwrite: bool = False
    exact_dedup: str = "image"
    near_dup_distance: int = DEFAULT_DISTANCE  # -1: no near-duplicate dedup
    decontaminate: Optional[str] = None
    score_model: Optional[str] = None  # an openwit checkpoint: score image-caption pairs
    min_score: float = -1.0  # cosine below which --score-model drops a pair (-1: record only)
    read: ReadConfig = field(default_factory=ReadConfig)
    text: TextConfig = field(default_factory=TextConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    image: ImageConfig = field(default_factory=ImageConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="openwit curate",
        description="Curate web (image url, caption) candidates into WebDataset shards with a ledger. "
        "Unknown flags go to Beam (e.g. --runner, --direct_num_workers, --direct_running_mode).",
        epilog="Later, on a finished output: `openwit curate --retry-failed OUT` re-attempts its transient "
        "failures; `openwit curate --extend OUT --input NEW` adds candidates (docs/incremental.md).",
    )
    p.add_argument("--input", action="append", required=True, help="input file or glob (repeatable)")
    p.add_argument("--vocab", default=None,
                   help="vocabulary file: one entry a line (.txt or .txt.gz); default: the shipped 450K list")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="seed of the balancing draw")
    cap = p.add_mutually_exclusive_group()
    cap.add_argument("--threshold", type=int, default=20_000, help="balancing cap t per vocabulary entry (20K at 400M)")
    cap.add_argument("--tail-fraction", type=float, default=None,
                     help="choose t so that entries with fewer than t matches hold this share of all matches "
                          "(MetaCLIP: ~0.06)")
    p.add_argument("--pre-download-slack", type=float, default=2.0,
                   help="balance at t x slack before download, at t after dedup (docs/balancing.md)")
    p.add_argument("--samples-per-shard", type=int, default=10_000)
    p.add_argument("--shard-count", type=int, default=0,
                   help="number of shard buckets (0: kept / --samples-per-shard); the manifest records it, "
                        "and --retry-failed and --extend keep it so the layout stays stable")
    p.add_argument("--ledger-parts", type=int, default=8, help="number of ledger Parquet parts")
    p.add_argument("--overwrite", action="store_true", help="replace a different run's output")
    p.add_argument("--dry-run", action="store_true",
                   help="check inputs and options, print the stage plan and offline-stage counts on a sample; "
                        "download and write nothing")
    g = p.add_argument_group("input")
    g.add_argument("--input-format", choices=FORMATS, default=None, help="default: from the extension")
    g.add_argument("--url-col", default="url")
    g.add_argument("--caption-col", default="caption")
    g.add_argument("--page-url-col", default="page_url")
    g = p.add_argument_group("text rules")
    t = TextConfig()
    g.add_argument("--min-caption-chars", type=int, default=t.min_caption_chars)
    g.add_argument("--min-caption-words", type=int, default=t.min_caption_words,
                   help="CJK, Thai and other scripts without spaces count one word a character")
    g.add_argument("--languages", default=",".join(t.languages),
                   help="comma-separated fastText codes to keep (default: en, as WIT); 'all' keeps every language")
    g.add_argument("--min-language-score", type=float, default=t.min_language_score,
                   help="drop captions whose language ID confidence is below this (0-1)")
    g.add_argument("--no-junk-rules", action="store_true",
                   help="keep file-name-like, URL-only and digits-only alt-texts")
    g.add_argument("--caption-blocklist", default=None,
                   help="file of words or phrases (one a line) whose presence drops a caption")
    g = p.add_argument_group("download")
    d = DownloadConfig()
    g.add_argument("--timeout", type=float, default=d.timeout, help="total seconds per attempt: connect, headers, body")
    g.add_argument("--retries", type=int, default=d.retries, help="retries of transient failures, with backoff")
    g.add_argument("--max-retry-after", type=float, default=d.max_retry_after,
                   help="longest Retry-After honoured; longer ends the retries")
    g.add_argument("--max-image-bytes", type=int, default=d.max_image_bytes)
    g.add_argument("--max-redirects", type=int, default=d.max_redirects)
    g.add_argument("--download-concurrency", type=int, default=d.concurrency, help="downloads in flight per worker")
    g.add_argument("--per-host-connections", type=int, default=d.per_host)
    g.add_argument("--user-agent-contact", default=d.contact, help="URL in the User-Agent for site owners")
    g.add_argument("--disallowed-header-directives", default=",".join(d.disallowed_header_directives),
                   help="X-Robots-Tag directives that opt an image out (comma-separated; empty: none)")
    g.add_argument("--allow-loopback", action="store_true",
                   help="allow 127.0.0.0/8 and ::1 (local tests and the demo); other private addresses stay refused")
    g.add_argument("--max-host-rate", type=float, default=DownloadConfig.host_rate, metavar="R",
                   help="request starts per second per host and worker process (0: only --per-host-connections)")
    g.add_argument("--breaker-failure-ratio", type=float, default=DownloadConfig.breaker_failure_ratio,
                   help="pause a host when this share of its last 20 attempts (10 at least) failed transiently; "
                        "its URLs end as domain_unavailable (retryable); 0: never pause")
    g.add_argument("--breaker-cooldown", type=float, default=DownloadConfig.breaker_cooldown,
                   help="seconds a paused host waits before one probe request")
    g.add_argument("--dns-server", default=None, metavar="HOST:PORT",
                   help="ask this DNS server directly (A records over UDP) instead of the system resolver")
    g.add_argument("--dns-cache-ttl", type=float, default=DownloadConfig.dns_ttl,
                   help="seconds a resolved host stays cached per worker")
    g.add_argument("--dns-negative-ttl", type=float, default=DownloadConfig.dns_negative_ttl,
                   help="seconds an NXDOMAIN answer stays cached per worker")
    g.add_argument("--dns-concurrency", type=int, default=DownloadConfig.dns_concurrency,
                   help="DNS queries in flight per worker (the rest wait; a burst never floods the resolver)")
    g = p.add_argument_group("image")
    g.add_argument("--image-size", type=int, default=256)
    g.add_argument("--resize-mode", choices=RESIZE_MODES, default="border")
    g.add_argument("--resize-only-if-bigger", action="store_true")
    g.add_argument("--output-format", choices=("jpg", "png", "webp"), default="jpg")
    g.add_argument("--encode-quality", type=int, default=ImageConfig.quality, help="jpg/webp quality (1-100)")
    g.add_argument("--min-image-size", type=int, default=ImageConfig.min_image_size,
                   help="minimum shorter side of the original image (DataComp basic: 200)")
    g.add_argument("--max-aspect-ratio", type=float, default=ImageConfig.max_aspect_ratio,
                   help="longer side / shorter side of the original (DataComp basic: 3); 0: no limit")
    g.add_argument("--hash-method", choices=tuple(HASH_METHODS), default=ImageConfig.hash_method,
                   help="64-bit perceptual hash for near-duplicates and decontamination (imagehash)")
    g = p.add_argument_group("dedup")
    g.add_argument("--exact-dedup", choices=DEDUP_KEYS, default="image",
                   help="image: one sample per image sha256; image+caption: only identical image and caption")
    g.add_argument("--near-dup-distance", type=int, default=DEFAULT_DISTANCE,
                   help="pHash Hamming distance (of 64 bits) at which images are near-duplicates; -1: off")
    g.add_argument("--decontaminate", default=None,
                   help="hashes.parquet from `openwit hashes export`: drop candidates within --near-dup-distance "
                        "of an eval image (exact pHash matches only when near-dup dedup is off)")
    g.add_argument("--max-pixels", type=int, default=ImageConfig.max_pixels,
                   help="decompression-bomb guard, checked from the header before decoding")
    g = p.add_argument_group("model score (DataComp's CLIP-score filter, with a model you trained)")
    g.add_argument("--score-model", default=None,
                   help="an openwit checkpoint (openwit train): record the image-caption cosine of every pair "
                        "that passes the image rules (before dedup), in the ledger's clip_score")
    g.add_argument("--min-score", type=float, default=-1.0,
                   help="drop pairs whose --score-model cosine is below this (reason low_clip_score); "
                        "-1 records scores without dropping")
    return p


def parse_curate_args(argv: list[str]) -> tuple[CurateConfig, list[str]]:
    """(config, Beam arguments); Beam gets every flag openwit does not define."""
    args, beam_args = build_parser().parse_known_args(argv)
    try:
        languages = parse_languages(args.languages)
    except argparse.ArgumentTypeError as err:
        build_parser().error(str(err))
    config = CurateConfig(
        inputs=tuple(args.input),
        vocab=args.vocab or shipped_list_path(),
        output=args.output,
        seed=args.seed,
        threshold=args.threshold,
        tail_fraction=args.tail_fraction,
        pre_download_slack=args.pre_download_slack,
        samples_per_shard=args.samples_per_shard,
        shard_count=args.shard_count,
        ledger_parts=args.ledger_parts,
        overwrite=args.overwrite,
        exact_dedup=args.exact_dedup,
        near_dup_distance=args.near_dup_distance,
        decontaminate=args.decontaminate,
        score_model=args.score_model,
        min_score=args.min_score,
        read=ReadConfig(args.input_format, args.url_col, args.caption_col, args.page_url_col),
        text=TextConfig(
            args.min_caption_chars,
            args.min_caption_words,
            languages,
            min_language_score=args.min_language_score,
            junk_rules=not args.no_junk_rules,
            blocklist=read_blocklist(args.caption_blocklist),
        ),
        download=DownloadConfig(
            timeout=args.timeout, retries=args.retries, max_retry_after=args.max_retry_after,
            max_image_bytes=args.max_image_bytes, max_redirects=args.max_redirects,
            concurrency=args.download_concurrency, per_host=args.per_host_connections, contact=args.user_agent_contact,
            disallowed_header_directives=tuple(d.strip().lower() for d in args.disallowed_header_directives.split(",")
                                               if d.strip()),
            allow_loopback=args.allow_loopback,
            dns_server=args.dns_server, dns_ttl=args.dns_cache_ttl, dns_negative_ttl=args.dns_negative_ttl,
            dns_concurrency=args.dns_concurrency, host_rate=args.max_host_rate,
            breaker_failure_ratio=args.breaker_failure_ratio, breaker_cooldown=args.breaker_cooldown,
        ),
        image=ImageConfig(
            image_size=args.image_size, resize_mode=args.resize_mode,
            resize_only_if_bigger=args.resize_only_if_bigger, output_format=args.output_format,
            quality=args.encode_quality,
            min_image_size=args.min_image_size, max_aspect_ratio=args.max_aspect_ratio, max_pixels=args.max_pixels,
            hash_method=args.hash_method,
        ),
    )
    if args.pre_download_slack < 1:
        build_parser().error("--pre-download-slack must be >= 1: a smaller pre-download cap would starve entries")
    if args.decontaminate:
        check_eval_hashes(args.decontaminate, args.hash_method)
    if not 0 <= args.breaker_failure_ratio <= 1:
        build_parser().error("--breaker-failure-ratio is a share: between 0 and 1 (0: off)")
    if args.max_host_rate < 0:
        build_parser().error("--max-host-rate must be >= 0")
    if args.dns_server and not re.fullmatch(r"[^\s:]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5}", args.dns_server):
        build_parser().error(f"--dns-server takes HOST:PORT, got {args.dns_server!r}")
    if args.score_model and not os.path.isfile(args.score_model):
        build_parser().error(f"--score-model: no such file {args.score_model}")
    if not -1 <= args.min_score <= 1:
        build_parser().error("--min-score is a cosine: between -1 and 1")
    if args.min_score > -1 and not args.score_model:
        build_parser().error("--min-score needs --score-model")
    if not 0 <= args.min_language_score <= 1:
        build_parser().error("--min-language-score is a probability: between 0 and 1")
    if args.near_dup_distance > 32:
        build_parser().error("--near-dup-distance above 32 of 64 bits would merge unrelated images")
    unknown = unknown_beam_args(beam_args)
    if unknown:
        build_parser().error(f"unrecognized arguments (neither openwit's nor Beam's): {' '.join(unknown)}")
    return config, with_default_runner(beam_args)


def unknown_beam_args(beam_args: list[str]) -> list[str]:
    """Flags that no Beam PipelineOptions class defines: a typo like --theshold must fail
    loudly instead of being dropped by Beam with a log line while the run uses defaults."""
    from apache_beam.options import pipeline_options as po

    parser = po._BeamArgumentParser(allow_abbrev=False)  # the parser Beam itself uses
    for cls in {str(c): c for c in po.PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(beam_args)
    return [arg for arg in unknown if arg.startswith("-")]


def check_eval_hashes(path: str, hash_method: str) -> None:
    from openwit.pipeline.audit.hashes import hash_method_of

    if not os.path.isfile(path):
        build_parser().error(f"--decontaminate: no such file {path}")
    try:
        method = hash_method_of(path)
    except Exception as err:  # not Parquet, or not ours
        build_parser().error(f"--decontaminate: {err}")
    if method != hash_method:
        build_parser().error(f"--decontaminate: {path} holds {method} hashes but --hash-method is {hash_method}; "
                             f"export them again with --hash-method {hash_method}")


def parse_languages(value: str) -> tuple[str, ...]:
    """'en,de' -> ('en', 'de'); 'all' (or empty) -> () which keeps every language."""
    codes = tuple(code.strip() for code in value.split(",") if code.strip())
    if "all" in codes and len(codes) > 1:
        raise argparse.ArgumentTypeError("--languages: 'all' keeps every language; list codes or 'all', not both")
    return () if codes in ((), ("all",)) else codes


def read_blocklist(path) -> tuple[str, ...]:
    """Lower-case terms, one a line; words are compared whole, so "ass" does not hit "class"."""
    if not path:
        return ()
    with open(path, encoding="utf-8") as f:
        return tuple(" ".join(line.lower().split()) for line in f if line.strip() and not line.startswith("#"))


def with_default_runner(beam_args: list[str]) -> list[str]:
    if any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        return list(beam_args)
    return ["--runner", DEFAULT_RUNNER] + list(beam_args)
