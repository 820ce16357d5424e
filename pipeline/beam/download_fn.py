"""`DownloadFn`: the download stage as a Beam DoFn that streams records through downloads.

Each record is submitted when it arrives and emitted when its outcome is ready, so a URL that
hangs until its deadline holds one download slot, not a batch. The work for one record
(receipt, download, image work, staging) is a `FetchEngine` (download/engine.py), run in this
process or, with several fetch workers, in one process per core (download/pool.py), so that
downloads and image work use every core while this process runs Beam.

Every record comes back exactly once, on the queue of the bundle that submitted it. A bundle
ends only when all its records are back.
"""
from __future__ import annotations

import queue

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from openwit.pipeline.beam.options import usable_cores
from openwit.pipeline.beam.stage import route
from openwit.pipeline.common import progress
from openwit.pipeline.config import CurateConfig
from openwit.pipeline.download.engine import FetchEngine
from openwit.pipeline.download.pool import FetchPool


class DownloadFn(beam.DoFn):
    """Streams records through downloads, in this process (fetch_workers <= 1) or in
    fetch-worker processes."""

    def __init__(self, cfg: CurateConfig, staging_dir: str, fetch_workers: int = 1):
        self.cfg = cfg
        self.staging_dir = staging_dir
        self.fetch_workers = fetch_workers

    def setup(self):
        cores = usable_cores()
        if self.fetch_workers > 1:
            self.engine = FetchPool(self.cfg.download, self.cfg.image, self.staging_dir, self.fetch_workers, cores)
        else:
            self.engine = FetchEngine(self.cfg.download, self.cfg.image, self.staging_dir, image_threads=2 * cores)
        # keeps the pipes full, bounds memory: each fetch worker has its own connections
        self.max_in_flight = 8 * self.cfg.download.concurrency * max(1, self.fetch_workers)

    def start_bundle(self):
        self.in_flight = 0
        self.finished = queue.SimpleQueue()  # done records arrive here, in completion order

    def submit(self, record) -> None:
        # The engine gets this bundle's queue, not self.finished: records may come back late.
        self.engine.submit(record, self.finished.put)
        self.in_flight += 1

    def take(self, block: bool):
        while True:
            try:
                record = self.finished.get(block=block, timeout=60 if block else None)
                break
            except queue.Empty:
                if not self.engine.alive():  # nothing in flight can finish any more
                    raise RuntimeError("openwit's download event loop stopped; the bundle fails so it is retried")
        self.in_flight -= 1
        progress.bump(progress.DOWNLOADED)  # the live display's downloads done (common/progress.py)
        return route(record)

    def process(self, record):
        self.submit(record)
        if self.in_flight >= self.max_in_flight:
            yield self.take(block=True)
        while not self.finished.empty():
            yield self.take(block=False)

    def finish_bundle(self):
        # finish_bundle output needs an explicit window: the records' own windows are gone.
        while self.in_flight:
            out = self.take(block=True)
            if isinstance(out, pvalue.TaggedOutput):
                yield pvalue.TaggedOutput(out.tag, _in_global_window(out.value))
            else:
                yield _in_global_window(out)

    def teardown(self):
        self.engine.close()


def _in_global_window(value):
    return WindowedValue(value, MIN_TIMESTAMP, [GlobalWindow()])
