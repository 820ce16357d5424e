"""`FetchPool`: the download stage's work spread over fetch-worker processes, one per core.

One process cannot use more than about one core: the event loop, Beam and the Python parts
of the image work share its GIL (docs/performance.md, "Scaling with cores"). So each fetch
worker is a process of its own that runs a whole `FetchEngine` (receipt, download, decode,
resize, hash, stage, receipt). Only small records cross the pipes: the record in, the
finished record out, with the staged image's path; image bytes never do.

Politeness holds across the workers. Each host's connection slots and request rate are the
pool's, not a worker's: the pool creates a small file of shared per-host limits in a private
temporary directory (removed at close), and every worker takes a host's slot, and books its
request start, there (download/shared_limits.py). So for every host, whether URLs name it or
only redirects reach it (a CDN behind many origin hosts), all the workers together hold at
most --per-host-connections of its requests and start at most --max-host-rate per second, as
one process would. A worker that dies frees its slots with it (the kernel drops its locks).
A host's URLs still go to `spread` = min(per-host connections, workers) of the workers, by
keyed hashes of the host and the URL: its keep-alive connections, circuit breaker and DNS
cache stay in few places. The breaker and the DNS cache are per worker: a dead host is
paused by each of the (at most `spread`) workers that see it, after its own 10 failed
attempts (docs/design.md). The fetched-bytes budget is split evenly; the decode budget
(--max-decoded-bytes) is per worker, as it is also the largest image allowed.

A worker that dies (killed for memory, say) does not lose records: those it held come back
as `internal_error` drops (transient: `--retry-failed` takes them up), and the next record
routed to it starts a new process. A worker that cannot start, or dies 3 times in a row,
fails the bundle with its error instead (as the in-process engine's setup would). A worker
whose event loop stopped, or that cannot send a reply, exits, so that the same rule applies.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import itertools
import os
import subprocess
import sys
import signal
import threading
import time
from multiprocessing.connection import Connection

from openwit.pipeline.common.keyed import bucket
from openwit.pipeline.common.urls import host_of
from openwit.pipeline.download import shared_limits
from openwit.pipeline.download.client import DownloadConfig
from openwit.pipeline.download.engine import Done, FetchEngine
from openwit.pipeline.output.files import is_remote
from openwit.pipeline.stages.image import ImageConfig
from openwit.schemas.record import Record, drop_internal_error


def spread_of(download: DownloadConfig, workers: int) -> int:
    """How many workers share one host's URLs."""
    return max(1, min(download.per_host, workers))


