"""Issue 18 (items 3b, 7, 8, 9) and issue 19 (timeouts) against a 127.0.0.1 test web.

- A byte budget for fetched bodies waiting to be decoded: fetching waits, nothing is dropped.
- X-Robots-Tag `none` and per-agent values as Google reads them.
- URLs with a user name or password are never requested and never published.
- Every redirect hop takes a slot of its own host and is judged by its own host's breaker.
- Timeouts measure the server: a CPU-starved client loses no healthy image.

The helpers (the hostile web, the stub resolver, the connection guard) are test_download's.
"""
import io
import subprocess
import sys
import textwrap
import threading
import time
import types

import pytest
from PIL import Image

from openwit.pipeline.beam import download_fn
from openwit.pipeline.download import engine
from openwit.pipeline.download.client import AGENT_TOKEN, DownloadConfig, Downloader, opt_out
from openwit.pipeline.common.urls import without_credentials
from openwit.pipeline.stages.download import record_from_download
from openwit.schemas.record import DROPPED, Record
from test_download import (  # noqa: F401 - connections: the autouse guard against traffic outside 127/8
    BODY, SMALL_IMAGES, Lookup, cleared, connections, expect, get, raw, redirect, reply, the_web,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def web(the_web):  # noqa: F811 - the_web: test_download's module-scoped web, one per module
    return cleared(the_web, {"/ok": reply(200, BODY)})


def png(seed: int, size=(64, 48)) -> bytes:
    data = bytes((x * 7 + y * 13 + seed * 31) & 0xFF for y in range(size[1]) for x in range(size[0]) for _ in range(3))
    out = io.BytesIO()
    Image.frombytes("RGB", size, data).save(out, format="PNG")
    return out.getvalue()


# --- 7: opt-out ------------------------------------------------------------------------------


@pytest.mark.parametrize("values, opted_out", [
    (["none"], True),  # = noindex, nofollow
    (["NONE"], True),
    (["openwit: none"], True),
    (["googlebot: none"], False),
    (["googlebot: noindex, openwit: noai"], True),  # two headers a proxy combined into one
    (["googlebot: noindex, otherbot: none"], False),
    (["OpenWit : NoImageAI"], True),
    (["googlebot: noindex", "OPENWIT: noai"], True),
    (["openwit: all", "otherbot: noai"], False),
    (["openwit-fork: noai"], False),  # another agent, not a prefix match
])
def test_x_robots_tag_none_and_per_agent_values(web, values, opted_out):
    url = web.add("/robots", reply(200, BODY, [("X-Robots-Tag", v) for v in values]))
    result = get(url)
    if opted_out:
        expect(result, "opted_out")
    else:
        assert result.body == BODY


def test_none_opts_out_when_either_directive_it_stands_for_is_disallowed():
    assert opt_out(["none"], ("nofollow",)) == "none"
    assert opt_out(["none"], ("noai",)) is None
    assert opt_out(["none"], ()) is None


def test_openwits_agent_name_is_its_user_agent_token():
    assert f"(compatible; {AGENT_TOKEN}/" in DownloadConfig().user_agent and AGENT_TOKEN == "openwit"
    assert opt_out([f"{AGENT_TOKEN.upper()}: noai"], ("noai",)) == "noai"


# --- 8: credentials in URLs ------------------------------------------------------------------


def test_a_url_with_credentials_is_never_requested(web):
    """The read stage drops such input urls; the client refuses them on any hop anyway."""
    web.add("/secret.jpg", reply(200, BODY))
    lookup = Lookup()
    result = expect(get(web.url("/secret.jpg", host="user:hunter2@site.test"), lookup), "credentials_in_redirect")
    expect(get(web.url("/secret.jpg", host="user@site.test"), lookup), "credentials_in_redirect")
    assert web.hits["/secret.jpg"] == 0 and lookup.calls == []  # not even looked up
    assert "hunter2" not in result.detail


def test_a_redirect_to_a_url_with_credentials_is_not_followed(web):
    target = web.add("/private.jpg", reply(200, BODY))
    url = web.add("/go", redirect(target.replace("http://", "http://admin:hunter2@")))
    expect(get(url), "credentials_in_redirect")
    assert web.hits["/go"] == 1 and web.hits["/private.jpg"] == 0
    assert all("Authorization" not in headers for headers in web.headers.values())


def record(url, uid="u1"):
    return Record(uid=uid, url=url, caption="a photo", source="test:1")


def test_without_credentials_cuts_only_the_userinfo():
    assert without_credentials("http://user:hunter2@site.test/x.jpg?a=1") == "http://site.test/x.jpg?a=1"
    assert without_credentials("http://site.test/x.jpg") == "http://site.test/x.jpg"
    assert without_credentials("http://[bad") == "http://[bad"  # unparseable: invalid_url downstream
    # only the userinfo goes; the rest stays as the input wrote it
    assert without_credentials("http://u:p@h.test/a%7e b?x=@y#z") == "http://h.test/a%7e b?x=@y#z"
    assert without_credentials("http://h.test/x@y") == "http://h.test/x@y"


def test_a_redirect_hop_with_credentials_leaves_the_original_url_as_it_was(web):
    target = web.add("/private.jpg", reply(200, BODY))
    url = web.add("/go", redirect(target.replace("http://", "http://admin:hunter2@")))
    downloader = Downloader(DownloadConfig(allow_loopback=True, retries=0))
    try:
        done = record_from_download(record(url), downloader.fetch(url), SMALL_IMAGES, None)
    finally:
        downloader.close()
    assert done.reason == "credentials_in_redirect" and done.url == url and "hunter2" not in (done.detail or "")


# --- 9: redirects and per-host limits --------------------------------------------------------


class Victim:
    """Counts the requests in progress at once on one path (one per connection: the server
    closes each after one answer). A request counts until just before its answer is sent, so
    the next request of the same slot, which can only come after the answer, never overlaps."""

    def __init__(self, hold=0.3):
        self.lock, self.now, self.most, self.hold = threading.Lock(), 0, 0, hold

    def __call__(self, handler, hit):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(self.hold)
        with self.lock:
            self.now -= 1
        reply(200, BODY)(handler, hit)


def test_redirects_from_eight_hosts_never_open_two_connections_to_one_victim(web):
    victim = Victim()
    web.routes["/victim"] = victim
    for i in range(8):
        web.routes[f"/r{i}"] = redirect(web.url("/victim", host="victim.test"))
    lookup = Lookup(**{f"r{i}.test": ["127.0.0.1"] for i in range(8)}, **{"victim.test": ["127.0.0.1"]})
    downloader = Downloader(DownloadConfig(allow_loopback=True, retries=0, per_host=1), lookup=lookup)
    try:
        futures = [downloader.submit(web.url(f"/r{i % 8}", host=f"r{i % 8}.test")) for i in range(16)]
        results = [f.result(timeout=60) for f in futures]
    finally:
        downloader.close()
    assert [r.body == BODY for r in results] == [True] * 16
    assert web.hits["/victim"] == 16 and victim.most == 1


def test_the_breaker_judges_each_hop_by_its_own_host(web):
    """A healthy host that redirects to a dead one stays open; the dead one is paused."""
    import socket
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    web.routes["/to-dead"] = redirect(f"http://dead.test:{dead_port}/x.jpg")
    lookup = Lookup(**{"hop.test": ["127.0.0.1"], "dead.test": ["127.0.0.1"]})
    downloader = Downloader(DownloadConfig(allow_loopback=True, retries=0, per_host=1), lookup=lookup)
    try:
        reasons = [downloader.fetch(web.url("/to-dead", host="hop.test")).reason for _ in range(12)]
        direct = downloader.fetch(web.url("/ok", host="hop.test"))
    finally:
        downloader.close()
    assert reasons == ["connection_refused"] * 10 + ["domain_unavailable"] * 2
    assert direct.body == BODY


# --- 3b: the byte budget of fetched bodies ---------------------------------------------------


def test_fetching_waits_for_decoding_over_the_byte_budget_and_drops_nothing(web, tmp_path, monkeypatch):
    bodies = {f"/img/{i}": png(i) for i in range(12)}
    for path, body in bodies.items():
        web.routes[path] = reply(200, body, content_type="image/png")
    largest, concurrency = max(map(len, bodies.values())), 2
    budget = 2 * largest + largest // 2
    decoding = threading.Event()
    real = engine.record_from_download

    def slow_decoder(*args):
        decoding.wait(60)  # decoding is stuck until the test lets it go
        return real(*args)

    monkeypatch.setattr(engine, "record_from_download", slow_decoder)
    cfg = types.SimpleNamespace(image=SMALL_IMAGES, download=DownloadConfig(
        allow_loopback=True, retries=0, concurrency=concurrency, per_host=concurrency, body_budget=budget))
    fn = download_fn.DownloadFn(cfg, str(tmp_path))
    fn.setup()
    try:
        fn.start_bundle()
        out = []
        for i, path in enumerate(bodies):
            out += list(fn.process(record(web.url(path), uid=f"u{i}")))
        fetched = wait_until_steady(lambda: sum(web.hits[p] for p in bodies))
        decoding.set()
        out += [value.value for value in fn.finish_bundle()]
    finally:
        fn.teardown()
    # the documented bound: the budget plus one body per download slot
    assert fetched <= (budget + concurrency * largest) // min(map(len, bodies.values())) < len(bodies)
    records = [getattr(o, "value", o) for o in out]
    assert sorted(r.uid for r in records) == sorted(f"u{i}" for i in range(12))
    assert [r.status for r in records if r.status == DROPPED] == []


def wait_until_steady(count, quiet=0.6, limit=20.0):
    """count() once it stopped changing for `quiet` seconds (the downloads that could start did)."""
    end = time.monotonic() + limit
    last, since = count(), time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.05)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def test_the_blocking_fetch_never_holds_budget(web):
    """One byte of budget: each fetch() gives its body back, so the next one can start."""
    downloader = Downloader(DownloadConfig(allow_loopback=True, retries=0, body_budget=1))
    try:
        assert [downloader.fetch(web.url("/ok")).body == BODY for _ in range(3)] == [True] * 3
    finally:
        downloader.close()


