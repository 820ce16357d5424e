"""Fetch image bytes politely and safely (asyncio + aiohttp).

- One total deadline per attempt (connect + headers + body): a server that hangs or drips
  bytes cannot hold a slot longer than --timeout.
- Retries on transient failures (timeouts, resets, DNS failures, 408/429/5xx) with exponential
  backoff and deterministic jitter; Retry-After is honoured up to --max-retry-after.
- Redirects are followed by hand (at most --max-redirects), so every hop is checked.
- Safety: only http/https; every host is resolved by `SafeResolver`, which refuses private,
  loopback, link-local, multicast, reserved and other non-global addresses, and aiohttp
  connects to exactly the address that was checked (no DNS-rebinding window). IP-literal
  hosts are checked before the request. --allow-loopback lets 127.0.0.0/8 and ::1 through.
- Opt-out: X-Robots-Tag directives (noai, noimageai, noindex, noimageindex by default) end
  the download before the body is read.
- The byte cap is enforced while streaming (Content-Length is checked first).

`Downloader` runs one event loop in a background thread with a pooled keep-alive session and
a per-host connection limit; `Downloader.fetch(url)` is a plain blocking call.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email.utils
import hashlib
import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from typing import Optional

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from openwit.pipeline import __version__
from openwit.pipeline.download.politeness import CircuitBreaker, RatePacer
from openwit.pipeline.download.resolve import CachingLookup, Lookup, nameserver_lookup
from openwit.schemas.reasons import REASONS

DISALLOWED_DIRECTIVES = ("noai", "noimageai", "noindex", "noimageindex")
_REDIRECTS = {301, 302, 303, 307, 308}

# A Lookup maps (host, port) to the IP addresses it resolves to; tests stub it.


@dataclass(frozen=True)
class DownloadConfig:
    timeout: float = 10.0  # total seconds per attempt: connect + headers + body
    retries: int = 2
    backoff: float = 0.5  # seconds before the first retry, doubled each time, jittered
    max_retry_after: float = 30.0  # a longer Retry-After ends the retries (transient drop)
    max_image_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 5
    concurrency: int = 64  # downloads in flight per worker process
    per_host: int = 8  # connections per host, so one site is not hammered
    contact: str = "https://github.com/openwit/openwit"
    disallowed_header_directives: tuple[str, ...] = DISALLOWED_DIRECTIVES
    allow_loopback: bool = False
    # name resolution (pipeline/download/resolve.py): a per-worker cache in front of the resolver
    dns_server: Optional[str] = None  # "HOST:PORT" of a DNS server to ask directly; None: the system's
    dns_ttl: float = 300.0
    dns_negative_ttl: float = 60.0
    dns_concurrency: int = 32
    # politeness per host and worker (pipeline/download/politeness.py)
    host_rate: float = 0.0  # request starts per second per host; 0: no limit beyond per_host slots
    breaker_failure_ratio: float = 0.8  # pause a host when this share of its recent attempts failed; 0: never
    breaker_cooldown: float = 60.0  # seconds a paused host waits before one probe

    @property
    def user_agent(self) -> str:
        return f"Mozilla/5.0 (compatible; openwit/{__version__}; +{self.contact})"


@dataclass(frozen=True)
class FetchResult:
    body: Optional[bytes]
    http_status: Optional[int] = None
    reason: Optional[str] = None  # a name from schemas/reasons.py when body is None
    detail: str = ""
    retry_after: Optional[float] = None

    @property
    def transient(self) -> bool:
        return self.reason is not None and REASONS[self.reason].transient


class BlockedAddress(OSError):
    """A host that resolves to an address openwit must not connect to."""


# Refused whatever Python's is_global tables say (they changed between 3.11 patch releases).
_DENIED_NETWORKS = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24",
    "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/3",
    "::/128", "100::/64", "2001:db8::/32", "3fff::/20", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
)]


def embedded_ipv4(address) -> list:
    """IPv4 addresses an IPv6 address carries and may route to (6to4, Teredo, NAT64)."""
    if address.version != 6:
        return []
    found = [address.sixtofour, *(address.teredo or ())]
    if address in ipaddress.ip_network("64:ff9b::/96"):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [a for a in found if a is not None]


def address_refusal(ip: str, allow_loopback: bool) -> Optional[str]:
    """Why openwit refuses to connect to `ip`, or None when it may."""
    address = ipaddress.ip_address(ip.split("%")[0])  # an IPv6 zone id does not change the address
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    for inner in embedded_ipv4(address):
        why = address_refusal(str(inner), allow_loopback)
        if why:
            return f"{why} (embedded in {address})"
    if address.is_loopback:
        return None if allow_loopback else "loopback"
    for network in _DENIED_NETWORKS:
        if address.version == network.version and address in network:
            return f"in {network}"
    for kind in ("private", "link_local", "multicast", "reserved", "unspecified", "site_local"):
        if getattr(address, f"is_{kind}", False):
            return kind.replace("_", "-")
    return None if address.is_global else "not globally routable"


async def system_lookup(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


class SafeResolver(AbstractResolver):
    """Resolves, then refuses the host if any of its addresses is not allowed."""

    def __init__(self, allow_loopback: bool, lookup: Lookup = system_lookup):
        self.allow_loopback = allow_loopback
        self.lookup = lookup

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET):
        addresses = await self.lookup(host, port)
        if not addresses:
            raise socket.gaierror(f"{host} has no address")
        for ip in addresses:
            why = address_refusal(ip, self.allow_loopback)
            if why:
                raise BlockedAddress(f"{host} resolves to {ip} ({why})")
        return [
            {"hostname": host, "host": ip, "port": port, "proto": 0, "flags": socket.AI_NUMERICHOST,
             "family": socket.AF_INET6 if ":" in ip else socket.AF_INET}
            for ip in addresses
        ]

    async def close(self) -> None:
        pass


def check_url(url: URL, allow_loopback: bool) -> Optional[FetchResult]:
    """Scheme and IP-literal checks that must happen before any connection."""
    if url.scheme not in ("http", "https"):
        # The read stage lets only http(s) in, so another scheme here came from a redirect.
        return FetchResult(None, reason="unsupported_redirect", detail=f"{url.scheme or 'no'} scheme")
    if not url.host:
        return FetchResult(None, reason="invalid_url", detail="no host")
    host = url.host
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        if _numeric_host(host):  # "127.1", "2130706433", "0x7f.1": C libraries read these as IPs
            return FetchResult(None, reason="blocked_address", detail=f"{host} (non-canonical numeric address)")
        return None  # a name: SafeResolver checks what it resolves to
    why = address_refusal(host, allow_loopback)
    return FetchResult(None, reason="blocked_address", detail=f"{url.host} ({why})") if why else None


def _numeric_host(host: str) -> bool:
    stripped = host.rstrip(".")
    if all(part.isdigit() or part.lower().startswith("0x") for part in stripped.split(".") if part):
        return True
    try:
        socket.inet_aton(stripped)
    except OSError:
        return False
    return True


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


def status_result(status: int) -> Optional[FetchResult]:
    if status in (404, 410):
        return FetchResult(None, status, "http_404", f"HTTP {status}")
    if status in (408, 429):
        return FetchResult(None, status, "http_429", f"HTTP {status}")
    if status >= 500:
        return FetchResult(None, status, "http_5xx", f"HTTP {status}")
    if status >= 400:
        return FetchResult(None, status, "http_4xx", f"HTTP {status}")
    if status != 200 and not 200 <= status < 300:
        return FetchResult(None, status, "http_4xx", f"unexpected HTTP {status}")
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


def error_result(err: BaseException) -> FetchResult:
    """Map a client-side failure to its drop reason."""
    cause = getattr(err, "os_error", None)
    if isinstance(cause, BlockedAddress):
        return FetchResult(None, reason="blocked_address", detail=str(cause))
    if isinstance(err, aiohttp.InvalidURL):
        return FetchResult(None, reason="invalid_url", detail=str(err)[:200])
    if isinstance(err, (aiohttp.ClientSSLError, aiohttp.ClientConnectorCertificateError)):
        return FetchResult(None, reason="tls_error", detail=type(err).__name__)
    if isinstance(cause, socket.gaierror) or isinstance(err, getattr(aiohttp, "ClientConnectorDNSError", ())):
        return FetchResult(None, reason="dns_failure", detail=str(cause or err)[:200])
    if isinstance(cause, ConnectionRefusedError):
        return FetchResult(None, reason="connection_refused", detail=str(cause)[:200])
    if isinstance(err, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError)):
        return FetchResult(None, reason="connection_reset", detail=type(err).__name__)
    if isinstance(err, aiohttp.ClientResponseError):
        return FetchResult(None, reason="protocol_error", detail=f"{type(err).__name__}: {err.message}"[:200])
    return FetchResult(None, reason="protocol_error", detail=f"{type(err).__name__}: {err}"[:200])


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


async def follow(session: aiohttp.ClientSession, url: str, cfg: DownloadConfig) -> FetchResult:
    """One attempt: follow redirects by hand, checking every hop."""
    try:
        target = URL(url)
    except (ValueError, TypeError) as err:
        return FetchResult(None, reason="invalid_url", detail=str(err)[:200])
    for _ in range(cfg.max_redirects + 1):
        refused = check_url(target, cfg.allow_loopback)
        if refused:
            return refused
        async with session.get(target, allow_redirects=False) as response:
            if response.status in _REDIRECTS:
                location = response.headers.get("Location")
                if not location:
                    return FetchResult(None, response.status, "protocol_error", "redirect without Location")
                target = response.url.join(URL(location))
                continue
            failed = status_result(response.status)
            if failed:
                return FetchResult(None, response.status, failed.reason, failed.detail,
                                   parse_retry_after(response.headers.get("Retry-After")))
            directive = opt_out(response.headers.getall("X-Robots-Tag", []), cfg.disallowed_header_directives)
            if directive:
                return FetchResult(None, response.status, "opted_out", f"X-Robots-Tag: {directive}")
            body = await read_capped(response, cfg.max_image_bytes)
            if body is None:
                return FetchResult(None, response.status, "too_large", f"over {cfg.max_image_bytes} bytes")
            return FetchResult(body, response.status)
    return FetchResult(None, None, "too_many_redirects", f"more than {cfg.max_redirects}")


def host_of(url: str) -> str:
    try:
        return URL(url).host or ""
    except (ValueError, TypeError):
        return ""


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
) -> FetchResult:
    if limits is not None:
        host = host_of(url)
        async with limits.slot(host):
            # checked once the slot is ours: requests queued before the pause are refused too
            paused, probe = limits.breaker.admit(host)
            if paused:
                return FetchResult(None, reason="domain_unavailable", detail=paused)
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
        return FetchResult(None, reason="timeout", detail=f"no complete answer within {cfg.timeout}s")
    except (aiohttp.ClientError, OSError, ValueError) as err:
        return error_result(err)


def retry_delay(result: FetchResult, attempt: int, url: str, cfg: DownloadConfig) -> Optional[float]:
    """Seconds to wait before the next attempt, or None when waiting is pointless."""
    if result.retry_after is not None:
        return result.retry_after if result.retry_after <= cfg.max_retry_after else None
    # Jitter from the URL and attempt, not a random generator: reruns behave the same.
    digest = hashlib.blake2b(f"{url}\x00{attempt}".encode("utf-8", "replace"), digest_size=2).digest()
    jitter = 0.5 + int.from_bytes(digest, "little") / 65535
    return cfg.backoff * (2**attempt) * jitter


async def fetch(
    session: aiohttp.ClientSession, url: str, cfg: DownloadConfig, sleep=asyncio.sleep,
    limits: Optional[HostLimits] = None,
) -> FetchResult:
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
    """A blocking facade over one event loop thread: `fetch(url) -> FetchResult`."""

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

    def alive(self) -> bool:
        return self.thread.is_alive() and self.loop.is_running()

    def fetch(self, url: str) -> FetchResult:
        return self.submit(url).result()

    def close(self) -> None:
        if self.loop.is_running():
            self._run(self.session.close()).result(timeout=10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
        if not self.thread.is_alive() and not self.loop.is_closed():
            self.loop.close()  # its selector and self-pipe; left open they leak a descriptor pair
