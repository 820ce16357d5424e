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


def brute_force_combined_pairs(hashes, colours, k, max_colour) -> np.ndarray:
    """Pairs within k in pHash and within max_colour in colour (unknown colour: allowed)."""
    pairs = []
    for i in range(len(hashes) - 1):
        close = i + 1 + np.flatnonzero(np.bitwise_count(hashes[i] ^ hashes[i + 1:]) <= k)
        far = np.sqrt(((colours[close].astype(np.float64) - colours[i]) ** 2).sum(axis=2)).max(axis=1) > max_colour
        pairs += [(i, j) for j in close[~far]]
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def random_colours(n: int, rng, families: int = 6) -> np.ndarray:
    """Colour rows as colour_values makes them: a few families, each jittered, some unknown."""
    codes = rng.integers(40, 216, size=(families, 16, 3))[rng.integers(0, families, size=n)]
    codes = np.clip(codes + rng.integers(-5, 6, size=codes.shape), 0, 255).astype(np.uint8)
    signatures = [c.tobytes().hex() for c in codes]
    for i in rng.choice(n, size=n // 20, replace=False):
        signatures[i] = None
    return neardup.colour_values(signatures)


@pytest.mark.parametrize("k", [4, 8])
def test_colour_checked_banded_pairs_equal_brute_force(k):
    rng = np.random.default_rng(40 + k)
    hashes = planted_hashes(6000, k, seed=k)
    colours = random_colours(len(hashes), rng)
    pairs = neardup.colour_checked_pairs(near_duplicate_pairs(hashes, k), colours)
    expected = brute_force_combined_pairs(hashes, colours, k, neardup.DEFAULT_COLOUR_DISTANCE)
    assert np.array_equal(pairs, expected)
    assert 0 < len(expected) < len(near_duplicate_pairs(hashes, k))  # the colour check vetoed some


@pytest.mark.parametrize("k", [2, 6])
def test_colour_stars_equal_the_greedy_definition_with_repeated_hashes(k):
    """Items (pHash, colour) in priority order, pHashes repeating (recoloured twins): a
    centre claims only items close in both; = the definition over all items."""
    rng = np.random.default_rng(k)
    values = np.unique(rng.integers(0, 2**14, size=1500, dtype=np.uint64) | np.uint64(0xABCD) << np.uint64(48))
    values = np.concatenate([values, values[:500]])[rng.permutation(len(values) + 500)]
    colours = random_colours(len(values), rng)
    limit = neardup.DEFAULT_COLOUR_DISTANCE
    centre = neardup.near_duplicate_stars(values, k, colours=colours, max_colour=limit)
    expected, centres = [], []
    for i, v in enumerate(values):
        close = [c for c in centres if int(np.bitwise_count(values[c] ^ v)) <= k and not
                 np.sqrt(((colours[c].astype(np.float64) - colours[i]) ** 2).sum(axis=1)).max() > limit]
        expected.append(close[0] if close else i)
        centres += [] if close else [i]
    assert centre.tolist() == expected
    assert len(centres) > len(np.unique(neardup.near_duplicate_stars(np.unique(values), k)))  # colour split stars


def flat_planted_set(hues: int, chroma: float):
    """(graphic id, copy name, pHash, colour signature) of every distinct flat graphic and its
    copies, hashed as curation hashes a download."""
    from flat_graphics import copies, members
    from openwit.pipeline.stages.image import image_colour_signature

    rows = []
    for graphic, (_, image) in enumerate(members(hues, chroma)):
        for name, data in copies(image):
            processed = process_image(data, ImageConfig(min_image_size=0))
            rows.append((graphic, name, int(processed.phash, 16), image_colour_signature(data)))
    return rows


def test_flat_graphics_in_other_hues_are_never_merged_and_their_copies_still_are():
    """Flags and transparent icons in hues 45 degrees apart at equal luminance hash alike;
    the colour check keeps them apart and costs no copy that pHash finds."""
    k, limit = DEFAULT_DISTANCE, neardup.DEFAULT_COLOUR_DISTANCE
    rows = flat_planted_set(hues=8, chroma=0.6)
    graphic = np.array([r[0] for r in rows])
    hashes = np.array([r[2] for r in rows], dtype=np.uint64)
    colours = neardup.colour_values(r[3] for r in rows)
    same = graphic[:, None] == graphic[None, :]
    phash_close = np.bitwise_count(hashes[:, None] ^ hashes[None, :]) <= k
    colour_close = neardup.colour_close(neardup.colour_distances(colours[:, None], colours[None, :]), limit)
    assert (phash_close & ~same).sum() > 1000  # pHash alone merges distinct graphics
    assert not (phash_close & colour_close & ~same).any()  # the combined rule never does
    assert (phash_close & same & ~colour_close).sum() == 0  # and loses no copy pHash finds
    assert (phash_close & same).sum() > 3 * len(rows)
    # Stars in survivor order: no star holds two graphics; every graphic's copies within
    # k of its original share that original's star or another star of the same graphic.
    centre = neardup.near_duplicate_stars(hashes, k, colours=colours, max_colour=limit)
    assert (graphic[centre] == graphic).all()
    assert len(np.unique(centre)) < len(rows)
    # Transparency: an icon and its copy flattened onto white are the same picture.
    by_name = {(r[0], r[1]): r for r in rows}
    for g in set(graphic.tolist()):
        original, flat = by_name[(g, "original png")], by_name[(g, "flattened png")]
        assert (original[2], original[3]) == (flat[2], flat[3])


def test_colour_signature_reads_back_as_cielab():
    """The format contract between image.py (writes) and neardup (reads): a solid sRGB red
    reads back as its CIELAB (D65) reference values 53.24, 80.09, 67.20 in all 16 cells;
    white on a transparent PNG's empty half (alpha is matted on white)."""
    from flat_graphics import encode
    from openwit.pipeline.stages.image import image_colour_signature

    red = neardup.colour_values([image_colour_signature(encode(Image.new("RGB", (64, 64), (255, 0, 0)), "PNG"))])[0]
    assert red.shape == (16, 3) and np.abs(red - [53.24, 80.09, 67.20]).max() < 0.6
    half = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    half.paste((255, 0, 0, 255), (0, 0, 32, 64))
    cells = neardup.colour_values([image_colour_signature(encode(half, "PNG"))])[0].reshape(4, 4, 3)
    assert np.abs(cells[:, :2] - [53.24, 80.09, 67.20]).max() < 0.6 and np.abs(cells[:, 2:] - [100, 0, 0]).max() < 0.6
