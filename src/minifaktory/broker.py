"""Job state changes: push, fetch, ack, fail and the scanners, with group commit.

How this works: the broker keeps in memory what must be cheap to read (queue
sizes and paused flags, set sizes, reservations, counters) and sends every
change to the store inside one open transaction. The first change in an event
loop tick opens it and schedules ``_commit`` for the end of the tick, so every
command that arrives together shares one commit (one fsync). A command's reply
waits for that commit. If the commit fails, the transaction is rolled back,
the in-memory state is reloaded from the file, and every waiting command gets
an error: nothing is acknowledged that is not on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec

from minifaktory import jobs, options
from minifaktory.clock import NS, Clock, format_ns, parse_ns, utc_date
from minifaktory.errors import CommandError, StoreError
from minifaktory.notify import Notifier
from minifaktory.payloads import Filter, Job, encode, job_decoder
from minifaktory.store import SetName, Store, StoredJob, WorkingRow
from minifaktory.workers import Worker

log = logging.getLogger(__name__)

#: Scanners move at most this many entries per query, looping while batches are full.
SCAN_BATCH = 100
#: Reservation expiry handles this many per query (Faktory: 10).
EXPIRY_BATCH = 10
SET_TARGETS = {"scheduled": SetName.SCHEDULED, "retries": SetName.RETRIES, "dead": SetName.DEAD}


@dataclass(slots=True)
class QueueState:
    """What the broker knows about a queue without asking SQLite."""

    size: int = 0
    paused: bool = False


@dataclass(slots=True)
class Reservation:
    """An in-flight job (the payload stays in the store)."""

    jid: str
    queue: str
    wid: str
    reserved_at: int
    expires_at: int
    #: The job holds a uniqueness lock to release when it succeeds.
    unique: bool = False


class Broker:
    """The job state machine over one ``Store``; use it from the event loop thread."""

    def __init__(self, store: Store, clock: Clock, fetch_timeout: float = 2.0) -> None:
        self.store = store
        self.clock = clock
        self.fetch_timeout = fetch_timeout
        self.notifier = Notifier()
        self.queues: dict[str, QueueState] = {}
        self.sets: dict[SetName, int] = {}
        self.working: dict[str, Reservation] = {}
        self.processed = 0
        self.failures = 0
        self.expired = 0
        #: Uniqueness locks per queue (expired ones count until purged).
        self.locks: dict[str, int] = {}
        self._days: dict[str, list[int]] = {}
        self._expired_delta = 0
        self._tx: asyncio.Future[None] | None = None
        self._tx_poisoned = False
        self.load()

    # -- memory <-> store ------------------------------------------------------------

    def load(self) -> None:
        """(Re)build the in-memory state from the file."""
        snap = self.store.snapshot()
        self.queues = {name: QueueState(size, paused) for name, paused, size in snap.queues}
        self.sets = dict(snap.set_sizes)
        self.working = {
            r.jid: Reservation(
                r.jid, r.queue, r.wid, r.reserved_at, r.expires_at, _keeps_lock(r.payload)
            )
            for r in snap.working
        }
        self.processed = snap.counters.get("processed", 0)
        self.failures = snap.counters.get("failures", 0)
        self.expired = snap.counters.get("expired", 0)
        self.locks = dict(snap.locks)
        self._days = {}
        self._expired_delta = 0

    @contextlib.contextmanager
    def _change(self) -> Iterator[asyncio.Future[None]]:
        """Run store verbs inside the tick's transaction; yields its commit future.

        An unexpected error poisons the transaction so that nothing half-done
        is committed.
        """
        if self._tx is None:
            loop = asyncio.get_running_loop()
            self.store.begin()
            self._tx = loop.create_future()
            self._tx_poisoned = False
            loop.call_soon(self._commit)
        try:
            yield self._tx
        except CommandError:
            raise
        except BaseException:
            self._tx_poisoned = True
            raise

    def _commit(self) -> None:
        fut, self._tx = self._tx, None
        assert fut is not None
        try:
            if self._tx_poisoned:
                raise StoreError("a change failed; its transaction was rolled back")
            if self._days or self._expired_delta:
                totals = {
                    "processed": sum(p for p, _ in self._days.values()),
                    "failures": sum(f for _, f in self._days.values()),
                    "expired": self._expired_delta,
                }
                self.store.add_counts(totals, self._days)
                self._days = {}
                self._expired_delta = 0
            self.store.commit()
        except Exception as exc:
            log.error("storage error, rolling back: %s", exc)
            self.store.rollback()
            self.load()
            fut.set_exception(exc if isinstance(exc, StoreError) else StoreError(str(exc)))
            fut.exception()  # retrieved here; each waiter re-raises it
        else:
            fut.set_result(None)

    def _count(self, now: int, failed: bool) -> None:
        self.processed += 1
        self.failures += failed
        day = self._days.setdefault(utc_date(now), [0, 0])
        day[0] += 1
        day[1] += failed

    # -- push ------------------------------------------------------------------------

    async def push(self, job: Job) -> None:
        """Validate and store one job (PUSH)."""
        now = self.clock.now_ns()
        with self._change() as done:
            self._push(job, now)
        await done

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

    def _push(self, job: Job, now: int, created: str = "") -> None:
        """Faktory's rules, then the job options, then the lock, then the job itself."""
        at = jobs.prepare_push(job, now, created)
        opts = options.parse_options(job, now, at)
        if opts.unique is not None:
            if self.store.lock_holder(job.queue, opts.unique.key, now) is not None:
                raise CommandError("Job not unique", "NOTUNIQUE")
            if self.store.take_lock(job.queue, opts.unique.key, job.jid, now + opts.unique.ttl_ns):
                self.locks[job.queue] = self.locks.get(job.queue, 0) + 1
        if at is None:
            self._enqueue(job, now, opts.expires_at)
        else:
            self._add_to_set(SetName.SCHEDULED, at, job.jid, encode(job))

    def _enqueue(self, job: Job, now: int, expires_at: int | None, *, front: bool = False) -> None:
        job.enqueued_at = format_ns(now)
        self._enqueue_payload(job, encode(job), expires_at, front=front)

    def _enqueue_payload(
        self, job: Job, payload: bytes, expires_at: int | None, *, front: bool = False
    ) -> None:
        queue = job.queue
        state = self.queues.get(queue)
        if state is None:
            self.store.register_queue(queue)
            state = self.queues[queue] = QueueState()
        priority = job.priority or options.DEFAULT_PRIORITY
        self.store.enqueue(queue, priority, job.jid, payload, expires_at, front=front)
        state.size += 1
        self.notifier.notify(queue)

    def _add_to_set(self, kind: SetName, score: int, jid: str, payload: bytes) -> None:
        self.store.add(kind, score, jid, payload)
        self.sets[kind] += 1

    # -- fetch -----------------------------------------------------------------------

    async def fetch(self, queues: list[str], wid: str, worker: Worker | None) -> bytes | None:
        """Reserve the next job of the first non-empty, unpaused queue; wait up to the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.fetch_timeout
        if worker is not None and worker.busy_signal:
            await asyncio.sleep(self.fetch_timeout)
            return None
        woken: str | None = None
        while True:
            active = [q for q in queues if not self._is_paused(q)]
            if not active:
                await asyncio.sleep(max(deadline - loop.time(), 0))
                return None
            taken = self._take(active, wid)
            if taken is not None:
                name, payload, done = taken
                if woken is not None and woken != name and self._has_jobs(woken):
                    self.notifier.notify(woken)  # pass on the wake-up we did not use
                await done
                return payload
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            woken = await self.notifier.wait(active, remaining)
            if woken is None:
                return None

    def _is_paused(self, name: str) -> bool:
        state = self.queues.get(name)
        return state is not None and state.paused

    def _has_jobs(self, name: str) -> bool:
        state = self.queues.get(name)
        return state is not None and state.size > 0 and not state.paused

    def _take(self, active: list[str], wid: str) -> tuple[str, bytes, asyncio.Future[None]] | None:
        for name in active:
            state = self.queues.get(name)
            if state is None or state.size <= 0:
                continue  # known empty: no SQL
            with self._change() as done:
                now = self.clock.now_ns()
                while (row := self.store.take(name)) is not None:
                    state.size -= 1
                    jid, payload, expires_at = row
                    if expires_at is None or expires_at > now:
                        self._reserve(name, jid, payload, wid, now)
                        return name, payload, done
                    self._expire(1)  # expired while waiting: never handed out
                state.size = 0
        return None

    def _reserve(self, queue: str, jid: str, payload: bytes, wid: str, now: int) -> None:
        job = job_decoder.decode(payload)
        expires = now + jobs.reservation_seconds(job.reserve_for) * NS
        self.store.reserve(WorkingRow(jid, queue, wid, now, expires, payload))
        unique = options.holds_lock(job)
        if unique and options.releases_at_start(job):
            self._release_locks([jid])
            unique = False
        self.working[jid] = Reservation(jid, queue, wid, now, expires, unique)

    def _expire(self, count: int) -> None:
        self.expired += count
        self._expired_delta += count

    def _release_locks(self, jids: list[str]) -> None:
        self._forget_locks(self.store.release_locks(jids))

    def _forget_locks(self, queues: list[str]) -> None:
        for queue in queues:
            left = self.locks.get(queue, 0) - 1
            if left > 0:
                self.locks[queue] = left
            else:
                self.locks.pop(queue, None)

    # -- ack / fail ------------------------------------------------------------------

    async def ack(self, jid: str) -> None:
        """ACK: finish a reservation. Unknown jids are acknowledged with no effect."""
        if jid not in self.working:
            log.debug("ACK of unknown jid %s", jid)
            return
        now = self.clock.now_ns()
        with self._change() as done:
            reservation = self.working.pop(jid)
            self.store.release(jid)
            if reservation.unique:
                self._release_locks([jid])
            self._count(now, failed=False)
        await done

    async def requeue(self, jid: str) -> None:
        """REQUEUE: hand a reserved job back to the front of its queue, without a retry."""
        if jid not in self.working:
            raise CommandError("requeue: Can't requeue job with no reservation")
        now = self.clock.now_ns()
        with self._change() as done:
            del self.working[jid]
            payload = self.store.release(jid)
            if payload is not None:
                job = job_decoder.decode(payload)
                self._enqueue(job, now, _expiry(job), front=True)
        await done

    async def fail(self, jid: str, errtype: str, message: str, backtrace: list[str] | None) -> None:
        """FAIL: record the failure and send the job to retries, the dead set, or nowhere."""
        if not jid:
            raise CommandError("missing JID")
        if jid not in self.working:
            raise CommandError(f"Job not found {jid}")
        now = self.clock.now_ns()
        with self._change() as done:
            self._fail_reserved(jid, errtype, message, backtrace, now)
        await done

    def _fail_reserved(
        self, jid: str, errtype: str, message: str, backtrace: list[str] | None, now: int
    ) -> None:
        del self.working[jid]
        payload = self.store.release(jid)
        self._count(now, failed=True)
        if payload is None:
            log.warning("reservation of %s had no stored job", jid)
            return
        job = job_decoder.decode(payload)
        jobs.record_failure(job, errtype, message, backtrace, now)
        outcome = jobs.failure_outcome(job)
        if outcome == "retry":
            assert job.failure is not None
            at = now + jobs.retry_delay_seconds(job.failure.retry_count) * NS
            job.failure.next_at = format_ns(at)
            self._add_to_set(SetName.RETRIES, at, jid, encode(job))
        elif outcome == "dead":
            self._add_to_set(SetName.DEAD, now + jobs.DEAD_TTL_SECONDS * NS, jid, encode(job))

    # -- scanners (spec §3.1) ------------------------------------------------------------

    async def enqueue_due(self, kind: SetName, now: int) -> int:
        """Move due scheduled jobs or retries to their queues; how many moved."""
        moved = 0
        with self._change() as done:
            while True:
                batch = self.store.take_due(kind, now, SCAN_BATCH)
                self.sets[kind] -= len(batch)
                for entry in batch:
                    moved += self._requeue_entry(entry, now, refresh=True)
                if len(batch) < SCAN_BATCH:
                    break
        await done
        return moved

    def _requeue_entry(self, entry: StoredJob, now: int, *, refresh: bool) -> int:
        try:
            job = job_decoder.decode(entry.payload)
            jobs.check_queue_name(job.queue)
        except (msgspec.DecodeError, CommandError) as exc:
            log.error("dropping unreadable entry %s: %s", entry.jid, exc)
            return 0
        if refresh:
            self._enqueue(job, now, _expiry(job))
        else:
            self._enqueue_payload(job, entry.payload, _expiry(job))
        return 1

    async def purge_dead(self, now: int) -> int:
        """Delete up to 100 dead jobs whose 180-day retention has passed."""
        with self._change() as done:
            purged = len(self.store.take_due(SetName.DEAD, now, SCAN_BATCH))
            self.sets[SetName.DEAD] -= purged
        await done
        return purged

    async def expire_reservations(self, now: int) -> int:
        """Fail every reservation past its expiry with ``ReservationExpired``."""
        expired = 0
        with self._change() as done:
            while True:
                jids = self.store.expired(now, EXPIRY_BATCH)
                for jid in jids:
                    if jid in self.working:
                        self._fail_reserved(
                            jid, jobs.EXPIRED_ERRTYPE, jobs.EXPIRED_MESSAGE, None, now
                        )
                    else:
                        self.store.release(jid)
                    expired += 1
                if len(jids) < EXPIRY_BATCH:
                    break
        await done
        return expired

    # -- queues (spec §4.2) --------------------------------------------------------------

    def _names(self, names: list[str]) -> list[str]:
        if "*" in names:
            return list(self.queues)
        return [n for n in names if n in self.queues]

    async def pause(self, names: list[str], paused: bool) -> None:
        """QUEUE PAUSE / RESUME of known queues (``*`` = all)."""
        targets = self._names(names)
        if not targets:
            return
        with self._change() as done:
            for name in targets:
                self.queues[name].paused = paused
                self.store.set_paused(name, paused)
        await done

    async def remove(self, names: list[str]) -> None:
        """QUEUE REMOVE: delete queues with all their jobs and locks (``*`` = all)."""
        targets = self._names(names)
        if not targets:
            return
        with self._change() as done:
            for name in targets:
                del self.queues[name]
                self.locks.pop(name, None)
                self.store.remove_queue(name)
        await done

    async def purge_expired(self, now: int) -> int:
        """Remove expired jobs from queues and expired uniqueness locks."""
        with self._change() as done:
            queues = self.store.purge_expired(now)
            for name in queues:
                state = self.queues.get(name)
                if state is not None:
                    state.size -= 1
            self._expire(len(queues))
            self._forget_locks(self.store.purge_locks(now))
        await done
        return len(queues)

    def latency(self, names: list[str]) -> dict[str, float]:
        """Seconds since the next job of each queue was enqueued; 0 when empty."""
        now = self.clock.now_ns()
        out: dict[str, float] = {}
        for name in names:
            out[name] = 0.0
            if not self._has_any(name):
                continue
            payload = self.store.head(name)
            if payload is None:
                continue
            try:
                enqueued = parse_ns(job_decoder.decode(payload).enqueued_at)
            except (ValueError, msgspec.DecodeError):
                continue
            out[name] = max(now - enqueued, 0) / NS
        return out

    def _has_any(self, name: str) -> bool:
        state = self.queues.get(name)
        return state is not None and state.size > 0

    # -- MUTATE (spec §4.1) --------------------------------------------------------------

    async def mutate(self, cmd: str, target: str, flt: Filter | None) -> None:
        """Kill, discard, requeue or clear entries of a sorted set."""
        if cmd not in ("clear", "kill", "discard", "requeue"):
            raise CommandError("unknown mutate operation")
        kind = {
            "scheduled": SetName.SCHEDULED,
            "retries": SetName.RETRIES,
            "dead": SetName.DEAD,
        }.get(target)
        if kind is None:
            raise CommandError("invalid target for mutation command")
        now = self.clock.now_ns()
        with self._change() as done:
            if cmd == "clear" or (cmd == "discard" and flt is None):
                self._forget_locks(self.store.release_locks_of_set(kind))
                self.store.clear_set(kind)
                self.sets[kind] = 0
            else:
                entries = self._matching(kind, flt)
                ids = [e.id for e in entries]
                if cmd == "discard":
                    self._release_locks([e.jid for e in entries])
                    self.store.delete_entries(ids)
                    self.sets[kind] -= len(ids)
                elif cmd == "kill":
                    self.store.move_entries(ids, SetName.DEAD, now + jobs.DEAD_TTL_SECONDS * NS)
                    self.sets[kind] -= len(ids)
                    self.sets[SetName.DEAD] += len(ids)
                else:
                    self.store.delete_entries(ids)
                    self.sets[kind] -= len(ids)
                    for entry in entries:
                        self._requeue_entry(entry, now, refresh=False)
        await done

    def _matching(self, kind: SetName, flt: Filter | None) -> list[StoredJob]:
        if flt is None:
            return self.store.entries(kind)
        if flt.jids:
            return self.store.entries_by_jid(kind, flt.jids)
        if flt.regexp:
            pattern = jobs.redis_glob(flt.regexp)
            needle = f'"jobtype":{jobs.go_quote(flt.jobtype)}'.encode() if flt.jobtype else b""
            return [
                e
                for e in self.store.entries(kind)
                if pattern.fullmatch(e.payload.decode("utf-8", "replace"))
                and (not needle or e.payload.find(needle) > 0)
            ]
        if flt.jobtype:
            needle = f'"jobtype":{jobs.go_quote(flt.jobtype)}'.encode()
            return [e for e in self.store.entries(kind) if needle in e.payload]
        return self.store.entries(kind)

    # -- FLUSH -------------------------------------------------------------------------

    async def flush(self) -> None:
        """Delete every job, set entry, reservation, counter and queue."""
        with self._change() as done:
            self.store.flush()
            self.queues.clear()
            self.working.clear()
            self.sets = dict.fromkeys(SetName, 0)
            self.processed = self.failures = self.expired = 0
            self.locks.clear()
            self._days = {}
            self._expired_delta = 0
        await done

    # -- figures -------------------------------------------------------------------------

    @property
    def total_enqueued(self) -> int:
        return sum(q.size for q in self.queues.values())

    def history(self, days: int) -> dict[str, tuple[int, int]]:
        """Per-day processed/failures for the last ``days`` days (missing days are absent)."""
        first = utc_date(self.clock.now_ns() - (days - 1) * 86_400 * NS)
        return self.store.history(first)


def _expiry(job: Job) -> int | None:
    """A stored job's expiry; an unreadable one (pushed before validation) never expires."""
    try:
        return options.expiry_of(job)
    except CommandError:
        return None


def _keeps_lock(payload: bytes) -> bool:
    """Whether a reserved job still holds its uniqueness lock (read back at start-up)."""
    try:
        job = job_decoder.decode(payload)
    except msgspec.DecodeError:
        return False
    return options.holds_lock(job) and not options.releases_at_start(job)
