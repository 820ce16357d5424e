"""Fetch image bytes politely and safely (asyncio + aiohttp).

- Timeouts measure the server, not us (issue 19): --connect-timeout to connect,
  --first-byte-timeout from the request to the first byte of the answer, and --timeout of
  silence between socket reads (img2dataset's per-read timeout). The last two are aiohttp's
  sock_read timer, re-armed on every read: bytes that arrived while our event loop was busy
  (a CPU-starved worker) are read before that timer's callback can run, so a healthy server
  never times out because we were slow. --total-timeout caps one request (a server that drips
  a byte every few seconds); it is wall-clock, so it is much larger.
- Retries on transient failures (timeouts, resets, DNS failures, 408/429/5xx) with exponential
  backoff and deterministic jitter; Retry-After is honoured up to --max-retry-after.
- Redirects are followed by hand (at most --max-redirects), and every hop is a request of its
  own: checked (scheme, IP literal, userinfo), counted against its own host's connection slots,
  rate and circuit breaker (a redirect must not get around --per-host-connections, issue 18).
- Safety (pipeline/download/safety.py): only http/https, every hop checked, and every host
  resolved by `SafeResolver`, which refuses non-global addresses; aiohttp connects to exactly
  the address that was checked. A URL with a user name or password is never requested
  (`credentials_in_redirect`; read drops input urls holding them as `credentials_in_url`):
  aiohttp would send them as Basic auth.
- Opt-out: X-Robots-Tag directives (noai, noimageai, noindex, noimageindex by default; `none`
  is noindex + nofollow) end the download before the body is read. A value may name a user
  agent ("googlebot: noindex"); openwit's agent name is `AGENT_TOKEN` ("openwit"), the token
  of its User-Agent.
- The byte cap is enforced while streaming (Content-Length is checked first).
- `BodyBudget`: bytes of fetched bodies that wait to be decoded. No new download starts while
  they are over --fetched-bytes-budget (backpressure; nothing is dropped).

`Downloader` runs one event loop in a background thread with a pooled keep-alive session and
a per-host connection limit; `Downloader.fetch(url)` is a plain blocking call that returns a
`DownloadResult`.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email.utils
import functools
import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import Optional, Union

import aiohttp
from aiohttp.client_proto import ResponseHandler
from yarl import URL

from openwit.pipeline import __version__
from openwit.pipeline.common.flags import lower_comma_list, opt
from openwit.pipeline.common.keyed import uniform
from openwit.pipeline.common.urls import host_of
from openwit.pipeline.download import shared_limits
from openwit.pipeline.download.politeness import CircuitBreaker, RatePacer
from openwit.pipeline.download.resolve import CachingLookup, Lookup, nameserver_lookup, system_lookup
from openwit.pipeline.download.safety import BlockedAddress, SafeResolver, check_url
from openwit.schemas.reasons import REASONS

DISALLOWED_DIRECTIVES = ("noai", "noimageai", "noindex", "noimageindex")
# openwit's name for X-Robots-Tag's per-agent values ("openwit: noai"): the product token of
# its User-Agent, as "googlebot" is Google's.
AGENT_TOKEN = "openwit"
_REDIRECTS = {301, 302, 303, 307, 308}

# A Lookup maps (host, port) to the IP addresses it resolves to; tests stub it.


@dataclass(frozen=True)
class DownloadConfig:
    # Timeouts measure the server, not how busy this worker is (see the module docstring).
    timeout: float = opt(10.0, "seconds the server may stay silent between socket reads of its answer "
                         "(and before its first byte, unless --first-byte-timeout)")
    first_byte_timeout: Optional[float] = opt(None, "seconds from sending a request to the first byte of "
                                              "the answer (default: --timeout)", type=float, metavar="S")
    connect_timeout: float = opt(10.0, "seconds to open a connection (TCP and TLS)")
    total_timeout: float = opt(60.0, "seconds one attempt may take in all, its redirect hops together, however "
                               "steadily the server sends (a cap for drippers; wall-clock, so keep it well "
                               "above --timeout; time waiting for a host's turn is not counted)")
    retries: int = opt(2, "retries of transient failures, with backoff")
    backoff: float = 0.5  # seconds before the first retry, doubled each time, jittered
    # a longer Retry-After ends the retries (transient drop)
    max_retry_after: float = opt(30.0, "longest Retry-After honoured; longer ends the retries")
    max_image_bytes: int = opt(20 * 1024 * 1024)
    max_redirects: int = opt(5)
    # downloads in flight per worker process
    concurrency: int = opt(64, "downloads in flight per fetch-worker process", flag="--download-concurrency")
    # connections per host, so one site is not hammered
    per_host: int = opt(8, flag="--per-host-connections")
    contact: str = opt("https://github.com/openwit/openwit", "URL in the User-Agent for site owners",
                       flag="--user-agent-contact")
    disallowed_header_directives: tuple[str, ...] = opt(
        DISALLOWED_DIRECTIVES, "X-Robots-Tag directives that opt an image out (comma-separated; empty: none)",
        parse=lower_comma_list)
    allow_loopback: bool = opt(False, "allow 127.0.0.0/8 and ::1 (local tests and the demo); "
                               "other private addresses stay refused")
    # politeness per host, shared by one pool's fetch workers (politeness.py, shared_limits.py)
    # request starts per second per host; 0: no limit beyond per_host slots
    host_rate: float = opt(0.0, "request starts per second per host, for all the fetch workers "
                           "together (0: only --per-host-connections)", flag="--max-host-rate", metavar="R")
    # pause a host when this share of its recent attempts failed; 0: never
    breaker_failure_ratio: float = opt(0.8, "pause a host when this share of its last 20 attempts (10 at least) "
                                       "failed transiently; its URLs end as domain_unavailable (retryable); "
                                       "0: never pause")
    breaker_cooldown: float = opt(60.0, "seconds a paused host waits before one probe request")
    # name resolution (pipeline/download/resolve.py): a per-worker cache in front of the resolver
    # "HOST:PORT" of a DNS server to ask directly; None: the system's
    dns_server: Optional[str] = opt(None, "ask this DNS server directly (A records over UDP) instead of the "
                                    "system resolver", metavar="HOST:PORT")
    dns_ttl: float = opt(300.0, "seconds a resolved host stays cached per worker", flag="--dns-cache-ttl")
    dns_negative_ttl: float = opt(60.0, "seconds an NXDOMAIN answer stays cached per worker")
    dns_concurrency: int = opt(32, "DNS queries in flight per fetch-worker process (the rest wait; a "
                               "burst never floods the resolver)")
    # fetched bodies waiting to be decoded (docs/performance.md has the worst case)
    body_budget: int = opt(256 * 1024 * 1024, "bytes of fetched bodies waiting to be decoded, split among the "
                           "fetch workers; "
                           "over it no new download starts until decoding catches up (nothing is dropped)",
                           flag="--fetched-bytes-budget", metavar="BYTES")

    def __post_init__(self):
        for name in ("timeout", "connect_timeout", "total_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.first_byte_timeout is not None and not self.first_byte_timeout > 0:
            raise ValueError(f"first_byte_timeout must be positive, got {self.first_byte_timeout}")
        if self.body_budget < 1:
            raise ValueError(f"body_budget must be at least 1 byte, got {self.body_budget}")

    @property
    def user_agent(self) -> str:
        return f"Mozilla/5.0 (compatible; {AGENT_TOKEN}/{__version__}; +{self.contact})"

    @property
    def request_timeout(self) -> aiohttp.ClientTimeout:
        """aiohttp's per-request timeouts. sock_read starts as the first-byte timeout;
        `request` switches it to --timeout once the headers are in."""
        return aiohttp.ClientTimeout(total=None, connect=None, sock_connect=self.connect_timeout,
                                     sock_read=self.first_byte_timeout or self.timeout)


@dataclass(frozen=True)
class DownloadResult:
    """One URL's download: the body, or why there is none."""
    body: Optional[bytes]
    http_status: Optional[int] = None
    reason: Optional[str] = None  # a name from schemas/reasons.py when body is None
    detail: str = ""
    retry_after: Optional[float] = None

    @property
    def transient(self) -> bool:
        return self.reason is not None and REASONS[self.reason].transient


