"""`FetchEngine`: one process's download stage, without Beam: receipt, download, image work.

A record goes through three steps, each started by the previous step's completion callback:

1. its receipt is looked up (an I/O pool): an earlier run's outcome is reused as it is, and
   counted as an attempt its host answered, for the circuit breaker;
2. otherwise it is downloaded (the Downloader's event loop);
3. the download is decoded, checked, resized and staged (a CPU pool), and a lasting outcome
   leaves a receipt. Its body counts against --fetched-bytes-budget until then: over the
   budget no new download starts (client.BodyBudget).

`submit(record, done)` calls `done` exactly once with the finished record, from a pool or
event-loop thread: each callback catches whatever it raises and then hands back an
internal_error drop of its record. The Beam DoFn (beam/download_fn.py) runs one engine in its
own process, or one per fetch-worker process (download/pool.py).
"""
from __future__ import annotations

import functools
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from openwit.pipeline.download import staging
from openwit.pipeline.download.client import DownloadConfig, Downloader
from openwit.pipeline.stages.download import lasting, record_from_download
from openwit.pipeline.stages.image import ImageConfig
from openwit.schemas.record import Record, drop_internal_error, guarded

Done = Callable[[Record], None]


class FetchEngine:
    """Receipts, downloads and image work for the records submitted to it, on its own threads."""

    def __init__(self, download: DownloadConfig, image: ImageConfig, staging_dir: str, receipt_config=None,
                 image_threads: int = 0):
        # The event loop thread must get the GIL back promptly while image threads run:
        # at Python's default 5 ms switch interval it starves (measured: 330 vs 445 images/s).
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
        self.image = image
        self.staging_dir = staging_dir
        # Receipts are keyed by the run's download settings, not this worker's share of them.
        self.receipt_config = receipt_config or download
        self.downloader = Downloader(download)
        self.cpu = ThreadPoolExecutor(image_threads or 2 * (os.cpu_count() or 1), thread_name_prefix="openwit-image")
        # Receipt lookups are I/O (a round trip on remote staging): their own pool, so they
        # never queue behind image work and delay downloads.
        self.receipts = ThreadPoolExecutor(8, thread_name_prefix="openwit-receipt")
        self.stage = functools.partial(staging.stage_image, staging_dir)
        self.finish_one = guarded(self.finish, "download")

    def receipt_key(self, record) -> str:
        return staging.receipt_key(record.url, self.image, self.receipt_config)

    def reuse_staged(self, record):
        return staging.reuse_receipt(self.staging_dir, self.receipt_key(record), record)

    def finish(self, record, download):
        done = record_from_download(record, download.result(), self.image, self.stage)
        if lasting(done):
            staging.save_receipt(self.staging_dir, self.receipt_key(record), done)
        return done

    def submit(self, record: Record, done: Done) -> None:
        lookup = self.receipts.submit(self.reuse_staged, record)
        lookup.add_done_callback(functools.partial(self.after_lookup, done, record))

    # The three callbacks run on pool or event loop threads. Each hands its record to `done`
    # or to the next step, and never lets an exception escape: a record that does not come
    # back would hold its bundle open for ever.

    def after_lookup(self, done: Done, record, task) -> None:
        """Step 1 done: the receipt's record is the outcome, or the URL is downloaded."""
        try:
            reused = task.result()
        except Exception:  # noqa: BLE001 - an unreadable receipt only costs a download
            reused = None
        try:
            if reused is not None:  # an earlier (crashed) run's download, staged and receipted
                self.downloader.count_reused(record.url)  # the breaker sees the host as a fresh run does
                done(reused)
            else:
                download = self.downloader.submit(record.url)
                download.add_done_callback(functools.partial(self.after_download, done, record))
        except BaseException as err:  # noqa: BLE001 - e.g. the loop is shutting down
            done(drop_internal_error(record, "download", err))

    def after_download(self, done: Done, record, download) -> None:
        """Step 2 done: the image work goes to the CPU pool."""
        try:
            task = self.cpu.submit(self.finish_one, record, download)
            task.add_done_callback(functools.partial(self.after_processing, done, record, download))
        except BaseException as err:  # noqa: BLE001 - e.g. the pool is shutting down
            self.release(download)
            done(drop_internal_error(record, "download", err))

    def after_processing(self, done: Done, record, download, task) -> None:
        """Step 3 done: the record is back, and its body leaves the fetched-bytes budget."""
        self.release(download)
        try:
            finished = task.result()  # finish_one caught the record's own errors
        except BaseException as err:  # noqa: BLE001 - the record must come back, whatever happened
            finished = drop_internal_error(record, "download", err)
        done(finished)

    def release(self, download) -> None:
        """The body is decoded (or never will be): downloads waiting on the budget may start."""
        try:
            self.downloader.release(download.result())
        except BaseException:  # noqa: BLE001 - a failed download held no bytes
            pass

    def alive(self) -> bool:
        return self.downloader.alive()

    def close(self) -> None:
        # Queued work is abandoned: nobody is waiting for it any more.
        self.cpu.shutdown(wait=False, cancel_futures=True)
        self.receipts.shutdown(wait=False, cancel_futures=True)
        self.downloader.close()
