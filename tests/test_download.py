"""The download stage against a hostile local web (127.0.0.1 only, port 0).

Every path of the test web behaves in one way (statuses, redirects, drips, stalls, lies about
Content-Length, opt-out headers, broken images) and counts its hits, so retries are checked.
Host names resolve through a stubbed `lookup` that records what it was asked; nothing here
uses real DNS. An autouse guard wraps socket.connect: any attempt to reach an address outside
127.0.0.0/8 is recorded and refused before it leaves the machine, and tests that must not
connect at all assert that nothing was attempted.
"""
import asyncio
import email.utils
import errno
import functools
import gzip
import hashlib
import io
import ipaddress
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image, features

from yarl import URL
from openwit.pipeline.download import staging
from openwit.pipeline.download.client import (
    DownloadConfig, Downloader, DownloadResult, fetch, make_session, opt_out, parse_retry_after, retry_delay,
    status_result,
)
from openwit.pipeline.download.safety import address_refusal, check_url
from openwit.pipeline.stages.download import record_from_download
from openwit.pipeline.stages.image import ImageConfig
from openwit.schemas.reasons import REASONS
from openwit.schemas.record import DROPPED, Record

# The test images are small: no DataComp size or aspect rule here.
SMALL_IMAGES = ImageConfig(min_image_size=0, max_aspect_ratio=0.0)

pytestmark = pytest.mark.timeout(60)

BODY = bytes(range(256)) * 40  # 10 KiB, every byte value
LOOPBACK = DownloadConfig(allow_loopback=True, retries=0)


# --- the hostile web -------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        web = self.server.web
        path = self.path.split("?", 1)[0]
        with web.lock:
            web.hits[path] += 1
            hit = web.hits[path]
            web.headers[path] = dict(self.headers)
            behaviour = web.routes.get(path)
        try:
            if behaviour is None:
                reply(404, b"not here")(self, hit)
            else:
                behaviour(self, hit)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should for too_large and timeouts
        self.close_connection = True


def reply(status, body=b"", headers=(), content_type="application/octet-stream"):
    def behaviour(handler, hit):
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)
    return behaviour


def redirect(location, status=302):
    return reply(status, b"moved", [("Location", location)])


def in_turn(*behaviours):
    """The first hit gets the first behaviour, and so on; the last one repeats."""
    def behaviour(handler, hit):
        behaviours[min(hit, len(behaviours)) - 1](handler, hit)
    return behaviour


def raw(*pieces, pause=0.0, then_stall=0.0):
    """Write bytes as they are (status line included), pausing between pieces."""
    def behaviour(handler, hit):
        stop = handler.server.web.stop
        for piece in pieces:
            handler.wfile.write(piece)
            handler.wfile.flush()
            if pause and stop.wait(pause):
                return
        stop.wait(then_stall)
    return behaviour


def drip(data, every):
    """One byte of `data` every `every` seconds."""
    return raw(*(data[i:i + 1] for i in range(len(data))), pause=every)


class Web:
    def __init__(self):
        self.routes, self.hits, self.headers = {}, Counter(), {}
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.web = self
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def url(self, path, host="127.0.0.1"):
        return f"http://{host}:{self.port}{path}"

    def add(self, path, behaviour):
        self.routes[path] = behaviour
        return self.url(path)

    def close(self):
        self.stop.set()  # release dripping and stalled handlers
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def the_web():
    web = Web()
    yield web
    web.close()


def cleared(web, routes):
    """The module's web with only `routes`, no hits or headers: each test starts afresh.
    (test_download_hardening shares the_web and this.)"""
    with web.lock:
        web.routes.clear()
        web.hits.clear()
        web.headers.clear()
        web.routes.update(routes)
    return web


@pytest.fixture
def web(the_web):
    return cleared(the_web, {
        "/ok": reply(200, BODY),
        **{f"/status/{s}": reply(s, b"error page") for s in (403, 404, 408, 410, 429, 500, 503)},
    })


class Lookup:
    """A stub resolver: test names to fixed addresses; records every question."""

    def __init__(self, **extra):
        self.table = {
            "site.test": ["127.0.0.1"],
            "localhost.test": ["127.0.0.1"],
            "evil.test": ["10.0.0.1"],
            "metadata.test": ["169.254.169.254"],
            "home.test": ["192.168.1.1"],
            "v6loop.test": ["::1"],
            "mixed.test": ["127.0.0.1", "10.0.0.1"],  # one bad address is enough to refuse
            "empty.test": [],
            "broken.test": socket.gaierror(socket.EAI_NONAME, "stub: Name or service not known"),
            **extra,
        }
        self.calls = []

    async def __call__(self, host, port):
        self.calls.append((host, port))
        answer = self.table.get(host, socket.gaierror(socket.EAI_NONAME, f"stub: {host} unknown"))
        if isinstance(answer, BaseException):
            raise answer
        return list(answer)

    def hosts(self):
        return [host for host, _ in self.calls]


