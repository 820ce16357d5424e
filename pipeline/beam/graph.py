"""Builds and runs the curation pipeline: the Beam graph around the stages' plain functions.

Read | SamplePool (text, match, URL dedup, balance at t x slack) | DownloadAndDedup (download
+ image, score, decontamination, exact and near dedup) | BalanceFinal (t) | WriteShards, then
WriteStats and WriteLedger; each part is a named composite (`Part`). Record-at-a-time stages
go through `stage.apply_stage` (kept and dropped outputs); download streams through
`DownloadFn`, dedup groups through `dedup_groups`, and the writer through `WriteShardFn`, all
routing drops the same way (`stage.route`). The ledger is the union of every part's dropped
output plus the writer's kept output, so every candidate gets exactly one terminal record by
construction.
"""
from __future__ import annotations

import functools
from typing import Optional

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.options.pipeline_options import PipelineOptions

from openwit.pipeline.beam import balancing
from openwit.pipeline.output import layout, ledger, shards
from openwit.pipeline.beam.download_fn import DownloadFn
from openwit.pipeline.beam.options import fetch_workers
from openwit.pipeline.beam.stage import CANDIDATES, KEPT_COUNTER, apply_stage, count, load_once, route
from openwit.pipeline.common.urls import normalize_url
from openwit.pipeline.config import CurateConfig
from openwit.pipeline.output import files as output_files
from openwit.pipeline.stages import blocklist as blocklist_stage
from openwit.pipeline.stages import dedup, match, read, text, write
from openwit.schemas.record import DROPPED

# Builders: module-level so they pickle; each returns the per-record function.
def build_text(cfg: text.TextConfig):
    model = load_once("lid.176", text.load_lid_model)
    return lambda r: text.apply_text_rules(r, cfg, text.detect_language(model, r.caption))


def build_read():
    def counted(record):
        count(CANDIDATES)  # the funnel's first step, from Beam metrics
        return record

    return counted


def build_match(vocab_path: str, worldwide_path: Optional[str] = None):
    """The match stage; `worldwide_path`: --worldwide's per-language lists (None: English only)."""
    if worldwide_path:
        matcher = load_once(f"worldwide-matcher:{vocab_path}:{worldwide_path}",
                            lambda: match.WorldwideMatcher.from_vocab(vocab_path, worldwide_path))
    else:
        matcher = load_once(f"matcher:{vocab_path}", lambda: match.Matcher.from_vocab(vocab_path))
    return lambda r: match.match_record(r, matcher)


class WriteShardFn(beam.DoFn):
    def __init__(self, shards_dir: str):
        self.shards_dir = shards_dir

    def process(self, shard_and_records):
        shard, records = shard_and_records
        kept, digests = write.write_shard_recorded(shard, [r for r in records if r is not None], self.shards_dir)
        count(KEPT_COUNTER, len(kept))
        yield pvalue.TaggedOutput("sizes", (layout.shard_name(shard), len(kept)))
        for name_and_sha256 in digests:  # the manifest's digests come from these, not a re-read
            yield pvalue.TaggedOutput("digests", name_and_sha256)
        yield from kept


def read_stage(p: beam.Pipeline, cfg: CurateConfig):
    """-> (candidates, dropped): every input row as a Record; files are read in parallel."""
    files = read.expand_inputs(list(cfg.inputs))
    rows = (
        p
        | "InputFiles" >> beam.Create(files)
        | "ReadFiles" >> beam.FlatMap(lambda f: read.read_candidates(f[0], f[1], cfg.read))
    )
    candidates, dropped = apply_stage(rows, "read", build_read)
    blocklist = load_blocklist(cfg)
    if not blocklist:
        return candidates, dropped
    # right after read: a taken-down uid, URL or domain is never counted, balanced or fetched
    candidates, blocked = apply_stage(candidates, "takedown", functools.partial(build_check_named, blocklist))
    return candidates, (dropped, blocked) | "ReadDropped" >> beam.Flatten()


