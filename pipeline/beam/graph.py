"""Builds and runs the curation pipeline: the Beam graph around the stages' plain functions.

read -> text -> match -> balance (pre, t x slack) -> download + image -> dedup ->
balance (final, t) -> write. Every stage goes through `beam_stage.apply_stage` (kept and
dropped outputs). The ledger is the union of every stage's dropped output plus the writer's
kept output, so every candidate gets exactly one terminal record by construction.
"""
from __future__ import annotations

import functools
import os
import queue
import sys
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from openwit.pipeline.beam import balancing
from openwit.pipeline.output import ledger
from openwit.pipeline.beam.stage import apply_stage, count, guarded, load_once, route
from openwit.pipeline.config import CurateConfig
from openwit.pipeline.stages import dedup, match, read, text, write
from openwit.pipeline.stages import download as fetch
from openwit.pipeline.download.client import Downloader
from openwit.schemas.record import DROPPED, drop_internal_error

# Builders: module-level so they pickle; each returns the per-record function.
def build_text(cfg: text.TextConfig):
    model = load_once("lid.176", text.load_lid_model)
    return lambda r: text.apply_text_rules(r, cfg, text.detect_language(model, r.caption))


def build_read():
    def counted(record):
        count("candidates")  # the funnel's first step, from Beam metrics
        return record

    return counted


def build_match(vocab_path: str):
    matcher = load_once(f"matcher:{vocab_path}", lambda: match.Matcher.from_vocab(vocab_path))
    return lambda r: match.match_record(r, matcher)


class DownloadFn(beam.DoFn):
    """Streams records through downloads: each record is submitted when it arrives and its
    result is emitted when ready, so a URL that hangs until its deadline holds one download
    slot, not a batch. Downloads run on the Downloader's event loop; decode and resize run
    in a small thread pool sized to the cores (Pillow releases the GIL while it works)."""

    def __init__(self, cfg: CurateConfig, staging_dir: str):
        self.cfg = cfg
        self.staging_dir = staging_dir

    def setup(self):
        # The event loop thread must get the GIL back promptly while image threads run:
        # at Python's default 5 ms switch interval it starves (measured: 330 vs 445 images/s).
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
        self.downloader = Downloader(self.cfg.download)
        self.cpu = ThreadPoolExecutor(2 * (os.cpu_count() or 1), thread_name_prefix="openwit-image")
        # Receipt lookups are I/O (a round trip on remote staging): their own pool, so they
        # never queue behind image work and delay downloads.
        self.receipts = ThreadPoolExecutor(8, thread_name_prefix="openwit-receipt")
        self.stage = functools.partial(fetch.stage_image, self.staging_dir)
        self.finish_one = guarded(self.finish, "download")

    def receipt_key(self, record) -> str:
        return fetch.receipt_key(record.url, self.cfg.image, self.cfg.download)

    def reuse_staged(self, record):
        return fetch.reuse_receipt(self.staging_dir, self.receipt_key(record), record)

    def finish(self, record, download):
        done = fetch.record_from_download(record, download.result(), self.cfg.image, self.stage)
        if fetch.lasting(done):
            fetch.save_receipt(self.staging_dir, self.receipt_key(record), done)
        return done

    def start_bundle(self):
        self.in_flight = 0
        self.finished = queue.SimpleQueue()  # done records arrive here, in completion order

    def submit(self, record) -> None:
        finished = self.finished  # this bundle's queue, even if the callbacks fire late

        def back(result):
            finished.put(result)

        def processed(task):
            try:
                back(task.result())  # finish_one is guarded; this catches what is left
            except BaseException as err:  # noqa: BLE001 - the record must come back, whatever happened
                back(drop_internal_error(record, "download", err))

        def downloaded(download):
            try:
                self.cpu.submit(self.finish_one, record, download).add_done_callback(processed)
            except BaseException as err:  # noqa: BLE001 - e.g. the pool is shutting down
                back(drop_internal_error(record, "download", err))

        def reused_or_download(task):
            try:
                reused = task.result()
            except Exception:  # noqa: BLE001 - an unreadable receipt only costs a download
                reused = None
            try:
                if reused is not None:  # an earlier (crashed) run's download, staged and receipted
                    back(reused)
                else:
                    self.downloader.submit(record.url).add_done_callback(downloaded)
            except BaseException as err:  # noqa: BLE001 - e.g. the loop is shutting down
                back(drop_internal_error(record, "download", err))

        self.receipts.submit(self.reuse_staged, record).add_done_callback(reused_or_download)
        self.in_flight += 1

    def take(self, block: bool):
        while True:
            try:
                record = self.finished.get(block=block, timeout=60 if block else None)
                break
            except queue.Empty:
                if not self.downloader.alive():  # nothing in flight can finish any more
                    raise RuntimeError("openwit's download event loop stopped; the bundle fails so it is retried")
        self.in_flight -= 1
        return route(record)

    def process(self, record):
        self.submit(record)
        if self.in_flight >= 8 * self.cfg.download.concurrency:  # keeps the pipes full, bounds memory
            yield self.take(block=True)
        while not self.finished.empty():
            yield self.take(block=False)

    def finish_bundle(self):
        while self.in_flight:
            out = self.take(block=True)
            if isinstance(out, pvalue.TaggedOutput):
                yield pvalue.TaggedOutput(out.tag, _in_global_window(out.value))
            else:
                yield _in_global_window(out)

    def teardown(self):
        self.cpu.shutdown(wait=False)
        self.receipts.shutdown(wait=False)
        self.downloader.close()


def _in_global_window(value):
    return WindowedValue(value, MIN_TIMESTAMP, [GlobalWindow()])