@pytest.fixture(autouse=True)
def connections(monkeypatch):
    """Every address a socket tried to connect to; anything outside 127/8 is refused here."""
    attempts = []

    def guard(connect):
        @functools.wraps(connect)
        def guarded(sock, address, *args):
            host = address[0] if isinstance(address, tuple) else str(address)
            attempts.append(host)
            try:
                allowed = ipaddress.ip_address(host.split("%")[0]) in ipaddress.ip_network("127.0.0.0/8")
            except ValueError:
                allowed = False
            if not allowed:
                raise OSError(errno.EHOSTUNREACH, f"test guard: no traffic to {host}")
            return connect(sock, address, *args)
        return guarded

    monkeypatch.setattr(socket.socket, "connect", guard(socket.socket.connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guard(socket.socket.connect_ex))
    return attempts


@pytest.fixture
def downloaders():
    made = []

    def make(lookup=None, **cfg):
        downloader = Downloader(DownloadConfig(**{"allow_loopback": True, "retries": 0, **cfg}), lookup=lookup or Lookup())
        made.append(downloader)
        return downloader

    yield make
    for downloader in made:
        downloader.close()


def get(url, lookup=None, **cfg):
    """One blocking download through a fresh Downloader (loopback allowed unless said)."""
    downloader = Downloader(DownloadConfig(**{"allow_loopback": True, "retries": 0, **cfg}), lookup=lookup or Lookup())
    try:
        return checked(downloader.fetch(url))
    finally:
        downloader.close()


class FakeSleep:
    def __init__(self):
        self.delays = []

    async def __call__(self, seconds):
        self.delays.append(seconds)


def afetch(url, sleep, lookup=None, **cfg):
    """fetch() with a recording sleep, so backoff costs no wall time."""
    config = DownloadConfig(**{"allow_loopback": True, **cfg})

    async def go():
        async with make_session(config, lookup or Lookup()) as session:
            return await fetch(session, url, config, sleep=sleep)

    return checked(asyncio.run(go()))


def checked(result: DownloadResult) -> DownloadResult:
    """Every reason is in the registry, and `transient` is the registry's flag."""
    if result.body is None:
        assert result.reason in REASONS, result
        assert REASONS[result.reason].stage == "download", result
        assert result.transient == REASONS[result.reason].transient, result
    else:
        assert result.reason is None and not result.transient, result
    return result


def expect(result, reason):
    got = result.reason if result.body is None else f"a body of {len(result.body)} bytes"
    assert result.body is None and result.reason == reason, f"expected {reason}, got {got} ({result.detail})"
    return result


# --- success and politeness ------------------------------------------------------------------


def test_ok_and_user_agent(web):
    cfg = DownloadConfig()
    result = get(web.url("/ok"))
    assert result.body == BODY and result.http_status == 200 and result.reason is None
    assert web.hits["/ok"] == 1
    agent = web.headers["/ok"]["User-Agent"]
    assert "openwit" in agent and cfg.contact in agent


def test_a_host_name_resolves_through_the_stub(web, connections):
    lookup = Lookup()
    assert get(web.url("/ok", host="site.test"), lookup).body == BODY
    assert lookup.hosts() == ["site.test"]
    assert set(connections) == {"127.0.0.1"}


def test_gzip_chunked_and_exact_cap_bodies(web):
    web.add("/gzip", reply(200, gzip.compress(BODY, mtime=0), [("Content-Encoding", "gzip")]))
    chunks = [b"%x\r\n%s\r\n" % (len(BODY[i:i + 3000]), BODY[i:i + 3000]) for i in range(0, len(BODY), 3000)]
    web.add("/chunked", raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                            *chunks, b"0\r\n\r\n"))
    assert get(web.url("/gzip")).body == BODY
    assert get(web.url("/chunked")).body == BODY
    assert get(web.url("/ok"), max_image_bytes=len(BODY)).body == BODY  # exactly the cap: kept


# --- statuses and retries --------------------------------------------------------------------


