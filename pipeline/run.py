"""Builds and runs the curation pipeline: the Beam graph around the stages' plain functions.

Every stage is applied by one wrapper (`StageFn`) that routes each output record to the
`kept` main output or the `dropped` tagged output and counts drops per reason. The ledger is
the union of every stage's dropped output plus the writer's kept output, so every candidate
gets exactly one terminal record by construction.
"""
from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
import numpy as np
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils.shared import Shared

from openwit.pipeline import ledger
from openwit.pipeline.options import CurateConfig
from openwit.pipeline.stages import balance, dedup, fetch, match, read, text, write
from openwit.pipeline.stages.download import make_session
from openwit.schemas.record import DROPPED, Record, drop_internal_error

NAMESPACE = "openwit"
_SHARED = Shared()  # big lookups are loaded once per worker process, not per bundle


class _Handle:
    """Shared.acquire keeps a weak reference, so wrap objects that do not allow one."""

    def __init__(self, value):
        self.value = value


def load_once(tag: str, loader):
    return _SHARED.acquire(lambda: _Handle(loader()), tag=tag).value


def route(record: Record):
    if record.status == DROPPED:
        Metrics.counter(NAMESPACE, f"dropped.{record.stage}.{record.reason}").inc()
        return pvalue.TaggedOutput(DROPPED, record)
    return record


def guarded(fn, stage: str):
    """fn(record, ...) whose unexpected exceptions become internal_error drops: one hostile
    record must not fail a run of millions, and nothing may leave the ledger."""

    def apply(record, *args):
        try:
            return fn(record, *args)
        except Exception as err:  # noqa: BLE001 - recorded with its type and message
            return drop_internal_error(record, stage, err)

    return apply


class StageFn(beam.DoFn):
    """Applies `build()(record, *side_inputs)`; build runs once per DoFn instance."""

    def __init__(self, stage: str, build):
        self._stage = stage
        self._build = build

    def setup(self):
        self._fn = guarded(self._build(), self._stage)

    def process(self, record, *side_inputs):
        yield route(self._fn(record, *side_inputs))


def apply_stage(pcoll, stage: str, build, *side_inputs):
    """-> (kept, dropped) PCollections; the Beam label is the stage name."""
    label = stage.replace("_", " ").title().replace(" ", "")
    out = pcoll | label >> beam.ParDo(StageFn(stage, build), *side_inputs).with_outputs(DROPPED, main="kept")
    return out.kept, out[DROPPED]


# Builders: module-level so they pickle; each returns the per-record function.
def build_text(cfg: text.TextConfig):
    model = load_once("lid.176", text.load_lid_model)
    return lambda r: text.apply_text_rules(r, cfg, text.detect_language(model, r.caption))


def build_match(vocab_path: str):
    matcher = load_once(f"matcher:{vocab_path}", lambda: match.Matcher.from_vocab(vocab_path))
    return lambda r: match.match_record(r, matcher)


def build_balance(threshold: int, seed: int):
    return lambda r, counts: balance.balance_record(r, counts, threshold, seed)


class EntryCountsFn(beam.CombineFn):
    """Sums matches per entry into a dense vector; ids are buffered and bincounted in bulk."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def create_accumulator(self):
        return np.zeros(self.vocab_size, dtype=np.int64), []

    def add_input(self, acc, entry_ids):
        counts, pending = acc
        pending.extend(entry_ids)
        if len(pending) >= 1 << 20:
            return self._compact(acc), []
        return counts, pending

    def _compact(self, acc):
        counts, pending = acc
        return counts + balance.count_entries([pending], self.vocab_size)

    def merge_accumulators(self, accumulators):
        return sum((self._compact(acc) for acc in accumulators), np.zeros(self.vocab_size, np.int64)), []

    def extract_output(self, acc):
        return self._compact(acc)


class DownloadFn(beam.DoFn):
    """Downloads a batch of records concurrently; decode and resize run in the same threads."""

    def __init__(self, cfg: CurateConfig, staging_dir: str):
        self.cfg = cfg
        self.staging_dir = staging_dir

    def setup(self):
        self.session = make_session(self.cfg.download)
        self.pool = ThreadPoolExecutor(self.cfg.download.threads)
        self.stage = functools.partial(fetch.stage_image, self.staging_dir)

    def process(self, batch):
        fetch_one = guarded(functools.partial(
            fetch.fetch_record, session=self.session, download=self.cfg.download, image=self.cfg.image,
            stage=self.stage,
        ), "download")
        for record in self.pool.map(fetch_one, batch):
            yield route(record)

    def teardown(self):
        self.pool.shutdown(wait=False)
        self.session.close()


class WriteShardFn(beam.DoFn):
    def __init__(self, shards_dir: str):
        self.shards_dir = shards_dir

    def process(self, shard_and_records):
        shard, records = shard_and_records
        kept = write.write_shard(shard, [r for r in records if r is not None], self.shards_dir)
        yield pvalue.TaggedOutput("sizes", (write.shard_name(shard), len(kept)))
        yield from kept


def output_paths(out_dir: str) -> dict:
    return {name: os.path.join(out_dir, name) for name in ("shards", "ledger", "staging")}


def build_pipeline(p: beam.Pipeline, cfg: CurateConfig, vocab_size: int) -> None:
    paths = output_paths(cfg.output)
    files = read.expand_inputs(list(cfg.inputs))
    candidates = (
        p
        | "InputFiles" >> beam.Create(files)
        | "ReadFiles" >> beam.FlatMap(lambda f: read.read_candidates(f[0], f[1], cfg.read))
    )
    read_kept, read_dropped = apply_stage(candidates, "read", lambda: lambda r: r)
    text_kept, text_dropped = apply_stage(read_kept, "text", functools.partial(build_text, cfg.text))
    matched, match_dropped = apply_stage(text_kept, "match", functools.partial(build_match, cfg.vocab))

    counts = matched | "EntryIds" >> beam.Map(lambda r: r.entry_ids) | "CountEntries" >> beam.CombineGlobally(
        EntryCountsFn(vocab_size)
    )
    sampled, balance_dropped = apply_stage(
        matched, "balance", functools.partial(build_balance, cfg.threshold, cfg.seed), pvalue.AsSingleton(counts)
    )

    fetched = (
        sampled
        | "SpreadDownloads" >> beam.Reshuffle()
        | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=cfg.download_batch)
        | "Download" >> beam.ParDo(DownloadFn(cfg, paths["staging"])).with_outputs(DROPPED, main="kept")
    )
    deduped = (
        fetched.kept
        | "BySha256" >> beam.Map(lambda r: (r.sha256, r))
        | "GroupSha256" >> beam.GroupByKey()
        | "Dedup" >> beam.FlatMap(lambda kv: (route(r) for r in dedup.dedup_group(kv[1]))).with_outputs(
            DROPPED, main="kept"
        )
    )
    written = write_shards(deduped.kept, cfg, paths["shards"])

    terminal = (
        read_dropped, text_dropped, match_dropped, balance_dropped, fetched[DROPPED], deduped[DROPPED], written.kept,
    ) | "Terminal" >> beam.Flatten()
    write_ledger(terminal, cfg, paths["ledger"])


def write_shards(survivors, cfg: CurateConfig, shards_dir: str):
    n_shards = (
        survivors
        | "CountKept" >> beam.combiners.Count.Globally()
        | "ShardCount" >> beam.Map(write.shard_count, cfg.samples_per_shard)
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
