"""The periodic task runner on a real clock, and task statistics."""

from __future__ import annotations

import asyncio
import contextlib

from minifaktory.clock import FakeClock, SystemClock
from minifaktory.loops import Task, TaskRunner


def test_runner_fires_on_whole_seconds() -> None:
    fired: list[int] = []

    async def record(now: int) -> int:
        fired.append(now)
        return 2

    async def main() -> None:
        runner = TaskRunner([Task("Every", 1, record, lambda: 7)], SystemClock())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runner.run(), 2.2)
        assert runner.stats()["Every"]["enqueued"] == 2 * len(fired)

    asyncio.run(main())
    assert 1 <= len(fired) <= 3


def test_failing_task_is_logged_and_counted() -> None:
    async def broken(now: int) -> int:
        raise RuntimeError("boom")

    async def main() -> dict[str, object]:
        runner = TaskRunner([Task("Broken", 5, broken, lambda: 0, scanner=False)], FakeClock())
        await runner.run_all()
        return runner.stats()["Broken"]

    assert asyncio.run(main()) == {"reaped": 0, "size": 0}
