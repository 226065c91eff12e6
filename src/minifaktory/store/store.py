"""Every SQL statement minifaktory runs, behind small synchronous verbs.

How this works: one writer connection owns the file. The broker opens a
transaction with ``begin()``, calls any number of verbs, then ``commit()``
(group commit: many client commands share one fsync). Verbs never commit on
their own. Sizes are not counted here on the hot path: the broker keeps them
in memory and asks for ``snapshot()`` once at start-up.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import apsw

from minifaktory.clock import Timing
from minifaktory.errors import StoreError
from minifaktory.store import db

#: WAL size (pages) after which a commit checkpoints it: SQLite's default.
CHECKPOINT_PAGES = 1000


class SetName(enum.IntEnum):
    """The three sorted sets of Faktory, by their names in INFO."""

    SCHEDULED = 1
    RETRIES = 2
    DEAD = 3


@dataclass(frozen=True, slots=True)
class StoredJob:
    """An entry of a sorted set: its row id, score (ns), jid and stored JSON."""

    id: int
    score: int
    jid: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class WorkingRow:
    """A reservation: who holds which job until when."""

    jid: str
    queue: str
    wid: str
    reserved_at: int
    expires_at: int
    payload: bytes


@dataclass(slots=True)
class BatchRow:
    """A batch as stored; the broker changes it and hands it back to ``save_batch``."""

    bid: str
    parent: str
    description: str
    created_at: int
    updated_at: int
    committed: bool = False
    total: int = 0
    pending: int = 0
    failed: int = 0
    complete_job: bytes | None = None
    success_job: bytes | None = None
    complete_st: str = ""
    success_st: str = ""


BATCH_COLUMNS = (
    "bid, parent, description, created_at, updated_at, committed, total, pending, failed,"
    " complete_job, success_job, complete_st, success_st"
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the broker needs in memory at start-up."""

    queues: list[tuple[str, bool, int]]
    set_sizes: dict[SetName, int]
    working: list[WorkingRow]
    counters: dict[str, int]
    locks: dict[str, int]


