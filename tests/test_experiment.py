"""The balancing experiment's plumbing (bench/experiment_balance.py --tiny): a few hundred
pairs and a few steps, so it checks that every variant is curated, sized, trained and
evaluated — not what the result is."""
import json
import os
import sys

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import experiment_balance as experiment  # noqa: E402

from openwit.pipeline.output.ledger import current_state, read_ledger  # noqa: E402


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment")
    experiment.main(["--tiny", "--out", str(out)])
    return out, json.load(open(out / "results.json"))


def test_every_variant_is_trained_and_evaluated(report):
    out, results = report
    assert set(results["runs"]) == set(experiment.VARIANTS)
    for runs in results["runs"].values():
        assert [r["seed"] for r in runs] == [0]
        assert all(0 <= r[m] <= 1 for r in runs for m in ("uniform", "head", "tail"))
    table = (out / "results.md").read_text()
    assert all(f"| {v} |" in table for v in experiment.VARIANTS)
    assert (out / "results.svg").read_text().startswith("<svg")


def test_the_fixed_sets_have_the_balanced_size_and_the_online_one_the_pool(report):
    _, results = report
    data, curated = results["data"], results["curated"]
    for variant in ("unbalanced", "balanced", "scored"):
        assert data[variant]["samples"] == curated["size"], variant
    assert data["online"]["samples"] == curated["pool_kept"] > curated["size"]
    # balancing moved the concept distribution towards the tail
    assert data["balanced"]["tail_share"] > data["unbalanced"]["tail_share"]


def test_the_scored_set_was_cut_by_the_pipelines_score_filter(report):
    out, results = report
    state = current_state(read_ledger(str(out / "curated" / "scored"))).to_pylist()
    low = [r for r in state if r["reason"] == "low_clip_score"]
    assert low and all(r["clip_score"] < results["curated"]["min_score"] for r in low)
    index = pq.read_table(str(out / "curated" / "unbalanced" / "shards" / "00000.parquet"))
    assert "entry_ids" in index.column_names  # online balancing could read these