@pytest.mark.parametrize("status, reason", [(404, "http_404"), (410, "http_404"), (403, "http_4xx")])
def test_client_errors_are_permanent_and_not_retried(web, status, reason):
    result = expect(get(web.url(f"/status/{status}"), retries=2, backoff=0.01), reason)
    assert result.http_status == status and not result.transient
    assert web.hits[f"/status/{status}"] == 1


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried_retries_plus_one_times(web, status):
    result = expect(get(web.url(f"/status/{status}"), retries=2, backoff=0.01), "http_5xx")
    assert result.http_status == status and result.transient
    assert web.hits[f"/status/{status}"] == 3


def test_408_is_like_429(web):
    expect(get(web.url("/status/408"), retries=1, backoff=0.01), "http_429")
    assert web.hits["/status/408"] == 2


def test_429_waits_for_retry_after_then_succeeds(web):
    url = web.add("/busy", in_turn(reply(429, b"slow down", [("Retry-After", "1")]), reply(200, BODY)))
    started = time.monotonic()
    result = get(url, retries=2)
    elapsed = time.monotonic() - started
    assert result.body == BODY and web.hits["/busy"] == 2
    assert 0.9 <= elapsed < 5  # waited the second it was asked to (the upper bound only bounds a hang)


def test_429_with_a_retry_after_over_the_maximum_gives_up_at_once(web):
    url = web.add("/go-away", reply(429, b"come back tomorrow", [("Retry-After", "86400")]))
    started = time.monotonic()
    result = expect(get(url, retries=3, max_retry_after=30), "http_429")
    assert time.monotonic() - started < 3
    assert web.hits["/go-away"] == 1 and result.transient and result.retry_after == 86400


def test_503_with_an_http_date_retry_after(web):
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    url = web.add("/maintenance", in_turn(reply(503, b"back soon", [("Retry-After", when)]), reply(200, BODY)))
    sleep = FakeSleep()
    result = afetch(url, sleep, retries=2, backoff=100.0)  # a backoff delay would be >= 50 s
    assert result.body == BODY and web.hits["/maintenance"] == 2
    assert len(sleep.delays) == 1 and 0 <= sleep.delays[0] <= 3


def test_parse_retry_after():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("") is None
    assert parse_retry_after("soon") is None and parse_retry_after("-5") is None
    ahead = parse_retry_after(email.utils.formatdate(time.time() + 60, usegmt=True))
    assert 58 <= ahead <= 61
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: at once


def test_status_result_table():
    assert status_result(200) is None and status_result(206) is None
    assert status_result(404).reason == status_result(410).reason == "http_404"
    assert status_result(429).reason == status_result(408).reason == "http_429"
    assert status_result(500).reason == status_result(599).reason == "http_5xx"
    assert status_result(403).reason == status_result(451).reason == "http_4xx"
    assert status_result(304).reason == "http_4xx"  # unexpected: permanent
    for status in (304, 403, 404, 408, 429, 500):
        assert checked(status_result(status)).http_status == status


def test_backoff_doubles_with_deterministic_jitter(web):
    url, cfg = web.url("/status/503"), dict(retries=4, backoff=0.5)
    first, second = FakeSleep(), FakeSleep()
    expect(afetch(url, first, **cfg), "http_5xx")
    assert web.hits["/status/503"] == 5
    expect(afetch(url, second, **cfg), "http_5xx")
    assert len(first.delays) == 4
    for attempt, delay in enumerate(first.delays):
        base = 0.5 * 2**attempt
        assert 0.5 * base <= delay <= 1.5 * base, (attempt, delay)
    assert first.delays == second.delays  # the same url waits the same way every run
    config = DownloadConfig(**cfg)
    transient = DownloadResult(None, reason="http_5xx")
    assert [retry_delay(transient, a, url, config) for a in range(4)] == first.delays
    other = [retry_delay(transient, a, url + "?other", config) for a in range(4)]
    assert other != first.delays  # jitter spreads different urls apart


def test_permanent_failures_do_not_sleep(web):
    sleep = FakeSleep()
    expect(afetch(web.url("/status/404"), sleep, retries=3), "http_404")
    assert sleep.delays == [] and web.hits["/status/404"] == 1


# --- deadlines -------------------------------------------------------------------------------


def test_a_server_that_never_answers_times_out():
    with socket.socket() as silent:  # listens, so the kernel accepts; nobody ever reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        result = expect(get(f"http://127.0.0.1:{silent.getsockname()[1]}/x.jpg", timeout=1), "timeout")
        assert time.monotonic() - started < 3 and result.transient


