"""Fetch-worker processes (pipeline/download/pool.py): politeness across processes, routing,
and a worker that dies without losing its records. Servers bind 127.0.0.1 only."""
import http.server
import io
import os
import signal
import sys
import tempfile
import threading
import time

import pytest
from PIL import Image

from openwit.pipeline.download.client import DownloadConfig
from openwit.pipeline.download.pool import FetchPool, spread_of, worker_for, worker_share
from openwit.pipeline.stages.image import ImageConfig
from openwit.schemas.record import DROPPED, Record

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import local_dns  # noqa: E402

IMAGES = ImageConfig(image_size=32, min_image_size=8)


def small_png(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (seed * 37 % 256, 90, 160)).save(out, format="PNG")
    return out.getvalue()


class CountingWeb:
    """A threaded 127.0.0.1 server that counts the requests it is serving at once, and notes
    when each started (time.monotonic, the clock the workers book request starts with).
    With `redirect_to`, /r/PATH answers a redirect to redirect_to/PATH."""

    def __init__(self, delay: float, redirect_to: str = ""):
        self.open = self.most = 0
        self.starts: list[float] = []
        self.lock = threading.Lock()
        web = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                with web.lock:
                    web.starts.append(time.monotonic())
                    web.open += 1
                    web.most = max(web.most, web.open)
                try:
                    if redirect_to and self.path.startswith("/r/"):
                        self.send_response(302)
                        self.send_header("Location", redirect_to + self.path[2:])
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    time.sleep(60 if self.path.startswith("/hang") else delay)
                    body = small_png(int(self.path.strip("/").split("/")[-1] or 0))
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with web.lock:
                        web.open -= 1

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"

    def close(self):
        self.server.shutdown()


def run_all(pool, urls, timeout=120):
    done, got = threading.Event(), []
    lock = threading.Lock()

    def back(record):
        with lock:
            got.append(record)
            if len(got) == len(urls):
                done.set()

    for i, url in enumerate(urls):
        pool.submit(Record(uid=f"u{i}", url=url, caption="a photo", source=f"t:{i}"), back)
    assert done.wait(timeout), f"{len(got)} of {len(urls)} came back"
    return got


