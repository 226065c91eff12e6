"""Periodic tasks: the scheduled and retry scanners, dead-set purge, reservation
expiry and worker reaping (spec §3.1), with the statistics INFO shows as ``tasks``.

Each task's ``execute(now)`` takes the time as an argument so tests can drive
it with a fake clock; ``TaskRunner.run`` calls them on Faktory's cadence.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from minifaktory.broker import Broker
from minifaktory.clock import NS, Clock
from minifaktory.cron import CronEntry
from minifaktory.governance import Governor
from minifaktory.payloads import go_float
from minifaktory.store import SetName
from minifaktory.workers import Registry, Worker

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Task:
    """One periodic task and its running totals."""

    name: str
    period: int
    execute: Callable[[int], Awaitable[int]]
    size: Callable[[], int]
    #: Scanners report enqueued/cycles/wall time; Busy and Workers report reaped.
    scanner: bool = True
    cycles: int = 0
    total: int = 0
    wall_time: float = 0.0

    async def run(self, now: int) -> None:
        started = time.perf_counter()
        try:
            self.total += await self.execute(now)
        except Exception:
            log.exception("task %s failed", self.name)
        self.cycles += 1
        self.wall_time += time.perf_counter() - started

    def stats(self) -> dict[str, Any]:
        if self.scanner:
            return {
                "cycles": self.cycles,
                "enqueued": self.total,
                "size": self.size(),
                "wall_time_sec": go_float(self.wall_time),
            }
        return {"reaped": self.total, "size": self.size()}


def standard_tasks(
    broker: Broker,
    registry: Registry,
    cron: Callable[[], list[CronEntry]] = list,
    governor: Governor | None = None,
) -> list[Task]:
    """Faktory's five tasks with their periods in seconds, the expiry sweep, cron, the
    store probe and the worker limits."""

    async def fire_cron(now: int) -> int:
        return await broker.run_cron(cron(), now)

    async def scheduled(now: int) -> int:
        return await broker.enqueue_due(SetName.SCHEDULED, now)

    async def retries(now: int) -> int:
        return await broker.enqueue_due(SetName.RETRIES, now)

    async def reap_workers(now: int) -> int:
        stale = registry.reap(now)
        for worker in stale:
            report_lost_worker(broker, worker, now)
        # The Busy page's recent jobs go with their worker process.
        for wid in [wid for wid in broker.recent if wid not in registry.workers]:
            del broker.recent[wid]
        return len(stale)

    async def govern(now: int) -> int:
        return 0 if governor is None else await governor.check_runtimes(now)

    return [
        Task("Scheduled", 5, scheduled, lambda: broker.sets[SetName.SCHEDULED]),
        Task("Retries", 5, retries, lambda: broker.sets[SetName.RETRIES]),
        Task("Dead", 60, broker.purge_dead, lambda: broker.sets[SetName.DEAD]),
        Task("Busy", 15, broker.expire_reservations, lambda: len(broker.working), scanner=False),
        Task("Workers", 15, reap_workers, lambda: len(registry.workers), scanner=False),
        Task("Expired", 15, broker.purge_expired, lambda: broker.expired),
        Task("Cron", 1, fire_cron, lambda: len(cron())),
        Task("Probe", 10, broker.probe, lambda: 0, scanner=False),
        Task("Governor", 5, govern, lambda: len(broker.working), scanner=False),
    ]


def report_lost_worker(broker: Broker, worker: Worker, now: int) -> None:
    """A reaped worker that still held jobs: say which, and what happens to them."""
    held = [r for r in broker.working.values() if r.wid == worker.wid]
    if not held:
        return
    soonest = min(r.expires_at for r in held)
    jobs = ", ".join(
        f"{r.jid} ({r.jobtype or '?'} from {r.queue}, running {(now - r.reserved_at) // NS} s)"
        for r in held[:10]
    )
    more = f" and {len(held) - 10} more" if len(held) > 10 else ""
    log.warning(
        "worker %s (%s:%d) disappeared: no heartbeat for %d s, and it still holds %d job(s):"
        " %s%s. They go back for a retry when their reservations expire (the first in %d s)",
        worker.wid, worker.hostname, worker.pid, (now - worker.last_beat) // NS, len(held),
        jobs, more, max(soonest - now, 0) // NS,
        extra={"wid": worker.wid, "jids": [r.jid for r in held]},
    )  # fmt: skip


class TaskRunner:
    """Runs tasks on whole seconds divisible by their period, as Faktory's runner does."""

    def __init__(self, tasks: list[Task], clock: Clock) -> None:
        self.tasks = tasks
        self.clock = clock

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per-task statistics keyed by task name."""
        return {task.name: task.stats() for task in self.tasks}

    async def run_all(self, now: int | None = None) -> None:
        """Run every task once, now (tests and shutdown use this)."""
        at = self.clock.now_ns() if now is None else now
        for task in self.tasks:
            await task.run(at)

    async def run(self) -> None:
        """Loop forever: wake every second and run the tasks that are due."""
        while True:
            wall = time.time()
            await asyncio.sleep(1.0 - (wall % 1.0))
            second = round(time.time())
            now = self.clock.now_ns()
            for task in self.tasks:
                if second % task.period == 0:
                    await task.run(now)


__all__ = ["NS", "Task", "TaskRunner", "standard_tasks"]