def test_a_dripping_body_times_out_at_the_total_cap(web):
    # a byte every 0.3 s never trips the per-read timeout; --total-timeout ends it
    url = web.add("/drip", raw(b"HTTP/1.0 200 OK\r\nContent-Length: 100\r\n\r\n", *[b"x"] * 100, pause=0.3))
    started = time.monotonic()
    result = expect(get(url, timeout=5, total_timeout=1), "timeout")
    assert time.monotonic() - started < 3 and "--total-timeout" in result.detail


def test_dripping_headers_time_out_at_the_total_cap(web):
    head = b"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 5\r\n\r\nhello"
    url = web.add("/drip-headers", drip(head, 0.3))
    started = time.monotonic()
    expect(get(url, timeout=5, total_timeout=1), "timeout")
    assert time.monotonic() - started < 3


def test_a_body_that_stalls_times_out_per_read(web):
    url = web.add("/stalls", raw(b"HTTP/1.0 200 OK\r\nContent-Length: 100\r\n\r\nxxxxx", then_stall=10))
    result = expect(get(url, timeout=0.5), "timeout")
    assert "stalled" in result.detail


def test_a_slow_steady_body_is_not_a_timeout(web):
    """Longer in all than --timeout, but never silent that long: a healthy slow server."""
    url = web.add("/steady", raw(b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\n", *[b"ab"] * 6, pause=0.4))
    assert get(url, timeout=1.5).body == b"ab" * 6


def test_first_byte_timeout_is_its_own(web):
    url = web.add("/thinks", raw(b"", then_stall=10))
    result = expect(get(url, timeout=5, first_byte_timeout=0.5), "timeout")
    assert "no answer within 0.5s" in result.detail


def test_timeouts_are_retried(web):
    url = web.add("/stall", raw(b"HTTP/1.0 200 OK\r\nContent-Length: 100\r\n\r\nxxxxx", then_stall=10))
    sleep = FakeSleep()
    expect(afetch(url, sleep, timeout=0.3, retries=2), "timeout")
    assert web.hits["/stall"] == 3 and len(sleep.delays) == 2


# --- redirects and address safety ------------------------------------------------------------


def test_a_redirect_loop_is_too_many_redirects(web):
    web.add("/loop/a", redirect("/loop/b"))
    url = web.add("/loop/b", redirect("/loop/a"))
    expect(get(url, max_redirects=5), "too_many_redirects")
    assert web.hits["/loop/a"] + web.hits["/loop/b"] == 6


@pytest.mark.parametrize("hops, ok", [(3, True), (5, True), (6, False)])
def test_redirect_chains_up_to_the_maximum(web, hops, ok):
    for hop in range(hops, 0, -1):
        web.add(f"/chain/{hop}", redirect(f"/chain/{hop - 1}", status=(301, 302, 303, 307, 308)[hop % 5]))
    web.add("/chain/0", reply(200, BODY))
    result = get(web.url(f"/chain/{hops}"), max_redirects=5)
    if ok:
        assert result.body == BODY and web.hits["/chain/0"] == 1
    else:
        expect(result, "too_many_redirects")
        assert web.hits["/chain/0"] == 0


def test_a_redirect_to_a_name_is_resolved_and_followed(web):
    lookup = Lookup()
    url = web.add("/to-site", redirect(web.url("/ok", host="site.test")))
    assert get(url, lookup).body == BODY
    assert lookup.hosts() == ["site.test"]


@pytest.mark.parametrize("location, reason", [
    ("ftp://127.0.0.1/x.jpg", "unsupported_redirect"),
    ("file:///etc/passwd", "unsupported_redirect"),
    ("data:image/png;base64,iVBORw0KGgo=", "unsupported_redirect"),
    ("http://[::1", "protocol_error"),
])
def test_bad_redirect_targets(web, connections, location, reason):
    url = web.add("/bad-redirect", redirect(location))
    expect(get(url), reason)
    assert web.hits["/bad-redirect"] == 1 and set(connections) == {"127.0.0.1"}


def test_a_redirect_without_location_is_a_protocol_error(web):
    url = web.add("/nowhere", reply(302, b"moved?"))
    expect(get(url), "protocol_error")


@pytest.mark.parametrize("host", ["evil.test", "metadata.test", "home.test", "mixed.test"])
def test_a_redirect_to_a_name_with_a_private_address_is_blocked(web, connections, host):
    lookup = Lookup()
    url = web.add("/to-evil", redirect(f"http://{host}:{web.port}/x"))
    result = expect(get(url, lookup), "blocked_address")
    assert not result.transient
    assert lookup.hosts() == [host]  # it was resolved, then refused
    assert connections == ["127.0.0.1"]  # the one connection to the redirecting server, nothing else


def test_a_scheme_relative_redirect_to_a_private_name_is_blocked(web, connections):
    lookup = Lookup()
    url = web.add("/relative", redirect(f"//evil.test:{web.port}/x"))
    expect(get(url, lookup), "blocked_address")
    assert lookup.hosts() == ["evil.test"] and connections == ["127.0.0.1"]


@pytest.mark.parametrize("target", ["http://10.0.0.1/x", "http://169.254.169.254/latest/meta-data",
                                    "http://[::ffff:10.0.0.1]/x", "http://[fe80::1]/x", "http://0.0.0.0/x"])
def test_a_redirect_to_a_private_ip_literal_is_blocked_before_connecting(web, connections, target):
    lookup = Lookup()
    url = web.add("/to-literal", redirect(target))
    expect(get(url, lookup), "blocked_address")
    assert lookup.calls == [] and connections == ["127.0.0.1"]


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "http://10.0.0.1/x.jpg",
                                 "http://192.168.1.1/x.jpg", "http://[fc00::1]/x.jpg", "http://[::1]:1/x.jpg"])
