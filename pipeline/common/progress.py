"""Live progress of a long run (issue 25): counters bumped where the work happens, shown
while the runner's blocking call runs.

Beam's metrics can only be queried once FnApiRunner returns, and its workers may be other
processes. So the side channel is plain files: `bump` adds to this process's counters
(a dict under a lock: well under a microsecond); when OPENWIT_PROGRESS_DIR is set (the
launcher sets it, worker processes inherit it), a daemon thread writes them every second
to DIR/worker-PID.json (atomically). The launcher's `Reporter` sums the files every second
and shows them: a tqdm bar on a terminal, a plain line every N seconds elsewhere, and
optionally the same numbers as JSON for monitoring. Workers that never see the variable
(a remote runner) count in memory only and write nothing; the run is unchanged.

Ending a run must leave no worker file behind (OUT/.openwit/progress, or a temporary folder
that is then removed). A worker writes only while the launcher's run token (DIR/run-active)
exists, and after each write checks it again, removing what it just wrote if the token is
gone: end_run removes the token before the worker files, so a write either comes before
that removal or is undone by its writer. In the launcher's own process a lock keeps the
flusher thread from writing while end_run cleans up.

The numbers are the Beam counters' (beam/stage.py bumps both) plus two of progress only:
the records that passed a stage (`passed.STAGE`; passed.balance_pre is the download phase's
to-do) and the downloads finished. They count attempts: a retried bundle counts twice here,
never in the ledger or the manifest.
"""
from __future__ import annotations

import argparse
import atexit
import glob
import json
import os
import shutil
import sys
import threading
import time
from typing import Optional

from openwit.pipeline.common.errors import UserError

ENV = "OPENWIT_PROGRESS_DIR"
FLUSH_SECONDS = 1.0
WORKER_FILE = "worker-{pid}.json"
RUN_TOKEN = "run-active"  # present while a run is on: workers write only then
# counter names (the Beam ones too: pipeline/beam/stage.py)
CANDIDATES = "candidates"
KEPT = "kept"
DOWNLOADED = "downloaded"
PASSED_PREFIX = "passed."
DROPPED_PREFIX = "dropped."
TO_DOWNLOAD = PASSED_PREFIX + "balance_pre"
DEFAULT_EVERY = 30.0
RATE_WINDOW = 20.0  # seconds of history behind images/s and the ETA
TOP_REASONS = 3

_counts: dict = {}
_lock = threading.Lock()
_write_lock = threading.RLock()  # one flush at a time in this process, none during end_run
_flusher: Optional[threading.Thread] = None
_env_checked = False


# ------------------------------------------------------------------ counting (any process)


def bump(name: str, n: int = 1) -> None:
    with _lock:
        _counts[name] = _counts.get(name, 0) + n
    if not _env_checked:
        _check_env()


def _check_env() -> None:
    """Once per process: a worker started by a launcher that shows progress inherits the
    variable and writes its counters; otherwise counting stays in memory (start_run starts
    the writer in the launcher itself)."""
    global _env_checked
    _env_checked = True
    if os.environ.get(ENV):
        _start_flusher()


def snapshot() -> dict:
    with _lock:
        return dict(_counts)


def _start_flusher() -> None:
    global _flusher
    with _lock:
        if _flusher is not None:
            return
        _flusher = threading.Thread(target=_flush_loop, name="openwit-progress", daemon=True)
    _flusher.start()
    atexit.register(flush)  # a worker process's last counts, written as it exits


def _flush_loop() -> None:
    written = None
    while True:
        time.sleep(FLUSH_SECONDS)
        written = flush(written)


def flush(written=None):
    """Write this process's counters to the progress folder if they changed since
    `written` (what the last call returned); returns what is there now."""
    with _write_lock:
        folder = os.environ.get(ENV)
        counts = snapshot()
        if not folder or (folder, counts) == written:
            return written
        return _write_counts(folder, counts, written)