# --- issue 19: timeouts that mean the server is slow, not that we are ------------------------

# A server in its own process (a thread of this process would starve with the client): each
# image is sent in three pieces, 50 ms apart, a healthy and prompt server.
SERVER = textwrap.dedent("""
    import sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    body = bytes(range(256)) * 300

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            third = len(body) // 3
            for piece in (body[:third], body[third:2 * third], body[2 * third:]):
                self.wfile.write(piece)
                self.wfile.flush()
                time.sleep(0.05)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()
""")
SERVED = bytes(range(256)) * 300


class GilHog:
    """Holds the GIL for about `burst` seconds at a time, with short breaks: the event loop
    thread gets no turn meanwhile, as in a worker busy with Python-level work. sum() over a
    range runs in C without releasing the GIL."""

    def __init__(self, burst=1.5, pause=0.15):
        started = time.perf_counter()
        sum(range(1_000_000))
        per_million = max(time.perf_counter() - started, 1e-4)
        self.n = int(burst / per_million * 1_000_000)
        self.pause, self.stop, self.bursts = pause, threading.Event(), 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            sum(range(self.n))
            self.bursts += 1
            self.stop.wait(self.pause)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


def test_a_cpu_starved_client_loses_no_healthy_image():
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        # --timeout 1: the server is never silent that long, but the hog stalls us for longer
        downloader = Downloader(DownloadConfig(allow_loopback=True, retries=0, timeout=1.0, concurrency=4))
        try:
            with GilHog() as hog:
                futures = [downloader.submit(f"http://127.0.0.1:{port}/img/{i}") for i in range(12)]
                results = [f.result(timeout=80) for f in futures]
        finally:
            downloader.close()
    finally:
        server.kill()
        server.wait()
    assert hog.bursts >= 1  # the client was starved while it downloaded
    lost = [(r.reason, r.detail) for r in results if r.body != SERVED]
    assert lost == []



