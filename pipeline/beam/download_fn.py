"""`DownloadFn`: the download stage as a Beam DoFn that streams records through downloads.

Each record is submitted when it arrives and emitted when its outcome is ready, so a URL that
hangs until its deadline holds one download slot, not a batch. One record goes through three
steps, each started by the previous step's completion callback:

1. its receipt is looked up (an I/O pool): an earlier run's outcome is reused as it is, and
   counted as an attempt its host answered, for the circuit breaker;
2. otherwise it is downloaded (the Downloader's event loop);
3. the download is decoded, checked, resized and staged (a CPU pool), and a lasting outcome
   leaves a receipt. Its body counts against --fetched-bytes-budget until then: over the
   budget no new download starts (client.BodyBudget).

Every record comes back exactly once, on the queue of the bundle that submitted it: each
callback catches whatever it raises and then puts an internal_error drop of its record there.
A bundle ends only when all its records are back.
"""
from __future__ import annotations

import functools
import os
import queue
import sys
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from openwit.pipeline.beam.stage import guarded, route
from openwit.pipeline.common import progress
from openwit.pipeline.config import CurateConfig
from openwit.pipeline.download import staging
from openwit.pipeline.download.client import Downloader
from openwit.pipeline.stages.download import lasting, record_from_download
from openwit.schemas.record import drop_internal_error


class DownloadFn(beam.DoFn):
    """Streams records through downloads. Downloads run on the Downloader's event loop;
    decode and resize run in a small thread pool sized to the cores (Pillow releases the GIL
    while it works)."""

    def __init__(self, cfg: CurateConfig, staging_dir: str):
        self.cfg = cfg
        self.staging_dir = staging_dir

    def setup(self):
        # The event loop thread must get the GIL back promptly while image threads run:
        # at Python's default 5 ms switch interval it starves (measured: 330 vs 445 images/s).
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
        self.downloader = Downloader(self.cfg.download)
        self.cpu = ThreadPoolExecutor(2 * (os.cpu_count() or 1), thread_name_prefix="openwit-image")
        # Receipt lookups are I/O (a round trip on remote staging): their own pool, so they
        # never queue behind image work and delay downloads.
        self.receipts = ThreadPoolExecutor(8, thread_name_prefix="openwit-receipt")
        self.stage = functools.partial(staging.stage_image, self.staging_dir)
        self.finish_one = guarded(self.finish, "download")

    def receipt_key(self, record) -> str:
        return staging.receipt_key(record.url, self.cfg.image, self.cfg.download)

    def reuse_staged(self, record):
        return staging.reuse_receipt(self.staging_dir, self.receipt_key(record), record)

    def finish(self, record, download):
        done = record_from_download(record, download.result(), self.cfg.image, self.stage)
        if lasting(done):
            staging.save_receipt(self.staging_dir, self.receipt_key(record), done)
        return done

    def start_bundle(self):
        self.in_flight = 0
        self.finished = queue.SimpleQueue()  # done records arrive here, in completion order

    def submit(self, record) -> None:
        # The callbacks get this bundle's queue, not self.finished: they may fire late.
        lookup = self.receipts.submit(self.reuse_staged, record)
        lookup.add_done_callback(functools.partial(self.after_lookup, self.finished, record))
        self.in_flight += 1

    # The three callbacks run on pool or event loop threads. Each puts its record on
    # `finished` or hands it to the next step, and never lets an exception escape: a
    # record that does not come back would hold its bundle open for ever.

    def after_lookup(self, finished, record, task) -> None:
        """Step 1 done: the receipt's record is the outcome, or the URL is downloaded."""
        try:
            reused = task.result()
        except Exception:  # noqa: BLE001 - an unreadable receipt only costs a download
            reused = None
        try:
            if reused is not None:  # an earlier (crashed) run's download, staged and receipted
                self.downloader.count_reused(record.url)  # the breaker sees the host as a fresh run does
                finished.put(reused)
            else:
                download = self.downloader.submit(record.url)
                download.add_done_callback(functools.partial(self.after_download, finished, record))
        except BaseException as err:  # noqa: BLE001 - e.g. the loop is shutting down
            finished.put(drop_internal_error(record, "download", err))

    def after_download(self, finished, record, download) -> None:
        """Step 2 done: the image work goes to the CPU pool."""
        try:
            task = self.cpu.submit(self.finish_one, record, download)
            task.add_done_callback(functools.partial(self.after_processing, finished, record, download))
        except BaseException as err:  # noqa: BLE001 - e.g. the pool is shutting down
            self.release(download)
            finished.put(drop_internal_error(record, "download", err))

    def after_processing(self, finished, record, download, task) -> None:
        """Step 3 done: the record is back, and its body leaves the fetched-bytes budget."""
        self.release(download)
        try:
            finished.put(task.result())  # finish_one is guarded; this catches what is left
        except BaseException as err:  # noqa: BLE001 - the record must come back, whatever happened
            finished.put(drop_internal_error(record, "download", err))

    def release(self, download) -> None:
        """The body is decoded (or never will be): downloads waiting on the budget may start."""
        try:
            self.downloader.release(download.result())
        except BaseException:  # noqa: BLE001 - a failed download held no bytes
            pass

    def take(self, block: bool):
        while True:
            try:
                record = self.finished.get(block=block, timeout=60 if block else None)
                break
            except queue.Empty:
                if not self.downloader.alive():  # nothing in flight can finish any more
                    raise RuntimeError("openwit's download event loop stopped; the bundle fails so it is retried")
        self.in_flight -= 1
        progress.bump(progress.DOWNLOADED)  # the live display's downloads done (common/progress.py)
        return route(record)

    def process(self, record):
        self.submit(record)
        if self.in_flight >= 8 * self.cfg.download.concurrency:  # keeps the pipes full, bounds memory
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
        self.cpu.shutdown(wait=False)
        self.receipts.shutdown(wait=False)
        self.downloader.close()


def _in_global_window(value):
    return WindowedValue(value, MIN_TIMESTAMP, [GlobalWindow()])
