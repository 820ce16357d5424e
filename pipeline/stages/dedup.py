"""Exact image deduplication by the sha256 of the original bytes.

The survivor of a duplicate group is chosen from content only: the largest original
resolution, then the smallest uid. Every other member is dropped with `duplicate_of`
naming the survivor, so the ledger says where each loser's image went.
"""
from __future__ import annotations

from typing import Iterable, Iterator

from openwit.schemas.record import Record, drop


def survivor_order(record: Record) -> tuple:
    return (-(record.original_width or 0) * (record.original_height or 0), record.uid)


def dedup_group(records: Iterable[Record]) -> Iterator[Record]:
    """All records sharing one image sha256 -> the survivor, and the rest dropped.

    Two passes over a re-iterable (a list, or Beam's grouped values) and nothing held: an
    image shared by millions of URLs must not be gathered in one worker's memory."""
    survivor = min(records, key=survivor_order)
    for record in records:
        if record.uid == survivor.uid:
            yield record
        else:
            yield drop(record, "duplicate_image", f"sha256 {record.sha256}", survivor.uid)
