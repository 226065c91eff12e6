"""Work on jobs that are not in a worker's hands: the periodic scanners (spec §3.1),
queue administration (§4.2), MUTATE (§4.1) and FLUSH."""

from __future__ import annotations

import msgspec

from minifaktory import jobs, options
from minifaktory.batches import BatchBook
from minifaktory.clock import NS, parse_ns
from minifaktory.errors import CommandError, StoreError
from minifaktory.payloads import Filter, Job, encode, job_decoder
from minifaktory.state import BrokerState, lock_key
from minifaktory.store import SetName, StoredJob

#: Scanners move at most this many entries per query, looping while batches are full.
SCAN_BATCH = 100
#: An idle server proves its file takes writes this often (health checks read it).
PROBE_AFTER_NS = 30 * NS
#: How timelines name the sets.
SET_LABELS = {SetName.SCHEDULED: "scheduled", SetName.RETRIES: "retries", SetName.DEAD: "dead"}
#: Reservation expiry handles this many per query (Faktory: 10).
EXPIRY_BATCH = 10
#: Tracking records of finished jobs are kept this long after their last change.
TRACKING_TTL_FINAL_NS = 30 * 60 * NS
#: Records of jobs that never finish (lost, or waiting in a huge backlog) are dropped after this.
TRACKING_TTL_NS = 7 * 86_400 * NS
SET_TARGETS = {"scheduled": SetName.SCHEDULED, "retries": SetName.RETRIES, "dead": SetName.DEAD}


