import numpy as np
import pytest

from openwit.pipeline.common.urls import normalize_url
from openwit.pipeline.stages.dedup import (
    EvalHashes, band_keys, cluster_labels, decontaminate, dedup_group, edges_in_band, exact_key, near_dup_group,
    phash_distance, survivor_order, url_dedup_group,
)
from openwit.pipeline.common import neardup
from openwit.pipeline.common.neardup import near_duplicate_clusters
from openwit.schemas.record import Record


def sample(uid, w, h):
    return Record(uid=uid, url=f"http://127.0.0.1/{uid}", caption="a cat", source=f"f:{uid}", sha256="ab" * 32,
                  original_width=w, original_height=h)


def test_survivor_is_the_largest_then_the_smallest_uid_whatever_the_order():
    group = [sample("c", 100, 100), sample("a", 50, 50), sample("b", 100, 100), sample("d", 200, 10)]
    for order in (group, group[::-1], group[1:] + group[:1]):
        out = list(dedup_group(order))
        assert len(out) == 4
        [survivor] = [r for r in out if r.status == "active"]
        assert survivor.uid == "b"
        losers = [r for r in out if r.status == "dropped"]
        assert {r.uid for r in losers} == {"a", "c", "d"}
        assert all(r.reason == "duplicate_image" and r.duplicate_of == "b" for r in losers)


def test_a_single_record_survives():
    assert list(dedup_group([sample("a", 1, 1)])) == [sample("a", 1, 1)]


# --- URL normalisation and URL dedup -----------------------------------------------------

@pytest.mark.parametrize("a, b", [
    ("HTTP://Example.COM/a.jpg", "http://example.com/a.jpg"),
    ("http://example.com:80/a.jpg", "http://example.com/a.jpg"),
    ("https://example.com:443/a.jpg#top", "https://example.com/a.jpg"),
    ("http://example.com/x/../a.jpg", "http://example.com/a.jpg"),
    ("http://example.com/x/y/./../../a.jpg", "http://example.com/a.jpg"),
    ("http://example.com/x/..", "http://example.com/"),
    ("http://example.com/./a%2Ejpg", "http://example.com/a.jpg"),
    ("http://example.com/caf%c3%a9.jpg", "http://example.com/caf%C3%A9.jpg"),
    ("http://example.com/café.jpg", "http://example.com/caf%C3%A9.jpg"),
    ("http://example.com/a.jpg?q=%7e", "http://example.com/a.jpg?q=~"),
    ("http://example.com", "http://example.com/"),
    ("http://example.com./a.jpg", "http://example.com/a.jpg"),
    (" http://example.com/a.jpg ", "http://example.com/a.jpg"),
])
def test_urls_that_fetch_the_same_resource_normalise_alike(a, b):
    assert normalize_url(a) == normalize_url(b)


@pytest.mark.parametrize("a, b", [
    ("http://example.com/a.jpg", "https://example.com/a.jpg"),
    ("http://example.com/a.jpg?w=1&h=2", "http://example.com/a.jpg?h=2&w=1"),  # servers may read order
    ("http://example.com/A.jpg", "http://example.com/a.jpg"),  # paths are case-sensitive
    ("http://example.com:8080/a.jpg", "http://example.com/a.jpg"),
    ("http://example.com/a%2Fb.jpg", "http://example.com/a/b.jpg"),  # an escaped slash is not a slash
    ("http://example.com/a.jpg?x=%26", "http://example.com/a.jpg?x=&"),
    ("http://example.com/a//b.jpg", "http://example.com/a/b.jpg"),
    ("http://[::1]:8080/a", "http://[::1:8080]/a"),
    ("http://junk[::1]/x", "http://[::1]/x"),
])
def test_different_resources_stay_different(a, b):
    assert normalize_url(a) != normalize_url(b)


