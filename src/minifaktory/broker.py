"""Job state changes driven by clients: push, fetch, ack, fail, requeue.

The state, the group commit and the primitives are in ``state.py``; the
scanners, queue administration and MUTATE in ``maintenance.py``.
"""

from __future__ import annotations

import asyncio
import logging

from minifaktory import jobs, options
from minifaktory.batches import BatchNew
from minifaktory.clock import NS, format_ns, parse_ns
from minifaktory.cron import CronEntry
from minifaktory.errors import CommandError
from minifaktory.maintenance import Maintenance
from minifaktory.payloads import Job, job_decoder
from minifaktory.state import BrokerState, QueueState, Reservation, Waiter, stored_expiry
from minifaktory.workers import Worker

log = logging.getLogger(__name__)

__all__ = ["Broker", "BrokerState", "QueueState", "Reservation"]


class Broker(Maintenance):
    """The job state machine: everything a command can ask of the store."""

    # -- push ------------------------------------------------------------------------

    async def push(self, job: Job) -> None:
        """Validate and store one job (PUSH)."""
        done = self.loop.create_future()
        self.push_now(job, done)
        await done

    def push_now(self, job: Job, waiter: Waiter) -> None:
        """``push`` without waiting: ``waiter`` hears when the job is durable."""
        now = self.clock.now_ns()
        with self._change_for(waiter):
            self._push(job, now)

    async def push_many(self, batch: list[Job]) -> dict[str, str]:
        """PUSHB: push each job on its own; map jid → error text for the rejected ones."""
        now = self.clock.now_ns()
        created = format_ns(now)
        errors: dict[str, str] = {}
        with self._change() as done:
            for job in batch:
                try:
                    self._push(job, now, created)
                except CommandError as exc:
                    errors[job.jid] = exc.message if exc.code == "ERR" else exc.wire_text
        await done
        return errors

    # -- fetch -----------------------------------------------------------------------

    async def fetch(
        self,
        queues: list[str],
        wid: str,
        worker: Worker | None,
        *,
        hangup: asyncio.Future[None] | None = None,
    ) -> bytes | None:
        """Reserve the next job of the first non-empty, unpaused queue; wait up to the
        timeout, or until ``hangup`` (the client closed its side) is done."""
        loop = self.loop
        timeout = 0.0 if hangup is not None and hangup.done() else self.fetch_timeout
        deadline = loop.time() + timeout
        if worker is not None and worker.busy_signal:
            await asyncio.sleep(timeout)
            return None
        woken: str | None = None
        while True:
            active = [q for q in queues if not self._is_paused(q)]
            if not active:
                await asyncio.sleep(max(deadline - loop.time(), 0))
                return None
            done = loop.create_future()
            taken = self._take(active, wid, done)
            if taken is not None:
                name, payload = taken
                if woken is not None and woken != name and self._has_jobs(woken):
                    self.notifier.notify(woken)  # pass on the wake-up we did not use
                await done
                return payload
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            woken = await self.notifier.wait(active, remaining, hangup)
            if woken is None:
                return None

    def fetch_now(
        self, queues: list[str], wid: str, worker: Worker | None, waiter: Waiter
    ) -> bytes | None:
        """``fetch`` when a job is there at once (``waiter`` hears of its commit);
        None when ``fetch`` would have to wait, and then nothing was reserved."""
        if worker is not None and worker.busy_signal:
            return None
        active = [q for q in queues if not self._is_paused(q)]
        taken = self._take(active, wid, waiter) if active else None
        return None if taken is None else taken[1]

    def _take(self, active: list[str], wid: str, waiter: Waiter) -> tuple[str, bytes] | None:
        """Reserve the first job of the first queue that has one: (queue, payload)."""
        for name in active:
            state = self.queues.get(name)
            if state is None or state.size <= 0:
                continue  # known empty: no SQL
            now = self.clock.now_ns()
            slots = self.slots.get(name)
            if slots is not None and slots.full(wid, now):
                continue  # throttled: as if empty for this worker, for now
            with self._change_for(waiter, durable=False):
                while (row := self.store.take(name)) is not None:
                    state.size -= 1
                    jid, payload, expires_at = row
                    if expires_at is None or expires_at > now:
                        self._reserve(name, jid, payload, wid, now)
                        return name, payload
                    self._expire(1)  # expired while waiting: never handed out
                    self.metrics.expire(name)
                state.size = 0
        return None

    # -- ack / fail ------------------------------------------------------------------

    async def ack(self, jid: str) -> None:
        """ACK: finish a reservation. Unknown jids are acknowledged with no effect."""
        done = self.loop.create_future()
        if self.ack_now(jid, done):
            await done

    def ack_now(self, jid: str, waiter: Waiter) -> bool:
        """``ack`` without waiting; False when there was nothing to change."""
        if jid not in self.working:
            log.debug("ACK of unknown jid %s", jid)
            return False
        now = self.clock.now_ns()
        with self._change_for(waiter, durable=False):
            reservation = self._unreserve(jid, "success")
            self.store.drop_reservation(jid)
            if reservation.unique:
                self._release_lock(reservation.queue, reservation.unique, jid)
            if reservation.tracked:
                self.store.track_state(jid, "success", now)
            if reservation.bid:
                self.batches.member_succeeded(reservation.bid, jid, now)
            if reservation.callback is not None:
                self.batches.callback_succeeded(*reservation.callback, now)
            if reservation.history:
                self.store.delete_events([jid])
            self._count(now, failed=False)
            took = now - reservation.reserved_at
            self.metrics.finish(reservation.queue, reservation.jobtype, took, False, False)
        return True

    async def requeue(self, jid: str) -> None:
        """REQUEUE: hand a reserved job back to the front of its queue, without a retry."""
        if jid not in self.working:
            raise CommandError("requeue: Can't requeue job with no reservation")
        now = self.clock.now_ns()
        with self._change() as done:
            self._unreserve(jid, "requeued")
            payload = self.store.release(jid)
            if payload is not None:
                job = job_decoder.decode(payload)
                self._enqueue(job, now, stored_expiry(job), front=True)
                if options.is_tracked(job):
                    self.store.track_state(jid, "enqueued", now)
        await done

    async def fail(self, jid: str, errtype: str, message: str, backtrace: list[str] | None) -> None:
        """FAIL: record the failure and send the job to retries, the dead set, or nowhere."""
        if not jid:
            raise CommandError("missing JID")
        if jid not in self.working:
            raise CommandError(f"Job not found {jid}")
        now = self.clock.now_ns()
        with self._change(durable=False) as done:
            self._fail_reserved(jid, errtype, message, backtrace, now)
        await done

    # -- tracking (spec §5.5) --------------------------------------------------------

    async def track_set(
        self, jid: str, percent: int | None, desc: str | None, reserve_until: str
    ) -> None:
        """TRACK SET: progress of a tracked job, and/or a longer reservation for any job."""
        if not jid:
            raise CommandError("missing JID")
        if percent is not None and not 0 <= percent <= 100:
            raise CommandError(f"invalid TRACK SET percent {percent}: must be 0 to 100")
        until: int | None = None
        if reserve_until:
            try:
                until = parse_ns(reserve_until)
            except ValueError as exc:
                raise CommandError(f"invalid TRACK SET reserve_until: {exc}") from None
        now = self.clock.now_ns()
        with self._change() as done:
            self.store.track_progress(jid, percent, desc, now)
            reservation = self.working.get(jid)
            if until is not None and reservation is not None:
                # Only ever longer, and never more than a day ahead (Faktory's reserve_for cap).
                target = min(until, now + jobs.MAX_RESERVE_FOR * NS)
                if target > reservation.expires_at:
                    reservation.expires_at = target
                    self.store.extend_reservation(jid, target)
        await done

    def track_get(self, jid: str) -> dict[str, object]:
        """TRACK GET: the recorded state of a tracked job (``unknown`` otherwise)."""
        row = self.store.tracking(jid)
        if row is None:
            return {"jid": jid, "state": "unknown", "updated_at": ""}
        state, percent, desc, updated = row
        out: dict[str, object] = {"jid": jid, "state": state, "updated_at": format_ns(updated)}
        if percent is not None:
            out["percent"] = percent
        if desc is not None:
            out["desc"] = desc
        return out

    # -- cron (spec §5.3) ----------------------------------------------------------------

    async def run_cron(self, entries: list[CronEntry], now: int) -> int:
        """Fire every entry that is due (a missed firing runs once); how many fired.

        A firing and the record of it share one transaction: a restart can
        neither repeat it nor lose it.
        """
        if not entries:
            return 0
        fired = 0
        with self._change() as done:
            if self.cron_last is None:
                self.cron_last = self.store.cron_runs()
            for entry in entries:
                last = self.cron_last.get(entry.key)
                if last is None:  # new entry: its first firing is the next one from now
                    last = now
                else:
                    due = entry.latest_due(now, last)
                    if due is None:
                        continue
                    last = due
                    try:
                        job = entry.make_job()
                        self._push(job, now)
                        self.metrics.cron_push(job.queue, job.jobtype)
                        fired += 1
                    except CommandError as exc:
                        log.warning("cron %s: job not pushed: %s", entry.source, exc.wire_text)
                self.cron_last[entry.key] = last
                self.store.set_cron_run(entry.key, last)
        await done
        return fired

    async def run_cron_now(self, entry: CronEntry) -> str:
        """Push one firing of ``entry`` now (Web UI), leaving its schedule as it was."""
        job = entry.make_job()
        with self._change() as done:
            self._push(job, self.clock.now_ns())
        await done
        return job.jid

    def cron_table(self, entries: list[CronEntry]) -> list[dict[str, object]]:
        """Each entry with its last and next firing, for INFO and the UI."""
        out: list[dict[str, object]] = []
        for entry in entries:
            last = (self.cron_last or {}).get(entry.key)
            nxt = entry.next_after(last if last is not None else self.clock.now_ns())
            out.append(
                {
                    "schedule": entry.schedule,
                    "jobtype": entry.job["type"],
                    "queue": entry.job.get("queue") or "default",
                    "last_at": format_ns(last) if last is not None else "",
                    "next_at": format_ns(nxt),
                }
            )
        return out

    # -- batches (spec §5.4) ------------------------------------------------------------

    async def batch_new(self, spec: BatchNew) -> str:
        """BATCH NEW: the new batch's bid."""
        with self._change() as done:
            bid = self.batches.new(spec, self.clock.now_ns())
        await done
        return bid

    async def batch_open(self, bid: str) -> None:
        """BATCH OPEN."""
        with self._change() as done:
            self.batches.open(bid, self.clock.now_ns())
        await done

    async def batch_commit(self, bid: str) -> None:
        """BATCH COMMIT (callbacks may fire right away)."""
        with self._change() as done:
            self.batches.commit(bid, self.clock.now_ns())
        await done

    async def batch_child(self, parent: str, child: str) -> None:
        """BATCH CHILD."""
        with self._change() as done:
            self.batches.child(parent, child, self.clock.now_ns())
        await done

    def batch_status(self, bid: str) -> dict[str, object]:
        """BATCH STATUS."""
        return self.batches.status(bid)
