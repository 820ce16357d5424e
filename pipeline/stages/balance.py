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

Worldwide runs (MetaCLIP 2) cap each language at its own t: ids are unique per (language,
entry), so one count vector still counts by (language, entry), and `Thresholds` maps each
language's id range to its t. English keeps the t it is given; every other language gets the
smallest t at which its tail share (matches in entries with fewer than t matches) reaches
English's tail share at the English t (`language_thresholds`).
"""
from __future__ import annotations

import dataclasses
from typing import Union

import numpy as np

from openwit.pipeline.common.keyed import uniform
from openwit.schemas.record import Record, drop

PHASES = ("pre", "final")


def count_entries(entry_id_lists, vocab_size: int) -> np.ndarray:
    """Dense per-entry match counts (a 500K vocabulary is a 4 MB int64 vector)."""
    flat = [entry_id for ids in entry_id_lists for entry_id in ids]
    return np.bincount(np.asarray(flat, dtype=np.int64), minlength=vocab_size).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """A threshold per language: ids in [starts[i], starts[i + 1]) are capped at values[i]
    (the last range runs to the end of the vocabulary)."""
    languages: tuple[str, ...]
    starts: tuple[int, ...]
    values: tuple[float, ...]

    def __post_init__(self):
        if not (len(self.languages) == len(self.starts) == len(self.values)) or not self.starts:
            raise ValueError("Thresholds need one language, start and value per range")
        if self.starts[0] != 0 or list(self.starts) != sorted(set(self.starts)):
            raise ValueError(f"range starts must rise from 0, got {self.starts[:5]}...")

    def at(self, entry_ids) -> np.ndarray:
        ranges = np.searchsorted(np.asarray(self.starts), np.asarray(entry_ids, dtype=np.int64), side="right") - 1
        return np.asarray(self.values, dtype=np.float64)[ranges]

    def scaled(self, factor: float) -> "Thresholds":
        return dataclasses.replace(self, values=tuple(value * factor for value in self.values))

    def of(self, language: str) -> float:
        return self.values[self.languages.index(language)]


Threshold = Union[float, Thresholds]


def keep_probability(entry_ids, counts: np.ndarray, threshold: Threshold) -> float:
    entry_ids = np.asarray(entry_ids, dtype=np.int64)
    if isinstance(threshold, Thresholds):
        threshold = threshold.at(entry_ids)
    entry_counts = counts[entry_ids].astype(np.float64)
    per_entry = np.minimum(1.0, threshold / np.maximum(entry_counts, 1.0))
    return float(1.0 - np.prod(1.0 - per_entry))


def balance_draw(seed: int, url: str, caption: str, phase: str = "final") -> float:
    """A uniform number in [0, 1) from the content, the seed and the phase (blake2b, 53 bits)."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    return uniform(f"{url}\x00{caption}".encode("utf-8"), f"openwit-{phase}".encode(),
                   key=seed.to_bytes(8, "little", signed=True))


def phase_threshold(threshold: Threshold, phase: str, slack: float) -> Threshold:
    if isinstance(threshold, Thresholds):
        return threshold.scaled(slack) if phase == "pre" else threshold
    return threshold * slack if phase == "pre" else float(threshold)


def balance_record(record: Record, counts: np.ndarray, threshold: Threshold, seed: int, phase: str = "final") -> Record:
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


def english_reference(counts: np.ndarray, ranges: dict[str, tuple[int, int]]) -> np.ndarray:
    """The counts the English t and the target share are taken from: English's, or the whole
    pool's when no English entry matched."""
    first, end = ranges["en"]
    english = counts[first:end]
    return english if english.sum() else counts


def tail_target(counts: np.ndarray, ranges: dict[str, tuple[int, int]], english_threshold: int) -> float:
    """English's tail share at the English t: the share every language is given (MetaCLIP 2)."""
    return tail_share(english_reference(counts, ranges), english_threshold)


def threshold_for_share(counts: np.ndarray, share: float, fallback: int) -> int:
    """The smallest t whose tail share reaches `share` (a share of 0: the fewest matches any
    matched entry has, so that no entry is in the tail, as in English); `fallback` when
    nothing matched."""
    matched = counts[counts > 0]
    if matched.size == 0:
        return int(fallback)
    if share <= 0.0:
        return int(matched.min())
    return threshold_for_tail(counts, share)


def language_thresholds(counts: np.ndarray, ranges: dict[str, tuple[int, int]], english_threshold: int) -> Thresholds:
    """English at `english_threshold`, every other language at the t that gives it English's
    tail share. `ranges`: language -> [first id, end id), contiguous, English first."""
    target = tail_target(counts, ranges, english_threshold)
    ordered = sorted(ranges.items(), key=lambda item: item[1][0])
    values = [english_threshold if language == "en" else threshold_for_share(counts[first:end], target, english_threshold)
              for language, (first, end) in ordered]
    return Thresholds(tuple(language for language, _ in ordered), tuple(first for _, (first, _) in ordered),
                      tuple(float(value) for value in values))
