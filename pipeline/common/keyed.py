"""Keyed hashes: the one way openwit turns content into a bucket or a uniform draw.

Every decision that must not depend on the process, the runner or the input order (ledger
part, shard, balancing draw, online-balancing draw, retry jitter) hashes its content with
blake2b, personalised per use so that two uses of the same text never correlate. Python's
built-in hash() is salted per process and is never used for these. (The trainer's augmentation
and shuffle generators are seeded random.Random instances with string seeds, equally stable.)
"""
from __future__ import annotations

import hashlib


def keyed_int(data: bytes, person: bytes = b"", key: bytes = b"", size: int = 8) -> int:
    """blake2b of data as a little-endian integer of `size` bytes."""
    digest = hashlib.blake2b(data, key=key, person=person, digest_size=size).digest()
    return int.from_bytes(digest, "little")


def bucket(text: str, person: bytes, n_buckets: int) -> int:
    """A bucket in [0, n_buckets) for a text (a uid): ledger parts and shards."""
    return keyed_int(text.encode("utf-8"), person) % n_buckets


def uniform(data: bytes, person: bytes, key: bytes = b"") -> float:
    """A uniform number in [0, 1) with 53 bits (a double's mantissa)."""
    return (keyed_int(data, person, key) >> 11) / float(1 << 53)
