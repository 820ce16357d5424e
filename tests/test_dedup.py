from openwit.pipeline.stages.dedup import dedup_group
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