# Directives with a value after a colon ("max-image-preview: large"); the date of
# unavailable_after holds colons too, so the agent prefix is found from the left.
_VALUED_DIRECTIVES = ("max-snippet", "max-image-preview", "max-video-preview", "unavailable_after")
# Directives that stand for others (Google: "none" is "noindex, nofollow").
_SHORTHANDS = {"none": ("noindex", "nofollow")}


def robots_directives(values: list[str]) -> list[tuple[str, str]]:
    """(agent, directive) pairs of X-Robots-Tag header values, lower-cased; agent "" binds all.

    As Google reads them: a value may start with a user agent's name and a colon
    ("googlebot: noindex, nofollow"); the directives after it bind that agent only. Several
    headers are read one by one, and a name-colon inside a value switches the agent, so
    headers that a proxy combined into one comma-separated value keep their meaning
    ("googlebot: noindex, openwit: noai")."""
    pairs = []
    for value in values:
        agent = ""
        for item in value.split(","):
            name, colon, rest = item.partition(":")
            name = name.strip().lower()
            if colon and name and name not in _VALUED_DIRECTIVES and " " not in name:
                agent = "" if name == "*" else name
                item = rest
            directive = item.partition(":")[0].strip().lower()
            if directive:
                pairs.append((agent, directive))
    return pairs


