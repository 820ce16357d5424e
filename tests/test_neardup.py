"""Near-duplicate kernel: banded search equals brute force; real resized copies are found."""
import numpy as np
import pytest
from PIL import Image
from scenes import jpeg, scene

from openwit.pipeline.common import neardup
from openwit.pipeline.stages.image import ImageConfig, process_image
from openwit.pipeline.common.neardup import (
    DEFAULT_DISTANCE, components, near_duplicate_clusters, near_duplicate_pairs, split_bits,
)


def brute_force_pairs(hashes: np.ndarray, k: int) -> np.ndarray:
    pairs = []
    for i in range(len(hashes) - 1):
        close = np.flatnonzero(np.bitwise_count(hashes[i] ^ hashes[i + 1:]) <= k)
        pairs += [(i, i + 1 + j) for j in close]
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def planted_hashes(n: int, k: int, seed: int) -> np.ndarray:
    """Random 64-bit hashes plus copies of a quarter of them with up to k + 2 bits flipped."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True)
    copies = []
    for value in base[: n // 4]:
        mask = 0
        for bit in rng.choice(64, size=int(rng.integers(0, k + 3)), replace=False):
            mask |= 1 << int(bit)
        copies.append(value ^ np.uint64(mask))
    return np.unique(np.concatenate([base, np.array(copies, dtype=np.uint64)]))


@pytest.mark.parametrize("k", [2, 4, 8])
def test_banded_search_equals_brute_force_on_20k_hashes(k):
    hashes = planted_hashes(16_000, k, seed=k)
    assert len(hashes) >= 19_000
    expected = brute_force_pairs(hashes, k)
    assert len(expected) > 1000  # the planted copies really are within reach
    assert np.array_equal(near_duplicate_pairs(hashes, k), expected)


def test_giant_buckets_are_split_not_dropped(monkeypatch):
    rng = np.random.default_rng(5)
    common_low_bits = np.uint64((1 << 44) - 1)  # 3,000 hashes that share 44 bits: one huge bucket
    clustered = (rng.integers(0, 2**20, size=3000, dtype=np.uint64) << np.uint64(44)) | common_low_bits
    spread = rng.integers(0, 2**64 - 1, size=20_000, dtype=np.uint64, endpoint=True)
    hashes = np.unique(np.concatenate([clustered, spread]))
    giants = []
    original = neardup.bucket_pairs

    def spy(*args):
        found, big = original(*args)
        giants.extend(len(index) for index in big)
        return found, big

    monkeypatch.setattr(neardup, "bucket_pairs", spy)
    pairs = near_duplicate_pairs(hashes, 4, max_bucket=64)
    assert giants and max(giants) >= 1000  # the common value really made a giant bucket
    assert np.array_equal(pairs, brute_force_pairs(hashes, 4)) and len(pairs) > 0


def test_clusters_do_not_depend_on_input_order():
    hashes = planted_hashes(3000, 4, seed=9)
    values = np.concatenate([hashes, hashes[:100]])  # exact repeats too
    labels = near_duplicate_clusters(values, 4)
    order = np.random.default_rng(1).permutation(len(values))
    shuffled = near_duplicate_clusters(values[order], 4)
    # the same partition: items share a label in one order iff they do in the other
    assert len(set(zip(labels[order], shuffled))) == len(set(labels)) == len(set(shuffled))
    assert all(labels[i] == labels[len(hashes) + i] for i in range(100))


def test_components_and_bit_splits():
    assert components(5, np.array([[3, 4], [0, 3]])).tolist() == [0, 1, 2, 0, 0]
    groups = split_bits(list(range(64)), 5)
    assert [len(g) for g in groups] == [13, 13, 13, 13, 12] and sum(groups, []) == list(range(64))


def phash_of(image: Image.Image, quality: int) -> int:
    return int(process_image(jpeg(image, quality), ImageConfig(min_image_size=0)).phash, 16)


def test_resized_and_recompressed_copies_are_found_without_false_merges():
    hashes, truth = [], []
    for seed in range(220):
        image = scene(seed)
        hashes.append(phash_of(image, 95))
        truth.append(seed)
        for size, quality in [((200, 150), 75), ((120, 90), 60), ((640, 480), 90), ((300, 225), 40)]:
            hashes.append(phash_of(image.resize(size, Image.LANCZOS), quality))
            truth.append(seed)
    labels = near_duplicate_clusters(np.array(hashes, dtype=np.uint64), DEFAULT_DISTANCE)
    by_image = {}
    for label, seed in zip(labels, truth):
        by_image.setdefault(seed, set()).add(int(label))
    assert all(len(found) == 1 for found in by_image.values())  # every copy joins its original
    assert len({next(iter(found)) for found in by_image.values()}) == 220  # no two images merged


@pytest.mark.parametrize("seed", range(4))
def test_low_entropy_hashes_with_tiny_buckets_equal_brute_force(seed):
    """Real pHashes are not uniform: many share long runs of bits. Force the giant-bucket
    path (max_bucket=32) on hashes that vary in only 24 bits, at several k."""
    rng = np.random.default_rng(seed)
    varying = rng.choice(64, size=24, replace=False)
    base = np.uint64(int(rng.integers(0, 2**63)))
    mask = np.zeros(4000, dtype=np.uint64)
    for bit in varying:
        mask |= rng.integers(0, 2, size=4000, dtype=np.uint64) << np.uint64(bit)
    hashes = np.unique(base ^ mask)
    for k in (3, 6, 8):
        assert np.array_equal(near_duplicate_pairs(hashes, k, max_bucket=32), brute_force_pairs(hashes, k)), k


@pytest.mark.parametrize("k", [2, 6])
def test_star_clusters_equal_the_greedy_definition(k):
    """Components then stars (what the Beam graph does) = over all values, in priority
    order: a value's centre is the first earlier centre within k, else itself."""
    rng = np.random.default_rng(k)
    base = rng.integers(0, 2**16, size=3000, dtype=np.uint64)  # low entropy: long chains
    values = np.unique(base | np.uint64(0xABCD) << np.uint64(48))
    values = values[rng.permutation(len(values))]  # priority order: any order
    centre = neardup.near_duplicate_stars(values, k)
    expected, centres = [], []
    for i, v in enumerate(values):
        close = [c for c in centres if int(np.bitwise_count(values[c] ^ v)) <= k]
        expected.append(close[0] if close else i)
        centres += [] if close else [i]
    assert centre.tolist() == expected
    assert (np.bitwise_count(values ^ values[centre]) <= k).all()
    assert len(centres) > len(set(components(len(values), near_duplicate_pairs(values, k)).tolist()))