def test_ipv6_hosts_keep_their_brackets():
    assert normalize_url("http://[::1]:80/a") == "http://[::1]/a"
    assert normalize_url("http://[2001:DB8::1]:8080/a") == "http://[2001:db8::1]:8080/a"


def test_unparsable_urls_are_returned_as_they_are():
    assert normalize_url("http://[::1") == "http://[::1"
    assert normalize_url("http://example.com:99999999/a") == "http://example.com:99999999/a"


def test_url_dedup_keeps_the_smallest_uid_and_every_page():
    group = [Record(uid=u, url="http://x/a.jpg", caption=f"cap {u}", source=f"f:{u}", page_url=f"http://p/{u}")
             for u in ("b", "a", "c")]
    out = {r.uid: r for r in url_dedup_group(group)}
    assert out["a"].status == "active"
    for uid in ("b", "c"):
        assert (out[uid].reason, out[uid].stage, out[uid].duplicate_of) == ("duplicate_url", "url_dedup", "a")
        assert out[uid].page_url == f"http://p/{uid}"


def test_image_and_caption_key_separates_captions():
    one = sample("a", 1, 1).update(caption="a  red car")
    assert exact_key(one, "image") == exact_key(one.update(caption="other"), "image")
    assert exact_key(one, "image+caption") == exact_key(one.update(caption="a red car"), "image+caption")
    assert exact_key(one, "image+caption") != exact_key(one.update(caption="other"), "image+caption")


# --- near duplicates: the distributed form equals the kernel -----------------------------

def beam_shaped_clusters(hashes: list[str], k: int) -> dict:
    """Band keys -> groups -> edges -> components, as graph.near_dedup does, in plain Python."""
    groups = {}
    for h in sorted(set(hashes)):
        for key in band_keys(h, k):
            groups.setdefault(key, []).append(h)
    edges = [edge for (band, _), members in groups.items() for edge in edges_in_band(band, members, k)]
    labels = cluster_labels(edges)
    return {h: labels.get(h, h) for h in hashes}


def star_groups(records, k: int) -> tuple[dict, list]:
    """Records grouped by their Beam-shaped component, and what near_dup_group makes of each."""
    labels = beam_shaped_clusters([r.phash for r in records], k)
    groups = {}
    for r in records:
        groups.setdefault(labels[r.phash], []).append(r)
    return groups, [r for group in groups.values() for r in near_dup_group(group, k)]


@pytest.mark.parametrize("k", [0, 3, 8])
def test_band_groups_give_the_kernels_clusters(k):
    rng = np.random.default_rng(k)
    base = rng.integers(0, 2**64 - 1, size=3000, dtype=np.uint64, endpoint=True)
    flips = [np.uint64(sum(1 << int(b) for b in rng.choice(64, size=int(rng.integers(0, k + 2)), replace=False)))
             for _ in range(1000)]
    values = np.concatenate([base, base[:1000] ^ np.array(flips, dtype=np.uint64)])
    hashes = [f"{int(v):016x}" for v in values]
    labels = beam_shaped_clusters(hashes, k)
    expected = near_duplicate_clusters(values, k)
    # the same partition
    assert len(set(zip(expected, (labels[h] for h in hashes)))) == len(set(expected)) == len(set(labels.values()))
    assert k == 0 or len(set(expected)) < len(set(hashes))  # the planted copies really merged


def test_near_dup_survivor_and_details():
    group = [sample(u, w, h).update(phash=p) for u, w, h, p in [
        ("a", 300, 200, "ffff000000000000"), ("b", 600, 400, "ffff000000000001"), ("c", 600, 400, "ffff000000000003")]]
    out = {r.uid: r for r in near_dup_group(group, 8)}
    assert out["b"].status == "active"
    assert (out["a"].reason, out["a"].duplicate_of) == ("near_duplicate", "b")
    # records without a colour signature (made before signatures): pHash alone decides
    assert out["c"].detail == "phash ffff000000000003 at distance 1 from ffff000000000001 of b, colour distance unknown"


