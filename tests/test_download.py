"""The download stage against a tiny local HTTP server (127.0.0.1 only, port 0).

Each path behaves in one way; the server counts hits per path so retries can be checked.
Backoff sleeps go through a fake `sleep`, so retries cost no wall time.
"""
import gzip
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from openwit.pipeline.stages.download import DownloadConfig, FetchResult, fetch, fetch_once, make_session
from openwit.schemas.reasons import REASONS

BODY = bytes(range(256)) * 40  # 10 KiB, every byte value
BIG = b"\xab" * (2 * 1024 * 1024)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        server = self.server
        with server.lock:
            server.hits[self.path] += 1
            hit = server.hits[self.path]
        try:
            self.route(self.path, hit, server.stop)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should for too_large and timeouts

    def route(self, path, hit, stop):
        if path == "/ok":
            self.reply(200, BODY)
        elif path == "/ua":
            self.reply(200, self.headers.get("User-Agent", "").encode())
        elif path == "/gzip":
            self.reply(200, gzip.compress(BODY, mtime=0), [("Content-Encoding", "gzip")])
        elif path == "/chunked":
            self.close_connection = True
            self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            for start in range(0, len(BODY), 3000):
                part = BODY[start:start + 3000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif path.startswith("/status/"):  # /status/404: always that status
            self.reply(int(path.rsplit("/", 1)[1]), b"error page")
        elif path == "/flaky":  # 503 twice, then the body
            self.reply(200, BODY) if hit > 2 else self.reply(503, b"busy")
        elif path == "/big":  # 2 MiB, streamed in 64 KiB pieces
            self.send_response(200)
            self.send_header("Content-Length", str(len(BIG)))
            self.end_headers()
            for start in range(0, len(BIG), 65536):
                self.wfile.write(BIG[start:start + 65536])
        elif path == "/drip":  # headers at once, then one byte every 0.2 s of a long body
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            while not stop.wait(0.2):
                self.wfile.write(b"x")
                self.wfile.flush()
        elif path == "/stall":  # headers and a few bytes, then silence
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"xxxxx")
            self.wfile.flush()
            stop.wait(5)
        elif path == "/short":  # promises 1000 bytes, sends 10, hangs up
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"y" * 10)
            self.close_connection = True
        else:
            self.reply(404)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.hits, httpd.lock, httpd.stop = Counter(), threading.Lock(), threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = lambda path: f"http://127.0.0.1:{httpd.server_address[1]}{path}"
    yield httpd
    httpd.stop.set()  # release dripping and stalled handlers
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


class FakeSleep:
    def __init__(self):
        self.delays = []

    def __call__(self, seconds):
        self.delays.append(seconds)


def get(url, sleep=None, **cfg):
    config = DownloadConfig(**cfg)
    session = make_session(config)
    session.trust_env = False  # no proxy from the environment: talk to 127.0.0.1 directly
    try:
        result = fetch(session, url, config, sleep=sleep or FakeSleep())
    finally:
        session.close()
    check_reason(result)
    return result


def check_reason(result: FetchResult):
    if result.body is None:
        assert result.reason in REASONS, result
        assert REASONS[result.reason].stage == "download"
        assert result.transient == REASONS[result.reason].transient, result
    else:
        assert result.reason is None and not result.transient


def test_ok(server):
    sleep = FakeSleep()
    result = get(server.url("/ok"), sleep)
    assert result.body == BODY and result.http_status == 200
    assert server.hits["/ok"] == 1 and sleep.delays == []


def test_gzip_and_chunked_bodies_are_decoded(server):
    assert get(server.url("/gzip")).body == BODY
    assert get(server.url("/chunked")).body == BODY


def test_user_agent_names_openwit(server):
    assert b"openwit" in get(server.url("/ua")).body


def test_client_error_is_permanent_and_not_retried(server):
    sleep = FakeSleep()
    result = get(server.url("/status/404"), sleep)
    assert (result.body, result.http_status, result.reason) == (None, 404, "http_client_error")
    assert not result.transient
    assert server.hits["/status/404"] == 1 and sleep.delays == []


def test_transient_errors_are_retried_with_doubling_backoff(server):
    sleep = FakeSleep()
    result = get(server.url("/flaky"), sleep)
    assert result.body == BODY and result.http_status == 200
    assert server.hits["/flaky"] == 3
    assert sleep.delays == [0.5, 1.0]


@pytest.mark.parametrize("status", [500, 503, 429, 408])
def test_persistent_server_errors_give_up_after_the_retries(server, status):
    sleep = FakeSleep()
    path = f"/status/{status}"
    result = get(server.url(path), sleep, retries=2)
    assert (result.body, result.http_status, result.reason) == (None, status, "http_server_error")
    assert result.transient
    assert server.hits[path] == 3
    assert sleep.delays == [0.5, 1.0]


def test_backoff_follows_the_config(server):
    sleep = FakeSleep()
    get(server.url("/status/500"), sleep, retries=4, backoff=0.1)
    assert server.hits["/status/500"] == 5
    assert sleep.delays == pytest.approx([0.1, 0.2, 0.4, 0.8])
    sleep = FakeSleep()
    get(server.url("/status/502"), sleep, retries=0)
    assert server.hits["/status/502"] == 1 and sleep.delays == []


def test_body_over_the_cap_is_too_large(server):
    result = get(server.url("/big"), max_image_bytes=100 * 1024)
    assert (result.body, result.http_status, result.reason) == (None, 200, "too_large")
    assert server.hits["/big"] == 1  # permanent: not retried
    assert get(server.url("/ok"), max_image_bytes=len(BODY)).body == BODY  # exactly the cap: kept


def test_dripping_body_hits_the_deadline(server):
    started = time.monotonic()
    result = get(server.url("/drip"), timeout=1.0, retries=0)
    elapsed = time.monotonic() - started
    assert result.reason == "timeout" and result.transient
    assert elapsed < 5  # bounds a hang (the deadline is 1 s); not a performance threshold


def test_stalled_body_is_a_timeout(server):
    started = time.monotonic()
    result = get(server.url("/stall"), timeout=0.5, retries=0)
    assert result.reason == "timeout" and result.transient
    assert time.monotonic() - started < 4


def test_body_cut_short_is_a_connection_error(server):
    result = get(server.url("/short"), retries=0)
    assert result.reason == "connection_error" and result.body is None


def test_connection_refused(server):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleep = FakeSleep()
    result = get(f"http://127.0.0.1:{port}/x.jpg", sleep, timeout=2.0)
    assert result.reason == "connection_error" and result.transient
    assert sleep.delays == [0.5, 1.0]  # transient: retried


@pytest.mark.parametrize("url", ["http://", "not a url", "http://127.0.0.1:99999/x.jpg"])
def test_invalid_url_is_a_permanent_request_error(url):
    sleep = FakeSleep()
    result = get(url, sleep)
    assert result.reason == "request_error" and not result.transient
    assert sleep.delays == []


def test_fetch_once_does_not_retry(server):
    config = DownloadConfig()
    with make_session(config) as session:
        session.trust_env = False
        result = fetch_once(session, server.url("/status/503"), config)
    assert result.reason == "http_server_error"
    assert server.hits["/status/503"] == 1


def test_every_transient_reason_of_the_registry_is_transient_in_fetch_result():
    for name, why in REASONS.items():
        if why.stage == "download":
            assert FetchResult(None, reason=name).transient == why.transient, name