def test_a_private_ip_literal_is_blocked_without_traffic(connections, url):
    expect(get(url, allow_loopback=False), "blocked_address")
    assert connections == []


@pytest.mark.parametrize("url", ["http://2130706433/x", "http://127.1/x", "http://10.0.0.1./x",
                                 "http://0x7f.0.0.1/x", "http://0177.0.0.1/x"])
def test_legacy_numeric_hosts_never_connect(connections, url):
    # A stub that answers like the C library's inet_aton, which reads all of these forms.
    def aton(host):
        try:
            return [socket.inet_ntoa(socket.inet_aton(host))]
        except OSError:
            return []
    lookup = Lookup(**{h: aton(h) for h in ("2130706433", "127.1", "10.0.0.1.", "0x7f.0.0.1", "0177.0.0.1")})
    result = get(url, lookup, allow_loopback=False)
    # aiohttp refuses non-canonical numeric hosts itself (invalid_url); the rest reach SafeResolver.
    assert result.reason in ("invalid_url", "blocked_address"), result
    assert connections == []


def test_loopback_is_blocked_unless_allowed(web, connections):
    expect(get(web.url("/ok"), allow_loopback=False), "blocked_address")
    lookup = Lookup()
    expect(get(web.url("/ok", host="localhost.test"), lookup, allow_loopback=False), "blocked_address")
    assert lookup.hosts() == ["localhost.test"]
    expect(get(f"http://v6loop.test:{web.port}/ok", Lookup(), allow_loopback=False), "blocked_address")
    assert web.hits["/ok"] == 0 and connections == []


@pytest.mark.parametrize("ip", ["10.0.0.1", "172.16.0.1", "192.168.0.1", "169.254.169.254", "224.0.0.1",
                                "0.0.0.0", "240.0.0.1", "100.64.0.1", "255.255.255.255", "fe80::1", "fc00::1",
                                "ff02::1", "::", "::ffff:10.0.0.1", "::ffff:169.254.169.254"])
def test_address_refusal_refuses(ip):
    assert address_refusal(ip, allow_loopback=False)
    assert address_refusal(ip, allow_loopback=True)


