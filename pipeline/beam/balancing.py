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


def choose_threshold(counts, threshold, tail_fraction, ranges=None):
    """-> a singleton: the fixed --threshold, or t from --tail-fraction over the pool counts;
    with --worldwide `ranges` (language -> id range), a balance.Thresholds: English at that t,
    every other language at the t that gives it English's tail share."""
    return counts | "Threshold" >> beam.Map(pool_threshold, threshold, tail_fraction, ranges)


def pool_threshold(counts: np.ndarray, threshold, tail_fraction, ranges=None):
    reference = counts if ranges is None else balance.english_reference(counts, ranges)
    t = int(threshold) if tail_fraction is None else balance.threshold_for_tail(reference, tail_fraction)
    return t if ranges is None else balance.language_thresholds(counts, ranges, t)


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


def balance_summary(pool: np.ndarray, threshold, slack: float, tail_fraction) -> dict:
    """balance.json: t and what it did; with --worldwide, English's figures at the top and one
    entry per language under "languages"."""
    if isinstance(threshold, balance.Thresholds):
        return worldwide_summary(pool, threshold, slack, tail_fraction)
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


def language_slices(thresholds, size: int):
    """(language, [first, end) slice, t) per language of a balance.Thresholds."""
    ends = thresholds.starts[1:] + (size,)
    return [(language, slice(first, end), t) for language, first, end, t
            in zip(thresholds.languages, thresholds.starts, ends, thresholds.values)]


LANGUAGE_FIELDS = ("threshold", "tail_share", "pre_download_threshold", "matches_in_pool", "entries",
                   "entries_matched", "entries_over_threshold")


def worldwide_summary(pool: np.ndarray, thresholds, slack: float, tail_fraction) -> dict:
    slices = language_slices(thresholds, pool.size)
    languages = {}
    for language, span, t in slices:
        entry = balance_summary(pool[span], int(t), slack, tail_fraction)
        languages[language] = {field: entry[field] for field in LANGUAGE_FIELDS}
    english_end = slices[0][1].stop
    summary = balance_summary(pool[:english_end], int(thresholds.of("en")), slack, tail_fraction)
    summary.update({
        "rule": summary["rule"] + "+per_language_tail_share",
        "tail_share_target": round(balance.tail_target(pool, {"en": (0, english_end)}, int(thresholds.of("en"))), 6),
        "matches_in_pool": int(pool.sum()), "entries": int(pool.size), "entries_matched": int((pool > 0).sum()),
        "entries_over_threshold": sum(entry["entries_over_threshold"] for entry in languages.values()),
        "languages": {language: entry for language, entry in languages.items()
                      if entry["matches_in_pool"] or language == "en"},
    })
    return summary


def write_entry_stats(out_dir: str, entries: list, pool, pre, final, threshold, slack: float, tail_fraction) -> dict:
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
    final = np.asarray(final)
    summary["entries_kept_final"] = int((final > 0).sum())
    if isinstance(threshold, balance.Thresholds):
        for language, span, _ in language_slices(threshold, final.size):
            if language in summary["languages"]:
                summary["languages"][language]["entries_kept_final"] = int((final[span] > 0).sum())
                summary["languages"][language]["matches_kept_final"] = int(final[span].sum())
    write_atomically(layout.balance_path(out_dir), json.dumps(summary, indent=1).encode())
    return summary
