"""Read-only queries for the Web UI, on a connection of their own.

Every method runs its query to completion and returns plain values, so no
cursor outlives the call (an open read cursor would pin the WAL and stop
checkpoints). Paging is by key (the row id / score of the last row shown),
never by OFFSET, so a page costs the same at row 10 and at row 1,000,000.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import apsw
import msgspec

from minifaktory.store import db
from minifaktory.store.store import BATCH_COLUMNS, BatchRow, SetName, WorkingRow


@dataclass(frozen=True, slots=True)
class Row:
    """One job on a page: its key for the next page and actions, and its stored JSON."""

    key: int
    score: int
    jid: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class InFlight(WorkingRow):
    """A reservation, with the tracked progress of its job if any."""

    percent: int | None = None
    desc: str | None = None


class Reader:
    """A read-only view of the database file."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self._conn = db.connect(path, "normal", readonly=True)
        #: A second connection for ``search``, which its caller runs on another thread.
        self._search: apsw.Connection | None = None

    def close(self) -> None:
        self._conn.close()
        if self._search is not None:
            self._search.close()

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return cast(list[tuple[Any, ...]], self._conn.execute(sql, params).fetchall())

    def queue_names(self) -> list[str]:
        """Every queue that has (or had) jobs, by name."""
        return [str(r[0]) for r in self._all("SELECT name FROM queues ORDER BY name")]

    def queue_page(self, queue: str, after: int | None, limit: int) -> list[Row]:
        """Jobs of a queue in fetch order (priority, then FIFO), after row ``after``."""
        if after is None:
            rows = self._all(
                "SELECT id, priority, jid, payload FROM queued WHERE queue = +?"
                " ORDER BY priority DESC, id LIMIT ?",
                (queue, limit),
            )
        else:
            rows = self._all(
                "SELECT q.id, q.priority, q.jid, q.payload FROM queued q,"
                " (SELECT priority AS p, id AS i FROM queued WHERE id = ?) last"
                " WHERE q.queue = +?"
                " AND (q.priority < last.p OR (q.priority = last.p AND q.id > last.i))"
                " ORDER BY q.priority DESC, q.id LIMIT ?",
                (after, queue, limit),
            )
        return [Row(int(i), int(p), str(j), bytes(b)) for i, p, j, b in rows]

    def set_page(self, kind: SetName, after: tuple[int, int] | None, limit: int) -> list[Row]:
        """Entries of a sorted set by score, after (score, id) ``after``."""
        start = after if after is not None else (-(2**62), -(2**62))
        rows = self._all(
            "SELECT id, score, jid, payload FROM sorted WHERE kind = ? AND (score, id) > (?, ?)"
            " ORDER BY score, id LIMIT ?",
            (int(kind), start[0], start[1], limit),
        )
        return [Row(int(i), int(s), str(j), bytes(b)) for i, s, j, b in rows]

    def search(
        self, kind: SetName, after: tuple[int, int] | None, limit: int, text: str, tag: str
    ) -> list[Row]:
        """Like ``set_page``, but only entries whose JSON contains ``text`` (jobtype, jid,
        error, args, custom) and, with ``tag``, whose ``custom.tags`` holds exactly that
        tag. It may read the whole set, so it has a connection of its own: call it from
        one other thread at a time, never from the event loop."""
        if self._search is None:
            self._search = db.connect(self.path, "normal", readonly=True)
        start = after if after is not None else (-(2**62), -(2**62))
        # The tag as it appears inside the stored JSON, to skip most rows before parsing.
        needle = msgspec.json.encode(tag)[1:-1]
        rows: list[tuple[Any, ...]] = self._search.execute(
            "SELECT id, score, jid, payload FROM sorted WHERE kind = ? AND (score, id) > (?, ?)"
            " AND (? = '' OR instr(payload, ?) > 0)"
            " AND (? = '' OR (instr(payload, ?) > 0 AND json_valid(CAST(payload AS TEXT))"
            "  AND EXISTS (SELECT 1 FROM json_each(CAST(payload AS TEXT), '$.custom.tags')"
            "   WHERE value = ?)))"
            " ORDER BY score, id LIMIT ?",
            (int(kind), start[0], start[1], text, text.encode(), tag, needle, tag, limit),
        ).fetchall()
        return [Row(int(i), int(s), str(j), bytes(b)) for i, s, j, b in rows]

    def whole_queue(self, queue: str, batch: int = 500) -> Iterator[Row]:
        """Every job of a queue in fetch order, read ``batch`` rows per query."""
        after: int | None = None
        while rows := self.queue_page(queue, after, batch):
            yield from rows
            after = rows[-1].key

    def whole_set(self, kind: SetName, batch: int = 500) -> Iterator[Row]:
        """Every entry of a set by score, read ``batch`` rows per query."""
        after: tuple[int, int] | None = None
        while rows := self.set_page(kind, after, batch):
            yield from rows
            after = (rows[-1].score, rows[-1].key)

    def set_entry(self, kind: SetName, key: int) -> Row | None:
        """One entry of a set by its row id."""
        rows = self._all(
            "SELECT id, score, jid, payload FROM sorted WHERE kind = ? AND id = ?", (int(kind), key)
        )
        return (
            Row(int(rows[0][0]), int(rows[0][1]), str(rows[0][2]), bytes(rows[0][3]))
            if rows
            else None
        )

    def queued_job(self, key: int) -> tuple[str, Row] | None:
        """A queued job by row id, with its queue."""
        rows = self._all(
            "SELECT queue, id, priority, jid, payload FROM queued WHERE id = ?", (key,)
        )
        if not rows:
            return None
        q, i, p, j, b = rows[0]
        return str(q), Row(int(i), int(p), str(j), bytes(b))

    def working(self, limit: int) -> list[InFlight]:
        """Reservations by expiry, with the progress of tracked jobs."""
        rows = self._all(
            "SELECT w.jid, w.queue, w.wid, w.reserved_at, w.expires_at, w.payload,"
            ' t.percent, t."desc" FROM working w LEFT JOIN tracking t ON t.jid = w.jid'
            " ORDER BY w.expires_at LIMIT ?",
            (limit,),
        )
        return [
            InFlight(
                str(a), str(b), str(c), int(d), int(e), bytes(f), p, None if s is None else str(s)
            )
            for a, b, c, d, e, f, p, s in rows
        ]

    def locks(self, queue: str, limit: int) -> list[tuple[str, str, int]]:
        """(key, jid, expires_at) of the uniqueness locks of ``queue``, soonest expiry first."""
        rows = self._all(
            "SELECT key, jid, expires_at FROM unique_locks WHERE queue = ?"
            " ORDER BY expires_at LIMIT ?",
            (queue, limit),
        )
        return [(str(k), str(j), int(e)) for k, j, e in rows]

    def events(self, jid: str, limit: int = 200) -> list[tuple[int, str, str]]:
        """(at, event, detail) of a job's timeline, oldest first (the latest ``limit``)."""
        rows = self._all(
            "SELECT at, event, detail FROM (SELECT rowid, at, event, detail FROM job_events"
            " WHERE jid = ? ORDER BY at DESC, rowid DESC LIMIT ?) ORDER BY at, rowid",
            (jid, limit),
        )
        return [(int(a), str(e), str(d)) for a, e, d in rows]

    def batches(self, after: tuple[int, str] | None, limit: int) -> list[BatchRow]:
        """Batches, newest first, after (created_at, bid) ``after``."""
        start = after if after is not None else (2**63 - 1, "")
        rows = self._all(
            f"SELECT {BATCH_COLUMNS} FROM batches WHERE (created_at, bid) < (?, ?)"  # noqa: S608
            " ORDER BY created_at DESC, bid DESC LIMIT ?",
            (start[0], start[1], limit),
        )
        return [BatchRow(*row) for row in rows]

    def batch(self, bid: str) -> tuple[BatchRow, list[BatchRow], list[str]] | None:
        """A batch, its child batches and the jids of its members that failed."""
        rows = self._all(f"SELECT {BATCH_COLUMNS} FROM batches WHERE bid = ?", (bid,))  # noqa: S608
        if not rows:
            return None
        children = self._all(
            f"SELECT {BATCH_COLUMNS} FROM batches WHERE parent = ? LIMIT 500",  # noqa: S608
            (bid,),
        )
        failed = self._all("SELECT jid FROM batch_failed WHERE bid = ? LIMIT 500", (bid,))
        return BatchRow(*rows[0]), [BatchRow(*c) for c in children], [str(f[0]) for f in failed]

    def history(self, first_day: str) -> dict[str, tuple[int, int]]:
        """Per-day (processed, failures) from ``first_day`` on."""
        rows = self._all(
            "SELECT day, processed, failures FROM history WHERE day >= ?", (first_day,)
        )
        return {str(d): (int(p), int(f)) for d, p, f in rows}

    def file_sizes(self) -> dict[str, int]:
        """Sizes in bytes of the database file and its WAL."""
        out: dict[str, int] = {}
        for suffix in ("", "-wal"):
            target = Path(f"{self.path}{suffix}")
            out["db" if not suffix else "wal"] = target.stat().st_size if target.exists() else 0
        return out


__all__ = ["InFlight", "Reader", "Row", "apsw"]