def _write_counts(folder: str, counts: dict, written):
    token = os.path.join(folder, RUN_TOKEN)
    path = os.path.join(folder, WORKER_FILE.format(pid=os.getpid()))
    partial = f"{path}.partial"
    if not os.path.exists(token):  # the run has ended (or this folder is not a run's)
        return written
    try:
        with open(partial, "w") as f:
            json.dump(counts, f)
        os.replace(partial, path)
        result = folder, counts
    except OSError:  # the folder or the partial went away (the run ended): nothing to report to
        result = written
    if not os.path.exists(token):  # the run ended while this was written: undo it (the module doc)
        for leftover in (path, partial):
            try:
                os.remove(leftover)
            except OSError:
                pass
        return written
    return result


def start_run(folder: str) -> None:
    """The launcher's side, before the pipeline runs: an empty progress folder (only the
    worker files of an earlier run are removed), fresh counters in this process (the
    in-memory runner's workers are this process), and the variable workers inherit."""
    os.makedirs(folder, exist_ok=True)
    _remove_worker_files(folder)
    with _lock:
        _counts.clear()
    with open(os.path.join(folder, RUN_TOKEN), "w"):
        pass
    os.environ[ENV] = folder
    _start_flusher()


def end_run(folder: str) -> dict:
    """The summed counters of the run; the worker files are removed and the variable unset.
    The token goes first, so no worker writes after the files are removed (the module doc)."""
    with _write_lock:  # this process's flusher is not halfway through a write
        flush()
        totals = read_totals(folder)
        os.environ.pop(ENV, None)
        try:
            os.remove(os.path.join(folder, RUN_TOKEN))
        except OSError:
            pass
        _remove_worker_files(folder)
    return totals


def _remove_worker_files(folder: str) -> None:
    for path in glob.glob(os.path.join(folder, WORKER_FILE.format(pid="*"))) + \
            glob.glob(os.path.join(folder, WORKER_FILE.format(pid="*")) + ".partial"):
        try:
            os.remove(path)
        except OSError:
            pass


def read_totals(folder: str) -> dict:
    """Every worker's counters, summed."""
    totals: dict = {}
    for path in glob.glob(os.path.join(folder, WORKER_FILE.format(pid="*"))):
        try:
            with open(path) as f:
                counts = json.load(f)
        except (OSError, ValueError):  # removed or replaced meanwhile: its next write counts
            continue
        for name, value in counts.items():
            totals[name] = totals.get(name, 0) + value
    return totals


# ------------------------------------------------------------------ what is shown


def view(totals: dict, elapsed: float, rate: Optional[float]) -> dict:
    """The numbers a person or a monitor wants, from summed counters."""
    reasons: dict = {}
    for name, value in totals.items():
        if name.startswith(DROPPED_PREFIX):
            reason = name.rsplit(".", 1)[-1]
            reasons[reason] = reasons.get(reason, 0) + value
    to_download, downloaded = totals.get(TO_DOWNLOAD, 0), totals.get(DOWNLOADED, 0)
    eta = (to_download - downloaded) / rate if rate and to_download > downloaded else None
    return {
        "elapsed_s": round(elapsed, 1),
        "candidates": totals.get(CANDIDATES, 0),
        "downloads_to_do": to_download,
        "downloads_done": downloaded,
        "images_per_s": None if rate is None else round(rate, 2),
        "download_eta_s": None if eta is None else round(eta, 1),
        "kept": totals.get(KEPT, 0),
        "drop_reasons": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        "counters": dict(sorted(totals.items())),
    }


def clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def top_reasons(shown: dict) -> str:
    items = list(shown["drop_reasons"].items())[:TOP_REASONS]
    return ", ".join(f"{reason} {n:,}" for reason, n in items) or "none"


def plain_line(shown: dict) -> str:
    """One line for logs: everything in words, no carriage returns."""
    parts = [f"progress {clock(shown['elapsed_s'])}", f"{shown['candidates']:,} candidates read"]
    if shown["downloads_to_do"] or shown["downloads_done"]:
        download = f"downloads {shown['downloads_done']:,}/{shown['downloads_to_do']:,}"
        if shown["images_per_s"] is not None:
            download += f" ({shown['images_per_s']:.1f} images/s"
            download += f", ETA {clock(shown['download_eta_s'])})" if shown["download_eta_s"] is not None else ")"
        parts.append(download)
    parts += [f"kept {shown['kept']:,}", f"top drops: {top_reasons(shown)}"]
    return "; ".join(parts)


