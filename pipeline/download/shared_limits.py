"""Per-host limits shared by the fetch-worker processes of one `FetchPool` (issue 19).

Every host, whether its URLs were routed to a worker or it was reached by a redirect from
any host, gets at most --per-host-connections requests at once and --max-host-rate request
starts per second across all the workers of a pool, as one process would allow.

The state lives in one file that the pool creates in a private temporary directory (and
removes at close); each worker opens it once (`join`). A host maps to one of `BUCKETS`
buckets by a keyed hash (common/keyed.py). Two hosts in one bucket share its limits:
stricter, never looser (1,024 hosts in flight hold half a colliding pair on average).

- Connection slots: slot i of bucket b is one byte of the file, held with a POSIX record
  lock (`fcntl.lockf`). The kernel frees a process's locks when it dies, so a killed worker
  never leaks a slot. POSIX locks belong to a process, not to a descriptor: a process that
  locks a byte it already holds succeeds again, so each table keeps the bytes its process
  holds (`held`) and never offers them twice. Closing any descriptor of the file would drop
  all of the process's locks, hence one table, and one descriptor, per file and process
  (`join`). A request that finds every slot busy polls again after a short, growing pause
  (`POLL_FIRST` to `POLL_LAST` seconds): the event loop is never blocked, a slot freed
  by another process is seen within `POLL_LAST`, and one freed by this process at once. Polling is not first come, first served:
  a worker that frees a slot and has requests for the host waiting usually takes it again
  at once, so another worker's requests for that host may wait until those are done (they
  wait before their deadlines start, so they do not time out for it).
- Request rate: bucket b's next allowed start is 8 bytes of the file (a double of
  `time.monotonic()`, which is one clock for the whole machine on Linux), read and rewritten
  under a brief lock of those 8 bytes; the booking rule is `RatePacer`'s.

Only the thread that runs the worker's event loop uses a table.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import struct
import tempfile
import time
from typing import Callable, Optional

from openwit.pipeline.common.keyed import bucket

BUCKETS = 1 << 20
RECORD = struct.Struct("<d")  # a bucket's next allowed request start
SLOTS_AT = BUCKETS * RECORD.size  # the slot bytes follow the records; they hold no data
FILE_NAME = "host-limits"
POLL_FIRST = 0.002
POLL_LAST = 0.05
_BUSY = (errno.EACCES, errno.EAGAIN)


def host_bucket(host: str) -> int:
    return bucket(host, b"openwit-hostlim", BUCKETS)


class SharedFile:
    """The pool's side: the file in a temporary directory of its own, removed by `remove`."""

    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="openwit-fetch-limits-")  # mode 0700
        self.path = os.path.join(self.folder, FILE_NAME)
        try:
            self.create()
        except BaseException:
            self.remove()
            raise

    def create(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, SLOTS_AT)  # sparse: the records read as 0.0 until written
            # a temporary directory without record locks fails the pool here, not each download
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, SLOTS_AT)
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, SLOTS_AT)
        finally:
            os.close(fd)

    def remove(self) -> None:
        """Removes the file and the directory, both ours; nothing else was put there."""
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)
        with contextlib.suppress(OSError):
            os.rmdir(self.folder)


class SharedTable:
    """One process's view of the file: the slot bytes it holds and the rate records."""

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic, slots: Optional[int] = None):
        self.path = path
        self.slots = slots  # the pool's --per-host-connections (None: each caller's own per_host)
        self.fd = os.open(path, os.O_RDWR)
        self.held: dict[int, int] = {}  # offset of a slot byte this process holds -> its bucket
        self.sleepers: dict[int, set[asyncio.Future]] = {}  # bucket -> pollers waiting for it
        self.clock = clock

    def try_slot(self, where: int, slots: int) -> Optional[int]:
        """Locks a free slot byte of bucket `where`; its offset, or None if all are busy.
        `slots`: the run's --per-host-connections, the same in every worker of the pool."""
        first = SLOTS_AT + where * slots
        for offset in range(first, first + slots):
            if offset in self.held:
                continue
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
            except OSError as err:
                if err.errno in _BUSY:
                    continue
                raise
            self.held[offset] = where
            return offset
        return None

    def free_slot(self, offset: int) -> None:
        where = self.held.pop(offset)
        fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, offset)
        for wake in self.sleepers.get(where, ()):  # this process's poller needs no poll to see it
            if not wake.done():
                wake.set_result(None)

    async def take_slot(self, where: int, slots: int) -> int:
        """Waits (polling, off the loop's back) for a slot of bucket `where`."""
        pause = POLL_FIRST
        while True:
            offset = self.try_slot(where, slots)
            if offset is not None:
                return offset
            await self.nap(where, pause)
            pause = min(2 * pause, POLL_LAST)

    async def nap(self, where: int, seconds: float) -> None:
        """Sleeps `seconds`, or until this process frees a slot of bucket `where`."""
        loop = asyncio.get_running_loop()
        wake = loop.create_future()
        sleepers = self.sleepers.setdefault(where, set())
        sleepers.add(wake)
        timer = loop.call_later(seconds, lambda: wake.done() or wake.set_result(None))
        try:
            await wake
        finally:
            timer.cancel()
            sleepers.discard(wake)
            if not sleepers:
                del self.sleepers[where]

    def try_book(self, where: int, interval: float) -> Optional[float]:
        """Books the next start of bucket `where`: seconds to wait, or None if another
        process is booking right now."""
        at = where * RECORD.size
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, RECORD.size, at)
        except OSError as err:
            if err.errno in _BUSY:
                return None
            raise
        try:
            now = self.clock()  # read under the lock: bookings are made in time order
            start = max(now, RECORD.unpack(os.pread(self.fd, RECORD.size, at))[0])
            os.pwrite(self.fd, RECORD.pack(start + interval), at)
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, RECORD.size, at)
        return start - now

    async def book(self, where: int, interval: float) -> float:
        """Seconds until this request may start (its start is booked). The record's lock is
        held for a read and a write only, so a busy record is tried again 1 ms later."""
        while True:
            wait = self.try_book(where, interval)
            if wait is not None:
                return wait
            await asyncio.sleep(POLL_FIRST / 2)

    def close(self) -> None:
        """Frees every lock of this process on the file (POSIX semantics)."""
        self.held.clear()
        os.close(self.fd)


_joined: Optional[SharedTable] = None


def join(path: str, slots: Optional[int] = None) -> SharedTable:
    """Makes this process a member of the pool whose file is `path`: every HostLimits made
    from now on in this process uses the shared table (fetch workers call it first thing).
    `slots`: the pool's --per-host-connections, which the table holds for all workers."""
    global _joined
    if _joined is None or _joined.path != path:
        if _joined is not None:
            _joined.close()
        _joined = SharedTable(path, slots=slots)
    _joined.slots = slots
    return _joined


def joined() -> Optional[SharedTable]:
    """This process's shared table, or None (one process: per-process limits, no file)."""
    return _joined


def leave() -> None:
    """For tests that join in their own process."""
    global _joined
    if _joined is not None:
        _joined.close()
        _joined = None

