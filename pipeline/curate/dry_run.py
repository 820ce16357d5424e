"""`openwit curate --dry-run`: check the inputs and options, print the stage plan, and run
the stages that need no network (read, text rules and language ID, matching, URL dedup) on a
sample of each input. Nothing is downloaded and nothing is written."""
from __future__ import annotations

import itertools
from collections import Counter

from openwit.pipeline.config import CurateConfig
from openwit.pipeline.common.urls import normalize_url
from openwit.pipeline.stages import match, read
from openwit.schemas.record import ACTIVE


def sample_candidates(cfg: CurateConfig, per_input: int) -> list:
    """The first `per_input` candidates of every input file (a missing file raises here)."""
    files = read.expand_inputs(list(cfg.inputs))
    return [record for path, name in files
            for record in itertools.islice(read.read_candidates(path, name, cfg.read), per_input)]


def sample_funnel(cfg: CurateConfig, records: list) -> Counter:
    """Outcome of each sampled candidate through the offline stages: a drop reason or 'to download'."""
    from openwit.pipeline.beam.graph import build_match, build_text  # the pipeline's own stage functions

    text_rules, matcher = build_text(cfg.text), build_match(cfg.vocab, cfg.worldwide_path)
    outcomes, urls = Counter(), set()
    for record in records:
        if record.status == ACTIVE:
            record = text_rules(record)
        if record.status == ACTIVE:
            record = matcher(record)
        if record.status == ACTIVE:
            url = normalize_url(record.url)
            outcomes["duplicate_url" if url in urls else "to download"] += 1
            urls.add(url)
            continue
        outcomes[f"{record.stage}: {record.reason}"] += 1
    return outcomes


def plan_lines(cfg: CurateConfig) -> list[str]:
    t, image = cfg.text, cfg.image
    threshold = f"--tail-fraction {cfg.tail_fraction}" if cfg.tail_fraction else f"t = {cfg.threshold}"
    if cfg.worldwide:
        threshold += " for English, each other language the t giving English's tail share"
    return [
        f"read       {len(read.expand_inputs(list(cfg.inputs)))} input file(s): {', '.join(cfg.inputs)}",
        f"text       > {t.min_caption_chars - 1} chars, > {t.min_caption_words - 1} words, junk rules "
        f"{'on' if t.junk_rules else 'off'}, languages {','.join(t.languages) or 'all'}"
        f"{f', min score {t.min_language_score}' if t.min_language_score else ''}",
        f"match      {len(match.read_vocab(cfg.vocab)):,} vocabulary entries ({cfg.vocab})",
        "url_dedup  one download per normalised URL",
        f"balance    {threshold}, pre-download slack {cfg.pre_download_slack}, seed {cfg.seed}",
        f"download   timeout {cfg.download.timeout}s, retries {cfg.download.retries}, "
        f"{cfg.download.concurrency} in flight, {cfg.download.per_host} per host",
        f"image      shorter side >= {image.min_image_size}, aspect <= {image.max_aspect_ratio or 'any'}, "
        f"resize {image.resize_mode} to {image.image_size}, {image.output_format}",
        *([f"score      cosine of {cfg.score_model}, drop below {cfg.min_score}"] if cfg.score_model else []),
        f"dedup      exact {cfg.exact_dedup}, near-duplicates "
        f"{'off' if cfg.near_dup_distance < 0 else f'{image.hash_method} <= {cfg.near_dup_distance} bits'}"
        f"{f', decontaminate against {cfg.decontaminate}' if cfg.decontaminate else ''}",
        f"write      {cfg.samples_per_shard:,} samples per shard into {cfg.output}",
    ]


def dry_run(cfg: CurateConfig, per_input: int = 1000) -> str:
    records = sample_candidates(cfg, per_input)
    outcomes = sample_funnel(cfg, records)
    lines = ["stage plan:"] + ["  " + line for line in plan_lines(cfg)]
    lines += ["", f"sample: the first {per_input} candidates of each input ({len(records)} read), offline stages only:"]
    lines += [f"  {name:<36}{n:>8}{100 * n / max(1, len(records)):>8.1f}%" for name, n in outcomes.most_common()]
    lines += ["", "nothing was downloaded or written (dry run)"]
    return "\n".join(lines)
