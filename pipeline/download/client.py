"""Fetch image bytes politely and safely (asyncio + aiohttp).

- One total deadline per attempt (connect + headers + body): a server that hangs or drips
  bytes cannot hold a slot longer than --timeout.
- Retries on transient failures (timeouts, resets, DNS failures, 408/429/5xx) with exponential
  backoff and deterministic jitter; Retry-After is honoured up to --max-retry-after.
- Redirects are followed by hand (at most --max-redirects), so every hop is checked.
- Safety (pipeline/download/safety.py): only http/https, every hop checked, and every host
  resolved by `SafeResolver`, which refuses non-global addresses; aiohttp connects to exactly
  the address that was checked.
- Opt-out: X-Robots-Tag directives (noai, noimageai, noindex, noimageindex by default) end
  the download before the body is read.
- The byte cap is enforced while streaming (Content-Length is checked first).

`Downloader` runs one event loop in a background thread with a pooled keep-alive session and
a per-host connection limit; `Downloader.fetch(url)` is a plain blocking call that returns a
`DownloadResult`.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email.utils
import socket
import threading
import time
from dataclasses import dataclass
from typing import Optional

import aiohttp
from yarl import URL

from openwit.pipeline import __version__
from openwit.pipeline.common.flags import lower_comma_list, opt
from openwit.pipeline.common.keyed import uniform
from openwit.pipeline.common.urls import host_of
from openwit.pipeline.download.politeness import CircuitBreaker, RatePacer
from openwit.pipeline.download.resolve import CachingLookup, Lookup, nameserver_lookup, system_lookup
from openwit.pipeline.download.safety import BlockedAddress, SafeResolver, check_url
from openwit.schemas.reasons import REASONS

DISALLOWED_DIRECTIVES = ("noai", "noimageai", "noindex", "noimageindex")
_REDIRECTS = {301, 302, 303, 307, 308}

# A Lookup maps (host, port) to the IP addresses it resolves to; tests stub it.


@dataclass(frozen=True)
class DownloadConfig:
    # total seconds per attempt: connect + headers + body
    timeout: float = opt(10.0, "total seconds per attempt: connect, headers, body")
    retries: int = opt(2, "retries of transient failures, with backoff")
    backoff: float = 0.5  # seconds before the first retry, doubled each time, jittered
    # a longer Retry-After ends the retries (transient drop)
    max_retry_after: float = opt(30.0, "longest Retry-After honoured; longer ends the retries")
    max_image_bytes: int = opt(20 * 1024 * 1024)
    max_redirects: int = opt(5)
    # downloads in flight per worker process
    concurrency: int = opt(64, "downloads in flight per worker", flag="--download-concurrency")
    # connections per host, so one site is not hammered
    per_host: int = opt(8, flag="--per-host-connections")
    contact: str = opt("https://github.com/openwit/openwit", "URL in the User-Agent for site owners",
                       flag="--user-agent-contact")
    disallowed_header_directives: tuple[str, ...] = opt(
        DISALLOWED_DIRECTIVES, "X-Robots-Tag directives that opt an image out (comma-separated; empty: none)",
        parse=lower_comma_list)
    allow_loopback: bool = opt(False, "allow 127.0.0.0/8 and ::1 (local tests and the demo); "
                               "other private addresses stay refused")
    # politeness per host and worker (pipeline/download/politeness.py)
    # request starts per second per host; 0: no limit beyond per_host slots
    host_rate: float = opt(0.0, "request starts per second per host and worker process "
                           "(0: only --per-host-connections)", flag="--max-host-rate", metavar="R")
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
    dns_concurrency: int = opt(32, "DNS queries in flight per worker (the rest wait; a burst never floods "
                               "the resolver)")

    @property
    def user_agent(self) -> str:
        return f"Mozilla/5.0 (compatible; openwit/{__version__}; +{self.contact})"


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


def opt_out(values: list[str], disallowed: tuple[str, ...]) -> Optional[str]:
    """The first disallowed X-Robots-Tag directive that applies to openwit, if any.
    A value may name a user agent ("googlebot: noindex"): only "*" and "openwit" bind us."""
    for value in values:
        agent, colon, rest = value.partition(":")
        agent = agent.strip().lower()
        if colon and "," not in agent and agent not in _VALUED_DIRECTIVES:
            if agent not in ("", "*", "openwit"):
                continue
            value = rest
        for directive in value.split(","):
            name = directive.partition(":")[0].strip().lower()
            if name in disallowed:
                return name
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


async def follow(session: aiohttp.ClientSession, url: str, cfg: DownloadConfig) -> DownloadResult:
    """One attempt: follow redirects by hand, checking every hop."""
    try:
        target = URL(url)
    except (ValueError, TypeError) as err:
        return DownloadResult(None, reason="invalid_url", detail=str(err)[:200])
    for _ in range(cfg.max_redirects + 1):
        refused = check_url(target, cfg.allow_loopback)
        if refused:
            return DownloadResult(None, reason=refused.reason, detail=refused.detail)
        async with session.get(target, allow_redirects=False) as response:
            if response.status in _REDIRECTS:
                location = response.headers.get("Location")
                if not location:
                    return DownloadResult(None, response.status, "protocol_error", "redirect without Location")
                target = response.url.join(URL(location))
                continue
            failed = status_result(response.status)
            if failed:
                return DownloadResult(None, response.status, failed.reason, failed.detail,
                                   parse_retry_after(response.headers.get("Retry-After")))
            directive = opt_out(response.headers.getall("X-Robots-Tag", []), cfg.disallowed_header_directives)
            if directive:
                return DownloadResult(None, response.status, "opted_out", f"X-Robots-Tag: {directive}")
            body = await read_capped(response, cfg.max_image_bytes)
            if body is None:
                return DownloadResult(None, response.status, "too_large", f"over {cfg.max_image_bytes} bytes")
            return DownloadResult(body, response.status)
    return DownloadResult(None, None, "too_many_redirects", f"more than {cfg.max_redirects}")


class HostLimits:
    """Per-host politeness for one worker: connection slots per host and overall, a request
    rate per host, and the circuit breaker (pipeline/download/politeness.py). Slots are taken
    before an attempt's deadline starts: time spent waiting must not count against a URL
    (it made reruns differ)."""

    def __init__(self, concurrency: int, per_host: int, host_rate: float = 0.0,
                 breaker: Optional[CircuitBreaker] = None):
        self.total = asyncio.Semaphore(concurrency)
        self.per_host = per_host
        self.hosts: dict[str, asyncio.Semaphore] = {}
        self.pacer = RatePacer(host_rate)
        self.breaker = breaker or CircuitBreaker(failure_ratio=0)

    @contextlib.asynccontextmanager
    async def slot(self, host: str):
        semaphore = self.hosts.setdefault(host, asyncio.Semaphore(self.per_host))
        # The host's slot first: a URL waiting on a busy host must not hold a global slot.
        async with semaphore:
            await asyncio.sleep(self.pacer.wait(host))
            async with self.total:
                yield


async def fetch_once(
    session: aiohttp.ClientSession, url: str, cfg: DownloadConfig, limits: Optional[HostLimits] = None
) -> DownloadResult:
    if limits is not None:
        host = host_of(url)
        async with limits.slot(host):
            # checked once the slot is ours: requests queued before the pause are refused too
            paused, probe = limits.breaker.admit(host)
            if paused:
                return DownloadResult(None, reason="domain_unavailable", detail=paused)
            result = None
            try:
                result = await fetch_once(session, url, cfg)
            finally:  # an attempt cancelled from outside counts as failed (and frees a probe)
                limits.breaker.record(host, result is None or result.transient, probe)
        return result
    try:
        async with asyncio.timeout(cfg.timeout):
            return await follow(session, url, cfg)
    except TimeoutError:
        return DownloadResult(None, reason="timeout", detail=f"no complete answer within {cfg.timeout}s")
    except (aiohttp.ClientError, OSError, ValueError) as err:
        return error_result(err)


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


def make_session(cfg: DownloadConfig, lookup: Optional[Lookup] = None) -> aiohttp.ClientSession:
    """Call inside the event loop: a keep-alive pool with the safe resolver behind openwit's
    DNS cache (aiohttp's own cache is off: one cache, with negative answers and coalescing).
    The pool itself is unlimited: HostLimits gates requests before their deadline starts."""
    cached = CachingLookup(lookup or base_lookup(cfg), cfg.dns_ttl, cfg.dns_negative_ttl, cfg.dns_concurrency)
    connector = aiohttp.TCPConnector(
        limit=0, limit_per_host=0, resolver=SafeResolver(cfg.allow_loopback, cached), use_dns_cache=False,
    )
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
        limits = HostLimits(self.cfg.concurrency, self.cfg.per_host, self.cfg.host_rate, breaker)
        return make_session(self.cfg, lookup), limits

    def _run(self, coroutine) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def submit(self, url: str) -> concurrent.futures.Future:
        return self._run(fetch(self.session, url, self.cfg, limits=self.limits))

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
        return self.submit(url).result()

    def close(self) -> None:
        if self.loop.is_running():
            self._run(self.session.close()).result(timeout=10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
        if not self.thread.is_alive() and not self.loop.is_closed():
            self.loop.close()  # its selector and self-pipe; left open they leak a descriptor pair