def opt_out(values: list[str], disallowed: tuple[str, ...], agent: str = AGENT_TOKEN) -> Optional[str]:
    """The first disallowed X-Robots-Tag directive that applies to `agent` (openwit), if any:
    those without an agent name, or with "*" or openwit's. A shorthand ("none") counts when
    a directive it stands for is disallowed."""
    for named, directive in robots_directives(values):
        if named not in ("", agent):
            continue
        if directive in disallowed or any(d in disallowed for d in _SHORTHANDS.get(directive, ())):
            return directive
    return None


def status_result(status: int) -> Optional[DownloadResult]:
    if status in (404, 410):
        return DownloadResult(None, status, "http_404", f"HTTP {status}")
    if status in (408, 429):
        return DownloadResult(None, status, "http_429", f"HTTP {status}")
    if status >= 500:
        return DownloadResult(None, status, "http_5xx", f"HTTP {status}")
    if status >= 400:
        return DownloadResult(None, status, "http_4xx", f"HTTP {status}")
    if status != 200 and not 200 <= status < 300:
        return DownloadResult(None, status, "http_4xx", f"unexpected HTTP {status}")
    return None


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_result(err: BaseException) -> DownloadResult:
    """Map a client-side failure to its drop reason."""
    cause = getattr(err, "os_error", None)
    if isinstance(cause, BlockedAddress):
        return DownloadResult(None, reason="blocked_address", detail=str(cause))
    if isinstance(err, aiohttp.InvalidURL):
        return DownloadResult(None, reason="invalid_url", detail=str(err)[:200])
    if isinstance(err, (aiohttp.ClientSSLError, aiohttp.ClientConnectorCertificateError)):
        return DownloadResult(None, reason="tls_error", detail=type(err).__name__)
    if isinstance(cause, socket.gaierror) or isinstance(err, getattr(aiohttp, "ClientConnectorDNSError", ())):
        return DownloadResult(None, reason="dns_failure", detail=str(cause or err)[:200])
    if isinstance(cause, ConnectionRefusedError):
        return DownloadResult(None, reason="connection_refused", detail=str(cause)[:200])
    if isinstance(err, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError)):
        return DownloadResult(None, reason="connection_reset", detail=type(err).__name__)
    if isinstance(err, aiohttp.ClientResponseError):
        return DownloadResult(None, reason="protocol_error", detail=f"{type(err).__name__}: {err.message}"[:200])
    return DownloadResult(None, reason="protocol_error", detail=f"{type(err).__name__}: {err}"[:200])