def signature(*lab_cells) -> str:
    """A colour signature of 16 cells: the given (L*, a*, b*) cells, then the last repeated."""
    cells = list(lab_cells) + [lab_cells[-1]] * (16 - len(lab_cells))
    return bytes(round(v) for L, a, b in cells for v in (L * 2.55, a + 128, b + 128)).hex()


def lab_distance(a: str, b: str) -> float:
    """The colour distance by its definition: the largest per-cell CIELAB distance."""
    def cells(sig):
        codes = bytes.fromhex(sig)
        return [(codes[i] / 2.55, codes[i + 1] - 128, codes[i + 2] - 128) for i in range(0, len(codes), 3)]
    return max(sum((x - y) ** 2 for x, y in zip(p, q)) ** 0.5 for p, q in zip(cells(a), cells(b)))


def test_recoloured_twins_with_one_phash_are_both_kept():
    """pHash is colour-blind: a light-blue flag and a pink one with the same luminance
    layout share a pHash. Each keeps its colour-close copies; neither swallows the other."""
    blue, pink = signature((70, -10, -30)), signature((70, 40, 5))
    blue_copy = signature((71, -9, -27), (70, -12, -30))  # re-encoded: a few units off
    group = [sample("blue", 600, 400).update(phash="ffff000000000000", colour_sig=blue),
             sample("pink", 300, 200).update(phash="ffff000000000000", colour_sig=pink),
             sample("blue-copy", 300, 200).update(phash="ffff000000000003", colour_sig=blue_copy),
             sample("pink-copy", 200, 100).update(phash="ffff000000000001", colour_sig=pink),
             sample("old", 100, 100).update(phash="ffff000000000001")]  # no signature: pHash only
    for order in (group, group[::-1]):
        out = {r.uid: r for r in near_dup_group(order, 8)}
        assert out["blue"].status == out["pink"].status == "active"
        assert (out["blue-copy"].duplicate_of, out["pink-copy"].duplicate_of) == ("blue", "pink")
        assert out["blue-copy"].detail == ("phash ffff000000000003 at distance 2 from ffff000000000000 of blue, "
                                           f"colour distance {lab_distance(blue_copy, blue):.1f}")
        assert out["pink-copy"].detail.endswith("from ffff000000000000 of pink, colour distance 0.0")
        assert out["old"].duplicate_of == "blue" and out["old"].detail.endswith(", colour distance unknown")
    assert [r.status for r in near_dup_group(group[:2], 8, max_colour=70)] == ["active", "dropped"]


def flipped(value: int, bits) -> str:
    return f"{value ^ sum(1 << int(b) for b in bits):016x}"


def test_a_chain_keeps_both_ends():
    """A~B and B~C within k, A and C 2k apart: one component, but C is no copy of A."""
    a = 0x0123456789ABCDEF
    group = [sample("a", 900, 900).update(phash=flipped(a, [])),
             sample("b", 600, 600).update(phash=flipped(a, range(8))),
             sample("c", 300, 300).update(phash=flipped(a, range(16)))]
    for order in (group, group[::-1]):
        out = {r.uid: r for r in near_dup_group(order, 8)}
        assert out["a"].status == out["c"].status == "active"
        assert (out["b"].reason, out["b"].duplicate_of) == ("near_duplicate", "a")
        assert out["b"].detail.endswith(f"at distance 8 from {flipped(a, [])} of a, colour distance unknown")
    # The middle one first: it claims both ends, each within k of it.
    group[1] = group[1].update(original_width=2000)
    out = {r.uid: r for r in near_dup_group(group, 8)}
    assert [r.uid for r in out.values() if r.status == "active"] == ["b"]
    assert out["a"].duplicate_of == out["c"].duplicate_of == "b"