@pytest.mark.parametrize("per_host,workers", [(1, 4), (2, 4), (3, 2), (8, 3), (8, 16), (64, 16)])
def test_a_hosts_urls_go_to_spread_workers_which_share_its_limits(per_host, workers):
    config = DownloadConfig(per_host=per_host, host_rate=3.0)
    share = worker_share(config, workers)
    # the pool's shared table holds the host's slots and rate for all its workers; each of the
    # host's spread workers may hold at most its rounded-up part, so none can take them all
    spread = spread_of(config, workers)
    assert (share.per_host, share.host_rate) == (-(-per_host // spread), 3.0)
    assert share.per_host * spread >= per_host and (share.per_host - 1) * spread < per_host
    assert share.body_budget == config.body_budget // workers
    urls = [f"http://site.test/{i}.jpg" for i in range(400)]
    assert len({worker_for(url, config, workers) for url in urls}) == spread_of(config, workers)


def fetch_one_host(tmp_path, per_host: int, workers: int, urls: int, delay: float):
    """(records, the most requests the host saw at once): `urls` URLs of one slow host."""
    web = CountingWeb(delay=delay)
    config = DownloadConfig(allow_loopback=True, retries=0, per_host=per_host, timeout=10)
    pool = FetchPool(config, IMAGES, str(tmp_path), workers=workers, cores=2)
    try:
        records = run_all(pool, [f"{web.base}/{i}" for i in range(urls)])
    finally:
        pool.close()
        web.close()
    assert sorted(r.status for r in records) == ["active"] * urls, [(r.reason, r.detail) for r in records]
    return records, web.most


def test_per_host_connections_hold_across_fetch_worker_processes(tmp_path):
    records, most = fetch_one_host(tmp_path, per_host=2, workers=4, urls=16, delay=0.3)
    assert all(os.path.exists(r.image_path) for r in records)  # staged by the workers themselves
    assert 1 <= most <= 2  # 4 processes, 2 of them for this host, sharing its 2 slots


def test_per_host_connections_not_a_multiple_of_the_spread_are_all_used(tmp_path):
    _, most = fetch_one_host(tmp_path, per_host=3, workers=2, urls=18, delay=0.4)
    assert most == 3  # split per worker, 3 // 2 slots each left one unused


ORIGINS = [f"origin{i}.test" for i in range(8)]
VICTIM = "cdn.test"


class Redirected:
    """A victim host (cdn.test) that 8 origin hosts redirect every URL to, the names served
    by a DNS server on 127.0.0.1: the victim is reached only through redirects, so routing
    by host never sends it to fewer workers."""

    def __init__(self, delay: float):
        self.victim = CountingWeb(delay=delay)
        self.origin = CountingWeb(delay=0, redirect_to=f"http://{VICTIM}:{self.victim.port}")
        self.dns = local_dns.running(ORIGINS + [VICTIM])
        _, port = self.dns.__enter__()
        self.dns_server = f"127.0.0.1:{port}"

    def urls(self, count: int) -> list[str]:
        return [f"http://{ORIGINS[i % len(ORIGINS)]}:{self.origin.port}/r/{i}" for i in range(count)]

    def close(self):
        self.dns.__exit__(None, None, None)
        self.origin.close()
        self.victim.close()


def redirected_run(tmp_path, delay: float, count: int, **settings):
    """Runs `count` URLs of the 8 origins through 3 fetch workers; the victim's server."""
    web = Redirected(delay)
    config = DownloadConfig(allow_loopback=True, retries=0, timeout=30, dns_server=web.dns_server, **settings)
    urls = web.urls(count)
    assert {worker_for(url, config, 3) for url in urls} == {0, 1, 2}  # every worker follows redirects
    pool = FetchPool(config, IMAGES, str(tmp_path), workers=3, cores=2)
    try:
        records = run_all(pool, urls)
    finally:
        pool.close()
        web.close()
    assert not os.path.exists(pool.limits.folder)  # the pool removed its shared-limits file
    assert sorted(r.status for r in records) == ["active"] * count, [(r.reason, r.detail) for r in records]
    assert len(web.victim.starts) == count
    return web.victim


def test_a_host_reached_only_through_redirects_gets_per_host_connections_across_workers(tmp_path):
    victim = redirected_run(tmp_path, delay=0.2, count=16, per_host=1)
    # 3 workers follow redirects to it; with per-worker slots it saw 3 requests at once
    assert victim.most == 1


def most_in_a_window(starts: list[float], seconds: float) -> int:
    starts = sorted(starts)
    return max(sum(1 for t in starts[i:] if t < start + seconds) for i, start in enumerate(starts))


def test_the_host_rate_holds_across_workers_for_a_host_reached_only_through_redirects(tmp_path):
    rate = 5.0
    victim = redirected_run(tmp_path, delay=0, count=16, per_host=1, host_rate=rate)
    # Each request's start is booked in the pool's table (>= 1/rate after the one before) and
    # booked only once the request before it has reached the server (one slot, so they go one
    # by one), and a request never reaches the server before its booked start. So any second
    # of the server's clock sees at most `rate` booked starts, plus the one booked before it
    # began: no timing assumption. Per-worker pacers let 3 x rate through: about 15.
    assert most_in_a_window(victim.starts, 1.0) <= rate + 2, sorted(victim.starts)


def test_a_killed_workers_host_slots_are_freed(tmp_path):
    web = Redirected(delay=0)
    config = DownloadConfig(allow_loopback=True, retries=0, timeout=60, per_host=1, dns_server=web.dns_server)
    pool = FetchPool(config, IMAGES, str(tmp_path), workers=2, cores=2)
    try:
        by_worker = {worker_for(f"http://{host}/", config, 2): host for host in ORIGINS}
        hanging = f"http://{by_worker[0]}:{web.origin.port}/r/hang/1"  # holds cdn.test's one slot
        got = []
        pool.submit(Record(uid="h", url=hanging, caption="a photo", source="t:0"), got.append)
        deadline = time.monotonic() + 30
        while web.victim.open == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert web.victim.open == 1
        os.kill(pool.workers[0].process.pid, signal.SIGKILL)
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [(r.status, r.reason) for r in got] == [(DROPPED, "internal_error")]
        # the other worker gets the victim's slot that the dead one held (the server is still
        # sleeping in the dead request's handler, so the slot is all that was in the way)
        again = run_all(pool, [f"http://{by_worker[1]}:{web.origin.port}/r/{i}" for i in range(3)], timeout=60)
        assert sorted(r.status for r in again) == ["active"] * 3, [(r.reason, r.detail) for r in again]
    finally:
        pool.close()
        web.close()


def test_a_dead_worker_returns_its_records_and_is_replaced(tmp_path):
    web = CountingWeb(delay=0)
    config = DownloadConfig(allow_loopback=True, retries=0, timeout=60)
    pool = FetchPool(config, IMAGES, str(tmp_path), workers=2, cores=2)
    try:
        hanging = f"{web.base}/hang/1"
        victim = worker_for(hanging, config, 2)
        got = []
        pool.submit(Record(uid="h", url=hanging, caption="a photo", source="t:0"), got.append)
        deadline = time.monotonic() + 30
        while web.open == 0 and time.monotonic() < deadline:  # the request is out
            time.sleep(0.05)
        os.kill(pool.workers[victim].process.pid, signal.SIGKILL)
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [(r.status, r.reason) for r in got] == [(DROPPED, "internal_error")]
        assert "exited" in got[0].detail
        again = run_all(pool, [f"{web.base}/{i}" for i in range(6)])
        assert sorted(r.status for r in again) == ["active"] * 6
    finally:
        pool.close()
        web.close()


STDIN_CALLER = """
import sys, tempfile, threading
from openwit.pipeline.download.client import DownloadConfig
from openwit.pipeline.download.pool import FetchPool
from openwit.pipeline.stages.image import ImageConfig
from openwit.schemas.record import Record
with tempfile.TemporaryDirectory() as staging:
    images = ImageConfig(image_size=32, min_image_size=8)
    pool = FetchPool(DownloadConfig(allow_loopback=True, retries=0), images, staging, workers=2, cores=2)
    back = threading.Event()
    got = []
    pool.submit(Record(uid="a", url=sys.argv[1], caption="c", source="s"), lambda r: (got.append(r), back.set()))
    back.wait(120)
    pool.close()
print(got[0].status, got[0].reason)
"""


def test_workers_start_when_the_callers_main_cannot_be_imported(tmp_path):
    # multiprocessing's spawn re-imports __main__: from stdin (or a notebook) every worker died.
    import subprocess
    import sys

    # A module file in the working directory must not shadow a library in the workers (the
    # caller runs with -P, so it is not on the caller's path either).
    (tmp_path / "yarl.py").write_text("raise ImportError('the working directory shadowed yarl')\n")
    web = CountingWeb(delay=0)
    try:
        out = subprocess.run([sys.executable, "-P", "-", f"{web.base}/3"], input=STDIN_CALLER, capture_output=True,
                             text=True, timeout=180, cwd=tmp_path)
    finally:
        web.close()
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["active", "None"], out.stderr[-2000:]


def test_a_worker_that_cannot_start_fails_loudly_instead_of_dropping_everything(tmp_path, monkeypatch):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))  # where the pool puts its limits file
    broken = DownloadConfig(allow_loopback=True, dns_server="nohost:notaport")  # its Downloader raises
    with pytest.raises(Exception, match="could not start"):
        FetchPool(broken, IMAGES, str(tmp_path), workers=2, cores=2)
    assert os.listdir(temporary) == []  # the shared-limits folder went with the failed pool
