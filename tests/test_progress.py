"""Live progress (issue 25): counters across processes, the plain line, and `openwit curate`
under a pseudo-terminal, off a terminal, with --quiet and with --progress-json; no stray
import warnings on a normal run."""
import json
import multiprocessing
import os
import pty
import select
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from openwit.pipeline.common import progress
from openwit.pipeline.demo import web as demo_web
from openwit.pipeline.demo.run import write_web_inputs


def _worker(folder, n):
    os.environ[progress.ENV] = folder
    for _ in range(n):
        progress.bump(progress.DOWNLOADED)
    progress.bump("dropped.download.http_404", 2)
    progress.flush()


def test_counters_of_several_processes_are_summed(tmp_path):
    folder = str(tmp_path)
    open(os.path.join(folder, progress.RUN_TOKEN), "w").close()  # as start_run leaves it: a run is on
    context = multiprocessing.get_context("spawn")  # fresh processes, as Beam's workers are
    workers = [context.Process(target=_worker, args=(folder, n)) for n in (3, 5)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(os.listdir(folder)) == sorted([progress.RUN_TOKEN] + [f"worker-{w.pid}.json" for w in workers])
    totals = progress.read_totals(folder)
    assert totals == {progress.DOWNLOADED: 8, "dropped.download.http_404": 4}


def test_a_new_run_starts_from_zero_and_cleans_up(tmp_path, monkeypatch):
    folder = str(tmp_path / "p")
    monkeypatch.delenv(progress.ENV, raising=False)
    progress.start_run(folder)
    progress.bump(progress.CANDIDATES, 7)
    assert progress.end_run(folder)[progress.CANDIDATES] == 7
    assert os.listdir(folder) == [] and progress.ENV not in os.environ
    progress.start_run(folder)  # the same process again (the in-memory runner): counters reset
    progress.bump(progress.CANDIDATES, 2)
    assert progress.end_run(folder)[progress.CANDIDATES] == 2


def _paused_worker(folder, reached, go):
    """A worker whose flush has read the folder's name, then stalls until the launcher has
    ended the run (as the daemon flusher, or the exit-time flush, may)."""
    os.environ[progress.ENV] = folder
    progress._env_checked = True  # no background flusher: the test drives the one flush
    progress.bump(progress.DOWNLOADED, 3)
    counts = progress.snapshot

    def stalled():
        reached.set()
        go.wait(60)
        return counts()
    progress.snapshot = stalled
    progress.flush()


def test_a_worker_flush_that_was_under_way_when_the_run_ended_leaves_no_file(tmp_path, monkeypatch):
    folder = str(tmp_path / "p")
    monkeypatch.delenv(progress.ENV, raising=False)
    progress.start_run(folder)
    context = multiprocessing.get_context("spawn")
    reached, go = context.Event(), context.Event()
    worker = context.Process(target=_paused_worker, args=(folder, reached, go))
    worker.start()
    assert reached.wait(60)  # the worker knows the folder and is about to write
    progress.end_run(folder)
    go.set()
    worker.join(60)
    assert worker.exitcode == 0
    assert os.listdir(folder) == []  # nothing written after the launcher cleaned up


def test_the_view_and_its_plain_line():
    totals = {"candidates": 1000, "passed.balance_pre": 600, "downloaded": 200, "kept": 0,
              "dropped.download.http_404": 30, "dropped.text.too_short": 50, "dropped.image.decode_error": 5,
              "dropped.download.timeout": 1}
    shown = progress.view(totals, 75.0, 20.0)
    assert shown["downloads_done"] == 200 and shown["downloads_to_do"] == 600
    assert shown["download_eta_s"] == (600 - 200) / 20.0
    assert list(shown["drop_reasons"])[:3] == ["too_short", "http_404", "decode_error"]
    line = progress.plain_line(shown)
    assert "1,000 candidates read" in line and "downloads 200/600" in line and "20.0 images/s" in line
    assert "ETA 0:00:20" in line and "too_short 50" in line and "timeout" not in line  # top three only
    assert "\r" not in line and "\n" not in line


def test_the_rate_follows_the_last_seconds():
    rate = progress.Rate()
    assert rate.add(0.0, 0) is None
    assert rate.add(10.0, 100) == 10.0
    for second in range(11, 60):
        rate.add(float(second), 100 + 50 * (second - 10))
    assert rate.add(60.0, 100 + 50 * 50) == pytest.approx(50.0)  # the old slow start has left the window


def test_a_bad_interval_is_a_user_error():
    from openwit.pipeline.common.errors import UserError

    with pytest.raises(UserError):
        progress.options_from(["--progress-every", "0"])


# ------------------------------------------------------------------ the command, end to end


@pytest.fixture(scope="module")
def demo_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress")
    web = demo_web.build_web(n_images=60, seed=5)
    with demo_web.serve(web.routes) as base_url:
        candidates, vocab = write_web_inputs(str(root / "web"), web, base_url)
        yield {"root": root, "candidates": candidates, "vocab": vocab}


def curate_argv(inputs, out, *extra):
    return [sys.executable, "-m", "openwit.pipeline.cli", "curate", "--input", inputs["candidates"],
            "--vocab", inputs["vocab"], "--output", str(inputs["root"] / out), "--threshold", "100000",
            "--image-size", "48", "--timeout", "5", "--retries", "0", "--allow-loopback", "--min-image-size", "32",
            "--languages", "all", "--ledger-parts", "2", *extra]


def run_plain(argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def run_in_pty(argv) -> tuple[int, str]:
    """The command with a pseudo-terminal as stdin, stdout and stderr; all it wrote."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(argv[0], argv)
    chunks = []
    while True:
        ready, _, _ = select.select([fd], [], [], 300)
        if not ready:
            break
        try:
            data = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode("utf-8", errors="replace")


def assert_no_stray_warnings(text):
    lines = text.splitlines()
    assert not [line for line in lines if line.startswith("WARNING:root:")]
    assert "apitools" not in text and "DeprecationWarning" not in text and "Traceback" not in text


def test_off_a_terminal_progress_comes_as_periodic_plain_lines(demo_inputs):
    result = run_plain(curate_argv(demo_inputs, "plain", "--progress-every", "0.5"))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("progress ")]
    assert len(lines) >= 2, result.stderr
    assert "\r" not in result.stderr  # no bar drawing in a log
    assert any("candidates read" in line for line in lines)
    # the summary still ends the run, now with wall time and images/s
    assert result.stdout.splitlines()[0].startswith("step") and "images/s" in result.stdout
    assert_no_stray_warnings(result.stdout + result.stderr)


def test_on_a_terminal_a_live_display_updates_before_the_end(demo_inputs):
    code, text = run_in_pty(curate_argv(demo_inputs, "tty"))
    assert code == 0, text
    before_summary = text.split("\nstep")[0]
    draws = [part for part in before_summary.split("\r") if "downloads" in part]
    assert len(draws) >= 2, text  # the display was redrawn while the run went on
    assert any("read " in draw for draw in draws)
    assert_no_stray_warnings(text)


def test_quiet_prints_only_the_summary_and_progress_json_has_the_counters(demo_inputs):
    json_path = str(demo_inputs["root"] / "progress.json")
    result = run_plain(curate_argv(demo_inputs, "quiet", "--quiet", "--progress-every", "0.5",
                                   "--progress-json", json_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines()[0].startswith("step")
    shown = json.load(open(json_path))
    rows = pq.read_table(demo_inputs["candidates"]).num_rows
    manifest = json.load(open(demo_inputs["root"] / "quiet" / "manifest.json"))
    assert shown["finished"] is True and shown["candidates"] == rows
    assert shown["kept"] == manifest["funnel"]["kept"]
    assert shown["downloads_done"] == shown["downloads_to_do"] == manifest["funnel"]["balance_pre"]
    assert not os.listdir(demo_inputs["root"] / "quiet" / ".openwit" / "progress")  # the side channel is emptied


def test_warnings_worth_acting_on_come_once_with_their_counts():
    from openwit.pipeline.curate.commands import warning_lines

    reasons = [{"stage": "download", "reason": "domain_unavailable", "count": 1200},
               {"stage": "read", "reason": "malformed_row", "count": 3},
               {"stage": "download", "reason": "http_404", "count": 90}]
    lines = warning_lines(reasons, "OUT")
    assert len(lines) == 2
    assert lines[0].startswith("warning: 1,200 ") and "circuit breaker" in lines[0] and "--retry-failed OUT" in lines[0]
    assert lines[1].startswith("warning: 3 ") and "damaged archive" in lines[1]
    assert warning_lines(reasons[2:], "OUT") == []  # the web being the web is no warning


def test_a_loop_shows_plain_lines_and_its_json(tmp_path):
    import io

    stream, json_path = io.StringIO(), str(tmp_path / "p.json")
    options = progress.Options(quiet=False, every=1e-9, json_path=json_path)
    with progress.LoopProgress("extract", 3, options, stream=stream) as shown:
        for done in range(3):
            shown.advance(candidates=100 * (done + 1))
    lines = stream.getvalue().splitlines()
    assert lines[-1].endswith("extract 3/3 files; 300 candidates") and len(lines) == 3
    assert json.load(open(json_path)) | {"elapsed_s": 0} == {"what": "extract", "elapsed_s": 0, "done": 3, "total": 3,
                                                            "unit": "files", "candidates": 300, "finished": True}
    quiet = io.StringIO()
    with progress.LoopProgress("extract", 3, progress.Options(quiet=True, every=1e-9), stream=quiet) as shown:
        shown.advance()
    assert quiet.getvalue() == ""