async def read_capped(response: aiohttp.ClientResponse, cap: int) -> Optional[bytes]:
    """The body, or None once it exceeds `cap` bytes (checked before and while streaming)."""
    if response.content_length is not None and response.content_length > cap:
        return None
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class HostLimits:
    """Per-host politeness for one worker: connection slots per host and overall, a request
    rate per host, the circuit breaker (pipeline/download/politeness.py), and the budget of
    fetched bodies. Every request of an attempt (each redirect hop) takes a slot of its own
    host. Slots are taken before a request's deadline starts: time spent waiting must not
    count against a URL (it made reruns differ).

    In a fetch worker of a FetchPool (a process that joined the pool's shared table,
    download/shared_limits.py) a host's slots and rate are also the pool's: a request holds
    one of this process's `per_host` slots of the host, then one of the pool's, so all the
    workers together never pass the limits, for hosts reached by redirects too. Otherwise
    (one process) there is no file and the limits are this process's."""

    def __init__(self, concurrency: int, per_host: int, host_rate: float = 0.0,
                 breaker: Optional[CircuitBreaker] = None, budget: Optional[BodyBudget] = None,
                 shared: bool = True):
        self.total = asyncio.Semaphore(concurrency)
        self.per_host = per_host
        self.hosts: dict[str, asyncio.Semaphore] = {}
        self.pacer = RatePacer(host_rate)
        self.breaker = breaker or CircuitBreaker(failure_ratio=0)
        self.budget = budget or BodyBudget(None)
        self.table = shared_limits.joined() if shared else None
        # one request per host and process polls the table at a time; the others queue here
        self.probing: dict[str, asyncio.Lock] = {}

    @classmethod
    def unlimited(cls) -> "HostLimits":
        return cls(1 << 30, 1 << 30, shared=False)

    @contextlib.asynccontextmanager
    async def slot(self, host: str):
        semaphore = self.hosts.setdefault(host, asyncio.Semaphore(self.per_host))
        # The host's slot first: a URL waiting on a busy host must not hold a global slot.
        async with semaphore:
            async with self.pool_slot(host) as where:
                await asyncio.sleep(await self.pace(host, where))
                async with self.total:
                    # Checked with the slots held, so downloads queued for a slot are held back
                    # too; nothing is read meanwhile, and decoding gives bytes back, so it ends.
                    await self.budget.admit()
                    yield

    @contextlib.asynccontextmanager
    async def pool_slot(self, host: str):
        """One of the pool's slots for host (yields its bucket), or nothing in one process."""
        if self.table is None:
            yield None
            return
        where = shared_limits.host_bucket(host)
        async with self.probing.setdefault(host, asyncio.Lock()):
            offset = await self.table.take_slot(where, self.table.slots or self.per_host)
        try:
            yield where
        finally:
            self.table.free_slot(offset)

    async def pace(self, host: str, where: Optional[int]) -> float:
        """Seconds this request waits for the host's rate; its start is booked."""
        if where is None or not self.pacer.interval:
            return self.pacer.wait(host)
        return await self.table.book(where, self.pacer.interval)


class BodyBudget:
    """Bytes of fetched bodies that wait to be decoded, in one worker. A download starts only
    while they are under `limit`: when decoding falls behind, fetching waits for it
    (backpressure; nothing is dropped). Bodies being read are not counted, so at most
    limit + concurrency x max_image_bytes are held (docs/performance.md). Used on the event
    loop only; other threads give bytes back through `Downloader.release`."""

    def __init__(self, limit: Optional[int]):
        self.limit = limit  # None: no budget
        self.held = 0
        self.freed = asyncio.Event()

    async def admit(self) -> None:
        while self.limit is not None and self.held >= self.limit:
            self.freed.clear()
            await self.freed.wait()

    def charge(self, size: int) -> None:
        self.held += size

    def release(self, size: int) -> None:
        self.held -= size
        self.freed.set()


