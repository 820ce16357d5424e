"""Issue 24: with the circuit breaker on (defaults), a restart, a rerun after kill -9 in the write
phase and a second `--retry-failed` give the bytes of the clean run.

One host (127.0.0.1) serves ~100 good images and 10 URLs that always fail (500, a hang past
--timeout, a dripping body, a connection closed without an answer). On a rerun every good URL
is answered from its receipt, so only the failing URLs reach the network; unless receipts
count as the host's attempts, the breaker sees only failures and pauses the host, and their
true reasons become domain_unavailable."""
import collections
import glob
import json
import os

import pytest

from openwit.pipeline.cli import main as cli
from openwit.pipeline.demo import web as demo_web
from openwit.pipeline.demo.run import write_web_inputs
from openwit.pipeline.download.client import DownloadConfig, Downloader
from openwit.pipeline.output.ledger import read_ledger
from test_crash_safety import CountingRoutes, kill_when, start_curate, visible_shard_files
from test_curate_e2e import curate_args, output_bytes, run_curate

HANG, DRIP, CUT = ("/hang/0", "/hang/1"), ("/drip/0", "/drip/1"), ("/cut/0", "/cut/1")
ERRORS = tuple(f"/error/{i}" for i in range(4))  # build_web's: 500 every time
TRUE_REASONS = {**{p: "timeout" for p in HANG + DRIP}, **{p: "connection_reset" for p in CUT},
                **{p: "http_5xx" for p in ERRORS}}


class HangUpRoutes(CountingRoutes):
    """Counts requests per path; a /cut/ path makes the handler fail, so the server closes
    the connection without an answer (the client sees a reset)."""

    def get(self, path, default=None):
        route = super().get(path, default)
        if path.startswith("/cut/"):
            raise ConnectionResetError("hang up without an answer")
        return route


def failing_web():
    web = demo_web.build_web(n_images=100, seed=24)
    body = web.routes["/img/0002"].body
    extra = {**{p: demo_web.Response(200, "image/jpeg", body, delay=10) for p in HANG},  # > --timeout
             **{p: demo_web.Response(200, "image/jpeg", body[:400], drip=0.05) for p in DRIP},
             **{p: demo_web.Response(200, "image/jpeg", body) for p in CUT}}
    for path, response in extra.items():
        web.routes[path] = response
        web.rows.append({"url": "{base}" + path, "caption": "a red circle on a white background", "page_url": None})
    return web


def error_reasons(count_reused):
    """12 URLs answering 500, one at a time, after `count_reused` URLs of the host were answered
    from receipts. Receipts and requests reach the event loop in the order they are made."""
    cfg = DownloadConfig(allow_loopback=True, timeout=5, retries=0, per_host=1)  # the breaker at defaults
    with demo_web.serve({f"/error/{i}": demo_web.Response(500, "text/plain", b"oops") for i in range(12)}) as base:
        downloader = Downloader(cfg)
        try:
            for i in range(count_reused):
                downloader.count_reused(f"{base}/img/{i}")
            futures = [downloader.submit(f"{base}/error/{i}") for i in range(12)]
            return collections.Counter(f.result(timeout=60).reason for f in futures)
        finally:
            downloader.close()


def test_urls_answered_from_receipts_count_as_the_hosts_answered_attempts():
    assert error_reasons(0) == {"http_5xx": 10, "domain_unavailable": 2}  # only failures: paused
    assert error_reasons(30) == {"http_5xx": 12}  # as in a fresh run, the good URLs keep it open


def dataset_bytes(out):
    """Shards, ledger parts and stats, as bytes by relative path."""
    stats = {os.path.relpath(f, out): open(f, "rb").read() for f in sorted(glob.glob(os.path.join(out, "stats", "*")))}
    return {**output_bytes(out), **stats}


def differing(a, b):
    """The relative paths whose bytes differ (a readable failure, unlike a diff of bytes)."""
    return sorted(name for name in a.keys() | b.keys() if a.get(name) != b.get(name))


def asked(routes, since):
    return {path for path, n in routes.hits.items() if n > since.get(path, 0)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("breaker")
    web = failing_web()
    routes = HangUpRoutes(web.routes)
    with demo_web.serve(routes) as base:
        candidates, vocab = write_web_inputs(str(root / "web"), web, base)

        def argv(out):  # the breaker at its defaults; a short deadline keeps the hangs cheap
            return curate_args(candidates, vocab, out, "--timeout", "1", "--total-timeout", "2", "--retries", "1",
                               "--samples-per-shard", "4")

        clean, killed = str(root / "clean"), str(root / "killed")
        result = {"base": base}
        run_curate(argv(clean))
        result["clean"], result["clean_rows"] = dataset_bytes(clean), read_ledger(clean).to_pylist()
        before = dict(routes.hits)
        run_curate(argv(clean))  # the same command again: a restart
        result["restart"], result["restart_asked"] = dataset_bytes(clean), asked(routes, before)

        process = start_curate(argv(killed), root / "killed.log")
        kill_when(process, lambda: glob.glob(os.path.join(killed, "shards", "*.tar")))
        result["killed_visible"] = visible_shard_files(killed)
        run_curate(argv(killed))
        result["rerun"] = dataset_bytes(killed)

        assert cli(["curate", "--retry-failed", clean]) == 0
        result["retry"] = dataset_bytes(clean)
        assert cli(["curate", "--retry-failed", clean]) == 0
        result["retry_again"] = dataset_bytes(clean)
        result["manifest"] = json.load(open(os.path.join(clean, "manifest.json")))
        result["rows"] = read_ledger(clean).to_pylist()
    return result


def test_the_clean_run_gives_the_failing_urls_their_true_reasons(runs):
    rows = runs["clean_rows"]
    by_path = {r["url"][len(runs["base"]):]: r for r in rows if r["url"].startswith(runs["base"])}
    assert {p: by_path[p]["reason"] for p in TRUE_REASONS} == TRUE_REASONS
    assert not any(r["reason"] == "domain_unavailable" for r in rows)
    assert all(by_path[p]["http_status"] == 500 for p in ERRORS)


def test_a_restart_asks_only_the_failing_urls_and_changes_no_byte(runs):
    # the case of the issue: every good URL answered from its receipt
    assert runs["restart_asked"] == set(TRUE_REASONS)
    assert runs["clean"] and differing(runs["restart"], runs["clean"]) == []


def test_a_rerun_after_kill_9_in_the_write_phase_changes_no_byte(runs):
    assert runs["killed_visible"]  # the kill came while shards were being written
    assert differing(runs["rerun"], runs["clean"]) == []


def test_retry_failed_twice_appends_nothing_and_changes_no_byte(runs):
    assert differing(runs["retry"], runs["clean"]) == [] and differing(runs["retry_again"], runs["clean"]) == []
    assert {r["revision"] for r in runs["rows"]} == {0}
    assert [(u["action"], u["rows_appended"]) for u in runs["manifest"]["updates"]] == [("retry_failed", 0)] * 2