@pytest.mark.parametrize("ip", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_address_refusal_loopback_only_when_allowed(ip):
    assert address_refusal(ip, allow_loopback=False) == "loopback"
    assert address_refusal(ip, allow_loopback=True) is None


@pytest.mark.parametrize("ip", ["8.8.8.8", "1.1.1.1", "2606:4700::1", "2001:4860:4860::8888"])
def test_address_refusal_allows_global_addresses(ip):
    assert address_refusal(ip, allow_loopback=False) is None


def test_check_url():
    from yarl import URL
    assert check_url(URL("http://example.test/x"), False) is None  # a name: the resolver decides
    assert check_url(URL("http://8.8.8.8/x"), False) is None
    assert check_url(URL("http://10.0.0.1/x"), True).reason == "blocked_address"
    assert check_url(URL("http://127.0.0.1/x"), False).reason == "blocked_address"
    assert check_url(URL("http://127.0.0.1/x"), True) is None
    assert check_url(URL("gopher://example.test/"), True).reason == "unsupported_redirect"


# --- DNS and connection failures -------------------------------------------------------------


@pytest.mark.parametrize("host", ["broken.test", "empty.test", "unknown.test"])
def test_dns_failure(connections, host):
    lookup = Lookup()
    result = expect(get(f"http://{host}/x.jpg", lookup), "dns_failure")
    assert result.transient and lookup.hosts() == [host] and connections == []


def test_a_failed_lookup_is_retried_but_nxdomain_is_asked_once(connections):
    sleep, lookup = FakeSleep(), Lookup(**{"flaky.test": socket.gaierror(socket.EAI_AGAIN, "stub: try again")})
    expect(afetch("http://flaky.test/x.jpg", sleep, lookup, retries=2), "dns_failure")
    assert len(sleep.delays) == 2 and lookup.hosts() == ["flaky.test"] * 3
    sleep, lookup = FakeSleep(), Lookup()
    expect(afetch("http://broken.test/x.jpg", sleep, lookup, retries=2), "dns_failure")
    assert lookup.hosts() == ["broken.test"]  # the retries met the cached NXDOMAIN


def test_connection_refused():
    with socket.socket() as closed:  # bound but not listening: connecting gets a RST
        closed.bind(("127.0.0.1", 0))
        sleep = FakeSleep()
        result = expect(afetch(f"http://127.0.0.1:{closed.getsockname()[1]}/x.jpg", sleep, retries=1),
                        "connection_refused")
    assert result.transient and len(sleep.delays) == 1


def test_a_body_cut_short_is_a_connection_reset(web):
    url = web.add("/short", raw(b"HTTP/1.0 200 OK\r\nContent-Length: 1000\r\n\r\n", b"y" * 10))
    result = expect(get(url), "connection_reset")
    assert result.transient


# --- size caps -------------------------------------------------------------------------------


def test_content_length_over_the_cap_is_too_large_without_reading(web):
    # Promises 10 GB, sends 10 bytes and stalls: reading on would end in a timeout instead.
    url = web.add("/huge", raw(b"HTTP/1.0 200 OK\r\nContent-Length: 10000000000\r\n\r\n", b"z" * 10,
                               then_stall=10))
    started = time.monotonic()
    result = expect(get(url, timeout=5, max_image_bytes=1_000_000), "too_large")
    assert time.monotonic() - started < 2 and result.http_status == 200 and not result.transient


def test_a_chunked_body_over_the_cap_is_too_large_while_streaming(web):
    chunk = b"%x\r\n%s\r\n" % (65536, b"c" * 65536)
    url = web.add("/endless", raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                                  *[chunk] * 4, then_stall=10))  # 256 KiB, then silence: never ends
    started = time.monotonic()
    expect(get(url, timeout=5, max_image_bytes=100_000), "too_large")
    assert time.monotonic() - started < 2


def test_a_gzip_bomb_is_too_large(web):
    bomb = gzip.compress(b"\0" * (8 * 1024 * 1024), mtime=0)  # 8 MiB in about 8 KiB
    url = web.add("/bomb.gz", reply(200, bomb, [("Content-Encoding", "gzip")]))
    assert len(bomb) < 100_000
    expect(get(url, max_image_bytes=1_000_000), "too_large")


# --- opt-out ---------------------------------------------------------------------------------


@pytest.mark.parametrize("values, opted_out", [
    (["noai"], True),
    (["noimageindex, nofollow"], True),
    (["googlebot: noindex"], False),
    (["openwit: noai"], True),
    (["OpenWit: NoImageAI"], True),
    (["*: noindex"], True),
    (["nofollow", "googlebot: noindex"], False),
    (["googlebot: noindex", "noai"], True),
    (["noai, max-image-preview: large"], True),
    (["max-image-preview: large, noimageai"], True),
    (["unavailable_after: 25 Jun 2030 15:00:00 PST"], False),
    (["noindex, unavailable_after: 25 Jun 2030 15:00:00 PST"], True),
    (["otherbot: noindex, nofollow"], False),
    (["all"], False),
])
def test_x_robots_tag_over_http(web, values, opted_out):
    url = web.add("/robots", reply(200, BODY, [("X-Robots-Tag", v) for v in values]))
    result = get(url)
    if opted_out:
        expect(result, "opted_out")
        assert result.http_status == 200
    else:
        assert result.body == BODY


def test_custom_directives_can_allow_everything(web):
    url = web.add("/noai", reply(200, BODY, [("X-Robots-Tag", "noai, noindex")]))
    assert get(url, disallowed_header_directives=()).body == BODY
    expect(get(url, disallowed_header_directives=("noindex",)), "opted_out")