def timeout_result(err: TimeoutError, answered: bool, cfg: DownloadConfig) -> DownloadResult:
    """Which of the timeouts ran out (the detail); they are all `timeout`."""
    if isinstance(err, aiohttp.ConnectionTimeoutError):
        detail = f"no connection within {cfg.connect_timeout}s"
    elif isinstance(err, aiohttp.SocketTimeoutError) and answered:
        detail = f"the body stalled: nothing read for {cfg.timeout}s"
    elif isinstance(err, aiohttp.SocketTimeoutError):
        detail = f"no answer within {cfg.first_byte_timeout or cfg.timeout}s of the request"
    else:
        detail = f"no complete answer within {cfg.total_timeout}s (--total-timeout)"
    return DownloadResult(None, reason="timeout", detail=detail)


class AttemptClock:
    """What is left of one attempt's --total-timeout, shared by all its redirect hops (a
    dripping server behind a chain of redirects must not get the cap once per hop). Only the
    time spent in requests counts: waiting for a host's slot or rate is politeness, not the
    server's slowness, and a busy host must not turn a healthy image into a timeout."""

    def __init__(self, seconds: float):
        self.left = seconds

    @contextlib.contextmanager
    def counting(self):
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            yield
        finally:
            self.left -= loop.time() - started


async def request(session: aiohttp.ClientSession, target: URL, cfg: DownloadConfig,
                  clock: Optional[AttemptClock] = None) -> Union[DownloadResult, URL]:
    """One request: its outcome, or the URL a redirect points to. `clock`: the attempt's
    time left (a fresh --total-timeout when None)."""
    clock = clock or AttemptClock(cfg.total_timeout)
    answered = False
    try:
        if clock.left <= 0:  # the earlier hops used the attempt's time up
            raise TimeoutError
        with clock.counting():
            async with asyncio.timeout(clock.left):
                async with session.get(target, allow_redirects=False, timeout=cfg.request_timeout) as response:
                    answered = True
                    if response.status in _REDIRECTS:
                        location = response.headers.get("Location")
                        if not location:
                            return DownloadResult(None, response.status, "protocol_error", "redirect without Location")
                        return response.url.join(URL(location))
                    failed = status_result(response.status)
                    if failed:
                        return DownloadResult(None, response.status, failed.reason, failed.detail,
                                              parse_retry_after(response.headers.get("Retry-After")))
                    directive = opt_out(response.headers.getall("X-Robots-Tag", []), cfg.disallowed_header_directives)
                    if directive:
                        return DownloadResult(None, response.status, "opted_out", f"X-Robots-Tag: {directive}")
                    idle_read_timeout(response, cfg.timeout)
                    body = await read_capped(response, cfg.max_image_bytes)
                    if body is None:
                        return DownloadResult(None, response.status, "too_large", f"over {cfg.max_image_bytes} bytes")
                    return DownloadResult(body, response.status)
    except TimeoutError as err:  # aiohttp's own timeouts are TimeoutErrors too
        return timeout_result(err, answered, cfg)
    except (aiohttp.ClientError, OSError, ValueError) as err:
        return error_result(err)


def idle_read_timeout(response: aiohttp.ClientResponse, seconds: float) -> None:
    """From the headers on, sock_read is --timeout (it was the first-byte timeout); restarted
    now, as a read just happened. A body already read in full has released its connection."""
    connection = response.connection
    if connection is not None and connection.protocol is not None:
        connection.protocol.read_timeout = seconds
        connection.protocol.start_timeout()


