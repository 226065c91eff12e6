"""Broker behaviour that the wire cannot easily provoke: failed commits, reloads."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from minifaktory.broker import Broker
from minifaktory.clock import FakeClock
from minifaktory.errors import StoreError
from minifaktory.payloads import job_decoder
from minifaktory.store import Store


def _job(jid: str) -> bytes:
    return b'{"jid":"%s","jobtype":"T","args":[]}' % jid.encode()


def test_failed_commit_rolls_back_and_reloads(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = Store(tmp_path / "b.db", "normal")
        broker = Broker(store, FakeClock())
        await broker.push(job_decoder.decode(_job("kept-job-1")))
        original = store.commit

        def broken() -> None:
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

        def counting() -> None:
            nonlocal commits
            commits += 1
            original()

        store.commit = counting  # type: ignore[method-assign]
        await asyncio.gather(
            *(broker.push(job_decoder.decode(_job(f"job-{i:06d}"))) for i in range(50))
        )
        assert broker.queues["default"].size == 50
        store.close()
        return commits

    assert asyncio.run(scenario()) == 1
