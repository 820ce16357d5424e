"""MetaCLIP balancing: cap every vocabulary entry at about t pairs, in two phases.

A pair matching entries E is kept with p = 1 - prod_{e in E} (1 - min(1, t / count_e)),
i.e. it is kept when any of its entries would keep it. The uniform draw u comes from a
keyed hash of (seed, phase, url, caption): it depends on content only, never on input
order, so the same pair gets the same decision on any runner, worker count or file order.

Phase "pre" runs before download with the cap t x slack on the counts of the whole matched
pool, so that download, dedup and filter losses do not starve entries near the cap. Phase
"final" recounts the survivors and applies t exactly. Each phase draws independently (the
phase is part of the hash key): reusing one u would keep a survivor with probability
min(p_pre, p_final) / p_pre instead of p_final.
"""
from __future__ import annotations


import numpy as np

from openwit.pipeline.common.keyed import uniform
from openwit.schemas.record import Record, drop

PHASES = ("pre", "final")


def count_entries(entry_id_lists, vocab_size: int) -> np.ndarray:
    """Dense per-entry match counts (a 500K vocabulary is a 4 MB int64 vector)."""
    flat = [entry_id for ids in entry_id_lists for entry_id in ids]
    return np.bincount(np.asarray(flat, dtype=np.int64), minlength=vocab_size).astype(np.int64)


def keep_probability(entry_ids, counts: np.ndarray, threshold: float) -> float:
    entry_counts = counts[np.asarray(entry_ids, dtype=np.int64)].astype(np.float64)
    per_entry = np.minimum(1.0, threshold / np.maximum(entry_counts, 1.0))
    return float(1.0 - np.prod(1.0 - per_entry))


def balance_draw(seed: int, url: str, caption: str, phase: str = "final") -> float:
    """A uniform number in [0, 1) from the content, the seed and the phase (blake2b, 53 bits)."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    return uniform(f"{url}\x00{caption}".encode("utf-8"), f"openwit-{phase}".encode(),
                   key=seed.to_bytes(8, "little", signed=True))


def phase_threshold(threshold: int, phase: str, slack: float) -> float:
    return threshold * slack if phase == "pre" else float(threshold)


def balance_record(record: Record, counts: np.ndarray, threshold: float, seed: int, phase: str = "final") -> Record:
    p = keep_probability(record.entry_ids, counts, threshold)
    if balance_draw(seed, record.url, record.caption, phase) < p:
        return record
    return drop(record, f"balanced_out_{phase}", f"p={p:.6g}")


def threshold_for_tail(counts: np.ndarray, tail_fraction: float) -> int:
    """The smallest t such that entries with fewer than t matches hold >= tail_fraction of
    all matches (MetaCLIP chose t so that this tail holds ~6%)."""
    if not 0.0 < tail_fraction <= 1.0:
        raise ValueError(f"tail fraction must be in (0, 1], got {tail_fraction}")
    matched = np.sort(counts[counts > 0])
    if matched.size == 0:
        return 1
    cumulative = np.cumsum(matched)
    index = int(np.searchsorted(cumulative, tail_fraction * cumulative[-1], side="left"))
    return int(matched[min(index, matched.size - 1)]) + 1


def tail_share(counts: np.ndarray, threshold: int) -> float:
    """Share of all matches held by entries with fewer than `threshold` matches."""
    total = int(counts.sum())
    return float(counts[counts < threshold].sum() / total) if total else 0.0
