"""Read-only queries for the Web UI, on a connection of their own.

Every method runs its query to completion and returns plain values, so no
cursor outlives the call (an open read cursor would pin the WAL and stop
checkpoints). Paging is by key (the row id / score of the last row shown),
never by OFFSET, so a page costs the same at row 10 and at row 1,000,000.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import apsw

from minifaktory.store import db
from minifaktory.store.store import SetName


@dataclass(frozen=True, slots=True)
class Row:
    """One job on a page: its key for the next page and actions, and its stored JSON."""

    key: int
    score: int
    jid: str
    payload: bytes


class Reader:
    """A read-only view of the database file."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self._conn = db.connect(path, "normal", readonly=True)

    def close(self) -> None:
        self._conn.close()

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return cast(list[tuple[Any, ...]], self._conn.execute(sql, params).fetchall())

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

    def set_page(
        self, kind: SetName, after: tuple[int, int] | None, limit: int, text: str = ""
    ) -> list[Row]:
        """Entries of a sorted set by score, after (score, id) ``after``; with ``text``,
        only entries whose JSON contains it (jobtype, jid, error, args, custom)."""
        start = after if after is not None else (-(2**62), -(2**62))
        rows = self._all(
            "SELECT id, score, jid, payload FROM sorted WHERE kind = ? AND (score, id) > (?, ?)"
            " AND (? = '' OR instr(payload, ?) > 0) ORDER BY score, id LIMIT ?",
            (int(kind), start[0], start[1], text, text.encode(), limit),
        )
        return [Row(int(i), int(s), str(j), bytes(b)) for i, s, j, b in rows]

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

    def working(self, limit: int) -> list[tuple[str, str, str, int, int, bytes]]:
        """Reservations by expiry: (jid, queue, wid, reserved_at, expires_at, payload)."""
        rows = self._all(
            "SELECT jid, queue, wid, reserved_at, expires_at, payload FROM working"
            " ORDER BY expires_at LIMIT ?",
            (limit,),
        )
        return [(str(a), str(b), str(c), int(d), int(e), bytes(f)) for a, b, c, d, e, f in rows]

    def locks(self, queue: str, limit: int) -> list[tuple[str, str, int]]:
        """(key, jid, expires_at) of the uniqueness locks of ``queue``, soonest expiry first."""
        rows = self._all(
            "SELECT key, jid, expires_at FROM unique_locks WHERE queue = ?"
            " ORDER BY expires_at LIMIT ?",
            (queue, limit),
        )
        return [(str(k), str(j), int(e)) for k, j, e in rows]

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


__all__ = ["Reader", "Row", "apsw"]