class WriteShardFn(beam.DoFn):
    def __init__(self, shards_dir: str):
        self.shards_dir = shards_dir

    def process(self, shard_and_records):
        shard, records = shard_and_records
        kept = write.write_shard(shard, [r for r in records if r is not None], self.shards_dir)
        count("kept", len(kept))
        yield pvalue.TaggedOutput("sizes", (write.shard_name(shard), len(kept)))
        yield from kept


def output_paths(out_dir: str) -> dict:
    return {name: os.path.join(out_dir, name) for name in ("shards", "ledger", "staging")}


def read_stage(p: beam.Pipeline, cfg: CurateConfig):
    """-> (candidates, dropped): every input row as a Record; files are read in parallel."""
    files = read.expand_inputs(list(cfg.inputs))
    rows = (
        p
        | "InputFiles" >> beam.Create(files)
        | "ReadFiles" >> beam.FlatMap(lambda f: read.read_candidates(f[0], f[1], cfg.read))
    )
    return apply_stage(rows, "read", build_read)


def sample_pool(candidates, cfg: CurateConfig, vocab_size: int, with_text: bool = True) -> dict:
    """Text rules, matching and the pre-download balancing phase, before any download."""
    drops = []
    if with_text:
        candidates, dropped = apply_stage(candidates, "text", functools.partial(build_text, cfg.text))
        drops.append(dropped)
    matched, dropped = apply_stage(candidates, "match", functools.partial(build_match, cfg.vocab))
    drops.append(dropped)
    matched, dropped = url_dedup(matched)
    pool = balancing.count_entries(matched, "Pool", vocab_size)
    threshold = balancing.choose_threshold(pool, cfg.threshold, cfg.tail_fraction)
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
    keyed = matched | "ByUrl" >> beam.Map(lambda r: (dedup.normalize_url(r.url), r))
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
    step over the edges only) -> each record joined to its cluster -> one survivor each
    (per cluster and caption in `image+caption` mode, which keeps other captions)."""
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
    return dedup_groups(clustered, "NearDedup", dedup.near_dup_group)


def fetch_and_dedup(sampled, cfg: CurateConfig, staging_dir: str):
    """-> (unique survivors, [dropped]): download, image rules, the model score, decontamination,
    exact and near-duplicate dedup."""
    fetched = (
        sampled
        | "SpreadDownloads" >> beam.Reshuffle()
        | "Download" >> beam.ParDo(DownloadFn(cfg, staging_dir)).with_outputs(DROPPED, main="kept")
    )
    survivors, drops = fetched.kept, [fetched[DROPPED]]
    if cfg.score_model:  # before dedup: a duplicate group's survivor must be a pair that passed
        survivors, dropped = apply_stage(
            survivors, "score", functools.partial(build_score, cfg.score_model, cfg.min_score))
        drops.append(dropped)
    if cfg.decontaminate:
        k = max(cfg.near_dup_distance, 0)
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


def build_pipeline(p: beam.Pipeline, cfg: CurateConfig, vocab_size: int) -> None:
    paths = output_paths(cfg.output)
    if cfg.staging_dir:  # --retry-failed and --extend rebuild elsewhere and reuse OUT's staging
        paths["staging"] = cfg.staging_dir
    candidates, read_dropped = read_stage(p, cfg)
    pool = sample_pool(candidates, cfg, vocab_size)
    survivors, fetch_drops = fetch_and_dedup(pool["sampled"], cfg, paths["staging"])
    survivor_counts = balancing.count_entries(survivors, "Survivor", vocab_size)
    final, final_dropped = balancing.balance_phase(
        survivors, "final", survivor_counts, pool["threshold"], cfg.pre_download_slack, cfg.seed
    )
    written = write_shards(final, cfg, paths["shards"])
    write_stats(p, cfg, vocab_size, pool, written.kept)
    terminal = [read_dropped, *pool["drops"], *fetch_drops, final_dropped, written.kept] | "Terminal" >> beam.Flatten()
    write_ledger(terminal, cfg, paths["ledger"])


def write_stats(p, cfg: CurateConfig, vocab_size: int, pool: dict, kept) -> None:
    pre = balancing.count_entries(pool["sampled"], "PreKept", vocab_size)
    final = balancing.count_entries(kept, "FinalKept", vocab_size)
    _ = (
        p
        | "StatsTrigger" >> beam.Create([None])
        | "WriteEntryStats" >> beam.Map(
            lambda _, pool_counts, pre_counts, final_counts, t: balancing.write_entry_stats(
                cfg.output, match.read_vocab(cfg.vocab), pool_counts, pre_counts, final_counts, t,
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
        | "WriteShard" >> beam.ParDo(WriteShardFn(shards_dir)).with_outputs("sizes", main="kept")
    )
    _ = (
        written.sizes
        | "AllSizes" >> beam.combiners.ToList()
        | "WriteSizes" >> beam.Map(write.write_sizes, shards_dir)
    )
    return written


def write_ledger(terminal, cfg: CurateConfig, ledger_dir: str) -> None:
    _ = (
        terminal
        | "ByLedgerPart" >> beam.Map(lambda r: (ledger.ledger_part(r.uid, cfg.ledger_parts), r))
        | "GroupLedgerPart" >> beam.GroupByKey()
        | "WriteLedgerPart" >> beam.MapTuple(lambda part, rs: ledger.write_ledger_part(ledger_dir, part, list(rs)))
    )


def run_pipeline(cfg: CurateConfig, beam_args: list[str]):
    vocab_size = len(match.read_vocab(cfg.vocab))
    p = beam.Pipeline(options=PipelineOptions(beam_args))
    build_pipeline(p, cfg, vocab_size)
    result = p.run()
    result.wait_until_finish()
    return result
