"""Fetch-worker processes (pipeline/download/pool.py): politeness across processes, routing,
and a worker that dies without losing its records. Servers bind 127.0.0.1 only."""
import http.server
import io
import os
import signal
import threading
import time

import pytest
from PIL import Image

from openwit.pipeline.download.client import DownloadConfig
from openwit.pipeline.download.pool import FetchPool, spread_of, worker_for, worker_share
from openwit.pipeline.stages.image import ImageConfig
from openwit.schemas.record import DROPPED, Record

IMAGES = ImageConfig(image_size=32, min_image_size=8)


def small_png(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (seed * 37 % 256, 90, 160)).save(out, format="PNG")
    return out.getvalue()


class CountingWeb:
    """A threaded 127.0.0.1 server that counts the requests it is serving at once."""

    def __init__(self, delay: float):
        self.open = self.most = 0
        self.lock = threading.Lock()
        web = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                with web.lock:
                    web.open += 1
                    web.most = max(web.most, web.open)
                try:
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
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

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
def test_a_hosts_slots_over_its_workers_never_exceed_the_limit(per_host, workers):
    config = DownloadConfig(per_host=per_host)
    share = worker_share(config, workers)
    assert share.per_host * spread_of(config, workers) <= per_host
    urls = [f"http://site.test/{i}.jpg" for i in range(400)]
    assert len({worker_for(url, config, workers) for url in urls}) == spread_of(config, workers)


def test_per_host_connections_hold_across_fetch_worker_processes(tmp_path):
    web = CountingWeb(delay=0.3)
    config = DownloadConfig(allow_loopback=True, retries=0, per_host=2, timeout=10)
    pool = FetchPool(config, IMAGES, str(tmp_path), workers=4, cores=2)
    try:
        records = run_all(pool, [f"{web.base}/{i}" for i in range(16)])
    finally:
        pool.close()
        web.close()
    assert sorted(r.status for r in records) == ["active"] * 16, [(r.reason, r.detail) for r in records]
    assert all(os.path.exists(r.image_path) for r in records)  # staged by the workers themselves
    assert 1 <= web.most <= 2  # 4 processes, 2 of them for this host, 1 slot each


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


def test_a_worker_that_cannot_start_fails_loudly_instead_of_dropping_everything(tmp_path):
    broken = DownloadConfig(allow_loopback=True, dns_server="nohost:notaport")  # its Downloader raises
    with pytest.raises(Exception, match="could not start"):
        FetchPool(broken, IMAGES, str(tmp_path), workers=2, cores=2)
