"""Balancing as Beam transforms: per-entry counts by a distributed combine, the threshold
(fixed, or from the tail-fraction rule), the two balancing phases, and per-entry statistics.

Counts are a dense vector indexed by entry id, summed by CombineGlobally: each worker sums
its own bundles, only the vectors (4 MB for 500K entries) meet, and the result is a small
singleton side input. No per-entry keyed shuffle is needed.
"""
from __future__ import annotations

import functools
import io
import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam import pvalue

from openwit.pipeline.beam.stage import apply_stage
from openwit.pipeline.stages import balance
from openwit.pipeline.output import layout
from openwit.pipeline.output.files import write_atomically

ENTRY_STATS_SCHEMA = pa.schema([
    pa.field("entry_id", pa.int32()),
    pa.field("entry", pa.string()),
    pa.field("matches_in_pool", pa.int64()),
    pa.field("kept_pre_balance", pa.int64()),
    pa.field("kept_final", pa.int64()),
])


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


def entry_counts(records, label: str, vocab_size: int):
    """-> a singleton PCollection: matches per entry id over `records`."""
    return (
        records
        | f"{label}EntryIds" >> beam.Map(lambda r: r.entry_ids)
        | f"{label}Counts" >> beam.CombineGlobally(EntryCountsFn(vocab_size))
    )


def choose_threshold(counts, threshold, tail_fraction):
    """-> a singleton: the fixed --threshold, or t from --tail-fraction over the pool counts."""
    if tail_fraction is None:
        return counts | "Threshold" >> beam.Map(lambda _: int(threshold))
    return counts | "Threshold" >> beam.Map(balance.threshold_for_tail, tail_fraction)


def build_balance(phase: str, slack: float, seed: int):
    def apply(record, counts, threshold):
        return balance.balance_record(record, counts, balance.phase_threshold(threshold, phase, slack), seed, phase)

    return apply


def balance_phase(records, phase: str, counts, threshold, slack: float, seed: int):
    """-> (kept, dropped) after one balancing phase over `records` with the given counts."""
    return apply_stage(
        records, f"balance_{phase}", functools.partial(build_balance, phase, slack, seed),
        pvalue.AsSingleton(counts), pvalue.AsSingleton(threshold),
    )


def balance_summary(pool: np.ndarray, threshold: int, slack: float, tail_fraction) -> dict:
    return {
        "threshold": int(threshold),
        "rule": "fixed" if tail_fraction is None else "tail_fraction",
        "tail_fraction_asked": tail_fraction,
        "tail_share": round(balance.tail_share(pool, threshold), 6),
        "pre_download_slack": slack,
        "pre_download_threshold": balance.phase_threshold(threshold, "pre", slack),
        "matches_in_pool": int(pool.sum()),
        "entries": int(pool.size),
        "entries_matched": int((pool > 0).sum()),
        "entries_over_threshold": int((pool > threshold).sum()),
    }


def write_entry_stats(out_dir: str, entries: list, pool, pre, final, threshold: int, slack: float, tail_fraction) -> dict:
    """OUT/stats/entries.parquet (one row per entry) and OUT/stats/balance.json."""
    table = pa.table({
        "entry_id": pa.array(np.arange(len(entries), dtype=np.int32)),
        "entry": pa.array(entries, type=pa.string()),
        "matches_in_pool": pa.array(pool), "kept_pre_balance": pa.array(pre), "kept_final": pa.array(final),
    }, schema=ENTRY_STATS_SCHEMA)
    out = io.BytesIO()
    pq.write_table(table, out)
    write_atomically(layout.entry_stats_path(out_dir), out.getvalue())
    summary = balance_summary(np.asarray(pool), threshold, slack, tail_fraction)
    summary["entries_kept_final"] = int((np.asarray(final) > 0).sum())
    write_atomically(layout.balance_path(out_dir), json.dumps(summary, indent=1).encode())
    return summary
