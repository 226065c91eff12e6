"""Governing workers: fat ones and ones stuck in a job are told to terminate.

``conf.d``::

    [workers]
    max_rss_mb = 1024          # a BEAT reporting more memory gets "terminate"
    max_job_runtime = 3600     # seconds a job may run before its worker is told to go
    [workers.queues.reports]
    max_job_runtime = 14400    # per queue ...
    [workers.jobtypes.ImportCsv]
    max_job_runtime = 28800    # ... and per jobtype, which wins over its queue

A worker over a limit gets ``{"state":"terminate"}`` on its next BEAT, as if an
operator had pressed Stop: a well-behaved worker FAILs what it still runs (so
those jobs retry) and exits, and its supervisor starts a fresh one. Each event
is logged with what was exceeded and counted. Stale workers (no BEAT for 60 s)
are reaped by the core, not here.
"""

from __future__ import annotations

import logging

from minifaktory.clock import NS
from minifaktory.limits import WorkerLimits
from minifaktory.state import BrokerState
from minifaktory.workers import Registry, Worker, WorkerState

log = logging.getLogger(__name__)


class Governor:
    """Applies the limits: memory at each BEAT, job run time every few seconds."""

    def __init__(self, registry: Registry, broker: BrokerState, limits: WorkerLimits) -> None:
        self.registry, self.broker, self.limits = registry, broker, limits
        #: Workers told to terminate, by reason.
        self.terminated = {"rss": 0, "runtime": 0}
        registry.on_beat = self.check_memory

    def check_memory(self, worker: Worker) -> None:
        """A BEAT arrived: a worker over ``max_rss_mb`` is told to terminate."""
        limit = self.limits.max_rss_kb
        if limit is None or worker.rss_kb <= limit or worker.state is WorkerState.TERMINATE:
            return
        worker.signal("terminate")
        self.terminated["rss"] += 1
        log.warning(
            "worker %s (%s:%d) uses %d MB, over [workers] max_rss_mb = %d: told to terminate",
            worker.wid, worker.hostname, worker.pid, worker.rss_kb // 1024, limit // 1024,
            extra={"wid": worker.wid, "rss_kb": worker.rss_kb, "reason": "max_rss_mb"},
        )  # fmt: skip

    async def check_runtimes(self, now: int) -> int:
        """Tell the worker of every job over its run-time limit to terminate; how many."""
        if not self.limits.limits_runtime:
            return 0
        told = 0
        for reservation in list(self.broker.working.values()):
            limit = self.limits.runtime_limit(reservation.queue, reservation.jobtype)
            ran = now - reservation.reserved_at
            worker = self.registry.workers.get(reservation.wid)
            if limit is None or ran <= limit or worker is None:
                continue
            if worker.state is WorkerState.TERMINATE:
                continue
            worker.signal("terminate")
            self.terminated["runtime"] += 1
            told += 1
            log.warning(
                "worker %s (%s:%d) has run job %s (%s, queue %s) for %d s, over its"
                " max_job_runtime of %d s: told to terminate",
                worker.wid, worker.hostname, worker.pid, reservation.jid, reservation.jobtype,
                reservation.queue, ran // NS, limit // NS,
                extra={"wid": worker.wid, "jid": reservation.jid, "reason": "max_job_runtime"},
            )  # fmt: skip
        return told
