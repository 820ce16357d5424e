"""The one Beam wrapper of record-at-a-time stages, the one router of every drop, and
per-worker loading of big lookups. (Download, the dedup groups and the writer are DoFns of
their own, in beam/; they route drops through `route` too.)

`apply_stage` turns a plain `record -> record` function into a ParDo with a `kept` main
output and a `dropped` tagged output, counting drops per reason in Beam metrics. An
unexpected exception becomes an `internal_error` drop of that record, never a failed run.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.utils.shared import Shared

from openwit.pipeline.common import progress
from openwit.pipeline.output import ledger
from openwit.schemas.record import DROPPED, Record, guarded

NAMESPACE = "openwit"
# Counter names: the funnel's ends, and one counter per drop (`dropped.STAGE.REASON`).
CANDIDATES = progress.CANDIDATES
KEPT_COUNTER = progress.KEPT
DROPPED_PREFIX = progress.DROPPED_PREFIX
_SHARED = Shared()  # big lookups are loaded once per worker process, not per bundle


class _Handle:
    """Shared.acquire keeps a weak reference, so wrap objects that do not allow one."""

    def __init__(self, value):
        self.value = value


def load_once(tag: str, loader):
    return _SHARED.acquire(lambda: _Handle(loader()), tag=tag).value


def count(name: str, n: int = 1) -> None:
    Metrics.counter(NAMESPACE, name).inc(n)
    progress.bump(name, n)  # the live display's copy (common/progress.py)


def beam_counters(result) -> dict:
    """openwit's Beam counters of a finished run, by name (committed values where the
    runner has them: those count each element once even when bundles were retried)."""
    from apache_beam.metrics.metric import MetricsFilter

    counters = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    totals = {}
    for counter in counters:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + (value or 0)
    return dict(sorted(totals.items()))


def funnel_from_counters(counters: dict) -> list[tuple[str, int]]:
    """The funnel from a run's counters (beam_counters): on a healthy run it equals the
    ledger's funnel, which the audit checks."""
    dropped = {}
    for name, value in counters.items():
        if name.startswith(DROPPED_PREFIX):
            stage = name[len(DROPPED_PREFIX):].split(".")[0]
            dropped[stage] = dropped.get(stage, 0) + value
    return ledger.funnel_from_drops(counters.get(CANDIDATES, 0), dropped, counters.get(KEPT_COUNTER, 0))


def route(record: Record):
    if record.status == DROPPED:
        name = f"{DROPPED_PREFIX}{record.stage}.{record.reason}"
        Metrics.counter(NAMESPACE, name).inc()
        progress.bump(name)
        return pvalue.TaggedOutput(DROPPED, record)
    return record


class StageFn(beam.DoFn):
    """Applies `build()(record, *side_inputs)`; build runs once per DoFn instance."""

    def __init__(self, stage: str, build):
        self._stage = stage
        self._build = build
        self._passed = progress.PASSED_PREFIX + stage

    def setup(self):
        self._fn = guarded(self._build(), self._stage)

    def process(self, record, *side_inputs):
        out = self._fn(record, *side_inputs)
        if out.status != DROPPED:  # e.g. passed.balance_pre: the download phase's to-do
            progress.bump(self._passed)
        yield route(out)


def apply_stage(pcoll, stage: str, build, *side_inputs):
    """-> (kept, dropped) PCollections; the Beam label is the stage name."""
    label = stage.replace("_", " ").title().replace(" ", "")
    out = pcoll | label >> beam.ParDo(StageFn(stage, build), *side_inputs).with_outputs(DROPPED, main="kept")
    return out.kept, out[DROPPED]