class Store:
    """The SQLite store. Not thread-safe: use it from one thread."""

    def __init__(self, path: Path | str, durability: str = "full", *, serve: bool = False) -> None:
        """Open (creating and migrating) the file; with ``serve``, also mark it as served
        by this process, so a second server, a restore or a migration refuses it."""
        self.path = path
        #: Durability "full" on a file: SQLite commits without syncing (synchronous=NORMAL)
        #: and the caller runs ``sync()`` before acknowledging, so that one fsync,
        #: off the event loop, covers every commit made meanwhile. SQLite's own FULL
        #: mode would fsync inside every COMMIT, on the event loop.
        self.sync_after_commit = durability == "full" and str(path) != ":memory:"
        # Held before opening, so that two servers never migrate the same file at once.
        self._held = db.hold(path) if serve else None
        try:
            self._conn = db.connect(path, "normal" if self.sync_after_commit else durability)
        except StoreError:
            if self._held is not None:
                os.close(self._held)
            raise
        self._cur = self._conn.cursor()
        self._wal_fd: int | None = None
        #: WAL checkpoints (run after the commit that grows the WAL past
        #: ``CHECKPOINT_PAGES``, as SQLite's auto-checkpoint does, but timed).
        self.checkpoints = Timing()
        self._conn.set_wal_hook(self._wal_hook)
        self._changes_committed = self._conn.total_changes()

    def _wal_hook(self, conn: apsw.Connection, name: str, pages: int) -> int:
        if pages >= CHECKPOINT_PAGES:
            started = time.perf_counter()
            try:
                conn.wal_checkpoint(name, apsw.SQLITE_CHECKPOINT_PASSIVE)
            except apsw.Error:
                # A reader holds the WAL, or the disk is full: the commit itself stands
                # (an error here would fail it after the fact); the next one tries again.
                return apsw.SQLITE_OK
            self.checkpoints.add(time.perf_counter() - started)
        return apsw.SQLITE_OK

    def sync(self) -> None:
        """Flush the write-ahead log to stable storage (safe to call from another thread)."""
        if self._wal_fd is None:
            self._wal_fd = os.open(f"{self.path}-wal", os.O_RDONLY)
        os.fdatasync(self._wal_fd)

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return cast(list[tuple[Any, ...]], self._cur.execute(sql, params).fetchall())

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        return cast(tuple[Any, ...] | None, self._cur.execute(sql, params).fetchone())

    def close(self) -> None:
        """Close the connection (rolls back an open transaction)."""
        self._conn.close()
        if self._held is not None:
            os.close(self._held)
            self._held = None
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None

    # -- transactions ------------------------------------------------------------

    def begin(self) -> None:
        """Open the write transaction that the next verbs run in."""
        self._cur.execute("BEGIN IMMEDIATE")

    def commit(self) -> bool:
        """Make every verb since ``begin()`` durable; whether any row changed."""
        changes = self._conn.total_changes()
        try:
            self._cur.execute("COMMIT")
        except apsw.Error as exc:
            raise StoreError(f"commit failed: {exc}") from exc
        wrote = changes != self._changes_committed
        self._changes_committed = changes
        return wrote

    def probe(self, now: int) -> None:
        """Rewrite the probe row: a write that changes nothing else."""
        self._cur.execute("INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)", (now,))

    def rollback(self) -> None:
        """Undo every verb since ``begin()``; harmless when none is open."""
        if not self._conn.in_transaction:
            return
        self._cur.execute("ROLLBACK")

    # -- start-up ----------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Queue registry with sizes, set sizes, reservations and counters."""
        sizes = dict(self._all("SELECT queue, count(*) FROM queued GROUP BY queue"))
        queues = [
            (str(name), bool(paused), int(sizes.pop(name, 0)))
            for name, paused in self._all("SELECT name, paused FROM queues")
        ]
        # Jobs whose queue is missing from the registry (should not happen) stay visible.
        queues += [(str(name), False, int(n)) for name, n in sizes.items()]
        set_sizes = dict.fromkeys(SetName, 0)
        for kind, n in self._all("SELECT kind, count(*) FROM sorted GROUP BY kind"):
            set_sizes[SetName(kind)] = int(n)
        working = [
            WorkingRow(*row)
            for row in self._all(
                "SELECT jid, queue, wid, reserved_at, expires_at, payload FROM working"
            )
        ]
        counters = {str(k): int(v) for k, v in self._all("SELECT name, value FROM counters")}
        locks = {
            str(q): int(n)
            for q, n in self._all("SELECT queue, count(*) FROM unique_locks GROUP BY queue")
        }
        return Snapshot(queues, set_sizes, working, counters, locks)

    # -- queues ------------------------------------------------------------------

    def register_queue(self, name: str) -> None:
        """Remember a queue name (a no-op when known)."""
        self._cur.execute("INSERT OR IGNORE INTO queues (name) VALUES (?)", (name,))

    def set_paused(self, name: str, paused: bool) -> None:
        """Persist the paused flag of a known queue."""
        self._cur.execute("UPDATE queues SET paused = ? WHERE name = ?", (int(paused), name))

    def remove_queue(self, name: str) -> None:
        """Forget a queue and delete every job and uniqueness lock in it."""
        self._cur.execute("DELETE FROM queued WHERE queue = ?", (name,))
        self._cur.execute("DELETE FROM unique_locks WHERE queue = ?", (name,))
        self._cur.execute("DELETE FROM queues WHERE name = ?", (name,))

    def enqueue(
        self,
        queue: str,
        priority: int,
        jid: str,
        payload: bytes,
        expires_at: int | None = None,
        *,
        front: bool = False,
    ) -> None:
        """Add a job at the back of its queue (``front``: ahead of every waiting job)."""
        if front:
            self._cur.execute(
                "INSERT INTO queued (id, queue, priority, jid, payload, expires_at)"
                " VALUES ((SELECT coalesce(min(id), 1) - 1 FROM queued), ?, ?, ?, ?, ?)",
                (queue, priority, jid, payload, expires_at),
            )
            return
        self._cur.execute(
            "INSERT INTO queued (queue, priority, jid, payload, expires_at) VALUES (?, ?, ?, ?, ?)",
            (queue, priority, jid, payload, expires_at),
        )

    def take(self, queue: str) -> tuple[str, bytes, int | None] | None:
        """Remove and return (jid, payload, expires_at) of the next job of ``queue``."""
        row = self._one(
            # ``+?``: the same index plan, but SQLite's STAT4 does not re-prepare the
            # statement for every new queue name (measured: 6.6 µs → 3.1 µs).
            "DELETE FROM queued WHERE id = (SELECT id FROM queued WHERE queue = +?"
            " ORDER BY priority DESC, id LIMIT 1) RETURNING jid, payload, expires_at",
            (queue,),
        )
        return None if row is None else (str(row[0]), bytes(row[1]), row[2])

    def queued(self, queue: str, key: int) -> bytes | None:
        """The payload of a job waiting in ``queue``, by row id."""
        row = self._one("SELECT payload FROM queued WHERE id = ? AND queue = ?", (key, queue))
        return None if row is None else bytes(row[0])

    def replace_queued(
        self, key: int, queue: str, priority: int, payload: bytes, expires_at: int | None
    ) -> None:
        """Rewrite a waiting job in place: it keeps its row id, so its place in line."""
        self._cur.execute(
            "UPDATE queued SET queue = ?, priority = ?, payload = ?, expires_at = ? WHERE id = ?",
            (queue, priority, payload, expires_at, key),
        )

    def delete_queued(self, queue: str, ids: Sequence[int]) -> list[tuple[str, bytes]]:
        """Delete jobs of ``queue`` by row id; (jid, payload) of those deleted."""
        deleted: list[tuple[str, bytes]] = []
        for key in dict.fromkeys(ids):
            row = self._one(
                "DELETE FROM queued WHERE id = ? AND queue = ? RETURNING jid, payload",
                (key, queue),
            )
            if row is not None:
                deleted.append((str(row[0]), bytes(row[1])))
        return deleted

    def purge_expired(self, now: int) -> list[str]:
        """Delete queued jobs whose expiry has passed; the queue of each one deleted."""
        return [
            str(r[0])
            for r in self._all(
                "DELETE FROM queued WHERE expires_at IS NOT NULL AND expires_at <= ?"
                " RETURNING queue",
                (now,),
            )
        ]

    def head(self, queue: str) -> bytes | None:
        """The payload of the next job of ``queue`` without removing it."""
        row = self._one(
            "SELECT payload FROM queued WHERE queue = +? ORDER BY priority DESC, id LIMIT 1",
            (queue,),
        )
        return None if row is None else bytes(row[0])

    # -- sorted sets -------------------------------------------------------------

    def add(self, kind: SetName, score: int, jid: str, payload: bytes) -> None:
        """Add an entry to the scheduled, retries or dead set."""
        self._cur.execute(
            "INSERT INTO sorted (kind, score, jid, payload) VALUES (?, ?, ?, ?)",
            (int(kind), score, jid, payload),
        )

    def take_due(self, kind: SetName, now: int, limit: int) -> list[StoredJob]:
        """Remove and return up to ``limit`` entries with score ≤ ``now``, oldest first."""
        rows = self._all(
            "DELETE FROM sorted WHERE id IN (SELECT id FROM sorted WHERE kind = ? AND score <= ?"
            " ORDER BY score, id LIMIT ?) RETURNING id, score, jid, payload",
            (int(kind), now, limit),
        )
        jobs = _stored(rows)
        jobs.sort(key=lambda job: (job.score, job.id))
        return jobs

    def entries(self, kind: SetName) -> list[StoredJob]:
        """Every entry of a set, by score (for MUTATE filters)."""
        rows = self._all(
            "SELECT id, score, jid, payload FROM sorted WHERE kind = ? ORDER BY score, id",
            (int(kind),),
        )
        return _stored(rows)

    def entries_by_jid(self, kind: SetName, jids: Iterable[str]) -> list[StoredJob]:
        """Entries of a set whose jid is one of ``jids``."""
        return self._entries_where("jid = ?", kind, jids)

    def entries_by_id(self, kind: SetName, ids: Iterable[int]) -> list[StoredJob]:
        """Entries of a set by row id (ids not in the set are skipped)."""
        return self._entries_where("id = ?", kind, ids)

    def _entries_where(
        self, condition: str, kind: SetName, values: Iterable[str] | Iterable[int]
    ) -> list[StoredJob]:
        sql = f"SELECT id, score, jid, payload FROM sorted WHERE kind = ? AND {condition}"  # noqa: S608
        out: list[StoredJob] = []
        for value in dict.fromkeys(values):
            out += _stored(self._all(sql, (int(kind), value)))
        return out

    def delete_entries(self, ids: Sequence[int]) -> None:
        """Delete set entries by row id."""
        self._cur.executemany("DELETE FROM sorted WHERE id = ?", [(i,) for i in ids])

    def move_entries(self, ids: Sequence[int], kind: SetName, score: int) -> None:
        """Move entries to another set (or re-score them in place)."""
        self._cur.executemany(
            "UPDATE sorted SET kind = ?, score = ? WHERE id = ?",
            [(int(kind), score, i) for i in ids],
        )

    def clear_set(self, kind: SetName) -> None:
        """Empty a set."""
        self._cur.execute("DELETE FROM sorted WHERE kind = ?", (int(kind),))

    # -- reservations ------------------------------------------------------------

    def reserve(self, row: WorkingRow) -> None:
        """Record a reservation; a second fetch of the same jid replaces the first."""
        self._cur.execute(
            "INSERT OR REPLACE INTO working (jid, queue, wid, reserved_at, expires_at, payload)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (row.jid, row.queue, row.wid, row.reserved_at, row.expires_at, row.payload),
        )

    def release(self, jid: str) -> bytes | None:
        """Delete a reservation and return the reserved job's payload."""
        row = self._one("DELETE FROM working WHERE jid = ? RETURNING payload", (jid,))
        return None if row is None else bytes(row[0])

    def drop_reservation(self, jid: str) -> None:
        """Delete a reservation (its payload is not needed: an ACK)."""
        self._cur.execute("DELETE FROM working WHERE jid = ?", (jid,))

    def expired(self, now: int, limit: int) -> list[str]:
        """Jids of up to ``limit`` reservations whose expiry is ≤ ``now``, oldest first."""
        rows = self._all(
            "SELECT jid FROM working WHERE expires_at <= ? ORDER BY expires_at LIMIT ?",
            (now, limit),
        )
        return [str(r[0]) for r in rows]

    # -- uniqueness locks ----------------------------------------------------------

    def lock_holder(self, queue: str, key: str, now: int) -> str | None:
        """The jid holding an unexpired lock on ``key`` in ``queue``, if any."""
        row = self._one(
            "SELECT jid FROM unique_locks WHERE queue = ? AND key = ? AND expires_at > ?",
            (queue, key, now),
        )
        return None if row is None else str(row[0])

    def take_lock(self, queue: str, key: str, jid: str, expires_at: int) -> bool:
        """Take (or take over an expired) lock; True when a new row was created."""
        existed = self._one("SELECT 1 FROM unique_locks WHERE queue = ? AND key = ?", (queue, key))
        self._cur.execute(
            "INSERT OR REPLACE INTO unique_locks (queue, key, jid, expires_at) VALUES (?, ?, ?, ?)",
            (queue, key, jid, expires_at),
        )
        return existed is None

    def release_lock(self, queue: str, key: str, jid: str) -> bool:
        """Release ``jid``'s lock on ``key`` (by primary key; a lock another job took over
        after it expired stays); whether one was released."""
        row = self._one(
            "DELETE FROM unique_locks WHERE queue = ? AND key = ? AND jid = ? RETURNING 1",
            (queue, key, jid),
        )
        return row is not None

    def release_locks_by_key(self, queue: str, keys: Sequence[str] | None) -> int:
        """Release locks of ``queue`` by key (``None``: every one); how many."""
        if keys is None:
            return len(self._all("DELETE FROM unique_locks WHERE queue = ? RETURNING 1", (queue,)))
        released = 0
        for key in dict.fromkeys(keys):
            row = self._one(
                "DELETE FROM unique_locks WHERE queue = ? AND key = ? RETURNING 1", (queue, key)
            )
            released += row is not None
        return released

    def release_locks_of_set(self, kind: SetName) -> list[str]:
        """Release the locks of every job in a set (before the set is cleared)."""
        rows = self._all(
            "DELETE FROM unique_locks WHERE jid IN (SELECT jid FROM sorted WHERE kind = ?)"
            " RETURNING queue",
            (int(kind),),
        )
        return [str(r[0]) for r in rows]

    def purge_locks(self, now: int) -> list[str]:
        """Delete expired locks; the queue of each one deleted."""
        rows = self._all("DELETE FROM unique_locks WHERE expires_at <= ? RETURNING queue", (now,))
        return [str(r[0]) for r in rows]

    def extend_reservation(self, jid: str, expires_at: int) -> None:
        """Move a reservation's expiry (TRACK SET reserve_until)."""
        self._cur.execute("UPDATE working SET expires_at = ? WHERE jid = ?", (expires_at, jid))

    # -- tracking ------------------------------------------------------------------

    def track_state(self, jid: str, state: str, now: int) -> None:
        """Record the lifecycle state of a tracked job, keeping its percent and desc."""
        self._cur.execute(
            "INSERT INTO tracking (jid, state, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (jid) DO UPDATE SET state = excluded.state,"
            " updated_at = excluded.updated_at",
            (jid, state, now),
        )

    def track_progress(self, jid: str, percent: int | None, desc: str | None, now: int) -> bool:
        """Set percent/desc of a tracked job; False when the job is not tracked."""
        row = self._one(
            'UPDATE tracking SET percent = coalesce(?, percent), "desc" = coalesce(?, "desc"),'
            " updated_at = ? WHERE jid = ? RETURNING 1",
            (percent, desc, now, jid),
        )
        return row is not None

    def tracking(self, jid: str) -> tuple[str, int | None, str | None, int] | None:
        """(state, percent, desc, updated_at) of a tracked job."""
        row = self._one(
            'SELECT state, percent, "desc", updated_at FROM tracking WHERE jid = ?', (jid,)
        )
        return None if row is None else (str(row[0]), row[1], row[2], int(row[3]))

    def purge_tracking(self, before: int, states: Sequence[str]) -> int:
        """Forget tracking records in final ``states`` not updated since ``before``."""
        marks = ", ".join("?" for _ in states)
        rows = self._all(
            f"DELETE FROM tracking WHERE updated_at < ? AND state IN ({marks}) RETURNING 1",  # noqa: S608
            (before, *states),
        )
        return len(rows)

    # -- cron ----------------------------------------------------------------------

    def cron_runs(self) -> dict[str, int]:
        """The last firing time of every cron entry ever registered, by key."""
        return {str(k): int(v) for k, v in self._all("SELECT key, last_at FROM cron_runs")}

    def set_cron_run(self, key: str, last_at: int) -> None:
        """Record a cron entry's latest firing (or its registration time)."""
        self._cur.execute(
            "INSERT INTO cron_runs (key, last_at) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET last_at = excluded.last_at",
            (key, last_at),
        )

    # -- batches -------------------------------------------------------------------

    def create_batch(self, row: BatchRow) -> None:
        """Store a new batch."""
        self._cur.execute(
            "INSERT INTO batches (bid, parent, description, created_at, updated_at,"
            " complete_job, success_job) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (row.bid, row.parent, row.description, row.created_at, row.updated_at,
             row.complete_job, row.success_job),
        )  # fmt: skip

    def batch(self, bid: str) -> BatchRow | None:
        """A batch by its bid."""
        row = self._one(f"SELECT {BATCH_COLUMNS} FROM batches WHERE bid = ?", (bid,))  # noqa: S608
        return None if row is None else BatchRow(*row)

    def batch_children(self, bid: str) -> list[BatchRow]:
        """The batches whose parent is ``bid``."""
        rows = self._all(f"SELECT {BATCH_COLUMNS} FROM batches WHERE parent = ?", (bid,))  # noqa: S608
        return [BatchRow(*row) for row in rows]

    def save_batch(self, row: BatchRow) -> None:
        """Write back a batch's mutable fields."""
        self._cur.execute(
            "UPDATE batches SET parent = ?, updated_at = ?, committed = ?, total = ?,"
            " pending = ?, failed = ?, complete_st = ?, success_st = ? WHERE bid = ?",
            (row.parent, row.updated_at, int(row.committed), row.total, row.pending, row.failed,
             row.complete_st, row.success_st, row.bid),
        )  # fmt: skip

    def mark_batch_failure(self, bid: str, jid: str) -> bool:
        """Remember that member ``jid`` failed; False when it already had."""
        row = self._one(
            "INSERT INTO batch_failed (bid, jid) VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING 1",
            (bid, jid),
        )
        return row is not None

    def clear_batch_failure(self, bid: str, jid: str) -> bool:
        """Forget member ``jid``'s failure (it succeeded); False when it never failed."""
        row = self._one(
            "DELETE FROM batch_failed WHERE bid = ? AND jid = ? RETURNING 1", (bid, jid)
        )
        return row is not None

    def purge_batches(self, open_before: int, done_before: int) -> int:
        """Delete batches left uncommitted, or finished, for too long."""
        rows = self._all(
            "DELETE FROM batches WHERE (committed = 0 AND updated_at < ?)"
            " OR (success_st = '2' AND updated_at < ?) RETURNING bid",
            (open_before, done_before),
        )
        self._cur.executemany("DELETE FROM batch_failed WHERE bid = ?", rows)
        return len(rows)

    def batch_counts(self) -> tuple[int, int]:
        """(open, committed) batches: read once at start-up."""
        row = self._one("SELECT count(*) - coalesce(sum(committed), 0), coalesce(sum(committed), 0)"
                        " FROM batches")  # fmt: skip
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    # -- job events (timeline) ------------------------------------------------------

    def add_events(self, rows: Sequence[tuple[str, int, str, str]]) -> None:
        """Record (jid, at, event, detail) rows of jobs' timelines."""
        self._cur.executemany(
            "INSERT INTO job_events (jid, at, event, detail) VALUES (?, ?, ?, ?)", rows
        )

    def delete_events(self, jids: Iterable[str]) -> None:
        """Forget the timelines of jobs that are gone."""
        self._cur.executemany(
            "DELETE FROM job_events WHERE jid = ?", [(jid,) for jid in dict.fromkeys(jids)]
        )

    def purge_events(self, before: int) -> int:
        """Delete events older than ``before`` (jobs long gone); how many."""
        self._cur.execute("DELETE FROM job_events WHERE at < ?", (before,))
        return int(self._conn.changes())

    # -- migration ledger ----------------------------------------------------------

    def migrated(self, target: str, jids: Sequence[str]) -> set[str]:
        """Which of ``jids`` were already handed to ``target``."""
        out: set[str] = set()
        for jid in jids:
            if self._one("SELECT 1 FROM migrated WHERE target = ? AND jid = ?", (target, jid)):
                out.add(jid)
        return out

    def record_migrated(self, target: str, jids: Sequence[str], now: int) -> None:
        """Remember that ``target`` accepted these jobs."""
        self._cur.executemany(
            "INSERT OR IGNORE INTO migrated (target, jid, at) VALUES (?, ?, ?)",
            [(target, jid, now) for jid in jids],
        )

    # -- counters ----------------------------------------------------------------

    def add_counts(self, totals: dict[str, int], days: dict[str, list[int]]) -> None:
        """Add to named totals (processed, failures, expired, …) and the per-day history."""
        self._cur.executemany(
            "INSERT INTO counters (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            list(totals.items()),
        )
        self._cur.executemany(
            "INSERT INTO history (day, processed, failures) VALUES (?, ?, ?)"
            " ON CONFLICT (day) DO UPDATE SET processed = processed + excluded.processed,"
            " failures = failures + excluded.failures",
            [(day, p, f) for day, (p, f) in days.items()],
        )

    def flush(self) -> None:
        """Delete everything: jobs, sets, reservations, counters, history, queues."""
        tables = (
            "queued", "sorted", "working", "counters", "history", "queues", "unique_locks",
            "tracking", "batches", "batch_failed", "job_events",
        )  # fmt: skip
        for table in tables:
            self._cur.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names


def _stored(rows: list[tuple[Any, ...]]) -> list[StoredJob]:
    return [StoredJob(int(i), int(s), str(j), bytes(p)) for i, s, j, p in rows]