def load_blocklist(cfg: CurateConfig) -> blocklist_stage.Blocklist:
    """OUT's takedown blocklist, read once here (small); empty when nothing was taken down."""
    return blocklist_stage.Blocklist.load(cfg.blocklist or layout.blocklist_path(cfg.output))


def build_check_named(blocklist):
    return lambda r: blocklist_stage.check_named(r, blocklist)


def build_check_content(blocklist, k: int):
    def check(record):
        checked = blocklist_stage.check_content(record, blocklist, k)
        if checked.status == DROPPED and record.image_path:
            # the picture was taken down: its bytes leave staging again (every record with
            # these original bytes is blocked the same way, so none still needs them)
            output_files.remove(record.image_path)
        return checked.update(image_path=None) if checked.status == DROPPED else checked

    return check


def sample_pool(candidates, cfg: CurateConfig, vocab_size: int, with_text: bool = True) -> dict:
    """Text rules, matching and the pre-download balancing phase, before any download."""
    drops = []
    if with_text:
        candidates, dropped = apply_stage(candidates, "text", functools.partial(build_text, cfg.text))
        drops.append(dropped)
    matched, dropped = apply_stage(candidates, "match", functools.partial(build_match, cfg.vocab, cfg.worldwide_path))
    drops.append(dropped)
    matched, dropped = url_dedup(matched)
    pool = balancing.entry_counts(matched, "Pool", vocab_size)
    ranges = match.language_ranges(cfg.vocab, cfg.worldwide_path) if cfg.worldwide else None
    threshold = balancing.choose_threshold(pool, cfg.threshold, cfg.tail_fraction, ranges)
    sampled, balanced_out = balancing.balance_phase(
        matched, "pre", pool, threshold, cfg.pre_download_slack, cfg.seed
    )
    return {"sampled": sampled, "drops": drops + [dropped, balanced_out], "pool": pool, "threshold": threshold}


def dedup_groups(keyed, label: str, group_fn):
    """(key, record) -> (kept, dropped): group_fn decides each group's survivors."""
    out = (
        keyed
        | f"Group{label}" >> beam.GroupByKey()
        | label >> beam.FlatMap(lambda kv: (route(r) for r in group_fn(kv[1]))).with_outputs(DROPPED, main="kept")
    )
    return out.kept, out[DROPPED]


def url_dedup(matched):
    """One download per normalised URL, before balancing counts the pool."""
    keyed = matched | "ByUrl" >> beam.Map(lambda r: (normalize_url(r.url), r))
    return dedup_groups(keyed, "UrlDedup", dedup.url_dedup_group)


def build_decontaminate(path: str, k: int):
    eval_hashes = load_once(f"eval-hashes:{path}", lambda: dedup.EvalHashes.load(path))
    return lambda r: dedup.decontaminate(r, eval_hashes, k)


def build_score(checkpoint: str, min_score: float):
    from openwit.pipeline.stages import score

    scorer = load_once(f"scorer:{checkpoint}", lambda: score.Scorer(checkpoint))
    return lambda r: score.score_record(r, scorer, min_score)


def near_dedup(records, k: int, mode: str = "image"):
    """Near-duplicate clusters over pHash, distributed: distinct hash values -> k+1 band
    keys -> verified edges inside each band group -> connected components (one global
    step over the edges only) -> each record joined to its component -> star clustering
    inside each component: survivors pairwise farther than k, every drop within k of the
    survivor it names (per component and caption in `image+caption` mode)."""
    keyed = records | "ByPhash" >> beam.Map(lambda r: (r.phash or f"uid:{r.uid}", r))
    edges = (
        keyed
        | "PhashValues" >> beam.Keys()
        | "DistinctPhash" >> beam.Distinct()
        | "BandKeys" >> beam.FlatMap(
            lambda h: [] if h.startswith("uid:") else [(key, h) for key in dedup.band_keys(h, k)])
        | "GroupBand" >> beam.GroupByKey()
        | "VerifyBand" >> beam.FlatMap(lambda kv: dedup.edges_in_band(kv[0][0], kv[1], k))
    )
    labels = (
        edges
        | "AllEdges" >> beam.combiners.ToList()
        | "Components" >> beam.FlatMap(
            lambda all_edges: list(dedup.cluster_labels(all_edges).items()))
    )
    clustered = (
        {"records": keyed, "cluster": labels}
        | "JoinCluster" >> beam.CoGroupByKey()
        | "ByCluster" >> beam.FlatMap(
            lambda kv: ((dedup.cluster_key(next(iter(kv[1]["cluster"]), kv[0]), r, mode), r)
                        for r in kv[1]["records"]))
    )
    return dedup_groups(clustered, "NearDedup", functools.partial(dedup.near_dup_group, k=k))