class Maintenance(BrokerState):
    """Scanners, queue administration, MUTATE and FLUSH."""

    # -- scanners (spec §3.1) ------------------------------------------------------------

    async def enqueue_due(self, kind: SetName, now: int) -> int:
        """Move due scheduled jobs or retries to their queues; how many moved.

        One transaction per batch, awaited before the next: a backlog of due jobs
        (a big campaign, a server that was down) never holds the event loop, and
        a crash midway keeps the batches already moved.
        """
        moved = 0
        while True:
            with self._change() as done:
                batch = self.store.take_due(kind, now, SCAN_BATCH)
                self.sets[kind] -= len(batch)
                for entry in batch:
                    moved += self._requeue_entry(entry, now, refresh=True)
                if kind is SetName.RETRIES:
                    self.store.add_events(
                        [(e.jid, now, "retried", "its retry time came") for e in batch]
                    )
            await done
            if len(batch) < SCAN_BATCH:
                return moved

    async def purge_dead(self, now: int) -> int:
        """Delete up to 100 dead jobs whose 180-day retention has passed."""
        with self._change() as done:
            gone = self.store.take_due(SetName.DEAD, now, SCAN_BATCH)
            self.sets[SetName.DEAD] -= len(gone)
            self.store.delete_events(e.jid for e in gone)
            self.store.purge_events(now - jobs.DEAD_TTL_SECONDS * NS)
        await done
        return len(gone)

    async def expire_reservations(self, now: int) -> int:
        """Fail every reservation past its expiry with ``ReservationExpired`` (a
        transaction per batch, as ``enqueue_due``)."""
        expired = 0
        while True:
            with self._change() as done:
                jids = self.store.expired(now, EXPIRY_BATCH)
                for jid in jids:
                    if jid in self.working:
                        self._fail_reserved(
                            jid, jobs.EXPIRED_ERRTYPE, jobs.EXPIRED_MESSAGE, None, now
                        )
                    else:
                        self.store.drop_reservation(jid)
                    expired += 1
            await done
            if len(jids) < EXPIRY_BATCH:
                return expired

    async def probe(self, now: int) -> int:
        """Write the probe row when nothing was written for ``PROBE_AFTER_NS``, so an
        idle server still finds out that its file stopped taking writes; 1 if it wrote."""
        if now - self.last_write_ns < PROBE_AFTER_NS:
            return 0
        with self._change() as done:
            self.store.probe(now)
        try:
            await done
        except StoreError:
            return 0  # recorded in write_error by the commit
        return 1

    # -- queues (spec §4.2) --------------------------------------------------------------

    def _names(self, names: list[str]) -> list[str]:
        """The known queues among ``names`` (``*``: every one), each once."""
        if "*" in names:
            return list(self.queues)
        return [n for n in dict.fromkeys(names) if n in self.queues]

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

    async def release_locks(self, queue: str, keys: list[str] | None) -> int:
        """Release uniqueness locks of ``queue`` by key (``None``: all); how many."""
        with self._change() as done:
            released = self.store.release_locks_by_key(queue, keys)
            self._forget_locks([queue] * released)
        await done
        return released

    async def delete_queued(self, queue: str, ids: list[int]) -> int:
        """Delete chosen jobs from a queue (Web UI), releasing their uniqueness locks."""
        with self._change() as done:
            deleted = self.store.delete_queued(queue, ids)
            state = self.queues.get(queue)
            if state is not None:
                state.size -= len(deleted)
            self._release_locks_of(deleted)
        await done
        return len(deleted)

    async def edit_queued(self, queue: str, key: int, changes: Job) -> bytes:
        """Edit a waiting job in place (Web UI) by the same rules as PUSH; its new payload.

        ``args``, ``custom``, ``queue``, ``at`` and ``priority`` come from ``changes``.
        The job keeps its jid and its place in line; a future ``at`` moves it to the
        scheduled set; its uniqueness lock follows the new identity.
        """
        payload = self.store.queued(queue, key)
        if payload is None:
            raise CommandError(f"no job {key} in queue {queue!r} (it may have been fetched)")
        job = job_decoder.decode(payload)
        held = (job.queue, lock_key(job))
        if (changes.custom or {}).get("bid") != (job.custom or {}).get("bid"):
            raise CommandError("custom.bid cannot be edited: the job would change batches")
        job.args, job.custom, job.at, job.priority = (
            changes.args,
            changes.custom,
            changes.at,
            changes.priority,
        )
        job.queue = changes.queue or job.queue
        now = self.clock.now_ns()
        at = jobs.prepare_push(job, now)
        opts = options.parse_options(job, now, at)
        unique = opts.unique
        if unique is not None:
            holder = self.store.lock_holder(job.queue, unique.key, now)
            if holder is not None and holder != job.jid:
                raise CommandError("Job not unique", "NOTUNIQUE")
        with self._change() as done:
            if held[1]:
                self._release_lock(*held, job.jid)
            if unique is not None:
                self._take_lock(job, unique, now)
            new = encode(job)
            if at is not None:
                self.store.delete_queued(queue, [key])
                self.queues[queue].size -= 1
                self._add_to_set(SetName.SCHEDULED, at, job.jid, new)
            else:
                self.store.replace_queued(key, job.queue, opts.priority, new, opts.expires_at)
                if job.queue != queue:
                    self.queues[queue].size -= 1
                    self._queue(job.queue).size += 1
                    self.notifier.notify(job.queue)
        await done
        return new

    async def purge_expired(self, now: int) -> int:
        """Remove expired jobs from queues, expired uniqueness locks, old tracking records
        and abandoned batches."""
        with self._change() as done:
            queues = self.store.purge_expired(now)
            for name in queues:
                state = self.queues.get(name)
                if state is not None:
                    state.size -= 1
                self.metrics.expire(name)
            self._expire(len(queues))
            self._forget_locks(self.store.purge_locks(now))
            self.batches.purge(now)
            self.store.purge_tracking(now - TRACKING_TTL_FINAL_NS, ("success", "dead"))
            self.store.purge_tracking(now - TRACKING_TTL_NS, ("enqueued", "working", "failed"))
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
        kind = SET_TARGETS.get(target)
        if kind is None:
            raise CommandError("invalid target for mutation command")
        now = self.clock.now_ns()
        with self._change() as done:
            if cmd == "clear" or (cmd == "discard" and flt is None):
                self._forget_locks(self.store.release_locks_of_set(kind))
                self.store.clear_set(kind)
                self.sets[kind] = 0
            else:
                self._act(kind, self._matching(kind, flt), cmd, now, "MUTATE")
        await done

    async def act_on_set(self, kind: SetName, ids: list[int] | None, action: str) -> int:
        """The Web UI's actions on chosen entries (``None``: all of them); how many moved.

        ``retry``/``add_to_queue`` enqueue with a fresh ``enqueued_at`` (Faktory's
        "Retry Now"), ``delete`` discards, ``kill`` moves to the dead set.
        Entries that vanished meanwhile are skipped, as in Faktory.
        """
        verb = {"retry": "enqueue", "add_to_queue": "enqueue", "delete": "discard", "kill": "kill"}
        if action not in verb:
            raise CommandError(f"invalid action {action!r}")
        now = self.clock.now_ns()
        with self._change() as done:
            entries = (
                self.store.entries(kind) if ids is None else self.store.entries_by_id(kind, ids)
            )
            self._act(kind, entries, verb[action], now, "the Web UI")
        await done
        return len(entries)

    def _act(self, kind: SetName, entries: list[StoredJob], how: str, now: int, cause: str) -> None:
        """discard, kill, requeue (payload unchanged) or enqueue (fresh ``enqueued_at``);
        ``cause`` names who asked, for the jobs' timelines."""
        ids = [e.id for e in entries]
        jids = [e.jid for e in entries]
        if how == "kill":
            self.store.move_entries(ids, SetName.DEAD, now + jobs.DEAD_TTL_SECONDS * NS)
            self.sets[kind] -= len(ids)
            self.sets[SetName.DEAD] += len(ids)
            moved = f"from {SET_LABELS[kind]} to the dead set by {cause}"
            self.store.add_events([(jid, now, "killed", moved) for jid in jids])
            return
        self.store.delete_entries(ids)
        self.sets[kind] -= len(ids)
        if how == "discard":
            self._release_locks_of((e.jid, e.payload) for e in entries)
            self.store.delete_events(jids)
            return
        for entry in entries:
            self._requeue_entry(entry, now, refresh=how == "enqueue")
        if kind is not SetName.SCHEDULED:  # a scheduled job has no timeline to continue
            moved = f"from {SET_LABELS[kind]} to its queue by {cause}"
            self.store.add_events([(jid, now, "moved", moved) for jid in jids])

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
            for slots in self.slots.values():
                slots.held.clear()
            self.sets = dict.fromkeys(SetName, 0)
            self.processed = self.failures = self.expired = 0
            self.locks.clear()
            self.batches = BatchBook(self.store, self._push)
            self._days = {}
            self._expired_delta = 0
        await done
