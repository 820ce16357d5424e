import numpy as np
import pytest

from openwit.pipeline.common.urls import normalize_url
from openwit.pipeline.stages.dedup import (
    EvalHashes, band_keys, cluster_labels, decontaminate, dedup_group, edges_in_band, exact_key, near_dup_group,
    url_dedup_group,
)
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
    out = {r.uid: r for r in near_dup_group(group)}
    assert out["b"].status == "active"
    assert (out["a"].reason, out["a"].duplicate_of) == ("near_duplicate", "b")
    assert out["c"].detail == "phash ffff000000000003 at distance 1 from ffff000000000001"


def test_decontamination_names_the_nearest_eval_item():
    eval_hashes = EvalHashes(["eval/1.png", "eval/2.png"], ["ffff000000000000", "00000000ffffffff"])
    hit = decontaminate(sample("a", 1, 1).update(phash="ffff00000000000f"), eval_hashes, 4)
    assert (hit.reason, hit.stage, hit.detail) == ("eval_contamination", "dedup", "eval item eval/1.png at phash distance 4")
    assert decontaminate(sample("a", 1, 1).update(phash="ffff00000000001f"), eval_hashes, 4).status == "active"
    assert decontaminate(sample("a", 1, 1), eval_hashes, 4).status == "active"  # no hash: nothing to compare
