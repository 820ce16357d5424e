import numpy as np
import pytest

from openwit.pipeline.stages.balance import (
    balance_draw, balance_record, count_entries, keep_probability, phase_threshold, tail_share, threshold_for_tail,
)
from openwit.schemas.record import Record


def test_count_entries_is_a_dense_bincount():
    counts = count_entries([(0, 2), (2,), (), (4, 2)], vocab_size=6)
    assert counts.tolist() == [1, 0, 3, 0, 1, 0]


def test_keep_probability_follows_the_formula():
    counts = np.array([10, 100, 1000, 5])
    assert keep_probability([0], counts, threshold=20) == 1.0  # entries under t are always kept
    assert keep_probability([1], counts, threshold=20) == pytest.approx(0.2)
    # any entry may keep the pair: 1 - (1 - 0.2)(1 - 0.02)
    assert keep_probability([1, 2], counts, threshold=20) == pytest.approx(1 - 0.8 * 0.98)
    assert keep_probability([2, 3], counts, threshold=20) == 1.0


def test_draw_depends_on_content_and_seed_only():
    a = balance_draw(0, "http://x/a.jpg", "a dog")
    assert a == balance_draw(0, "http://x/a.jpg", "a dog")
    assert 0.0 <= a < 1.0
    assert a != balance_draw(1, "http://x/a.jpg", "a dog")
    assert a != balance_draw(0, "http://x/a.jpg", "a cat")
    draws = [balance_draw(3, f"http://x/{i}.jpg", "c") for i in range(20000)]
    assert abs(np.mean(draws) - 0.5) < 0.01  # uniform enough that keep rates follow p
    assert abs(np.mean(np.array(draws) < 0.1) - 0.1) < 0.01


def test_balancing_caps_a_head_entry_near_t():
    # 10,000 pairs matching entry 0 only, 50 matching entry 1 only: cap t = 500.
    records = [Record(uid=str(i), url=f"http://x/{i}.jpg", caption="head", source=f"f:{i}", entry_ids=(0,))
               for i in range(10000)]
    records += [Record(uid=f"t{i}", url=f"http://x/t{i}.jpg", caption="tail", source=f"g:{i}", entry_ids=(1,))
                for i in range(50)]
    counts = count_entries([r.entry_ids for r in records], 2)
    kept = [r for r in records if balance_record(r, counts, threshold=500, seed=0).status == "active"]
    head = sum(1 for r in kept if r.entry_ids == (0,))
    tail = sum(1 for r in kept if r.entry_ids == (1,))
    assert tail == 50
    assert 430 < head < 570  # binomial(10000, 0.05): mean 500, sd 22
    dropped = balance_record(records[0].update(url="http://x/other.jpg"), counts, threshold=1, seed=0)
    assert dropped.reason == "balanced_out_final" and dropped.detail.startswith("p=")
    pre = balance_record(records[0].update(url="http://x/other.jpg"), counts, threshold=1, seed=0, phase="pre")
    assert (pre.stage, pre.reason) == ("balance_pre", "balanced_out_pre")


def test_phases_draw_independently():
    pre = [balance_draw(0, f"http://x/{i}.jpg", "c", "pre") for i in range(20000)]
    final = [balance_draw(0, f"http://x/{i}.jpg", "c", "final") for i in range(20000)]
    assert abs(np.corrcoef(pre, final)[0, 1]) < 0.03
    with pytest.raises(ValueError):
        balance_draw(0, "u", "c", "middle")
    assert phase_threshold(100, "pre", 2.5) == 250.0 and phase_threshold(100, "final", 2.5) == 100.0


def test_threshold_for_tail_follows_metaclips_rule():
    counts = np.array([0, 1, 1, 2, 5, 10, 100, 1000])  # 1119 matches
    t = threshold_for_tail(counts, 0.06)
    assert t == 101  # entries below 100 hold 19 / 1119 = 1.7%, below 101 hold 119 / 1119 = 10.6%
    for fraction in (0.001, 0.05, 0.3, 0.9, 1.0):
        t = threshold_for_tail(counts, fraction)
        assert tail_share(counts, t) >= fraction
        assert t == 1 or tail_share(counts, t - 1) < fraction  # the smallest such t
    with pytest.raises(ValueError):
        threshold_for_tail(counts, 0.0)
