"""The broker's in-memory state, its group-commit transaction, and the primitives
every job state change is made of.

How this works: the broker keeps in memory what must be cheap to read (queue
sizes and paused flags, set sizes, reservations, counters) and sends every
change to the store inside one open transaction. The first change in an event
loop tick opens it and schedules ``_commit`` for the end of the tick, so every
command that arrives together shares one commit (one fsync). A command's reply
waits for that commit (and, at durability ``full``, for its fsync, except on the
worker path: see ``_change``). If the commit fails, the transaction is rolled
back, the in-memory state is reloaded from the file, and every waiting command
gets an error: nothing is acknowledged that is not committed.

Who waits is a ``Waiter``: the future of a command running in its connection's
task, or a connection's own pending reply (``server.Pending``), which writes the
reply inside the commit (or the sync) itself, without a task switch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import msgspec

from minifaktory import batches, jobs, options
from minifaktory.clock import NS, Clock, Timing, format_ns, utc_date
from minifaktory.errors import CommandError, StoreError
from minifaktory.metrics import DENIED, LOCKED, UNLOCKED, Metrics
from minifaktory.notify import Notifier
from minifaktory.payloads import Job, encode, job_decoder
from minifaktory.store import SetName, Store, StoredJob, WorkingRow
from minifaktory.syncer import Syncer
from minifaktory.throttles import Slots, Throttle, slots_for

log = logging.getLogger(__name__)


class Waiter(Protocol):
    """Waits for a change to commit (or to be durable): ``asyncio.Future`` is one."""

    def done(self) -> bool: ...

    def set_result(self, result: None, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


#: How many finished jobs the Busy page remembers per worker (in memory only).
RECENT_PER_WORKER = 20


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
    #: The key of the uniqueness lock (in ``queue``) to release when it succeeds; '' none.
    unique: str = ""
    #: The job was pushed with ``custom.track``: its state changes are recorded.
    tracked: bool = False
    #: The batch the job belongs to ('' for none).
    bid: str = ""
    #: (bid, "complete"|"success") when the job is a batch callback.
    callback: tuple[str, str] | None = None
    jobtype: str = ""
    #: The job failed before, so it has a timeline to forget when it succeeds.
    history: bool = False


#: A commit only FETCH, ACK or FAIL waited for is fsynced within this many seconds.
LAZY_SYNC_DELAY = 0.01


class BrokerState:
    """In-memory figures over one ``Store``, and the primitives that change both.

    Use it from the event loop thread only. Methods whose name starts with an
    underscore must run inside ``self._change()``.
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        fetch_timeout: float = 2.0,
        throttles: Iterable[Throttle] = (),
    ) -> None:
        self.store = store
        self.throttles = {t.queue: t for t in throttles}
        #: Live throttle slots per throttled queue (rebuilt from reservations by ``load``).
        self.slots: dict[str, Slots] = {}
        #: The last jobs each worker (wid) finished, newest first, for the Busy page.
        self.recent: dict[str, deque[dict[str, object]]] = {}
        #: Last firing per cron entry key, read on first use.
        self.cron_last: dict[str, int] | None = None
        self.clock = clock
        self.fetch_timeout = fetch_timeout
        #: The event loop the broker runs on (looked up once: it costs a syscall in 3.11).
        self.loop = asyncio.get_running_loop()
        self.notifier = Notifier(self.loop)
        self.queues: dict[str, QueueState] = {}
        self.sets: dict[SetName, int] = {}
        self.working: dict[str, Reservation] = {}
        self.processed = 0
        self.failures = 0
        self.expired = 0
        #: Job events for /metrics and statsd (in memory only, since start-up).
        self.metrics = Metrics()
        #: Uniqueness locks per queue (expired ones count until purged).
        self.locks: dict[str, int] = {}
        self._days: dict[str, list[int]] = {}
        self._expired_delta = 0
        # The transaction open for this tick, and who waits for it: until it is
        # durable, or (the worker path) only until it is committed.
        self._tx_open = False
        self._tx_durable: list[Waiter] = []
        self._tx_quick: list[Waiter] = []
        # Commits that only the worker path waited for, not yet synced, and the timer
        # that syncs them if no durable commit does first.
        self._lazy = False
        self._lazy_timer: asyncio.TimerHandle | None = None
        self._tx_poisoned = False
        # Durability "full": commits whose WAL frames are not yet fsynced.
        self._unsynced: list[Waiter] = []
        self._syncing = False
        # Looked up at each call, so that tests can stand in for ``store.sync``.
        self._syncer = Syncer(self.loop, lambda: self.store.sync())
        #: Group commits and WAL fsyncs: how many, and how long they took (Debug page).
        self.commit_stats = Timing()
        self.sync_stats = Timing()
        #: When a commit that changed rows last reached the disk, and the last storage
        #: error since then ('' when the latest write succeeded), for health checks.
        self.last_write_ns = 0
        self.write_error = ""
        self.load()

    def set_throttles(self, throttles: Iterable[Throttle]) -> None:
        """Replace the throttle configuration; live slots are rebuilt from reservations."""
        self.throttles = {t.queue: t for t in throttles}
        self.slots = slots_for(self.throttles.values())
        for r in self.working.values():
            if r.queue in self.slots:
                self.slots[r.queue].take(r.jid, r.wid, r.reserved_at)

    # -- memory <-> store ------------------------------------------------------------

    def load(self) -> None:
        """(Re)build the in-memory state from the file."""
        snap = self.store.snapshot()
        self.queues = {name: QueueState(size, paused) for name, paused, size in snap.queues}
        self.sets = dict(snap.set_sizes)
        self.working = {
            r.jid: Reservation(
                r.jid, r.queue, r.wid, r.reserved_at, r.expires_at, *_flags(r.payload)
            )
            for r in snap.working
        }
        self.processed = snap.counters.get("processed", 0)
        self.failures = snap.counters.get("failures", 0)
        self.expired = snap.counters.get("expired", 0)
        self.locks = dict(snap.locks)
        self.set_throttles(self.throttles.values())
        self.batches = batches.BatchBook(self.store, self._push)
        self._days = {}
        self._expired_delta = 0
        self.cron_last = None

    def _change(self, *, durable: bool = True) -> _Change:
        """Run store verbs inside the tick's transaction; yields the future to await
        before replying.

        ``durable`` changes wait until the commit is on stable storage (durability
        ``full``); the others (a worker's FETCH, ACK and FAIL) only until it is
        committed, and its fsync follows at once: a power cut in between can make a
        job run again, which at-least-once delivery allows, but never loses one.
        An unexpected error poisons the transaction so that nothing half-done
        is committed. Each caller gets a future of its own, so a caller cancelled
        (its client left) leaves the others alone.
        """
        return _Change(self, durable)

    def _change_for(self, waiter: Waiter, *, durable: bool = True) -> _ChangeFor:
        """``_change`` for a waiter the caller brings (a connection's pending reply)."""
        return _ChangeFor(self, durable, waiter)

    def _join(self, durable: bool) -> asyncio.Future[None]:
        """The caller's future in the open transaction (opening one for this tick)."""
        waiter = self.loop.create_future()
        self._enlist(waiter, durable)
        return waiter

    def _enlist(self, waiter: Waiter, durable: bool) -> None:
        """Add ``waiter`` to the open transaction (opening one for this tick)."""
        if not self._tx_open:
            self.store.begin()
            self._tx_open = True
            self._tx_poisoned = False
            self.loop.call_soon(self._commit)
        (self._tx_durable if durable else self._tx_quick).append(waiter)

    def _commit(self) -> None:
        durable, self._tx_durable = self._tx_durable, []
        quick, self._tx_quick = self._tx_quick, []
        self._tx_open = False
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
            started = time.perf_counter()
            wrote = self.store.commit()
            self.commit_stats.add(time.perf_counter() - started)
        except Exception as exc:
            log.error("storage error, rolling back: %s", exc)
            self.write_error = str(exc)
            self.store.rollback()
            self.load()
            failure = exc if isinstance(exc, StoreError) else StoreError(str(exc))
            _fail_all(durable + quick, failure)
            return
        _resolve(quick)
        if not self.store.sync_after_commit or not wrote:
            if wrote:
                self._wrote()
            _resolve(durable)  # nothing to sync: a commit that wrote nothing needs no fsync
            return
        if durable:
            self._unsynced += durable
            if not self._syncing:
                self._sync()
        else:
            # Only the worker path waited: the next sync covers it, soon at the latest.
            self._lazy = True
            if self._lazy_timer is None and not self._syncing:
                self._lazy_timer = self.loop.call_later(LAZY_SYNC_DELAY, self._sync_lazy)

    def _wrote(self) -> None:
        self.last_write_ns = self.clock.now_ns()
        self.write_error = ""

    def _sync(self) -> None:
        """fsync the WAL off the event loop for every commit made since the last sync.

        While one sync runs, the loop goes on with the next groups; their replies
        wait for the following sync. One fsync thus covers many commits.
        """
        batch, self._unsynced = self._unsynced, []
        self._lazy = False
        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
            self._lazy_timer = None
        self._syncing = True
        started = time.perf_counter()

        def done(exc: BaseException | None) -> None:
            self._syncing = False
            self.sync_stats.add(time.perf_counter() - started)
            if exc is None:
                self._wrote()  # every commit a sync covers wrote something
                _resolve(batch)
            else:
                log.critical("fsync of the write-ahead log failed: %s", exc)
                self.write_error = f"fsync failed: {exc}"
                _fail_all(batch, StoreError(f"fsync failed: {exc}"))
            if self._unsynced:
                self._sync()
            elif self._lazy and self._lazy_timer is None:
                self._lazy_timer = self.loop.call_later(LAZY_SYNC_DELAY, self._sync_lazy)

        self._syncer.start(done)

    def _sync_lazy(self) -> None:
        self._lazy_timer = None
        if self._lazy and not self._syncing:
            self._sync()

    def close(self) -> None:
        """Wait for the last sync, sync what only the worker path wrote, and let go of
        the sync thread (called off the event loop, after the last commit)."""
        self._syncer.close()
        if self._lazy:
            self._lazy = False
            self.store.sync()

    def _count(self, now: int, failed: bool) -> None:
        self.processed += 1
        self.failures += failed
        day = self._days.setdefault(utc_date(now), [0, 0])
        day[0] += 1
        day[1] += failed

    # -- primitives ------------------------------------------------------------------

    def _push(self, job: Job, now: int, created: str = "") -> None:
        """Faktory's rules, then the job options; every check before any write."""
        try:
            at = jobs.prepare_push(job, now, created)
            opts = options.parse_options(job, now, at)
        except CommandError:
            raise
        except Exception as exc:  # a rule that trips over odd input must not poison the group
            log.exception("job %s: unexpected validation failure", job.jid)
            raise CommandError(f"invalid job: {exc}") from None
        bid = batches.member_of(job)
        unique = opts.unique
        if unique is not None and self.store.lock_holder(job.queue, unique.key, now) is not None:
            self.metrics.unique(job.queue, job.jobtype, DENIED)
            raise CommandError("Job not unique", "NOTUNIQUE")
        if bid and self.store.batch(bid) is None:
            raise batches.no_such_batch(bid)
        if unique is not None:
            self._take_lock(job, unique, now)
        if bid:
            self.batches.joined(bid, now)
        if at is None:
            self._enqueue(job, now, opts.expires_at)
        else:
            self._add_to_set(SetName.SCHEDULED, at, job.jid, encode(job))
        if options.is_tracked(job):
            self.store.track_state(job.jid, "enqueued", now)
        self.metrics.push(job.queue, job.jobtype)

    def _enqueue(self, job: Job, now: int, expires_at: int | None, *, front: bool = False) -> None:
        job.enqueued_at = format_ns(now)
        self._enqueue_payload(job, encode(job), expires_at, front=front)

    def _enqueue_payload(
        self, job: Job, payload: bytes, expires_at: int | None, *, front: bool = False
    ) -> None:
        queue = job.queue
        priority = job.priority or options.DEFAULT_PRIORITY
        self.store.enqueue(queue, priority, job.jid, payload, expires_at, front=front)
        self._queue(queue).size += 1
        self.notifier.notify(queue)

    def _queue(self, name: str) -> QueueState:
        """A queue's state, registering the queue the first time a job reaches it."""
        state = self.queues.get(name)
        if state is None:
            self.store.register_queue(name)
            state = self.queues[name] = QueueState()
        return state

    def _take_lock(self, job: Job, unique: options.Unique, now: int) -> None:
        """Hold ``job``'s uniqueness lock in its queue (taking over an expired one)."""
        if self.store.take_lock(job.queue, unique.key, job.jid, now + unique.ttl_ns):
            self.locks[job.queue] = self.locks.get(job.queue, 0) + 1
        self.metrics.unique(job.queue, job.jobtype, LOCKED)

    def _add_to_set(self, kind: SetName, score: int, jid: str, payload: bytes) -> None:
        self.store.add(kind, score, jid, payload)
        self.sets[kind] += 1

    def _is_paused(self, name: str) -> bool:
        state = self.queues.get(name)
        return state is not None and state.paused

    def _has_jobs(self, name: str) -> bool:
        state = self.queues.get(name)
        return state is not None and state.size > 0 and not state.paused

    def _reserve(self, queue: str, jid: str, payload: bytes, wid: str, now: int) -> None:
        job = job_decoder.decode(payload)
        expires = now + jobs.reservation_seconds(job.reserve_for) * NS
        self.store.reserve(WorkingRow(jid, queue, wid, now, expires, payload))
        unique = lock_key(job)
        if unique and options.releases_at_start(job):
            self._release_lock(queue, unique, jid)
            unique = ""
        tracked = options.is_tracked(job)
        if tracked:
            self.store.track_state(jid, "working", now)
        self.working[jid] = Reservation(
            jid, queue, wid, now, expires, unique, tracked,
            batches.member_of(job), batches.callback_of(job), job.jobtype,
            job.failure is not None,
        )  # fmt: skip
        if queue in self.slots:
            self.slots[queue].take(jid, wid, now)
        self.metrics.fetch(queue, job.jobtype)

    def _unreserve(self, jid: str, outcome: str) -> Reservation:
        """Forget a reservation in memory (the caller deletes its row), free its slot and
        note the outcome in its worker's recent history."""
        reservation = self.working.pop(jid)
        if reservation.wid:
            now = self.clock.now_ns()
            recent = self.recent.setdefault(reservation.wid, deque(maxlen=RECENT_PER_WORKER))
            recent.appendleft({
                "jid": jid, "jobtype": reservation.jobtype, "queue": reservation.queue,
                "outcome": outcome, "finished_at": now,
                "duration_s": round(max(now - reservation.reserved_at, 0) / NS, 3),
            })  # fmt: skip
        slots = self.slots.get(reservation.queue)
        if slots is not None and slots.release(jid):
            self.notifier.notify(reservation.queue)  # a throttled fetcher may proceed now
        return reservation

    def _expire(self, count: int) -> None:
        self.expired += count
        self._expired_delta += count

    def _release_lock(self, queue: str, key: str, jid: str) -> None:
        """Release the lock ``jid`` holds on ``key`` in ``queue`` (by primary key)."""
        if self.store.release_lock(queue, key, jid):
            self._forget_locks([queue])

    def _release_locks_of(self, entries: Iterable[tuple[str, bytes]]) -> None:
        """Release the locks held by these (jid, payload) jobs."""
        for jid, payload in entries:
            try:
                job = job_decoder.decode(payload)
            except msgspec.DecodeError:
                continue
            key = lock_key(job)
            if key:
                self._release_lock(job.queue, key, jid)

    def _forget_locks(self, queues: list[str]) -> None:
        for queue in queues:
            self.metrics.unique(queue, "", UNLOCKED)
            left = self.locks.get(queue, 0) - 1
            if left > 0:
                self.locks[queue] = left
            else:
                self.locks.pop(queue, None)

    def _fail_reserved(
        self, jid: str, errtype: str, message: str, backtrace: list[str] | None, now: int
    ) -> None:
        expired = errtype == jobs.EXPIRED_ERRTYPE and message == jobs.EXPIRED_MESSAGE
        reservation = self._unreserve(jid, "expired" if expired else "failed")
        payload = self.store.release(jid)
        self._count(now, failed=True)
        if reservation.bid:
            self.batches.member_failed(reservation.bid, jid, now)
        took = now - reservation.reserved_at
        if payload is None:
            log.warning("reservation of %s had no stored job", jid)
            self.metrics.finish(reservation.queue, reservation.jobtype, took, True, False)
            return
        job = job_decoder.decode(payload)
        jobs.record_failure(job, errtype, message, backtrace, now)
        outcome = jobs.failure_outcome(job)
        self.metrics.finish(reservation.queue, reservation.jobtype, took, True, outcome == "dead")
        assert job.failure is not None
        if outcome == "retry":
            at = now + jobs.retry_delay_seconds(job.failure.retry_count) * NS
            job.failure.next_at = format_ns(at)
            self._add_to_set(SetName.RETRIES, at, jid, encode(job))
            then = f"retry {job.failure.retry_count + 1} at {format_ns(at)}"
        else:
            then = "moved to the dead set" if outcome == "dead" else "discarded (retry 0)"
        if options.is_tracked(job):
            self.store.track_state(jid, "dead" if outcome == "dead" else "failed", now)
        if outcome == "dead":
            self._add_to_set(SetName.DEAD, now + jobs.DEAD_TTL_SECONDS * NS, jid, encode(job))
        if outcome == "discard":
            self.store.delete_events([jid])
            return
        by = f" by {reservation.wid}" if reservation.wid else ""
        error = ": ".join(x for x in (errtype, message) if x)
        self.store.add_events([
            (jid, reservation.reserved_at, "fetched", f"from {reservation.queue}{by}"),
            (jid, now, "expired" if expired else "failed", f"{error}; {then}"),
        ])  # fmt: skip

    def _requeue_entry(self, entry: StoredJob, now: int, *, refresh: bool) -> int:
        try:
            job = job_decoder.decode(entry.payload)
            jobs.check_queue_name(job.queue)
        except (msgspec.DecodeError, CommandError) as exc:
            log.error("dropping unreadable entry %s: %s", entry.jid, exc)
            return 0
        if options.is_tracked(job):
            self.store.track_state(entry.jid, "enqueued", now)
        if refresh:
            self._enqueue(job, now, stored_expiry(job))
        else:
            self._enqueue_payload(job, entry.payload, stored_expiry(job))
        return 1


