"""MetaCLIP balancing: cap every vocabulary entry at about t pairs.

A pair matching entries E is kept with p = 1 - prod_{e in E} (1 - min(1, t / count_e)),
i.e. it is kept when any of its entries would keep it. The uniform draw u comes from a
keyed hash of (seed, url, caption): it depends on content only, never on input order,
so the same pair gets the same decision on any runner, worker count or file order.
"""
from __future__ import annotations

import hashlib

import numpy as np

from openwit.schemas.record import Record, drop


def count_entries(entry_id_lists, vocab_size: int) -> np.ndarray:
    """Dense per-entry match counts (a 500K vocabulary is a 4 MB int64 vector)."""
    flat = [entry_id for ids in entry_id_lists for entry_id in ids]
    return np.bincount(np.asarray(flat, dtype=np.int64), minlength=vocab_size).astype(np.int64)


def keep_probability(entry_ids, counts: np.ndarray, threshold: int) -> float:
    entry_counts = counts[np.asarray(entry_ids, dtype=np.int64)].astype(np.float64)
    per_entry = np.minimum(1.0, threshold / np.maximum(entry_counts, 1.0))
    return float(1.0 - np.prod(1.0 - per_entry))


def balance_draw(seed: int, url: str, caption: str) -> float:
    """A uniform number in [0, 1) from the content and the seed (blake2b, 53 bits)."""
    key = seed.to_bytes(8, "little", signed=True)
    digest = hashlib.blake2b(f"{url}\x00{caption}".encode("utf-8"), key=key, digest_size=8).digest()
    return (int.from_bytes(digest, "little") >> 11) / float(1 << 53)


def balance_record(record: Record, counts: np.ndarray, threshold: int, seed: int) -> Record:
    p = keep_probability(record.entry_ids, counts, threshold)
    u = balance_draw(seed, record.url, record.caption)
    if u < p:
        return record
    return drop(record, "balanced_out", f"p={p:.6g}")