class Rate:
    """Downloads per second over the last RATE_WINDOW seconds."""

    def __init__(self):
        self.samples: list[tuple[float, int]] = []

    def add(self, now: float, done: int) -> Optional[float]:
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW:
            self.samples.pop(0)
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        if t1 - t0 < 1 or d1 == 0:
            return None
        return (d1 - d0) / (t1 - t0)


# ------------------------------------------------------------------ options and the reporter


def add_flags(parser) -> None:
    """The progress flags, on any command's parser (or argument group)."""
    group = parser.add_argument_group("progress") if isinstance(parser, argparse.ArgumentParser) else parser
    group.add_argument("--quiet", action="store_true",
                       help="no progress display or progress lines; only the end-of-run summary")
    group.add_argument("--progress-every", type=float, default=DEFAULT_EVERY, metavar="SECONDS",
                       help="off a terminal, a plain progress line every SECONDS (default: %(default)s)")
    group.add_argument("--progress-json", metavar="FILE", default=None,
                       help="rewrite FILE every second with the progress counters (JSON), for monitoring")


class Options:
    def __init__(self, quiet: bool = True, every: float = DEFAULT_EVERY, json_path: Optional[str] = None):
        if every <= 0:
            raise UserError(f"--progress-every must be a positive number of seconds, got {every:g}")
        if json_path and not os.path.isdir(os.path.dirname(os.path.abspath(json_path))):
            raise UserError(f"--progress-json {json_path}: its folder does not exist; create it or choose another path")
        self.quiet, self.every, self.json_path = quiet, every, json_path


def options_of(args) -> Options:
    """The Options of arguments parsed by a parser that add_flags() furnished."""
    return Options(args.quiet, args.progress_every, args.progress_json)


