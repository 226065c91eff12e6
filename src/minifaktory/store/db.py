"""Opening the SQLite file: pragmas, durability, and the schema version check."""

from __future__ import annotations

from pathlib import Path

import apsw

from minifaktory.errors import StoreError
from minifaktory.store import schema

#: ``full`` fsyncs on every commit (survives power loss); ``normal`` only
#: survives a crash of the process (WAL with synchronous=NORMAL).
SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}
#: Page cache in KiB (negative = KiB, as SQLite counts it): keeps a big queue's head hot.
CACHE_SIZE = -32 * 1024


def connect(path: Path | str, durability: str, *, readonly: bool = False) -> apsw.Connection:
    """Open (and for writers, create and migrate) the database at ``path``."""
    if durability not in SYNCHRONOUS:
        raise StoreError(f"unknown durability {durability!r}: use 'full' or 'normal'")
    target = str(path)
    if target != ":memory:" and not readonly:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
    flags = (
        apsw.SQLITE_OPEN_READONLY
        if readonly
        else apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
    )
    try:
        conn = apsw.Connection(target, flags=flags)
        conn.set_busy_timeout(5_000)
        if not readonly:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={SYNCHRONOUS[durability]}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute(f"PRAGMA cache_size={CACHE_SIZE}")
        if not readonly:
            schema.migrate(conn)
    except apsw.Error as exc:
        raise StoreError(f"cannot open database {target}: {exc}") from exc
    return conn
