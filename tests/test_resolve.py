"""The caching resolver against a real DNS server on 127.0.0.1 (never the system resolver):
hits, NXDOMAIN negative caching, TTL expiry, coalescing and the concurrency bound."""
import asyncio
import os
import socket
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import local_dns  # noqa: E402

from openwit.pipeline.download.resolve import CachingLookup, NameNotFound, nameserver_lookup  # noqa: E402

NAMES = [f"host{i}.test" for i in range(20)]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def server():
    with local_dns.running(NAMES, slow={"host19.test"}, delay=0.3) as (dns_server, port):
        yield dns_server, port


def run(coroutine):
    return asyncio.run(coroutine)


def test_the_nameserver_lookup_answers_and_says_nxdomain(server):
    dns_server, port = server
    lookup = nameserver_lookup("127.0.0.1", port)
    assert run(lookup("host3.test", 80)) == ["127.0.0.1"]
    with pytest.raises(NameNotFound):
        run(lookup("missing.test", 80))
    assert dns_server.queries == 2


def test_answers_are_cached_until_their_ttl_ends(server):
    dns_server, port = server
    clock = Clock()
    cache = CachingLookup(nameserver_lookup("127.0.0.1", port), ttl=300, clock=clock)

    async def twice():
        return [await cache("host1.test", 80) for _ in range(2)]

    assert run(twice()) == [["127.0.0.1"], ["127.0.0.1"]]
    assert dns_server.queries == 1 and cache.stats["hits"] == 1
    clock.now = 301  # expired: asked again
    assert run(cache("host1.test", 80)) == ["127.0.0.1"]
    assert dns_server.queries == 2


def test_nxdomain_is_cached_for_the_negative_ttl(server):
    dns_server, port = server
    clock = Clock()
    cache = CachingLookup(nameserver_lookup("127.0.0.1", port), negative_ttl=60, clock=clock)
    for _ in range(3):
        with pytest.raises(socket.gaierror):
            run(cache("nowhere.test", 80))
    assert dns_server.queries == 1 and cache.stats["negative_hits"] == 2
    clock.now = 61
    with pytest.raises(NameNotFound):
        run(cache("nowhere.test", 80))
    assert dns_server.queries == 2


def test_a_timeout_is_not_cached(server):
    dns_server, port = server
    cache = CachingLookup(nameserver_lookup("127.0.0.1", port, timeout=0.1))
    for _ in range(2):
        with pytest.raises(socket.gaierror) as err:
            run(cache("host19.test", 80))  # answers after 0.3 s
        assert err.value.errno == socket.EAI_AGAIN and not isinstance(err.value, NameNotFound)
    assert dns_server.queries == 2


def test_concurrent_lookups_of_one_host_make_one_query(server):
    dns_server, port = server
    cache = CachingLookup(nameserver_lookup("127.0.0.1", port))

    async def burst():
        return await asyncio.gather(*(cache("host19.test", 80) for _ in range(50)))

    assert run(burst()) == [["127.0.0.1"]] * 50
    assert dns_server.queries == 1 and cache.stats["coalesced"] == 49


def test_queries_in_flight_never_exceed_the_bound():
    in_flight, most = 0, 0

    async def slow_lookup(host, port):
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return ["127.0.0.1"]

    cache = CachingLookup(slow_lookup, concurrency=4)

    async def many():
        await asyncio.gather(*(cache(f"h{i}.test", 80) for i in range(40)))

    run(many())
    assert most == 4 and cache.stats["queries"] == 40


def test_curate_resolves_through_the_configured_server_and_records_nxdomain(tmp_path):
    import json

    from openwit.pipeline.demo import web as demo_web
    from openwit.pipeline.output.ledger import current_state, read_ledger
    from test_curate_e2e import run_curate

    web = demo_web.build_web(n_images=12, seed=6)
    (tmp_path / "vocab.txt").write_text("\n".join(demo_web.demo_vocab()) + "\n")
    with demo_web.serve(web.routes) as base_url, local_dns.running(["images.test"]) as (dns_server, dns_port):
        port = base_url.rsplit(":", 1)[1]
        rows = [{"url": f"http://images.test:{port}/img/{i:04d}", "caption": f"a red circle number {i}"}
                for i in range(6)]
        rows += [{"url": f"http://gone{i}.test:{port}/img/0001", "caption": "a red circle elsewhere"} for i in range(3)]
        (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        run_curate(["--input", str(tmp_path / "in.jsonl"), "--vocab", str(tmp_path / "vocab.txt"),
                    "--output", str(tmp_path / "out"), "--allow-loopback", "--dns-server", f"127.0.0.1:{dns_port}",
                    "--languages", "all", "--min-image-size", "32", "--near-dup-distance", "-1",
                    "--exact-dedup", "image+caption", "--retries", "0"])
    state = {r["url"]: r for r in current_state(read_ledger(str(tmp_path / "out"))).to_pylist()}
    assert all(state[r["url"]]["http_status"] == 200 for r in rows[:6])  # fetched via images.test
    assert [state[r["url"]]["reason"] for r in rows[6:]] == ["dns_failure"] * 3
    # images.test once per DNS cache: one per fetch worker that serves the host (one per core
    # here, at most the per-host limit of 8); each missing name once
    from openwit.pipeline.beam.options import usable_cores
    assert dns_server.queries <= min(8, usable_cores()) + 3


def test_a_caller_that_gives_up_does_not_fail_the_others(server):
    """The first caller's deadline ends during the lookup; a later caller with time left
    still gets the answer."""
    dns_server, port = server
    cache = CachingLookup(nameserver_lookup("127.0.0.1", port))

    async def two():
        first = asyncio.ensure_future(asyncio.wait_for(cache("host19.test", 80), 0.1))  # answers at 0.3 s
        await asyncio.sleep(0.05)
        second = await cache("host19.test", 80)
        with pytest.raises(asyncio.TimeoutError):
            await first
        return second

    assert run(two()) == ["127.0.0.1"] and dns_server.queries == 1