def options_from(argv: list[str]) -> Options:
    """The progress flags of a command line (the rest is left to the command's parser)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_flags(parser)
    args, _ = parser.parse_known_args(argv)
    return Options(args.quiet, args.progress_every, args.progress_json)


class Reporter:
    """Shows the summed counters of `folder` while a blocking call runs: a tqdm bar when
    `stream` is a terminal, else a plain line every `options.every` seconds; `--quiet`
    shows nothing; `--progress-json` is written either way. Use as a context manager."""

    def __init__(self, folder: str, options: Options, stream=None, tick: float = FLUSH_SECONDS):
        self.folder, self.options, self.tick = folder, options, tick
        self.stream = stream or sys.stderr
        self.terminal = not options.quiet and _is_terminal(self.stream)
        self.rate = Rate()
        self.bar = None
        self.started = time.monotonic()
        self.last_line = self.started
        self.shown: dict = view({}, 0.0, None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="openwit-progress-report", daemon=True)

    def __enter__(self):
        start_run(self.folder)
        self.started = self.last_line = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        totals = end_run(self.folder)
        try:
            self.update(totals, final=True)
        except OSError as err:  # the display must not hide the run's own outcome (or exception)
            print(f"openwit: progress display: {err}", file=self.stream)
        if self.bar is not None:
            self.bar.close()
        return False

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self.update(read_totals(self.folder))
            except Exception as err:  # noqa: BLE001 - a display problem must never end the run
                print(f"openwit: progress display stopped: {err}", file=self.stream)
                return

    def update(self, totals: dict, final: bool = False) -> None:
        now = time.monotonic()
        rate = self.rate.add(now, totals.get(DOWNLOADED, 0))
        self.shown = view(totals, now - self.started, rate)
        if self.options.json_path:
            write_json(self.options.json_path, {**self.shown, "finished": final})
        if self.options.quiet:
            return
        if self.terminal:
            self._draw(final)
        elif not final and now - self.last_line >= self.options.every:
            self.last_line = now
            print(plain_line(self.shown), file=self.stream, flush=True)

    def _draw(self, final: bool) -> None:
        from tqdm import tqdm

        shown = self.shown
        if self.bar is None:
            # the terminal's size, or 100 x 20 where it reports none: a pty of size 0 makes
            # tqdm draw nothing at all
            size = shutil.get_terminal_size((100, 20))
            self.bar = tqdm(total=None, unit=" img", desc="downloads", file=self.stream, smoothing=0.1,
                            mininterval=0, ncols=size.columns if size.columns > 0 else 100,
                            nrows=size.lines if size.lines > 0 else 20)
        self.bar.total = shown["downloads_to_do"] or None
        self.bar.update(shown["downloads_done"] - self.bar.n)  # update(): tqdm's rate and ETA follow
        self.bar.set_postfix_str(f"read {shown['candidates']:,} | kept {shown['kept']:,} | "
                                 f"drops: {top_reasons(shown)}", refresh=False)
        self.bar.refresh()


def write_json(path: str, shown: dict) -> None:
    partial = f"{path}.partial"
    with open(partial, "w") as f:
        json.dump(shown, f, indent=1)
    os.replace(partial, path)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class LoopProgress:
    """Progress of a loop in this process (extract, ...): items done of a known total, with
    counts beside. A tqdm bar on a terminal, a plain line every `options.every` seconds
    elsewhere, the JSON file either way (at most once a second); checked inline, no thread."""

    def __init__(self, what: str, total: int, options: Options, unit: str = "files", stream=None):
        self.what, self.total, self.options, self.unit = what, total, options, unit
        self.stream = stream or sys.stderr
        self.done, self.counts = 0, {}
        self.started = self.last_line = self.last_json = time.monotonic()
        self.rate, self.per_s = Rate(), None
        self.rate.add(self.started, 0)  # the rate counts from the start
        self.bar = None
        if not options.quiet and _is_terminal(self.stream):
            from tqdm import tqdm

            size = shutil.get_terminal_size((100, 20))
            self.bar = tqdm(total=total, desc=what, unit=" " + unit, file=self.stream,
                            ncols=size.columns if size.columns > 0 else 100, nrows=size.lines if size.lines > 0 else 20)

    def advance(self, n: int = 1, **counts) -> None:
        """n more items done; counts: running totals to show beside (candidates=...)."""
        self.done += n
        self.counts.update(counts)
        if self.bar is not None:
            self.bar.set_postfix_str(self.beside(), refresh=False)
            self.bar.update(n)
        now = time.monotonic()
        if self.options.json_path and now - self.last_json >= FLUSH_SECONDS:
            self.last_json = now
            write_json(self.options.json_path, self.state(False))
        if self.bar is None and not self.options.quiet and now - self.last_line >= self.options.every:
            self.last_line = now
            print(self.line(), file=self.stream, flush=True)

    def beside(self) -> str:
        return ", ".join(f"{value:,} {name}" for name, value in self.counts.items())

    def speed(self) -> str:
        """" (12.5 shards/s, ETA 0:01:02)" once a second of the loop has passed, else "".
        The rate is sampled at most once a second (Rate keeps RATE_WINDOW seconds of it), so
        a tiny --progress-every costs no more memory than the default."""
        now = time.monotonic()
        samples = self.rate.samples
        if not samples or now - samples[-1][0] >= FLUSH_SECONDS:
            self.per_s = self.rate.add(now, self.done)
        if not self.per_s:
            return ""
        left = self.total - self.done
        eta = f", ETA {clock(left / self.per_s)}" if left > 0 else ""
        return f" ({self.per_s:.1f} {self.unit}/s{eta})"

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        return f"progress {clock(elapsed)}; {self.what} {self.done:,}/{self.total:,} {self.unit}" + \
            self.speed() + (f"; {self.beside()}" if self.counts else "")

    def state(self, finished: bool) -> dict:
        return {"what": self.what, "elapsed_s": round(time.monotonic() - self.started, 1), "done": self.done,
                "total": self.total, "unit": self.unit, **self.counts, "finished": finished}

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.options.json_path:
            write_json(self.options.json_path, self.state(True))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
