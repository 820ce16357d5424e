"""Per-host politeness and a per-host circuit breaker, both per worker process.

- `RatePacer`: at most `rate` request starts per second per host, in one process. The
  fetch workers of a FetchPool book their starts in the pool's shared table instead, by
  the same rule (shared_limits.SharedTable.book), so all of them together keep the rate.
- `CircuitBreaker`: a host whose recent attempts mostly failed transiently (timeouts, refused
  or reset connections, DNS failures, 5xx, 429) is paused for `cooldown` seconds. "Mostly"
  needs two things: `failure_ratio` of its last 20 attempts (at least 10) failed, and at least
  half that share of all its attempts in this worker did. Failures finish late (a timeout
  waits out its deadline), so near the end of a healthy host's work its last 20 finished
  attempts can all be timeouts. The lifetime share keeps such a host open. A host dead from
  the start is paused after 10 attempts; one that dies after n good answers is paused after
  about 0.7 x n failures at the default ratio. Its URLs
  then end at once as `domain_unavailable`, a transient reason that `--retry-failed` can
  take up later, instead of each waiting out its own timeout. After the pause one probe
  goes through: success closes the breaker, failure pauses the host again.
  A 404 or any other answer counts as the host being up. Every redirect hop is an attempt
  of its own host (client.hop): a healthy host that redirects to a dead one stays open.

What the breaker counts must not depend on where outcomes come from (issue 24). A rerun
(restart, crash, `--retry-failed`, `--extend`) answers every URL with a lasting outcome from
its receipt (pipeline/download/staging.py) without a request, so only the URLs that still
fail would reach the network, and a healthy host with a few broken URLs would look dead.
The rule: a receipt-answered URL is recorded as one attempt its host answered
(`Downloader.count_reused`, keyed by the same `host_of` as downloads). That is what a
lasting outcome is, a success or a permanent drop, and what its download recorded the first
time. So a rerun's breaker sees each host's URLs as a fresh run does, one attempt per
receipt; receipts are read before downloads finish, so their answers count early.
Deterministic: a lasting row never changes on a rerun (its receipt answers before the breaker
is asked), and a host the breaker never pauses gives the same rows every time. Not
deterministic: the verdict follows outcomes in the order they finish. When a host is paused,
which of its URLs end as `domain_unavailable` and which with their own reason (or an answer)
depends on timing, in a first run and in every rerun (docs/incremental.md).

Both take a clock, so tests drive them without sleeping.
"""
from __future__ import annotations

import collections
import time
from typing import Callable, Optional

Clock = Callable[[], float]


class RatePacer:
    def __init__(self, rate: float, clock: Clock = time.monotonic):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.clock = clock
        self.next_start: dict[str, float] = {}

    def wait(self, host: str) -> float:
        """Seconds this request must wait before it starts; books its start time."""
        if not self.interval:
            return 0.0
        now = self.clock()
        start = max(now, self.next_start.get(host, now))
        self.next_start[host] = start + self.interval
        return start - now


class CircuitBreaker:
    WINDOW = 20  # the most recent attempts per host that count
    MIN_ATTEMPTS = 10  # no verdict on fewer

    def __init__(self, failure_ratio: float = 0.8, cooldown: float = 60.0, clock: Clock = time.monotonic):
        self.failure_ratio = failure_ratio  # 0: never pause
        self.cooldown = cooldown
        self.clock = clock
        self.recent: dict[str, collections.deque] = {}
        self.lifetime: dict[str, list[int]] = {}  # host -> [failures, attempts]
        self.paused_until: dict[str, float] = {}
        self.probing: set[str] = set()

    def refusal(self, host: str) -> Optional[str]:
        """Why a request to host must not start now, or None to let it go."""
        return self.admit(host)[0]

    def admit(self, host: str) -> tuple[Optional[str], bool]:
        """(why the request must not start, or None; whether it is the probe of a paused host)."""
        until = self.paused_until.get(host)
        if until is None:
            return None, False
        if self.clock() < until or host in self.probing:
            failed = sum(self.recent[host])
            return f"{host} paused: {failed} of its last {len(self.recent[host])} attempts failed", False
        self.probing.add(host)  # the pause is over: this request is the probe
        return None, True

    def record(self, host: str, failed: bool, probe: bool = False) -> None:
        """One attempt's outcome. While a probe is out, only the probe's own result decides."""
        if not self.failure_ratio:
            return
        if host in self.probing and not probe:
            return
        if probe:
            self.probing.discard(host)
            if failed:
                self.paused_until[host] = self.clock() + self.cooldown
                return
            self.paused_until.pop(host, None)
            self.recent[host].clear()
            self.lifetime[host] = [0, 0]
        recent = self.recent.setdefault(host, collections.deque(maxlen=self.WINDOW))
        recent.append(failed)
        lifetime = self.lifetime.setdefault(host, [0, 0])
        lifetime[0] += failed
        lifetime[1] += 1
        if (len(recent) >= self.MIN_ATTEMPTS and sum(recent) >= self.failure_ratio * len(recent)
                and lifetime[0] >= self.failure_ratio / 2 * lifetime[1]):
            self.paused_until[host] = self.clock() + self.cooldown
