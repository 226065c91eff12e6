"""``shutdown.to_the_end``: clean-up runs to its end through repeated cancellations."""

from __future__ import annotations

import asyncio

import pytest

from minifaktory.shutdown import to_the_end


def test_clean_up_survives_repeated_cancellation_and_the_cancellation_follows() -> None:
    steps: list[str] = []

    async def clean_up() -> None:
        for step in ("listeners", "sync", "file"):
            await asyncio.sleep(0.01)
            steps.append(step)

    async def main() -> None:
        task = asyncio.create_task(to_the_end(clean_up()))
        for _ in range(3):  # as anyio's cancel scopes and a second SIGTERM do
            await asyncio.sleep(0.005)
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert steps == ["listeners", "sync", "file"]


def test_result_and_errors_pass_through() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    async def broken() -> None:
        await asyncio.sleep(0)
        raise OSError("disk gone")

    async def main() -> None:
        assert await to_the_end(answer()) == 42
        with pytest.raises(OSError, match="disk gone"):
            await to_the_end(broken())

    asyncio.run(main())