def slow_redirect(location, pause):
    """A redirect sent in three pieces, `pause` seconds apart: each hop is slow but never
    silent for --timeout, and each alone is within --total-timeout."""
    head = f"HTTP/1.0 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()
    return raw(head[:12], head[12:30], head[30:], pause=pause)


def test_total_timeout_caps_an_attempt_through_a_chain_of_slow_redirects(web):
    chain = [f"/hop{i}" for i in range(5)]  # five redirects, then /ok: six requests
    for here, there in zip(chain, chain[1:] + ["/ok"]):
        web.routes[here] = slow_redirect(web.url(there), pause=0.25)
    # each hop takes at least 0.5 s, under the 1.5 s cap; the whole chain takes 2.5 s or more
    result = expect(get(web.url(chain[0]), timeout=5, total_timeout=1.5), "timeout")
    assert "--total-timeout" in result.detail
    requested = [path for path in chain + ["/ok"] if web.hits[path]]
    # the hops are followed in order, and the attempt ended partway along the chain
    assert requested == chain[:len(requested)] and 1 <= len(requested) < len(chain)


@pytest.mark.parametrize("bad", [{"timeout": 0}, {"total_timeout": -1}, {"connect_timeout": 0},
                                 {"first_byte_timeout": 0}, {"body_budget": 0}])
def test_timeouts_and_the_budget_must_be_positive(bad):
    with pytest.raises(ValueError):
        DownloadConfig(**bad)