def stored_expiry(job: Job) -> int | None:
    """A stored job's expiry; an unreadable one (pushed before validation) never expires."""
    try:
        return options.expiry_of(job)
    except CommandError:
        return None


def lock_key(job: Job) -> str:
    """The key of the uniqueness lock a job was pushed with ('' for none)."""
    return options.unique_key(job) if options.holds_lock(job) else ""


def _flags(payload: bytes) -> tuple[str, bool, str, tuple[str, str] | None, str, bool]:
    """A reserved job's lock, tracking and batch roles, jobtype and whether it failed
    before, read back at start-up."""
    try:
        job = job_decoder.decode(payload)
    except msgspec.DecodeError:
        return "", False, "", None, "", False
    unique = "" if options.releases_at_start(job) else lock_key(job)
    member, callback = batches.member_of(job), batches.callback_of(job)
    return unique, options.is_tracked(job), member, callback, job.jobtype, job.failure is not None


def _fail_all(waiters: list[Waiter], exc: StoreError) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_exception(exc)
            if isinstance(waiter, asyncio.Future):
                waiter.exception()  # retrieved here; each waiter re-raises it


def _resolve(waiters: list[Waiter]) -> None:
    for waiter in waiters:
        if not waiter.done():  # done: its caller was cancelled
            waiter.set_result(None)


class _Joining:
    """Joins the tick's transaction for a ``with`` block; an unexpected error in the
    block poisons the transaction, so that nothing half-done is committed."""

    __slots__ = ("_durable", "_state")

    def __init__(self, state: BrokerState, durable: bool) -> None:
        self._state = state
        self._durable = durable

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if kind is not None and not issubclass(kind, CommandError):
            self._state._tx_poisoned = True


class _Change(_Joining):
    """``BrokerState._change``: the block gets a future of its own to await."""

    __slots__ = ()

    def __enter__(self) -> asyncio.Future[None]:
        return self._state._join(self._durable)


class _ChangeFor(_Joining):
    """``BrokerState._change_for``: joins with the caller's own waiter."""

    __slots__ = ("_waiter",)

    def __init__(self, state: BrokerState, durable: bool, waiter: Waiter) -> None:
        super().__init__(state, durable)
        self._waiter = waiter

    def __enter__(self) -> None:
        self._state._enlist(self._waiter, self._durable)
