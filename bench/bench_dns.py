"""Name resolution at crawl scale: openwit's per-worker DNS cache vs asking for every URL
(issue 11). Never the system resolver: a tiny DNS server on 127.0.0.1 (a separate process)
answers N names with 127.0.0.1 (10% of them after 20 ms) and NXDOMAIN for the rest.

The workload is a crawl's host sequence: L lookups drawn Zipf(1.1) over the N names (a few
hosts serve most images), 5% of them for names that do not exist. Both runs keep the same
number of queries in flight (32). The anchor asks the server for every lookup; openwit's
CachingLookup keeps answers (TTL), NXDOMAIN answers (negative TTL), and coalesces lookups
of a host already being asked. Goal: >= 5x the anchor's lookups/s.

    python bench/bench_dns.py [--names 3000] [--lookups 30000]
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import time

import numpy as np

import local_dns  # bench/local_dns.py: this script's directory is on sys.path
from openwit.pipeline.download.resolve import CachingLookup, nameserver_lookup

CONCURRENCY, GOAL = 32, 5.0


def workload(names: int, lookups: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    ranks = np.minimum(rng.zipf(1.1, size=lookups), names) - 1
    missing = rng.random(lookups) < 0.05
    return [f"gone{r % 300}.test" if m else f"host{r}.test" for r, m in zip(ranks, missing)]


async def resolve_all(lookup, hosts: list[str]) -> tuple[float, int]:
    """(seconds, failures) resolving every host, CONCURRENCY at a time."""
    gate = asyncio.Semaphore(CONCURRENCY)
    failures = 0

    async def one(host):
        nonlocal failures
        async with gate:
            try:
                await lookup(host, 80)
            except socket.gaierror:
                failures += 1

    start = time.perf_counter()
    await asyncio.gather(*(one(h) for h in hosts))
    return time.perf_counter() - start, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=3000)
    parser.add_argument("--lookups", type=int, default=30000)
    args = parser.parse_args()
    names = [f"host{i}.test" for i in range(args.names)]
    ports = multiprocessing.Queue()
    server = multiprocessing.Process(target=local_dns.serve_forever, args=(names, names[::10], 0.02, ports), daemon=True)
    server.start()
    try:
        port = ports.get(timeout=30)
        hosts = workload(args.names, args.lookups)
        ask = nameserver_lookup("127.0.0.1", port, timeout=5.0)
        plain_s, plain_fail = asyncio.run(resolve_all(ask, hosts))
        cache = CachingLookup(ask, concurrency=CONCURRENCY)
        cached_s, cached_fail = asyncio.run(resolve_all(cache, hosts))
    finally:
        server.terminate()
    distinct = len(set(hosts))
    print(f"{args.lookups:,} lookups over {distinct:,} distinct names ({args.names:,} exist; 10% answer after 20 ms), "
          f"{CONCURRENCY} in flight\n")
    print(f"{'run':<34} {'seconds':>8} {'lookups/s':>10} {'queries sent':>13} {'failed':>7} {'ratio':>6}")
    print(f"{'uncached (anchor)':<34} {plain_s:>8.2f} {args.lookups / plain_s:>10,.0f} {args.lookups:>13,} "
          f"{plain_fail:>7,} {1.0:>6.2f}")
    ratio = plain_s / cached_s
    print(f"{'openwit CachingLookup':<34} {cached_s:>8.2f} {args.lookups / cached_s:>10,.0f} "
          f"{cache.stats['queries']:>13,} {cached_fail:>7,} {ratio:>6.2f}")
    print(f"\ncache: {cache.stats['hits']:,} hits, {cache.stats['negative_hits']:,} negative hits, "
          f"{cache.stats['coalesced']:,} coalesced")
    print(f"goal: >= {GOAL:.0f}x the uncached lookups/s: {ratio:.1f}x {'PASS' if ratio >= GOAL else 'FAIL'}")


if __name__ == "__main__":
    main()