def check_stars(out: list, k: int) -> list:
    """Every near-dup drop within k of the survivor it names; survivors pairwise > k."""
    by_uid = {r.uid: r for r in out}
    kept = [r for r in out if r.status == "active"]
    for r in out:
        if r.status != "active":
            survivor = by_uid[r.duplicate_of]
            assert survivor.status == "active" and phash_distance(r.phash, survivor.phash) <= k, r
    values = np.array([int(r.phash, 16) for r in kept], dtype=np.uint64)
    for i in range(len(values)):  # survivors of one component are few
        assert (np.bitwise_count(values[i + 1:] ^ values[i]) > k).all()
    return kept


def test_planted_chains_never_drop_far_from_the_survivor():
    rng = np.random.default_rng(7)
    k, out = 6, []
    for chain in range(300):
        start, length = int(rng.integers(0, 2**63)), int(rng.integers(3, 9))
        bits = rng.permutation(64)
        # link i is `i * k` fresh bits away from the start: consecutive links k apart
        group = [sample(f"{chain}-{i}", int(rng.integers(1, 4)) * 100, 100).update(
            phash=flipped(start, bits[:i * k] if i * k <= 64 else bits)) for i in range(min(length, 10))]
        got = list(near_dup_group(group, k))
        kept = check_stars(got, k)
        assert len(kept) >= (len({r.phash for r in group}) + 2) // 3  # a star covers at most 3 links
        out += got
    assert sum(r.status != "active" for r in out) > 300


def brute_force_stars(records: list, k: int, max_colour=None) -> dict:
    """uid -> survivor uid, by definition: in survivor order, a (pHash, colour signature)'s
    centre is the first earlier centre close to it (pHash within k and, with `max_colour`,
    colour within max_colour unless either signature is missing), else itself; a record's
    survivor is its centre's best record."""
    records = sorted(records, key=survivor_order)
    centres, looks, best, centre_of = [], [], {}, {}
    for r in records:
        look = (r.phash, r.colour_sig if max_colour is not None else None)
        if look in centre_of:
            continue
        value = int(r.phash, 16)
        near = np.flatnonzero(np.bitwise_count(np.array(centres, dtype=np.uint64) ^ np.uint64(value)) <= k)
        close = [looks[i] for i in near if max_colour is None or not (look[1] and looks[i][1])
                 or lab_distance(look[1], looks[i][1]) <= max_colour]
        if close:
            centre_of[look] = close[0]
        else:
            centres.append(value)
            looks.append(look)
            centre_of[look] = look
            best[look] = r.uid
    if max_colour is None:
        return {r.uid: best[centre_of[(r.phash, None)]] for r in records}
    return {r.uid: best[centre_of[(r.phash, r.colour_sig)]] for r in records}


@pytest.mark.parametrize("k", [3, 8])
def test_band_groups_and_stars_equal_brute_force_on_20k_hashes(k):
    rng = np.random.default_rng(100 + k)
    base = rng.integers(0, 2**64 - 1, size=12000, dtype=np.uint64, endpoint=True)
    values = [int(v) for v in base]
    for step in range(4):  # chains: copies of copies, each 1..k bits from the last
        for v in values[step * 2000:(step + 1) * 2000]:
            values.append(int(flipped(v, rng.choice(64, size=int(rng.integers(1, k + 1)), replace=False)), 16))
    records = [sample(f"u{i:05d}", int(rng.integers(1, 5)) * 100, 100).update(phash=f"{v:016x}")
               for i, v in enumerate(values)]
    records += [sample(f"x{i:05d}", 400, 100).update(phash=r.phash) for i, r in enumerate(records[:500])]
    groups, out = star_groups(records, k)
    got = {r.uid: r.duplicate_of or r.uid for r in out}
    assert got == brute_force_stars(records, k)
    assert sum(r.status != "active" for r in out) > 2000
    by_uid = {r.uid: r for r in out}
    for group in groups.values():
        check_stars([by_uid[r.uid] for r in group], k)