def download_and_dedup(sampled, cfg: CurateConfig, staging_dir: str):
    """-> (unique survivors, [dropped]): download, image rules, the model score, decontamination,
    exact and near-duplicate dedup."""
    downloaded = (
        sampled
        | "SpreadDownloads" >> beam.Reshuffle()
        | "Download" >> beam.ParDo(DownloadFn(cfg, staging_dir, fetch_workers(sampled.pipeline.options)))
        .with_outputs(DROPPED, main="kept")
    )
    survivors, drops = downloaded.kept, [downloaded[DROPPED]]
    blocklist = load_blocklist(cfg)
    if blocklist:  # the same picture as a taken-down one, under another URL
        survivors, dropped = apply_stage(survivors, "takedown", functools.partial(
            build_check_content, blocklist, dedup.content_distance(cfg.near_dup_distance)))
        drops.append(dropped)
    if cfg.score_model:  # before dedup: a duplicate group's survivor must be a pair that passed
        survivors, dropped = apply_stage(
            survivors, "score", functools.partial(build_score, cfg.score_model, cfg.min_score))
        drops.append(dropped)
    if cfg.decontaminate:
        k = dedup.content_distance(cfg.near_dup_distance)
        survivors, dropped = apply_stage(
            survivors, "dedup", functools.partial(build_decontaminate, cfg.decontaminate, k))
        drops.append(dropped)
    keyed = survivors | "ByImage" >> beam.Map(lambda r, mode: (dedup.exact_key(r, mode), r), cfg.exact_dedup)
    survivors, dropped = dedup_groups(keyed, "ExactDedup", dedup.dedup_group)
    drops.append(dropped)
    if cfg.near_dup_distance >= 0:
        survivors, dropped = near_dedup(survivors, cfg.near_dup_distance, cfg.exact_dedup)
        drops.append(dropped)
    return survivors, drops


class Part(beam.PTransform):
    """A named composite around a function that builds one part of the graph, so the
    runner's UI shows the same parts as `build_pipeline` (Read, SamplePool, ...)."""

    def __init__(self, build, *args):
        super().__init__()
        self._build, self._args = build, args

    def expand(self, pvalueish):
        return self._build(pvalueish, *self._args)


def flatten(drops: list, label: str):
    return drops | label >> beam.Flatten()


def pool_part(candidates, cfg: CurateConfig, vocab_size: int) -> dict:
    pool = sample_pool(candidates, cfg, vocab_size)
    return {"sampled": pool["sampled"], "dropped": flatten(pool["drops"], "Dropped"), "pool": pool["pool"],
            "threshold": pool["threshold"]}


def download_part(sampled, cfg: CurateConfig, staging_dir: str):
    survivors, drops = download_and_dedup(sampled, cfg, staging_dir)
    return survivors, flatten(drops, "Dropped")


def balance_final(survivors, cfg: CurateConfig, vocab_size: int, threshold):
    """The final balancing phase at t, on the survivors' own counts."""
    counts = balancing.entry_counts(survivors, "Survivor", vocab_size)
    return balancing.balance_phase(survivors, "final", counts, threshold, cfg.pre_download_slack, cfg.seed)