def test_opt_out():
    default = DownloadConfig().disallowed_header_directives
    assert opt_out([], default) is None
    assert opt_out(["noai"], default) == "noai"
    assert opt_out(["NOIMAGEAI"], default) == "noimageai"
    assert opt_out(["googlebot: noindex"], default) is None
    assert opt_out(["openwit: noindex"], default) == "noindex"
    assert opt_out(["noarchive, max-snippet: 20, noimageindex"], default) == "noimageindex"
    assert opt_out(["googlebot: noindex", "nofollow"], default) is None
    assert opt_out(["noai"], ()) is None


# --- invalid urls ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://", "http://[::1", "https://", "http://[not-an-ip]/x"])
def test_invalid_url(connections, url):
    expect(get(url), "invalid_url")
    assert connections == []


# --- through record_from_download and process_image ------------------------------------------


def download_record(record, downloader, image, stage):
    """Download, decode, check and resize one candidate; a dropped record says why not."""
    return record_from_download(record, downloader.fetch(record.url), image, stage)


def encode(image, fmt, **options):
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def pattern(size, mode="RGB"):
    """A deterministic busy picture (so JPEGs have real entropy to truncate)."""
    w, h = size
    data = bytes(((x * 7 + y * 13) ^ (x * y)) & 0xFF for y in range(h) for x in range(w) for _ in range(3))
    return Image.frombytes("RGB", size, data).convert(mode)


def png_claiming(width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def rotated_jpeg():
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    return encode(pattern((80, 48)), "JPEG", exif=exif.tobytes())


def palette_png():
    image = Image.new("P", (64, 48))
    image.putpalette([0, 0, 255] * 256)
    return encode(image, "PNG", transparency=7)  # index 7 transparent, 0 opaque blue


def sixteen_bit_png():
    image = Image.new("I;16", (64, 48), 32768)  # mid grey in 16 bits: must not clip to white
    return encode(image, "PNG")


def animated(fmt):
    frames = [Image.new("RGB", (64, 48), (255, 0, 0)), Image.new("RGB", (64, 48), (0, 0, 255))]
    options = {"lossless": True} if fmt == "WEBP" else {}
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **options)


IMAGES = {
    "palette": (palette_png, (0, 0, 255)),
    "la": (lambda: encode(Image.new("LA", (64, 48), (0, 0)), "PNG"), (255, 255, 255)),  # transparent: white
    "rgba": (lambda: encode(Image.new("RGBA", (64, 48), (0, 200, 0, 255)), "PNG"), (0, 200, 0)),
    "cmyk": (lambda: encode(Image.new("CMYK", (64, 48), (0, 0, 0, 0)), "JPEG"), (255, 255, 255)),
    "16bit": (sixteen_bit_png, (128, 128, 128)),
    "gif": (lambda: animated("GIF"), (255, 0, 0)),  # the first frame
    "webp": (lambda: animated("WEBP"), (255, 0, 0)),
}


@pytest.fixture
def pipeline(web, downloaders, tmp_path):
    downloader = downloaders()
    stage = functools.partial(staging.stage_image, str(tmp_path / "staging"))

    def run(path, data, content_type="image/jpeg", image=SMALL_IMAGES):
        url = web.add(path, reply(200, data, content_type=content_type))
        record = Record(uid="u" + hashlib.sha256(path.encode()).hexdigest()[:8], url=url, caption="a cat",
                        source="test:1")
        result = download_record(record, downloader, image, stage)
        if result.status == DROPPED:
            assert result.reason in REASONS and result.stage == REASONS[result.reason].stage
        return result

    return run


def test_html_served_as_jpeg_is_not_an_image(pipeline):
    record = pipeline("/page.jpg", b"<!doctype html><html><body>Not found</body></html>")
    assert (record.status, record.reason, record.stage, record.http_status) == (DROPPED, "not_image", "image", 200)


