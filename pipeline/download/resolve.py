"""Name resolution at crawl scale: a per-worker cache in front of any lookup.

A crawl asks for the same hosts over and over (host popularity is heavy-tailed), and an
uncached resolver turns each URL into a round trip; "70% of my downloads failed with name
resolution errors" is what img2dataset users see when that floods a resolver. The cache:
- keeps answers for `ttl` seconds and NXDOMAIN answers for `negative_ttl` seconds;
- coalesces concurrent lookups of one host into one query;
- bounds the queries in flight (`concurrency`), so a burst never floods the resolver.
Other failures (timeouts, SERVFAIL) are not cached: they are transient, recorded as
`dns_failure`, and a retry asks again.

`system_lookup` asks the system resolver (getaddrinfo); `nameserver_lookup` asks one DNS
server directly (dnspython, UDP), without the system resolver; the tests and the bench point
it at a server on 127.0.0.1.
"""
from __future__ import annotations

import asyncio
import socket
import time
from typing import Awaitable, Callable, Optional

Lookup = Callable[[str, int], Awaitable[list[str]]]


class NameNotFound(socket.gaierror):
    """NXDOMAIN: the name does not exist (cached as a negative answer)."""

    def __init__(self, host: str):
        super().__init__(socket.EAI_NONAME, f"{host}: name does not exist")


class CachingLookup:
    def __init__(self, lookup: Lookup, ttl: float = 300.0, negative_ttl: float = 60.0, concurrency: int = 32,
                 clock: Callable[[], float] = time.monotonic):
        self.lookup = lookup
        self.ttl, self.negative_ttl = ttl, negative_ttl
        self.clock = clock
        self.concurrency = concurrency
        self.answers: dict[str, tuple[float, Optional[list[str]]]] = {}  # host -> (expires, addresses or None)
        self.pending: dict[str, asyncio.Future] = {}
        self.stats = {"hits": 0, "negative_hits": 0, "queries": 0, "coalesced": 0}
        self._gate: Optional[asyncio.Semaphore] = None  # made on first use, inside the event loop

    async def __call__(self, host: str, port: int = 0) -> list[str]:
        cached = self.cached(host)
        if cached is not None:
            return cached
        task = self.pending.get(host)
        if task is not None:
            self.stats["coalesced"] += 1
        else:
            # Its own task: a caller that gives up (its deadline) cancels only its wait,
            # never the lookup the other callers share.
            task = asyncio.ensure_future(self.ask(host, port))
            self.pending[host] = task
            task.add_done_callback(lambda done: self._settled(host, done))
        return list(await asyncio.shield(task))

    def _settled(self, host: str, task: asyncio.Task) -> None:
        self.pending.pop(host, None)
        if not task.cancelled():
            task.exception()  # retrieved, so a failure nobody awaits any more is not logged

    def cached(self, host: str) -> Optional[list[str]]:
        """The cached addresses; raises NameNotFound for a cached NXDOMAIN; None on a miss."""
        entry = self.answers.get(host)
        if entry is None or entry[0] <= self.clock():
            return None
        if entry[1] is None:
            self.stats["negative_hits"] += 1
            raise NameNotFound(host)
        self.stats["hits"] += 1
        return list(entry[1])

    async def ask(self, host: str, port: int) -> list[str]:
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.concurrency)
        async with self._gate:
            self.stats["queries"] += 1
            try:
                addresses = await self.lookup(host, port)
            except socket.gaierror as err:
                if err.errno == socket.EAI_NONAME:  # NXDOMAIN, from getaddrinfo or a nameserver
                    self.answers[host] = (self.clock() + self.negative_ttl, None)
                raise
        self.answers[host] = (self.clock() + self.ttl, list(addresses))
        return addresses


async def system_lookup(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def nameserver_lookup(server: str, port: int = 53, timeout: float = 2.0) -> Lookup:
    """A lookup that asks one DNS server for A records over UDP."""
    import dns.asyncquery
    import dns.exception
    import dns.message
    import dns.rcode
    import dns.rdatatype

    async def lookup(host: str, _port: int = 0) -> list[str]:
        query = dns.message.make_query(host, dns.rdatatype.A)
        try:
            response = await dns.asyncquery.udp(query, server, timeout=timeout, port=port)
        except dns.exception.Timeout as err:
            raise socket.gaierror(socket.EAI_AGAIN, f"{host}: no answer from {server}:{port} in {timeout}s") from err
        if response.rcode() == dns.rcode.NXDOMAIN:
            raise NameNotFound(host)
        if response.rcode() != dns.rcode.NOERROR:
            raise socket.gaierror(socket.EAI_AGAIN, f"{host}: {dns.rcode.to_text(response.rcode())}")
        return [item.address for rrset in response.answer if rrset.rdtype == dns.rdatatype.A for item in rrset]

    return lookup
