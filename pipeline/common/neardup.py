"""Near-duplicate images: 64-bit perceptual hashes within Hamming distance k, sub-quadratic.

Pigeonhole: split the hash bits into m >= k+1 bands; two hashes that differ in at most k
bits agree exactly on at least m - k whole bands. So each (m - k)-subset of bands is a
bucketing key, only hashes that share a key are compared, and every comparison is verified
exactly (popcount of the XOR): the result equals brute force. m = k+1 gives k+1 keys of
64/(k+1) bits; for large n or k, more bands give longer keys and far fewer same-bucket
pairs (`band_count` picks m from n). Identical hashes are collapsed first (a logo seen
100,000 times is one value), and a bucket larger than `max_bucket` is split again on its
remaining bits with the same rule instead of being dropped or compared all-pairs, so one
common band value cannot blow memory and nothing is lost.

Components are the connected components of the "within k" graph over distinct hash values,
labelled by their smallest member: deterministic whatever the input order. They only route
work: a component can chain (A~B~C with A far from C), so duplicates are decided inside each
component by greedy star clustering (`star_centers`): every value lies within k of its
centre, and centres are pairwise farther than k apart.

Colour (issue 26): pHash sees a grayscale thumbnail, so flat graphics that differ only in
hue (flags, logos, icons) hash alike. A near-duplicate must then also be within
`max_colour` in colour signature (stages/image.py colour_signature: the mean CIELAB colour
of 4x4 cells; the distance is the largest per-cell CIELAB distance, ΔE76). Only pairs
already within k in pHash pay for that check. An item without a signature (a record made
before signatures existed) has NaN colours: the pHash alone decides for it, as before.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

HASH_BITS = 64
# pHash distance of resized/recompressed copies (tests/test_neardup.py): <= 6 measured;
# distinct images >= 14. 8 leaves room on both sides.
DEFAULT_DISTANCE = 8
# Largest per-cell CIELAB distance of a near-duplicate's colour signature: copies (resized,
# JPEG q40-95, WebP, flattened) measured <= 7.1, equal-luminance flat graphics 30 degrees of
# hue apart >= 12.1 (docs/dedup.md, bench/bench_dedup.py --colour). 10 sits between.
DEFAULT_COLOUR_DISTANCE = 10.0


def split_bits(positions: list[int], parts: int) -> list[list[int]]:
    """Split bit positions into `parts` groups of consecutive positions, sizes within one."""
    size, extra = divmod(len(positions), parts)
    groups, start = [], 0
    for part in range(parts):
        end = start + size + (1 if part < extra else 0)
        groups.append(positions[start:end])
        start = end
    return [g for g in groups if g]


def bit_mask(positions: list[int]) -> np.uint64:
    mask = 0
    for bit in positions:
        mask |= 1 << bit
    return np.uint64(mask)


def pairs_within(hashes: np.ndarray, index: np.ndarray, k: int) -> np.ndarray:
    """All pairs (i, j), i < j, among `index` whose hashes differ in at most k bits; rows
    are compared in blocks, so memory stays near 4M comparisons whatever len(index) is."""
    values = hashes[index]
    block = max(1, (1 << 22) // max(1, len(values)))
    found = [np.zeros((0, 2), dtype=np.int64)]
    for start in range(0, len(values), block):
        distance = np.bitwise_count(values[start:start + block, None] ^ values[None, start:])
        i, j = np.nonzero(distance <= k)
        keep = j > i  # the block's diagonal and below: each pair once
        found.append(np.stack([index[start + i[keep]], index[start + j[keep]]], axis=1))
    return np.concatenate(found)


def bucket_pairs(hashes: np.ndarray, keys: np.ndarray, k: int, max_bucket: int, stats: dict):
    """Pairs within distance k among hashes with equal keys, -> (pairs, giant buckets).

    Sorted by key, members of a bucket are contiguous: compare each item with the one d
    places on, for d = 1, 2, ... while any still shares its key. Work is the number of
    same-bucket pairs and memory stays O(n), with no n x n matrix. Buckets above
    `max_bucket` are returned as index arrays for the caller to split on more bits."""
    order = np.argsort(keys)
    sorted_keys, sorted_hashes = keys[order], hashes[order]
    n = len(order)
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    sizes = np.diff(np.r_[starts, n])
    giants = [order[s:s + size] for s, size in zip(starts, sizes) if size > max_bucket]
    small = np.repeat(sizes <= max_bucket, sizes)
    active = np.flatnonzero(small[:-1] & (sorted_keys[:-1] == sorted_keys[1:]))
    found, step = [], 1
    while len(active):
        stats["compared"] = stats.get("compared", 0) + len(active)
        close = active[np.bitwise_count(sorted_hashes[active] ^ sorted_hashes[active + step]) <= k]
        found.append(np.stack([order[close], order[close + step]], axis=1))
        step += 1
        active = active[active + step < n]
        active = active[sorted_keys[active] == sorted_keys[active + step]]
    return found, giants


def band_plan(n: int, n_bits: int, k: int) -> tuple[int, float]:
    """(bands m, estimated work) for n hashes varying in `n_bits` bits. Pairs within k agree
    on at least m - k whole bands, so each (m - k)-subset of bands is one bucketing key:
    more bands mean more keys (C(m, k) sorts of n) but longer keys and so fewer
    same-bucket pairs (~n^2 / 2^bits). Work is counted in pair comparisons; 12 is the
    measured cost of sorting one item in those units."""
    def work(m: int) -> float:
        key_bits = n_bits * (m - k) / m
        return math.comb(m, k) * (12 * n + n * n / 2 ** (key_bits + 1))

    m = min(range(k + 1, min(n_bits, k + 8) + 1), key=work)
    return m, work(m)


def candidate_pairs(hashes: np.ndarray, positions: list[int], k: int, max_bucket: int, stats: dict,
                    depth: int = 0):
    """Pairs within distance k, bucketing only on the bits in `positions` (the other bits
    are equal across `hashes`). `depth`: how many giant-bucket splits led here."""
    # Bits equal across all of `hashes` separate nothing: bucket on the varying ones.
    varying = int(np.bitwise_or.reduce(hashes ^ hashes[0]))
    positions = [bit for bit in positions if varying >> bit & 1]
    n = len(hashes)
    # With hashes unique, k or fewer varying bits means at most 2^k hashes; and hashes that
    # vary in few bits are dense (many pairs within k): comparing all pairs is then cheaper.
    # Past two splits the hashes have resisted bucketing twice (they are close to one
    # another, like sparse hashes of flat images): splitting again costs C(m, k) passes a level.
    if len(positions) <= k or n <= 64 or depth >= 2 or n * n / 2 <= band_plan(n, len(positions), k)[1]:
        stats["compared"] = stats.get("compared", 0) + n * (n - 1) // 2
        yield pairs_within(hashes, np.arange(n), k)
        return
    bands = split_bits(positions, band_plan(n, len(positions), k)[0])
    earlier = []  # masks of the keys already searched
    for combo in itertools.combinations(bands, len(bands) - k):
        used = sorted(bit for band in combo for bit in band)
        mask = bit_mask(used)
        found, giants = bucket_pairs(hashes, hashes & mask, k, max_bucket, stats)
        rest = [bit for bit in positions if bit not in used]
        for index in giants:  # a common key: split it again on the bits it does not fix
            found += [index[pairs] for pairs in candidate_pairs(hashes[index], rest, k, max_bucket, stats, depth + 1)]
        yield from (first_found(hashes, pairs, earlier) for pairs in found)
        earlier.append(mask)


def first_found(hashes: np.ndarray, pairs: np.ndarray, earlier: list) -> np.ndarray:
    """The pairs that share no earlier key: a close pair agrees on many keys, and yielding it
    once per key multiplied memory (measured: 147M rows for 9M pairs at k = 8)."""
    if len(pairs) == 0 or not earlier:
        return pairs
    differ = hashes[pairs[:, 0]] ^ hashes[pairs[:, 1]]
    seen = np.zeros(len(pairs), dtype=bool)
    for mask in earlier:
        seen |= (differ & mask) == 0
    return pairs[~seen]


def near_duplicate_pairs(hashes: np.ndarray, k: int, max_bucket: int = 4096, positions=None,
                         stats=None) -> np.ndarray:
    """Every pair (i, j), i < j, of *distinct* hash values within Hamming distance k.
    `hashes` must be unique (use np.unique first); the result is sorted. `positions`: the
    bits that may differ (default all 64; a Beam group already agrees on one band).
    `stats`, if given, gets "compared": the number of exact distance checks made."""
    stats = {} if stats is None else stats
    hashes = np.asarray(hashes, dtype=np.uint64)
    if len(hashes) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    positions = list(range(HASH_BITS)) if positions is None else list(positions)
    found = list(candidate_pairs(hashes, positions, k, max_bucket, stats))
    pairs = np.sort(np.concatenate(found).astype(np.int64), axis=1) if found else np.zeros((0, 2), np.int64)
    return np.unique(pairs, axis=0)  # a pair can share several keys


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


def near_duplicate_clusters(hashes, k: int, max_bucket: int = 4096) -> np.ndarray:
    """Cluster label per input hash (duplicates allowed): items whose hashes are linked by a
    chain of distance-<=k steps share a label, the smallest distinct value index in the chain."""
    values, inverse = np.unique(np.asarray(hashes, dtype=np.uint64), return_inverse=True)
    labels = components(len(values), near_duplicate_pairs(values, k, max_bucket))
    return labels[inverse]


def star_centers(values, k: int, colours=None, max_colour: float = DEFAULT_COLOUR_DISTANCE) -> np.ndarray:
    """Greedy star clustering of items given in priority order (the caller's survivor
    order): the first unclaimed item becomes a centre and claims every unclaimed item
    within k of it (and, with `colours` from `colour_values`, within `max_colour` in
    colour too; then hash values may repeat). -> the index of each item's centre (a
    centre's is its own). Equal to "an item's centre is the first centre close to it, in
    priority order". Every item is close to its centre; centres are pairwise not close.
    Cost: one vectorised scan of the still-unclaimed values per centre, O(n x centres) time,
    O(n) memory (no edge list: a dense component of n values has ~n^2/2 edges); the colour
    distance only for the items within k of the centre."""
    values = np.asarray(values, dtype=np.uint64)
    centre = np.full(len(values), -1, dtype=np.int64)
    remaining, left = np.arange(len(values)), values
    while len(remaining):
        close = np.bitwise_count(left ^ left[0]) <= k  # left[0]: the first unclaimed, a centre
        if colours is not None:
            near = np.flatnonzero(close)
            close[near] = colour_close(colour_distances(colours[remaining[near]], colours[remaining[0]]), max_colour)
        centre[remaining[close]] = remaining[0]
        remaining, left = remaining[~close], left[~close]
    return centre


def near_duplicate_stars(values, k: int, max_bucket: int = 4096, colours=None,
                         max_colour: float = DEFAULT_COLOUR_DISTANCE) -> np.ndarray:
    """Centre index per item, for items in priority order: connected components of the
    distinct hash values from the banded kernel, then `star_centers` inside each (what
    beam/graph.py does). Without `colours` the values must be distinct; with them, items
    may share a hash value (a flag and its recoloured twin)."""
    values = np.asarray(values, dtype=np.uint64)
    distinct, inverse = np.unique(values, return_inverse=True)
    labels = components(len(distinct), near_duplicate_pairs(distinct, k, max_bucket))[inverse.ravel()]
    centre = np.empty(len(values), dtype=np.int64)
    order = np.argsort(labels, kind="stable")  # members of a component, in priority order
    starts = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1]])
    for members in np.split(order, starts[1:]):
        member_colours = None if colours is None else colours[members]
        centre[members] = members[star_centers(values[members], k, member_colours, max_colour)]
    return centre


# --- colour signatures: the second check on pHash-close pairs ------------------------------

def colour_values(signatures) -> np.ndarray:
    """(n, cells, 3) float32 CIELAB of hex colour signatures (stages/image.py
    colour_signature: 3 bytes a cell, L* x 2.55, a* + 128, b* + 128); NaN for a missing one
    (None or empty), which then never vetoes a pHash match."""
    signatures = list(signatures)
    cells = next((len(s) // 6 for s in signatures if s), 1)
    out = np.full((len(signatures), cells, 3), np.nan, dtype=np.float32)
    for i, signature in enumerate(signatures):
        if signature:
            out[i] = np.frombuffer(bytes.fromhex(signature), dtype=np.uint8).reshape(cells, 3)
    out[:, :, 0] /= np.float32(2.55)
    out[:, :, 1:] -= 128
    return out


def colour_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The largest per-cell CIELAB distance (ΔE76) between colour rows of `a` and `b`
    (broadcast); NaN where either is unknown. The largest, not the mean: a flag whose
    emblem alone changed colour differs in a few cells only."""
    return np.sqrt(((a.astype(np.float64) - b) ** 2).sum(axis=-1)).max(axis=-1)


def colour_close(distances: np.ndarray, max_colour: float) -> np.ndarray:
    """Whether colour distances allow a near-duplicate; unknown (NaN) allows it."""
    return ~(distances > max_colour)


def colour_checked_pairs(pairs: np.ndarray, colours: np.ndarray, max_colour: float = DEFAULT_COLOUR_DISTANCE,
                         ) -> np.ndarray:
    """The pairs (of the banded kernel, within k in pHash) that are close in colour too."""
    if len(pairs) == 0:
        return pairs
    return pairs[colour_close(colour_distances(colours[pairs[:, 0]], colours[pairs[:, 1]]), max_colour)]
