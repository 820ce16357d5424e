"""The model-score filter: an openwit checkpoint scores image-caption pairs in curate, every
scored pair keeps its clip_score in the ledger, and pairs below --min-score are dropped
with low_clip_score."""
import glob
import io
import os

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from openwit.pipeline.demo import web as demo_web
from openwit.pipeline.demo.run import write_web_inputs
from openwit.pipeline.output.ledger import current_state, read_ledger
from openwit.pipeline.stages.score import Scorer
from openwit.pipeline.audit.verify import verify
from openwit.trainer.config import TrainConfig
from openwit.trainer.train import train
from test_curate_e2e import curate_args, run_curate


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A scorer trained on a first curation, then two curations of the same web scored by it."""
    root = tmp_path_factory.mktemp("score")
    web = demo_web.build_web(n_images=160, seed=8)
    with demo_web.serve(web.routes) as base_url:
        candidates, vocab = write_web_inputs(str(root / "web"), web, base_url)
        run_curate(curate_args(candidates, vocab, str(root / "plain")))
        checkpoint = str(root / "scorer.pt")
        train(TrainConfig(shards=str(root / "plain" / "shards"), output=checkpoint, steps=200, batch_size=32,
                          log_every=100, seed=0))
        recorded = str(root / "recorded")
        run_curate(curate_args(candidates, vocab, recorded, "--score-model", checkpoint))
        scores = [r["clip_score"] for r in current_state(read_ledger(recorded)).to_pylist()
                  if r["clip_score"] is not None]
        cut = float(np.median(scores))
        filtered = str(root / "filtered")
        manifest = run_curate(curate_args(candidates, vocab, filtered, "--score-model", checkpoint,
                                          "--min-score", f"{cut:.6f}"))
    return {"checkpoint": checkpoint, "plain": str(root / "plain"), "recorded": recorded, "filtered": filtered,
            "cut": cut, "manifest": manifest}


def test_the_scorer_ranks_true_captions_above_swapped_ones(scored):
    """On the pairs it was trained on, each image's own caption outscores another's."""
    scorer = Scorer(scored["checkpoint"])
    samples = list(wds.DataPipeline(wds.SimpleShardList(sorted(glob.glob(os.path.join(scored["plain"], "shards", "*.tar")))),
                                    wds.tarfile_to_samples()))[:60]
    true, swapped = [], []
    for sample, other in zip(samples, samples[1:] + samples[:1]):
        with Image.open(io.BytesIO(sample["jpg"])) as image:
            true.append(scorer.score(image, sample["txt"].decode()))
            swapped.append(scorer.score(image, other["txt"].decode()))
    assert np.mean(true) > np.mean(swapped) + 0.1
    assert np.mean(np.array(true) > np.array(swapped)) > 0.7


def test_every_pair_that_reaches_the_score_stage_keeps_its_score(scored):
    rows = current_state(read_ledger(scored["recorded"])).to_pylist()
    kept = [r for r in rows if r["status"] == "kept"]
    assert kept and all(r["clip_score"] is not None and -1 <= r["clip_score"] <= 1 for r in kept)
    assert not any(r["reason"] == "low_clip_score" for r in rows)  # -1: record only
    # pairs dropped before the stage were never scored
    assert all(r["clip_score"] is None for r in rows if r["stage"] in ("read", "text", "match", "download"))
    plain = {r["uid"]: r["status"] for r in current_state(read_ledger(scored["plain"])).to_pylist()}
    assert {r["uid"]: r["status"] for r in rows} == plain  # scoring alone changes nothing


def test_min_score_drops_the_low_scorers_with_their_reason(scored):
    rows = current_state(read_ledger(scored["filtered"])).to_pylist()
    plain = current_state(read_ledger(scored["plain"])).column("uid").to_pylist()
    assert sorted(r["uid"] for r in rows) == sorted(plain)  # still one current row per input
    low = [r for r in rows if r["reason"] == "low_clip_score"]
    kept = [r for r in rows if r["status"] == "kept"]
    assert low and kept
    assert all(r["stage"] == "score" and r["clip_score"] < scored["cut"] for r in low)
    assert all(r["clip_score"] >= scored["cut"] for r in kept)
    funnel = scored["manifest"]["funnel"]
    assert funnel["image"] - funnel["score"] == len(low)
    assert scored["manifest"]["score_model"]["sha256"] and scored["manifest"]["score_model"]["min_score"] == pytest.approx(scored["cut"])
    assert not verify(scored["filtered"])  # the audit's checks hold, the new reason included
    assert len(glob.glob(os.path.join(scored["filtered"], "shards", "*.tar")))


def test_a_missing_score_model_is_refused(tmp_path):
    from openwit.pipeline.config import parse_curate_args

    with pytest.raises(SystemExit):
        parse_curate_args(["--input", "x", "--output", "y", "--score-model", str(tmp_path / "none.pt")])
    with pytest.raises(SystemExit):
        parse_curate_args(["--input", "x", "--output", "y", "--min-score", "0.2"])