def test_a_truncated_jpeg_is_a_decode_error(pipeline):
    data = encode(pattern((128, 128)), "JPEG", quality=90)
    record = pipeline("/half.jpg", data[: len(data) // 2])
    assert (record.status, record.reason) == (DROPPED, "decode_error")


def test_a_header_claiming_ten_billion_pixels_is_a_bomb(pipeline):
    record = pipeline("/bomb.png", png_claiming(100_000, 100_000), "image/png")
    assert (record.status, record.reason) == (DROPPED, "bomb")


def test_max_pixels_is_checked_before_decoding(pipeline):
    data = encode(pattern((64, 64)), "PNG")
    record = pipeline("/small-bomb.png", data, "image/png", replace(SMALL_IMAGES, max_pixels=64 * 64 - 1))
    assert (record.status, record.reason) == (DROPPED, "bomb")
    assert pipeline("/fine.png", data, "image/png", replace(SMALL_IMAGES, max_pixels=64 * 64)).status != DROPPED


def test_exif_orientation_swaps_width_and_height(pipeline):
    record = pipeline("/phone.jpg", rotated_jpeg(), image=replace(SMALL_IMAGES, resize_mode="no"))
    assert record.status != DROPPED, record
    assert (record.original_width, record.original_height) == (48, 80)
    assert (record.width, record.height) == (48, 80)


def test_a_tracking_pixel_is_too_small(pipeline):
    pixel = encode(Image.new("P", (1, 1)), "GIF", transparency=0)
    record = pipeline("/pixel.gif", pixel, "image/gif", image=ImageConfig())
    assert (record.status, record.reason, record.detail) == (DROPPED, "image_too_small", "1x1")


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_image_modes_decode(pipeline, name, tmp_path):
    if name == "webp" and not features.check("webp"):
        pytest.skip("Pillow without WebP")
    make, colour = IMAGES[name]
    data = make()
    record = pipeline(f"/modes/{name}", data, "image/" + name)
    assert record.status != DROPPED, record
    assert (record.original_width, record.original_height) == (64, 48)
    assert (record.width, record.height) == (256, 256)  # border mode pads to a square
    with open(record.image_path, "rb") as f:
        stored = f.read()
    assert record.sha256 == hashlib.sha256(data).hexdigest()  # of the bytes downloaded
    assert record.stored_sha256 == hashlib.sha256(stored).hexdigest()  # of the bytes staged
    assert record.sha256 != record.stored_sha256
    assert record.image_path.startswith(str(tmp_path / "staging"))
    with Image.open(io.BytesIO(stored)) as out:
        assert out.format == "JPEG" and out.mode == "RGB"
        centre = out.getpixel((128, 128))
    assert all(abs(a - b) <= 12 for a, b in zip(centre, colour)), (centre, colour)


def test_a_successful_record_carries_both_hashes(pipeline):
    data = encode(pattern((96, 64)), "PNG")
    record = pipeline("/photo.png", data, "image/png")
    assert record.status != DROPPED and record.reason is None and record.http_status == 200
    assert record.sha256 == hashlib.sha256(data).hexdigest()
    with open(record.image_path, "rb") as f:
        assert record.stored_sha256 == hashlib.sha256(f.read()).hexdigest()
    assert record.image_format == "jpg" and record.image_path.endswith(f"{record.sha256}.jpg")


def test_download_failures_drop_the_record_with_the_download_reason(web, downloaders, tmp_path):
    record = Record(uid="u404", url=web.url("/status/404"), caption="a cat", source="test:2")
    stage = functools.partial(staging.stage_image, str(tmp_path))
    result = download_record(record, downloaders(), SMALL_IMAGES, stage)
    assert (result.status, result.stage, result.reason, result.http_status) == (DROPPED, "download", "http_404", 404)


def test_every_download_reason_has_its_registry_flag():
    for name, why in REASONS.items():
        assert DownloadResult(None, reason=name).transient == why.transient, name
    assert not DownloadResult(b"x", 200).transient


@pytest.mark.parametrize("ip", ["2002:a00:1::", "2002:7f00:1::", "fec0::1", "192.0.0.8", "3fff::1",
                                "64:ff9b::a00:1", "2001:0:4136:e378:8000:63bf:f5ff:fffe", "198.18.0.1"])
def test_address_refusal_sees_embedded_and_special_addresses(ip):
    assert address_refusal(ip, allow_loopback=False) is not None


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.0.0.1", "0177.0.0.1", "10.1", "10.0.0.1."])
def test_non_canonical_numeric_hosts_are_refused_before_any_lookup(host):
    result = check_url(URL(f"http://{host}:80/x.jpg"), allow_loopback=True)
    assert result is not None and result.reason == "blocked_address"


def test_waiting_for_a_host_slot_does_not_count_against_the_deadline(tmp_path):
    """12 requests to one host that answers in 1 s, 2 slots per host, a 3 s deadline: all
    succeed, because the deadline starts only once a slot is held."""
    import http.server
    import threading
    import time as _time

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            _time.sleep(1)
            self.send_response(200)
            self.send_header("Content-Length", "3")
            self.end_headers()
            self.wfile.write(b"abc")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    downloader = Downloader(DownloadConfig(allow_loopback=True, per_host=2, timeout=3, retries=0))
    try:
        futures = [downloader.submit(f"http://127.0.0.1:{server.server_address[1]}/{i}") for i in range(12)]
        results = [f.result(timeout=30) for f in futures]
    finally:
        downloader.close()
        server.shutdown()
    assert [r.reason for r in results] == [None] * 12
