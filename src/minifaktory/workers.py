"""The worker registry: HELLO with a wid, BEAT, quiet/terminate, reaping (spec §3.7).

In memory only, as in Faktory: a restart forgets workers, and they register
again with their next HELLO.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from minifaktory.clock import NS

log = logging.getLogger(__name__)

#: A worker that has not sent BEAT for this long is reaped (spec §3.7).
HEARTBEAT_TIMEOUT_NS = 60 * NS


class WorkerState(enum.IntEnum):
    """Lifecycle states; they only ever move forward."""

    RUNNING = 0
    QUIET = 1
    TERMINATE = 2

    @property
    def wire(self) -> str:
        return ("running", "quiet", "terminate")[self]


_SIGNALS = {"quiet": WorkerState.QUIET, "terminate": WorkerState.TERMINATE}


@dataclass(eq=False)
class Worker:
    """One worker process, identified by its wid, owning one or more connections."""

    wid: str
    hostname: str
    pid: int
    labels: list[str]
    started_at: int
    last_beat: int
    rss_kb: int = 0
    state: WorkerState = WorkerState.RUNNING
    connections: set[Callable[[], None]] = field(default_factory=set)

    def signal(self, name: str) -> None:
        """Apply ``quiet``/``terminate``; anything else (or going back) is ignored."""
        new = _SIGNALS.get(name)
        if new is not None and new > self.state:
            self.state = new

    @property
    def busy_signal(self) -> bool:
        return self.state is not WorkerState.RUNNING


class Registry:
    """Workers by wid."""

    def __init__(self) -> None:
        self.workers: dict[str, Worker] = {}
        self.reaped = 0
        #: Called after each accepted BEAT (the worker limits check memory there).
        self.on_beat: Callable[[Worker], None] | None = None

    def attach(
        self,
        wid: str,
        closer: Callable[[], None],
        *,
        hostname: str,
        pid: int,
        labels: list[str],
        now: int,
    ) -> Worker:
        """Register a consumer connection; the first HELLO of a wid creates the record."""
        worker = self.workers.get(wid)
        if worker is None:
            worker = Worker(wid, hostname, pid, labels, started_at=now, last_beat=now)
            self.workers[wid] = worker
        worker.connections.add(closer)
        return worker

    def detach(self, worker: Worker, closer: Callable[[], None]) -> None:
        """A connection closed; the last one takes the worker record with it."""
        worker.connections.discard(closer)
        if not worker.connections and self.workers.get(worker.wid) is worker:
            del self.workers[worker.wid]

    def beat(self, wid: str, state: str, rss_kb: int, now: int) -> Worker | None:
        """Record a heartbeat; None when the wid is not registered."""
        worker = self.workers.get(wid)
        if worker is None:
            return None
        worker.last_beat = now
        worker.rss_kb = rss_kb
        if state:
            worker.signal(state)
        if self.on_beat is not None:
            self.on_beat(worker)
        return worker

    def signal(self, wid: str | None, name: str) -> None:
        """Quiet or terminate one worker (``wid``) or all of them (None)."""
        targets = (
            self.workers.values()
            if wid is None
            else [self.workers[wid]]
            if wid in self.workers
            else []
        )
        for worker in list(targets):
            worker.signal(name)

    def reap(self, now: int) -> list[Worker]:
        """Drop workers whose last heartbeat is too old, closing their connections;
        the workers dropped."""
        stale = [w for w in self.workers.values() if now - w.last_beat > HEARTBEAT_TIMEOUT_NS]
        closed = 0
        for worker in stale:
            self.workers.pop(worker.wid, None)
            for closer in list(worker.connections):
                closer()
                closed += 1
            worker.connections.clear()
        if closed:
            log.warning(
                "Reaped %d lingering connections, this is a sign your workers are having problems",
                closed,
            )
            log.warning("All worker processes should send a heartbeat every 15 seconds")
        self.reaped += len(stale)
        return stale