def build_pipeline(p: beam.Pipeline, cfg: CurateConfig, vocab_size: int) -> None:
    """Read | SamplePool | DownloadAndDedup | BalanceFinal | WriteShards, then the stats and
    the ledger: every part's dropped records plus the written ones."""
    # --retry-failed and --extend rebuild elsewhere and reuse OUT's staging
    staging_dir = cfg.staging_dir or layout.staging_dir(cfg.output)
    candidates, read_dropped = p | "Read" >> Part(read_stage, cfg)
    pool = candidates | "SamplePool" >> Part(pool_part, cfg, vocab_size)
    survivors, dedup_dropped = pool["sampled"] | "DownloadAndDedup" >> Part(download_part, cfg, staging_dir)
    final, final_dropped = survivors | "BalanceFinal" >> Part(balance_final, cfg, vocab_size, pool["threshold"])
    written = final | "WriteShards" >> Part(write_shards, cfg, layout.shards_dir(cfg.output))
    p | "WriteStats" >> Part(write_stats, cfg, vocab_size, pool, written.kept)
    terminal = [read_dropped, pool["dropped"], dedup_dropped, final_dropped, written.kept] | "Terminal" >> beam.Flatten()
    terminal | "WriteLedger" >> Part(write_ledger, cfg, layout.ledger_dir(cfg.output))


def write_stats(p, cfg: CurateConfig, vocab_size: int, pool: dict, kept):
    pre = balancing.entry_counts(pool["sampled"], "PreKept", vocab_size)
    final = balancing.entry_counts(kept, "FinalKept", vocab_size)
    return (
        p
        | "StatsTrigger" >> beam.Create([None])
        | "WriteEntryStats" >> beam.Map(
            lambda _, pool_counts, pre_counts, final_counts, t: balancing.write_entry_stats(
                cfg.output, match.entry_names(cfg.vocab, cfg.worldwide_path), pool_counts, pre_counts, final_counts, t,
                cfg.pre_download_slack, cfg.tail_fraction),
            *(pvalue.AsSingleton(c) for c in (pool["pool"], pre, final, pool["threshold"])),
        )
    )


def write_shards(survivors, cfg: CurateConfig, shards_dir: str):
    n_shards = (
        survivors
        | "CountKept" >> beam.combiners.Count.Globally()
        | "ShardCount" >> beam.Map(lambda kept: cfg.shard_count or write.shard_count(kept, cfg.samples_per_shard))
    )
    assigned = survivors | "AssignShard" >> beam.Map(
        lambda r, n: (write.shard_of(r.uid, n), r), pvalue.AsSingleton(n_shards)
    )
    # Every shard id gets a placeholder, so an empty bucket still gives a (tiny) shard and
    # shard names stay contiguous for {00000..0000N} patterns.
    placeholders = n_shards | "EveryShard" >> beam.FlatMap(lambda n: [(shard, None) for shard in range(n)])
    written = (
        (assigned, placeholders)
        | "WithPlaceholders" >> beam.Flatten()
        | "GroupShard" >> beam.GroupByKey()
        | "WriteShard" >> beam.ParDo(WriteShardFn(shards_dir)).with_outputs("sizes", "digests", main="kept")
    )
    _ = (
        written.sizes
        | "AllSizes" >> beam.combiners.ToList()
        | "WriteSizes" >> beam.Map(shards.write_sizes, shards_dir)
    )
    _ = (
        written.digests
        | "AllDigests" >> beam.combiners.ToList()
        | "RecordDigests" >> beam.Map(lambda digests: shards.record_digests(shards_dir, digests, replace=True))
    )
    return written


def write_ledger(terminal, cfg: CurateConfig, ledger_dir: str):
    return (
        terminal
        | "ByLedgerPart" >> beam.Map(lambda r: (ledger.ledger_part(r.uid, cfg.ledger_parts), r))
        | "GroupLedgerPart" >> beam.GroupByKey()
        | "WriteLedgerPart" >> beam.MapTuple(lambda part, rs: ledger.write_ledger_part(ledger_dir, part, list(rs)))
    )


def run_pipeline(cfg: CurateConfig, beam_args: list[str]):
    vocab_size = match.vocab_size(cfg.vocab, cfg.worldwide_path)
    p = beam.Pipeline(options=PipelineOptions(beam_args))
    build_pipeline(p, cfg, vocab_size)
    result = p.run()
    result.wait_until_finish()
    return result