async def hop(session: aiohttp.ClientSession, target: URL, cfg: DownloadConfig,
              limits: HostLimits, clock: Optional[AttemptClock] = None) -> Union[DownloadResult, URL]:
    """One request under its own host's slot, rate and breaker, within the attempt's clock."""
    host = host_of(str(target))
    async with limits.slot(host):
        # checked once the slot is ours: requests queued before the pause are refused too
        paused, probe = limits.breaker.admit(host)
        if paused:
            return DownloadResult(None, reason="domain_unavailable", detail=paused)
        outcome = None
        try:
            outcome = await request(session, target, cfg, clock)
        finally:  # a request cancelled from outside counts as failed (and frees a probe)
            failed = outcome is None or (isinstance(outcome, DownloadResult) and outcome.transient)
            limits.breaker.record(host, failed, probe)
        return outcome


async def fetch_once(
    session: aiohttp.ClientSession, url: str, cfg: DownloadConfig, limits: Optional[HostLimits] = None
) -> DownloadResult:
    """One attempt: follow redirects by hand; every hop is checked before it is requested.
    All hops share one --total-timeout (AttemptClock), the time spent waiting for slots aside."""
    limits = limits or HostLimits.unlimited()
    clock = AttemptClock(cfg.total_timeout)
    try:
        target = URL(url)
    except (ValueError, TypeError) as err:
        return DownloadResult(None, reason="invalid_url", detail=str(err)[:200])
    for _ in range(cfg.max_redirects + 1):
        refused = check_url(target, cfg.allow_loopback)
        if refused:
            return DownloadResult(None, reason=refused.reason, detail=refused.detail)
        outcome = await hop(session, target, cfg, limits, clock)
        if isinstance(outcome, DownloadResult):
            return outcome
        target = outcome
    return DownloadResult(None, None, "too_many_redirects", f"more than {cfg.max_redirects}")


def retry_delay(result: DownloadResult, attempt: int, url: str, cfg: DownloadConfig) -> Optional[float]:
    """Seconds to wait before the next attempt, or None when waiting is pointless."""
    if result.retry_after is not None:
        return result.retry_after if result.retry_after <= cfg.max_retry_after else None
    # Jitter from the URL and attempt, not a random generator: reruns behave the same.
    jitter = 0.5 + uniform(f"{url}\x00{attempt}".encode("utf-8", "replace"), b"openwit-retry")
    return cfg.backoff * (2**attempt) * jitter


async def fetch(
    session: aiohttp.ClientSession, url: str, cfg: DownloadConfig, sleep=asyncio.sleep,
    limits: Optional[HostLimits] = None,
) -> DownloadResult:
    """fetch_once with retries on transient failures (no slot is held while waiting)."""
    result = await fetch_once(session, url, cfg, limits)
    for attempt in range(cfg.retries):
        if not result.transient or result.reason == "domain_unavailable":  # paused: not in this run
            break
        delay = retry_delay(result, attempt, url, cfg)
        if delay is None:
            break
        await sleep(delay)
        result = await fetch_once(session, url, cfg, limits)
    return result


def base_lookup(cfg: DownloadConfig) -> Lookup:
    if not cfg.dns_server:
        return system_lookup
    host, _, port = cfg.dns_server.rpartition(":")
    return nameserver_lookup(host.strip("[]"), int(port), timeout=min(cfg.timeout, 5.0))


class PatientResponseHandler(ResponseHandler):
    """aiohttp's connection protocol, whose read timeout looks at the socket before it fires.

    The event loop handles the sockets a select() reported, then the timers that are due. In
    a starved worker the loop thread can wait for the GIL for seconds between the two, so a
    timer may be judged against a select that is seconds old: the server's bytes are there,
    unread, and the timeout would blame the server for our delay. So a read timeout fires
    only when the socket has nothing waiting; otherwise it is re-armed (the bytes are read
    next, which re-arms it anyway)."""

    def _on_read_timeout(self) -> None:
        if self._bytes_waiting():
            self._reschedule_timeout()
            return
        super()._on_read_timeout()

    def _bytes_waiting(self) -> bool:
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None:
            return False
        poller = select.poll()  # not select.select: any descriptor number
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))