def worker_share(download: DownloadConfig, workers: int) -> DownloadConfig:
    """One worker's download settings: its part of the fetched-bytes budget (so the run's
    bodies waiting to be decoded stay within it), and at most ceil(per_host / spread) of a
    host's slots. The pool's shared table (shared_limits.py) holds the run's per_host slots
    and rate for all the workers together; the local cap keeps one worker from taking all of
    a host's slots (the table is polled, not served in order: measured, one worker then did
    all of a one-host bench's downloads, and 2 cores ran at 1.03x one)."""
    spread = spread_of(download, workers)
    return dataclasses.replace(download, per_host=-(-download.per_host // spread),
                               body_budget=max(1, download.body_budget // workers))


def worker_for(url: str, download: DownloadConfig, workers: int) -> int:
    """The worker that fetches url: one of its host's `spread` workers, by keyed hashes."""
    first = bucket(host_of(url) or "", b"fetch-host", workers)
    return (first + bucket(url, b"fetch-url", spread_of(download, workers))) % workers


def beam_plugins(staging_dir: str) -> list[str]:
    """The Beam plugins (FileSystem classes) this process has loaded, for a remote staging
    folder: a worker imports them too, as Beam's own workers do with --beam_plugins, so a
    scheme registered by an import here (a custom or test filesystem) works there."""
    if not is_remote(staging_dir):
        return []
    from apache_beam.io.filesystem import FileSystem

    return FileSystem.get_all_plugin_paths()


def import_plugins(paths: list[str]) -> None:
    for path in paths:
        try:
            importlib.import_module(path.rpartition(".")[0])
        except Exception as err:  # noqa: BLE001 - a scheme it registers fails later, with its own error
            print(f"openwit fetch worker: cannot import Beam plugin {path}: {err}", file=sys.stderr)


READY = "ready"
WATCH_SECONDS = 5.0
# A worker that dies this often (in a row, without a record coming back) cannot do its job:
# the bundle fails loudly instead of dropping every record as internal_error.
MAX_RESTARTS = 3


def serve(inbox, outbox, download: DownloadConfig, image: ImageConfig, staging_dir: str,
          receipt_config: DownloadConfig, image_threads: int, plugins: list[str], limits_path: str) -> None:
    """A fetch worker's main: READY once its engine works, then (token, record) in and
    (token, finished record) out, until None or the parent is gone."""
    import_plugins(plugins)
    # before the engine: its HostLimits use the pool's table, which holds the run's per-host slots
    shared_limits.join(limits_path, receipt_config.per_host)
    engine = FetchEngine(download, image, staging_dir, receipt_config, image_threads)
    lock = threading.Lock()  # replies come from several engine threads

    def reply(token, record):
        try:
            with lock:
                outbox.send((token, record))
        except BaseException:  # noqa: BLE001 - a reply that cannot go would hang its bundle:
            os._exit(70)  # die instead, and the parent returns this worker's records as drops

    def watch():  # an engine whose event loop stopped finishes nothing: die the same way
        while engine.alive():
            time.sleep(WATCH_SECONDS)
        os._exit(71)

    outbox.send(READY)
    threading.Thread(target=watch, daemon=True, name="openwit-fetch-watch").start()
    try:
        while True:
            try:
                item = inbox.recv()
            except EOFError:  # the parent is gone
                break
            if item is None:
                break
            token, record = item
            engine.submit(record, functools.partial(reply, token))
    finally:
        engine.close()


class WorkerFailed(RuntimeError):
    """A fetch worker could not start, or keeps dying: the bundle fails with this."""


class Worker:
    """One fetch-worker process, its two pipes, and the records it holds.

    Started as `python -P -m openwit.pipeline.download.pool`, not through multiprocessing: its
    spawn start method re-imports the caller's __main__ (a script without a main guard would
    run again in every worker; a notebook or stdin cannot be imported at all), and fork is
    unsafe beside Beam's threads. -P keeps the working directory off sys.path, so a file
    there cannot shadow a module; the parent's sys.path is passed on instead."""

    def __init__(self, index: int, args: tuple, on_reply):
        down_read, down_write = os.pipe()
        up_read, up_write = os.pipe()
        path = [p or os.getcwd() for p in sys.path]  # "": the parent's working directory
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-m", "openwit.pipeline.download.pool", str(down_read), str(up_write)],
            pass_fds=(down_read, up_write), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env)
        self.name = f"openwit-fetch-{index} (pid {self.process.pid})"
        os.close(down_read)
        os.close(up_write)
        self.inbox = Connection(down_write, readable=False)
        self.outbox = Connection(up_read, writable=False)
        self.held: dict[int, Record] = {}
        self.lock = threading.Lock()  # guards held
        self.sending = threading.Lock()
        self.on_reply = on_reply
        self.inbox.send(args)
        self.wait_ready()
        self.receiver = threading.Thread(target=self.receive, daemon=True, name=f"openwit-fetch-{index}-replies")
        self.receiver.start()

    def wait_ready(self) -> None:
        try:
            ready = self.outbox.recv() == READY
        except (EOFError, OSError):
            ready = False
        if not ready:
            code = self.process.wait()
            raise WorkerFailed(f"fetch worker {self.name} could not start (exit code {code}; its error is above)")

    def send(self, token: int, record: Record) -> None:
        with self.lock:  # held before it is sent: a death sweeps it whenever it happens
            self.held[token] = record
        try:
            with self.sending:  # not self.lock: the receiver must never wait on a full pipe
                self.inbox.send((token, record))
        except OSError:  # it died just now; the receiver may have swept its records already
            with self.lock:
                lost = self.held.pop(token, None)
            if lost is not None:
                self.on_reply(token, drop_internal_error(record, "download", DIED))

    def receive(self) -> None:
        try:
            while True:
                token, record = self.outbox.recv()
                with self.lock:
                    self.held.pop(token, None)
                self.on_reply(token, record)
        except Exception as err:  # noqa: BLE001 - EOF (it died) or a reply that cannot be read
            if not isinstance(err, (EOFError, OSError)):
                print(f"openwit: {self.name}: {type(err).__name__}: {err}", file=sys.stderr)
        self.process.kill()  # no-op once it exited; a live one would hold records nobody reads
        code = self.process.wait()
        with self.lock:
            orphans, self.held = self.held, {}
        if orphans:  # the pid and exit code go to the log, not into the ledger's detail
            print(f"openwit: {self.name} exited (code {code}) with {len(orphans)} downloads in flight; "
                  "they are dropped as internal_error (transient: --retry-failed tries them again)",
                  file=sys.stderr)
        for token, record in orphans.items():
            self.on_reply(token, drop_internal_error(record, "download", DIED))

    def alive(self) -> bool:
        return self.process.poll() is None

    def ask_to_stop(self) -> None:
        try:
            with self.sending:
                self.inbox.send(None)
        except OSError:
            pass

    def stop(self) -> None:
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.inbox.close()


DIED = RuntimeError("a fetch worker process exited while this download was in flight")


class FetchPool:
    """The same interface as FetchEngine (submit, alive, close), over `workers` processes."""

    def __init__(self, download: DownloadConfig, image: ImageConfig, staging_dir: str, workers: int, cores: int):
        self.download = download
        self.size = workers
        image_threads = max(2, 2 * cores // workers)  # decode threads per worker: 2 per core in all
        plugins = beam_plugins(staging_dir)
        self.workers: list[Worker] = []
        self.limits = shared_limits.SharedFile()  # removed by close, as the workers end
        self.args = (worker_share(download, workers), image, staging_dir, download, image_threads,
                     plugins, self.limits.path)
        self.tokens = itertools.count()
        self.waiting: dict[int, Done] = {}
        self.restarts = [0] * workers  # in a row, reset when a record comes back
        self.lock = threading.Lock()
        try:
            for i in range(workers):
                self.workers.append(self.start(i))
        except BaseException:
            self.close()
            raise

    def start(self, index: int) -> Worker:
        return Worker(index, self.args, functools.partial(self.on_reply, index))

    def submit(self, record: Record, done: Done) -> None:
        index = worker_for(record.url, self.download, self.size)
        with self.lock:
            if not self.workers[index].alive():  # died earlier: its records came back; start anew
                self.restarts[index] += 1
                if self.restarts[index] > MAX_RESTARTS:
                    raise WorkerFailed(f"fetch worker {index} died {MAX_RESTARTS} times in a row; "
                                       "the bundle fails (see the errors above)")
                self.workers[index] = self.start(index)
            worker = self.workers[index]
            token = next(self.tokens)
            self.waiting[token] = done
        worker.send(token, record)

    def on_reply(self, index: int, token: int, record: Record) -> None:
        with self.lock:
            done = self.waiting.pop(token, None)
            if record.reason != "internal_error":
                self.restarts[index] = 0
        if done is not None:
            done(record)

    def alive(self) -> bool:
        return True  # a dead worker's records come back as drops, and it is restarted

    def close(self) -> None:
        try:
            for worker in self.workers:  # all asked first, so they wind down together
                worker.ask_to_stop()
            for worker in self.workers:
                worker.stop()
        finally:  # the limits file is ours: it goes even if a worker would not stop cleanly
            self.limits.remove()


def worker_main(down_fd: int, up_fd: int) -> None:
    """A fetch worker started by Worker: its settings first, then records until None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent; its pipes' EOF stops us
    inbox = Connection(down_fd, writable=False)
    outbox = Connection(up_fd, readable=False)
    serve(inbox, outbox, *inbox.recv())


if __name__ == "__main__":
    worker_main(int(sys.argv[1]), int(sys.argv[2]))
