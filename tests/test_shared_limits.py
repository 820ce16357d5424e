"""The fetch pool's shared per-host limits (pipeline/download/shared_limits.py) without servers:
slot bytes locked across processes (POSIX locks belong to a process, so the other side is a
subprocess), a dead holder's slots freed by the kernel, the shared rate booking, and no file
at all in one process."""
import asyncio
import os
import signal
import subprocess
import sys

import pytest

from openwit.pipeline.download import shared_limits
from openwit.pipeline.download.client import DownloadConfig, Downloader, HostLimits
from openwit.pipeline.download.shared_limits import SharedFile, SharedTable, host_bucket

# Another process with the table open: it answers one command per line.
HOLDER = """
import fcntl, sys
from openwit.pipeline.download.shared_limits import RECORD, SharedTable
table = SharedTable(sys.argv[1])
for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "slot":
        print(table.try_slot(int(args[0]), int(args[1])), flush=True)
    elif cmd == "free":
        table.free_slot(int(args[0]))
        print("freed", flush=True)
    elif cmd == "book":  # bucket, interval, the clock's reading
        table.clock = lambda: float(args[2])
        print(table.try_book(int(args[0]), float(args[1])), flush=True)
    elif cmd == "hold-record":
        fcntl.lockf(table.fd, fcntl.LOCK_EX, RECORD.size, int(args[0]) * RECORD.size)
        print("held", flush=True)
    elif cmd == "bucket":
        from openwit.pipeline.download.shared_limits import host_bucket
        print(host_bucket(args[0]), flush=True)
"""


class Holder:
    def __init__(self, path: str, env=None):
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env)

    def ask(self, *words) -> str:
        self.process.stdin.write(" ".join(str(w) for w in words) + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture
def shared():
    file = SharedFile()
    holder = Holder(file.path)
    table = SharedTable(file.path)
    yield file, holder, table
    table.close()
    if holder.process.poll() is None:
        holder.close()
    file.remove()


def test_the_pool_file_is_private_and_removed_with_its_folder():
    file = SharedFile()
    assert os.listdir(file.folder) == [shared_limits.FILE_NAME]
    assert os.stat(file.path).st_mode & 0o777 == 0o600
    assert os.stat(file.folder).st_mode & 0o777 == 0o700
    file.remove()
    assert not os.path.exists(file.folder)
    file.remove()  # twice is fine (a pool closed twice)


def test_one_process_never_hands_out_a_slot_byte_twice(shared):
    _, _, table = shared
    first, second = table.try_slot(7, 2), table.try_slot(7, 2)
    assert None not in (first, second) and first != second  # the kernel would grant the same byte again
    assert table.try_slot(7, 2) is None
    assert table.try_slot(8, 2) is not None  # another bucket has its own slots
    table.free_slot(first)
    assert table.try_slot(7, 2) == first


def test_slots_are_shared_between_processes(shared):
    _, holder, table = shared
    held = holder.ask("slot", 3, 2)
    assert held != "None"
    assert table.try_slot(3, 2) is not None
    assert table.try_slot(3, 2) is None  # 2 slots: one each
    assert holder.ask("slot", 3, 2) == "None"
    holder.ask("free", held)
    assert table.try_slot(3, 2) == int(held)


def test_a_killed_processes_slots_are_freed(shared):
    _, holder, table = shared
    assert holder.ask("slot", 5, 1) != "None"
    assert table.try_slot(5, 1) is None
    holder.kill()  # no clean-up of its own: the kernel drops its locks
    assert table.try_slot(5, 1) is not None


def test_a_waiting_request_gets_the_slot_once_another_process_frees_it(shared):
    _, holder, table = shared
    held = holder.ask("slot", 9, 1)

    async def wait_then_free():
        waiting = asyncio.ensure_future(table.take_slot(9, 1))
        await asyncio.sleep(0.1)
        assert not waiting.done()  # polling, with the event loop free meanwhile
        holder.ask("free", held)
        return await asyncio.wait_for(waiting, 30)

    assert asyncio.run(wait_then_free()) == int(held)


def test_a_slot_freed_in_this_process_wakes_its_poller_at_once(shared, monkeypatch):
    _, _, table = shared
    monkeypatch.setattr(shared_limits, "POLL_FIRST", 3600.0)  # only the wake can end the wait

    async def hand_over():
        held = table.try_slot(2, 1)
        waiting = asyncio.ensure_future(table.take_slot(2, 1))
        await asyncio.sleep(0)
        assert not waiting.done()
        table.free_slot(held)
        assert await asyncio.wait_for(waiting, 30) == held
        assert table.sleepers == {}

    asyncio.run(hand_over())


def test_request_starts_are_booked_in_one_sequence_across_processes(shared):
    _, holder, table = shared
    table.clock = lambda: 100.0
    assert float(holder.ask("book", 4, 0.25, 100.0)) == 0.0
    assert table.try_book(4, 0.25) == 0.25  # the holder booked 100.0: next start 100.25
    assert float(holder.ask("book", 4, 0.25, 100.1)) == pytest.approx(0.4)
    assert table.try_book(5, 0.25) == 0.0  # another bucket is not held back
    table.clock = lambda: 200.0  # long idle: no debt carried over
    assert table.try_book(4, 0.25) == 0.0


def test_a_booking_waits_while_another_process_holds_the_record(shared):
    _, holder, table = shared
    assert holder.ask("hold-record", 6) == "held"
    assert table.try_book(6, 0.5) is None
    assert table.try_book(7, 0.5) is not None  # its neighbour's record is not locked

    async def book_after_release():
        booking = asyncio.ensure_future(table.book(6, 0.5))
        await asyncio.sleep(0.05)
        assert not booking.done()
        holder.close()  # exits, its lock goes
        return await asyncio.wait_for(booking, 30)

    assert asyncio.run(book_after_release()) == 0.0


def test_a_hosts_bucket_is_the_same_in_every_process(shared):
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = Holder(shared[0].path, env)
    try:
        assert [int(other.ask("bucket", h)) for h in ("a.test", "cdn.example")] == \
            [host_bucket("a.test"), host_bucket("cdn.example")]
    finally:
        other.close()


def test_host_limits_use_the_table_only_in_a_process_that_joined_one(shared):
    file, holder, _ = shared

    async def limits_and_a_request(per_host):
        limits = HostLimits(16, per_host, host_rate=10.0)
        async with limits.slot("cdn.test"):
            pass
        return limits

    try:
        # one process (fetch_workers 1, or a non-local runner's engine): no table, no file
        downloader = Downloader(DownloadConfig())
        try:
            assert downloader.limits.table is None
        finally:
            downloader.close()
        shared_limits.join(file.path)
        assert asyncio.run(limits_and_a_request(1)).table is shared_limits.joined()
        assert HostLimits.unlimited().table is None
        # the holder takes cdn.test's one slot: this process's request must wait for it
        held = holder.ask("slot", host_bucket("cdn.test"), 1)

        async def blocked():
            limits = HostLimits(16, 1)
            entered = asyncio.Event()

            async def go():
                async with limits.slot("cdn.test"):
                    entered.set()

            task = asyncio.ensure_future(go())
            await asyncio.sleep(0.1)
            assert not entered.is_set()
            holder.ask("free", held)
            await asyncio.wait_for(task, 30)

        asyncio.run(blocked())
    finally:
        shared_limits.leave()