def make_session(cfg: DownloadConfig, lookup: Optional[Lookup] = None) -> aiohttp.ClientSession:
    """Call inside the event loop: a keep-alive pool with the safe resolver behind openwit's
    DNS cache (aiohttp's own cache is off: one cache, with negative answers and coalescing).
    The pool itself is unlimited: HostLimits gates requests before their deadline starts."""
    cached = CachingLookup(lookup or base_lookup(cfg), cfg.dns_ttl, cfg.dns_negative_ttl, cfg.dns_concurrency)
    connector = aiohttp.TCPConnector(
        limit=0, limit_per_host=0, resolver=SafeResolver(cfg.allow_loopback, cached), use_dns_cache=False,
    )
    # aiohttp has no public hook for its protocol class; _factory has made every connection since 3.0
    connector._factory = functools.partial(PatientResponseHandler, loop=asyncio.get_running_loop())
    return aiohttp.ClientSession(
        connector=connector, headers={"User-Agent": cfg.user_agent}, trust_env=False,
        timeout=aiohttp.ClientTimeout(total=None),  # fetch_once owns the deadline
    )


class Downloader:
    """A blocking facade over one event loop thread: `fetch(url) -> DownloadResult`."""

    def __init__(self, cfg: DownloadConfig, lookup: Optional[Lookup] = None):
        self.cfg = cfg
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="openwit-download", daemon=True)
        self.thread.start()
        self.session, self.limits = self._run(self._open(lookup)).result()

    async def _open(self, lookup: Optional[Lookup]):
        breaker = CircuitBreaker(self.cfg.breaker_failure_ratio, self.cfg.breaker_cooldown)
        limits = HostLimits(self.cfg.concurrency, self.cfg.per_host, self.cfg.host_rate, breaker,
                            BodyBudget(self.cfg.body_budget))
        return make_session(self.cfg, lookup), limits

    def _run(self, coroutine) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def submit(self, url: str) -> concurrent.futures.Future:
        """The download of `url`, started on the event loop. Its body counts against
        --fetched-bytes-budget until `release(result)`: call it once the body is decoded."""
        return self._run(self._fetch_charged(url))

    async def _fetch_charged(self, url: str) -> DownloadResult:
        result = await fetch(self.session, url, self.cfg, limits=self.limits)
        if result.body is not None:
            self.limits.budget.charge(len(result.body))
        return result

    def release(self, result: DownloadResult) -> None:
        """Give a submitted download's body bytes back to the budget (from any thread)."""
        if result.body is None:
            return
        try:
            self.loop.call_soon_threadsafe(self.limits.budget.release, len(result.body))
        except RuntimeError:  # the loop is closed: nothing waits for the budget any more
            pass

    def count_reused(self, url: str) -> None:
        """Count a URL answered from its receipt as one attempt its host answered.

        A receipt is a lasting outcome (a success, or a 404, not_image ...), and those are
        what an attempt records as not failed. Without this, a rerun's breaker would see only
        the URLs that still fail and pause a healthy host (issue 24). The breaker is touched
        on the event loop only, as every attempt does."""
        try:
            self.loop.call_soon_threadsafe(self.limits.breaker.record, host_of(url), False)
        except RuntimeError:  # the loop is closed: no download is left for the breaker to decide
            pass

    def alive(self) -> bool:
        return self.thread.is_alive() and self.loop.is_running()

    def fetch(self, url: str) -> DownloadResult:
        result = self.submit(url).result()
        self.release(result)  # the caller holds one body at a time: no budget needed
        return result

    def close(self) -> None:
        if self.loop.is_running():
            self._run(self.session.close()).result(timeout=10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
        if not self.thread.is_alive() and not self.loop.is_closed():
            self.loop.close()  # its selector and self-pipe; left open they leak a descriptor pair
