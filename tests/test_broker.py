"""Broker behaviour that the wire cannot easily provoke: failed commits, reloads."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from minifaktory.broker import Broker
from minifaktory.clock import FakeClock, format_ns
from minifaktory.errors import StoreError
from minifaktory.payloads import job_decoder
from minifaktory.store import SetName, Store


def _job(jid: str) -> bytes:
    return b'{"jid":"%s","jobtype":"T","args":[]}' % jid.encode()


def test_failed_commit_rolls_back_and_reloads(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = Store(tmp_path / "b.db", "normal")
        broker = Broker(store, FakeClock())
        await broker.push(job_decoder.decode(_job("kept-job-1")))
        original = store.commit

        def broken() -> bool:
            raise StoreError("disk full")

        store.commit = broken  # type: ignore[method-assign]
        with pytest.raises(StoreError, match="disk full"):
            await broker.push(job_decoder.decode(_job("lost-job-1")))
        store.commit = original  # type: ignore[method-assign]
        assert broker.queues["default"].size == 1
        payload = await broker.fetch(["default"], "", None)
        assert payload is not None and b"kept-job-1" in payload
        store.close()

    asyncio.run(scenario())


def test_group_commit_shares_one_transaction(tmp_path: Path) -> None:
    async def scenario() -> int:
        store = Store(tmp_path / "g.db", "normal")
        broker = Broker(store, FakeClock())
        commits = 0
        original = store.commit

        def counting() -> bool:
            nonlocal commits
            commits += 1
            return original()

        store.commit = counting  # type: ignore[method-assign]
        await asyncio.gather(
            *(broker.push(job_decoder.decode(_job(f"job-{i:06d}"))) for i in range(50))
        )
        assert broker.queues["default"].size == 50
        store.close()
        return commits

    assert asyncio.run(scenario()) == 1


def test_a_cancelled_command_does_not_cancel_its_group(tmp_path: Path) -> None:
    """A client that disconnects mid-commit must not take the other commands down."""

    async def scenario() -> None:
        store = Store(tmp_path / "c.db", "normal")
        broker = Broker(store, FakeClock())
        first = asyncio.ensure_future(broker.push(job_decoder.decode(_job("leaving-job"))))
        second = asyncio.ensure_future(broker.push(job_decoder.decode(_job("staying-job"))))
        await asyncio.sleep(0)  # both are now waiting for the same commit
        first.cancel()
        await second
        assert broker.queues["default"].size == 2  # the cancelled push was committed too
        store.close()

    asyncio.run(scenario())


def test_full_durability_acknowledges_only_after_the_wal_is_synced(tmp_path: Path) -> None:
    import threading

    async def scenario() -> None:
        store = Store(tmp_path / "f.db", "full")
        assert store.sync_after_commit
        broker = Broker(store, FakeClock())
        release = threading.Event()
        calls: list[int] = []
        real_sync = store.sync

        def slow_sync() -> None:
            calls.append(1)
            release.wait(5)
            real_sync()

        store.sync = slow_sync  # type: ignore[method-assign]
        first = asyncio.ensure_future(broker.push(job_decoder.decode(_job("first-job-1"))))
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert not first.done()  # committed, but not yet durable: no reply
        # Commits made while a sync runs are covered by the next one.
        second = asyncio.ensure_future(broker.push(job_decoder.decode(_job("second-job"))))
        third = asyncio.ensure_future(broker.push(job_decoder.decode(_job("third-job-1"))))
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(first, second, third)
        assert len(calls) == 2
        await asyncio.to_thread(broker.close)
        store.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("durability", ["normal", "full"])
def test_an_idle_server_probes_that_its_file_takes_writes(tmp_path: Path, durability: str) -> None:
    async def scenario() -> None:
        store = Store(tmp_path / "p.db", durability)
        clock = FakeClock()
        broker = Broker(store, clock)
        assert (broker.last_write_ns, broker.write_error) == (0, "")
        assert await broker.probe(clock.now_ns()) == 1  # nothing written yet: probe
        assert broker.last_write_ns == clock.now_ns()
        clock.advance(10)
        assert await broker.probe(clock.now_ns()) == 0  # a write 10 s ago is recent enough
        await broker.push(job_decoder.decode(_job("fresh-job-1")))
        assert broker.last_write_ns == clock.now_ns()  # any write counts
        clock.advance(31)
        original = store.commit

        def broken() -> bool:
            raise StoreError("disk I/O error")

        store.commit = broken  # type: ignore[method-assign]
        assert await broker.probe(clock.now_ns()) == 0
        assert broker.write_error == "disk I/O error"
        store.commit = original  # type: ignore[method-assign]
        assert await broker.probe(clock.now_ns()) == 1
        assert broker.write_error == "" and broker.last_write_ns == clock.now_ns()
        clock.advance(1)
        await broker.enqueue_due(SetName.SCHEDULED, clock.now_ns())  # a commit writing nothing
        assert broker.last_write_ns == clock.now_ns() - 10**9
        broker.close()
        store.close()

    asyncio.run(scenario())


def test_the_worker_path_does_not_wait_for_the_sync(tmp_path: Path) -> None:
    """FETCH, ACK and FAIL reply once committed; their fsync follows within
    LAZY_SYNC_DELAY, or rides on the next PUSH's, or on close."""
    import threading

    from minifaktory.state import LAZY_SYNC_DELAY

    async def scenario() -> None:
        store = Store(tmp_path / "w.db", "full")
        broker = Broker(store, FakeClock())
        await broker.push(job_decoder.decode(_job("worker-job-1")))
        await broker.push(job_decoder.decode(_job("worker-job-2")))
        release = threading.Event()
        release.set()
        calls: list[int] = []
        real_sync = store.sync

        def gated_sync() -> None:
            calls.append(1)
            release.wait(5)
            real_sync()

        store.sync = gated_sync  # type: ignore[method-assign]
        release.clear()
        # While a sync hangs, the worker path still gets its replies.
        payload = await asyncio.wait_for(broker.fetch(["default"], "w", None), 1)
        assert payload is not None and b"worker-job-1" in payload
        await asyncio.wait_for(broker.ack("worker-job-1"), 1)
        await asyncio.sleep(LAZY_SYNC_DELAY * 5)
        assert len(calls) == 1  # the lazy sync started, and hangs
        pushed = asyncio.ensure_future(broker.push(job_decoder.decode(_job("worker-job-3"))))
        await asyncio.sleep(0.05)
        assert not pushed.done()  # a PUSH waits for its own sync
        release.set()
        await asyncio.wait_for(pushed, 5)
        assert len(calls) == 2
        # A lone ACK: synced by the timer; a last one before closing: synced by close.
        payload = await broker.fetch(["default"], "w", None)
        assert payload is not None
        await broker.ack("worker-job-2")
        await asyncio.sleep(LAZY_SYNC_DELAY * 5)
        assert len(calls) == 3
        payload = await broker.fetch(["default"], "w", None)
        assert payload is not None
        await asyncio.to_thread(broker.close)
        assert len(calls) == 4
        store.close()

    asyncio.run(scenario())


