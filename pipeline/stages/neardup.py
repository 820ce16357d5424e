"""Near-duplicate images: 64-bit perceptual hashes within Hamming distance k, sub-quadratic.

Pigeonhole: split the hash bits into k+1 bands; two hashes that differ in at most k bits
agree exactly on at least one band. So only hashes that share a (band, value) bucket are
compared, and every comparison is verified exactly (popcount of the XOR), so the result
equals brute force. Identical hashes are collapsed first (a logo seen 100,000 times is one
value), and a bucket larger than `max_bucket` is split again on its remaining bits with the
same pigeonhole rule instead of being dropped or compared all-pairs, so one common band value
cannot blow memory and nothing is lost.

Clusters are the connected components of the "within k" graph over distinct hash values,
labelled by their smallest member: deterministic whatever the input order.
"""
from __future__ import annotations

import numpy as np

HASH_BITS = 64
# pHash distance of resized/recompressed copies (tests/test_neardup.py): <= 6 measured;
# distinct images >= 14. 8 leaves room on both sides.
DEFAULT_DISTANCE = 8


def split_bits(positions: list[int], parts: int) -> list[list[int]]:
    """Split bit positions into `parts` groups of consecutive positions, sizes within one."""
    size, extra = divmod(len(positions), parts)
    groups, start = [], 0
    for part in range(parts):
        end = start + size + (1 if part < extra else 0)
        groups.append(positions[start:end])
        start = end
    return [g for g in groups if g]


def band_keys(hashes: np.ndarray, positions: list[int]) -> np.ndarray:
    """The value of the given bit positions of every hash, as one integer per hash."""
    keys = np.zeros(hashes.shape, dtype=np.uint64)
    for out_bit, bit in enumerate(positions):
        keys |= ((hashes >> np.uint64(bit)) & np.uint64(1)) << np.uint64(out_bit)
    return keys


def pairs_within(hashes: np.ndarray, index: np.ndarray, k: int) -> np.ndarray:
    """All pairs (i, j), i < j, among `index` whose hashes differ in at most k bits."""
    values = hashes[index]
    distance = np.bitwise_count(values[:, None] ^ values[None, :])
    i, j = np.nonzero(np.triu(distance <= k, 1))
    return np.stack([index[i], index[j]], axis=1)


def candidate_pairs(hashes: np.ndarray, index: np.ndarray, positions: list[int], k: int, max_bucket: int):
    """Pairs within distance k among `index`, using only the bits in `positions` to bucket
    (the other bits are equal within `index`)."""
    if len(index) > max_bucket:
        # Bits equal across the whole bucket separate nothing: bucket on the varying ones.
        varying = int(np.bitwise_or.reduce(hashes[index] ^ hashes[index[0]]))
        positions = [p for p in positions if varying >> p & 1]
    if len(index) <= max_bucket or len(positions) <= k:
        yield pairs_within(hashes, index, k)
        return
    for band in split_bits(positions, k + 1):
        keys = band_keys(hashes[index], band)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], len(order)]
        rest = [p for p in positions if p not in band]
        for start, end in zip(starts, ends):
            if end - start >= 2:
                yield from candidate_pairs(hashes, index[order[start:end]], rest, k, max_bucket)


def near_duplicate_pairs(hashes: np.ndarray, k: int, max_bucket: int = 2048) -> np.ndarray:
    """Every pair (i, j), i < j, of *distinct* hash values within Hamming distance k.
    `hashes` must be unique (use np.unique first); the result is sorted."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    if len(hashes) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    found = list(candidate_pairs(hashes, np.arange(len(hashes)), list(range(HASH_BITS)), k, max_bucket))
    pairs = np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)
    return np.unique(pairs.astype(np.int64), axis=0)  # a pair can share several bands


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component label of each of n nodes: the smallest node index in it."""
    parent = np.arange(n)

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs:
        a, b = root(int(i)), root(int(j))
        if a != b:
            parent[max(a, b)] = min(a, b)
    return np.array([root(x) for x in range(n)])


def near_duplicate_clusters(hashes, k: int, max_bucket: int = 2048) -> np.ndarray:
    """Cluster label per input hash (duplicates allowed): items whose hashes are linked by a
    chain of distance-<=k steps share a label, the smallest distinct value index in the chain."""
    values, inverse = np.unique(np.asarray(hashes, dtype=np.uint64), return_inverse=True)
    labels = components(len(values), near_duplicate_pairs(values, k, max_bucket))
    return labels[inverse]


def hash_to_int(phash_hex: str) -> int:
    return int(phash_hex, 16)
