"""bench/gpu_check.py: its whole --cpu-smoke run (every check on CPU with tiny shapes, shards
curated on the spot), judged from the JSON it writes; and the verdict helpers on inputs where
they must fail. No timing is asserted."""
import json
import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, BENCH)
import gpu_check  # noqa: E402

CHECKS = {"shards", "openwit train", "data wait", "loss falls", "--compile", "resume", "torchrun path",
          "open_clip_train.main"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_check")
    out = tmp / "smoke.json"
    done = subprocess.run([sys.executable, os.path.join(BENCH, "gpu_check.py"), "--cpu-smoke", "--json", str(out),
                           "--openclip-venv", str(tmp / "no-venv")], capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    return report, {row["check"]: row for row in report["rows"]}, done.stdout


@pytest.mark.timeout(600)
def test_every_check_passes_or_says_why_it_was_skipped(smoke):
    report, rows, stdout = smoke
    assert report["mode"] == "cpu-smoke" and set(rows) == CHECKS
    for row in rows.values():
        assert row["status"] in ("PASS", "SKIP"), row
        if row["status"] == "SKIP":
            assert len(row["detail"]) > 20, row  # a reason, not a bare SKIP
        assert row["check"] in stdout  # the printed table has every row
    assert "no open_clip venv" in rows["open_clip_train.main"]["detail"]
    assert rows["openwit train"]["numbers"]["samples_per_s"] > 0
    wait = rows["data wait"]["numbers"]
    assert 0 <= wait["data_wait"] < 1 and wait["workers"] == 1  # the loader ran in a worker process


@pytest.mark.timeout(600)
def test_the_loss_fell_and_the_resumed_run_continued_the_uninterrupted_one(smoke):
    _, rows, _ = smoke
    loss = rows["loss falls"]["numbers"]
    assert loss["steps"] == 30 and loss["last"] <= 0.9 * loss["first"]
    resume = rows["resume"]["numbers"]
    assert resume["final_step"] == resume["steps"] == 6
    assert len(resume["resumed_losses"]) == len(resume["whole_losses"]) == 3
    for resumed, whole in zip(resume["resumed_losses"], resume["whole_losses"]):
        assert resumed == pytest.approx(whole, rel=1e-4)
    ddp = rows["torchrun path"]["numbers"]
    assert ddp["returncode"] == 0 and ddp["ddp"] and ddp["final_step"] == 4


def test_loss_check_fails_on_a_flat_curve():
    assert gpu_check.losses_fall([2.0] * 10, 0.9)[0] is False
    assert gpu_check.losses_fall([2.0] * 5 + [1.7] * 5, 0.9)[0] is True


def test_data_wait_share_weights_each_step_by_its_duration():
    # a slow step (10 samples/s) that waited half its time, a fast one (30 samples/s) that never waited
    log = [{"samples_per_s": 10.0, "data_wait": 0.5}, {"samples_per_s": 30.0, "data_wait": 0.0}]
    assert gpu_check.data_wait_share(log, 0) == pytest.approx((0.1 * 0.5) / (0.1 + 1 / 30))
    assert gpu_check.data_wait_share(log, 1) == 0.0
