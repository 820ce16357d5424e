"""bench/experiment_tail.py: its plumbing (--tiny: a few hundred pairs, a few steps, two seeds)
and its paired statistics, recomputed here from the per-seed rows it wrote. Not the result."""
import json
import math
import os
import statistics
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import experiment_tail as experiment  # noqa: E402


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("tail")
    experiment.main(["--tiny", "--out", str(out), "--json", str(out / "copy.json")])
    return out, json.load(open(out / "copy.json"))


def test_the_json_holds_every_seed_of_both_variants_and_the_settings_used(report):
    out, r = report
    assert r["settings"]["variants"] == ["unbalanced", "balanced"]
    for variant in ("unbalanced", "balanced"):
        runs = r["runs"][variant]
        assert [row["seed"] for row in runs] == r["settings"]["seeds"] == [0, 1]
        for row in runs:
            assert all(0 <= row[m] <= 1 for m in experiment.METRICS)
            assert len(row["per_concept"]) == r["settings"]["concepts"]
            assert row["uniform"] == pytest.approx(statistics.mean(row["per_concept"]))
    # the trainer got every setting explicitly, context length included
    assert r["trainer"]["context_length"] == experiment.MODELS["small"]["context_length"]
    assert r["verdicts"]["balanced"] in ("supports", "refutes", "inconclusive")
    assert "| uniform |" in (out / "results.md").read_text()
    assert json.load(open(out / "results.json")) == r


def test_both_sets_have_the_same_size_and_balancing_moved_samples_to_the_tail(report):
    _, r = report
    unbalanced, balanced = r["data"]["unbalanced"], r["data"]["balanced"]
    assert r["curated"]["size"] < r["curated"]["pool_kept"]
    assert balanced["tail_mean"] > unbalanced["tail_mean"]
    assert balanced["head_mean"] < unbalanced["head_mean"]
    # every caption names exactly one concept, so the per-concept counts add up to the set
    assert sum(balanced["samples_by_concept"]) == sum(unbalanced["samples_by_concept"]) == r["curated"]["size"]


def test_the_paired_statistics_follow_from_the_per_seed_rows(report):
    _, r = report
    base = {row["seed"]: row for row in r["runs"]["unbalanced"]}
    for m in experiment.METRICS:
        diffs = [row[m] - base[row["seed"]][m] for row in r["runs"]["balanced"]]
        test = r["paired"]["balanced"][m]
        assert test["diffs"] == pytest.approx(diffs)
        assert test["mean"] == pytest.approx(sum(diffs) / len(diffs))
        sd = math.sqrt(sum((d - test["mean"]) ** 2 for d in diffs) / (len(diffs) - 1))
        half = 12.7062 * sd / math.sqrt(2)  # t(0.975, 1 df)
        assert test["t95"] == pytest.approx([test["mean"] - half, test["mean"] + half])
        assert min(diffs) <= test["boot95"][0] <= test["boot95"][1] <= max(diffs)
        assert test["ahead"] == sum(d > 0 for d in diffs)


def test_t_interval_on_a_hand_computed_example():
    # mean 3, sd sqrt(2.5), se sqrt(0.5), t(0.975, 4) = 2.7764
    lo, hi = experiment.t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (lo, hi) == pytest.approx((3 - 2.7764 * math.sqrt(0.5), 3 + 2.7764 * math.sqrt(0.5)))
    with pytest.raises(ValueError):
        experiment.t_interval([1.0])


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 80):
        assert experiment.t975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=2e-4), df
    diffs = [0.031, -0.012, 0.054, 0.020, 0.008]
    ci = stats.ttest_1samp(diffs, 0.0).confidence_interval(0.95)
    assert experiment.t_interval(diffs) == pytest.approx((ci.low, ci.high), abs=1e-5)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    diffs = [0.1, 0.3, -0.2, 0.4, 0.0]
    first = experiment.bootstrap_interval(diffs, 2000)
    assert first == experiment.bootstrap_interval(diffs, 2000)
    assert min(diffs) <= first[0] < statistics.mean(diffs) < first[1] <= max(diffs)


def test_the_verdict_reads_the_uniform_interval_as_registered():
    def test(lo, hi):
        return {"uniform": {"t95": (lo, hi)}}
    assert experiment.verdict(test(0.001, 0.05)) == "supports"
    assert experiment.verdict(test(-0.05, -0.001)) == "refutes"
    assert experiment.verdict(test(-0.01, 0.05)) == "inconclusive"
    assert experiment.verdict(test(math.nan, math.nan)) == "inconclusive"