def test_a_failed_fsync_fails_the_waiting_pushes_and_is_reported(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = Store(tmp_path / "s.db", "full")
        broker = Broker(store, FakeClock())

        def failing() -> None:
            raise OSError(5, "Input/output error")

        store.sync = failing  # type: ignore[method-assign]
        with pytest.raises(StoreError, match="fsync failed"):
            await broker.push(job_decoder.decode(_job("unsynced-job")))
        assert broker.write_error.startswith("fsync failed")
        store.sync = lambda: None  # type: ignore[method-assign]
        await broker.push(job_decoder.decode(_job("synced-job-1")))
        assert broker.write_error == ""
        await asyncio.to_thread(broker.close)
        await asyncio.to_thread(broker.close)  # closing twice is harmless
        store.close()

    asyncio.run(scenario())


def test_a_commit_that_wrote_nothing_is_not_fsynced(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = Store(tmp_path / "n.db", "full")
        clock = FakeClock()
        broker = Broker(store, clock)
        calls: list[int] = []
        real_sync = store.sync

        def counting() -> None:
            calls.append(1)
            real_sync()

        store.sync = counting  # type: ignore[method-assign]
        await broker.enqueue_due(SetName.SCHEDULED, clock.now_ns())  # nothing due
        assert calls == []
        await broker.push(job_decoder.decode(_job("written-job")))
        assert calls == [1]
        await asyncio.to_thread(broker.close)
        store.close()

    asyncio.run(scenario())


def test_a_backlog_of_due_jobs_moves_in_batches_that_let_others_run(tmp_path: Path) -> None:
    """1,000 due jobs move 100 per transaction; other tasks run between the batches."""

    async def scenario() -> None:
        store = Store(tmp_path / "d.db", "normal")
        clock = FakeClock()
        broker = Broker(store, clock)
        at = format_ns(clock.now_ns() + 60 * 10**9)
        batch = [
            job_decoder.decode(
                b'{"jid":"due-%06d","jobtype":"T","args":[],"at":"%s"}' % (i, at.encode())
            )
            for i in range(1000)
        ]
        assert await broker.push_many(batch) == {}
        clock.advance(61)
        ticks = 0
        stop = False

        async def ticker() -> None:
            nonlocal ticks
            while not stop:
                ticks += 1
                await asyncio.sleep(0)

        other = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        started = ticks
        moved = await broker.enqueue_due(SetName.SCHEDULED, clock.now_ns())
        stop = True
        await other
        assert moved == 1000
        assert broker.queues["default"].size == 1000
        assert ticks - started >= 10  # at least once per batch of 100
        store.close()

    asyncio.run(scenario())