def test_a_giant_component_of_near_blank_hashes_is_split_into_stars():
    """100K distinct sparse hashes (flat, near-blank images: few bits set) form one
    component at k = 8; star clustering splits it on one worker, in O(n) memory."""
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 64, size=(150000, 7))
    values = np.unique(np.bitwise_or.reduce(np.uint64(1) << bits.astype(np.uint64), axis=1))[:100000]
    assert len(values) == 100000
    centre = neardup.star_centers(values, 8)
    assert (np.bitwise_count(values ^ values[centre]) <= 8).all()
    centres = values[np.unique(centre)]
    assert 1 < len(centres) < 1000
    for i in range(len(centres)):
        assert (np.bitwise_count(centres[i + 1:] ^ centres[i]) > 8).all()


def test_decontamination_names_the_nearest_eval_item():
    eval_hashes = EvalHashes(["eval/1.png", "eval/2.png"], ["ffff000000000000", "00000000ffffffff"])
    hit = decontaminate(sample("a", 1, 1).update(phash="ffff00000000000f"), eval_hashes, 4)
    assert (hit.reason, hit.stage, hit.detail) == ("eval_contamination", "dedup", "eval item eval/1.png at phash distance 4")
    assert decontaminate(sample("a", 1, 1).update(phash="ffff00000000001f"), eval_hashes, 4).status == "active"
    assert decontaminate(sample("a", 1, 1), eval_hashes, 4).status == "active"  # no hash: nothing to compare


def test_band_groups_and_stars_equal_brute_force_with_colour():
    """The combined rule (pHash within k and colour within the limit) through band groups,
    components and near_dup_group equals its definition run over all records: copies whose
    colour drifted a little, recoloured copies (a colour veto), twins sharing a pHash in
    another colour, and records without a signature."""
    rng = np.random.default_rng(26)
    k, limit = 6, neardup.DEFAULT_COLOUR_DISTANCE
    palette = [rng.integers(30, 226, size=48) for _ in range(8)]

    def colour(i, jitter):
        return bytes(int(v) for v in np.clip(palette[i] + rng.integers(-jitter, jitter + 1, 48), 0, 255)).hex()

    base = [int(v) for v in rng.integers(0, 2**64 - 1, size=3000, dtype=np.uint64, endpoint=True)]
    items = [(v, colour(int(rng.integers(8)), 1)) for v in base]
    for step in range(3):  # chains of copies; a third of them recoloured
        for v, c in items[step * 800:(step + 1) * 800]:
            moved = int(flipped(v, rng.choice(64, size=int(rng.integers(1, k + 1)), replace=False)), 16)
            recoloured = rng.random() < 0.3
            items.append((moved, colour(int(rng.integers(8)), 1) if recoloured else
                          bytes(int(x) for x in np.clip(np.frombuffer(bytes.fromhex(c), np.uint8)
                                                        + rng.integers(-4, 5, 48), 0, 255)).hex()))
    items += [(v, colour(int(rng.integers(8)), 2)) for v, _ in items[:600]]  # same pHash, maybe other colour
    items += [(v, None) for v, _ in items[600:800]]  # no signature
    records = [sample(f"u{i:05d}", int(rng.integers(1, 5)) * 100, 100).update(phash=f"{v:016x}", colour_sig=c)
               for i, (v, c) in enumerate(items)]
    groups, out = star_groups(records, k)
    got = {r.uid: r.duplicate_of or r.uid for r in out}
    assert got == brute_force_stars(records, k, limit)
    assert got != brute_force_stars(records, k)  # the colour check really changed decisions
    drops = [r for r in out if r.status != "active"]
    assert len(drops) > 1000
    assert any(r.detail.endswith("unknown") for r in drops)
    assert all(r.detail.endswith("unknown") or float(r.detail.rsplit(" ", 1)[1]) <= limit for r in drops)
