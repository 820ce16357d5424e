"""Exact image deduplication by the sha256 of the original bytes.

The survivor of a duplicate group is chosen from content only: the largest original
resolution, then the smallest uid. Every other member is dropped with `duplicate_of`
naming the survivor, so the ledger says where each loser's image went.
"""
from __future__ import annotations

from openwit.schemas.record import Record, drop


def survivor_order(record: Record) -> tuple:
    return (-(record.original_width or 0) * (record.original_height or 0), record.uid)


def dedup_group(records: list[Record]) -> list[Record]:
    """All records sharing one image sha256 -> the survivor first, then the dropped rest."""
    ordered = sorted(records, key=survivor_order)
    survivor = ordered[0]
    return [survivor] + [drop(r, "duplicate_image", f"sha256 {r.sha256}", survivor.uid) for r in ordered[1:]]
