"""Per-host rate and circuit breaker: the pure logic with a driven clock, then a local host
that always times out next to a healthy one."""
import collections

from openwit.pipeline.demo.web import Response, serve
from openwit.pipeline.download.client import DownloadConfig, Downloader
from openwit.pipeline.download.politeness import CircuitBreaker, RatePacer


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_pacer_spaces_starts_per_host_and_not_across_hosts():
    clock = Clock()
    pacer = RatePacer(rate=4, clock=clock)
    assert [pacer.wait("a.test") for _ in range(4)] == [0.0, 0.25, 0.5, 0.75]
    assert pacer.wait("b.test") == 0.0  # another host is not held back
    clock.now += 10  # long idle: no debt carried over
    assert pacer.wait("a.test") == 0.0
    assert RatePacer(rate=0).wait("a.test") == 0.0


def test_the_breaker_pauses_a_failing_host_then_probes_it():
    clock = Clock()
    breaker = CircuitBreaker(failure_ratio=0.8, cooldown=60, clock=clock)
    for _ in range(9):
        breaker.record("dead.test", failed=True)
    assert breaker.refusal("dead.test") is None  # fewer than 10 attempts: no verdict
    breaker.record("dead.test", failed=True)
    assert "10 of its last 10" in breaker.refusal("dead.test")
    assert breaker.refusal("up.test") is None
    clock.now += 61
    assert breaker.admit("dead.test") == (None, True)  # the probe goes
    assert breaker.refusal("dead.test")  # others wait for the probe's answer
    breaker.record("dead.test", failed=False)  # a late answer of an older request decides nothing
    assert breaker.refusal("dead.test")
    breaker.record("dead.test", failed=True, probe=True)  # probe failed: paused again
    clock.now += 30
    assert breaker.refusal("dead.test")
    clock.now += 31
    assert breaker.admit("dead.test") == (None, True)
    breaker.record("dead.test", failed=False, probe=True)  # probe answered: closed, history cleared
    assert breaker.admit("dead.test") == (None, False) and breaker.refusal("dead.test") is None


def test_a_host_that_answers_mostly_is_never_paused():
    breaker = CircuitBreaker(failure_ratio=0.8, clock=Clock())
    for i in range(100):
        breaker.record("flaky.test", failed=i % 4 != 0)  # 75% failures
    assert breaker.refusal("flaky.test") is None
    # A healthy host's slow failures finish last: its last 20 finished attempts all failed,
    # but most of its work succeeded, so it stays open.
    for i in range(200):
        breaker.record("busy.test", failed=False)
    for i in range(40):
        breaker.record("busy.test", failed=True)
    assert breaker.refusal("busy.test") is None
    # ...until its failures reach 40% of its lifetime: then it looks dead
    for i in range(100):
        breaker.record("busy.test", failed=True)
    assert breaker.refusal("busy.test")
    off = CircuitBreaker(failure_ratio=0, clock=Clock())
    for _ in range(50):
        off.record("dead.test", failed=True)
    assert off.refusal("dead.test") is None


def test_a_host_that_always_times_out_is_paused_and_its_neighbour_is_not():
    jpeg = Response(200, "image/jpeg", b"\xff\xd8 not really an image but fast")
    routes = {f"/dead/{i}": Response(200, "image/jpeg", b"late", delay=30) for i in range(60)}
    routes.update({f"/up/{i}": jpeg for i in range(20)})

    async def lookup(host, port):
        return ["127.0.0.1"]

    with serve(routes) as base:
        port = base.rsplit(":", 1)[1]
        cfg = DownloadConfig(allow_loopback=True, timeout=0.5, retries=1, backoff=0.01, per_host=4,
                             breaker_failure_ratio=0.8, breaker_cooldown=600)
        downloader = Downloader(cfg, lookup=lookup)
        try:
            dead = [downloader.submit(f"http://dead.test:{port}/dead/{i}") for i in range(60)]
            up = [downloader.submit(f"http://up.test:{port}/up/{i}") for i in range(20)]
            dead_reasons = collections.Counter(f.result(timeout=120).reason for f in dead)
            up_statuses = collections.Counter(f.result(timeout=120).http_status for f in up)
        finally:
            downloader.close()
    # a URL whose first attempt timed out may find the host paused at its retry
    assert sum(dead_reasons.values()) == 60 and set(dead_reasons) <= {"timeout", "domain_unavailable"}
    assert dead_reasons["domain_unavailable"] >= 40  # most never waited out their own timeout
    assert up_statuses == {200: 20}
