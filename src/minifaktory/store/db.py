"""Opening the SQLite file: pragmas, durability, and the schema version check."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

import apsw

from minifaktory.errors import StoreError
from minifaktory.store import schema

#: ``full`` fsyncs on every commit (survives power loss); ``normal`` only
#: survives a crash of the process (WAL with synchronous=NORMAL).
SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}
#: Page cache in KiB (negative = KiB, as SQLite counts it): keeps a big queue's head hot.
CACHE_SIZE = -4 * 1024
#: What a server needs of the file system, for error messages.
NEEDS_WRITE = (
    "the server must be able to write the file and create its -wal and -shm files beside it"
)


def connect(path: Path | str, durability: str, *, readonly: bool = False) -> apsw.Connection:
    """Open (and for writers, create and migrate) the database at ``path``."""
    if durability not in SYNCHRONOUS:
        raise StoreError(f"unknown durability {durability!r}: use 'full' or 'normal'")
    target = str(path)
    if target != ":memory:" and not readonly:
        if Path(target).is_dir():
            raise StoreError(f"cannot open database {target}: it is a directory")
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
            _check_writable(conn, target)
    except (apsw.ReadOnlyError, apsw.PermissionsError) as exc:
        raise StoreError(f"cannot open database {target}: {exc}; {NEEDS_WRITE}") from None
    except apsw.Error as exc:
        raise StoreError(f"cannot open database {target}: {exc}") from exc
    return conn


def _check_writable(conn: apsw.Connection, target: str) -> None:
    """Take the write lock once, so that a locked or read-only file fails at start-up
    with a clear message rather than at the first command."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("COMMIT")
    except apsw.BusyError:
        raise StoreError(
            f"cannot open database {target}: another program holds its write lock "
            "(an open transaction in an SQLite shell or tool?); close it and start again"
        ) from None


def hold(path: Path | str) -> int | None:
    """Mark the file as served by this process (an exclusive ``flock``, released when
    the returned descriptor is closed); StoreError when another server holds it."""
    if str(path) == ":memory:":
        return None
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot open database {path}: {_os_reason(exc)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StoreError(f"{path} is in use by another minifaktory server: stop it first") from None
    return fd


def _os_reason(exc: OSError) -> str:
    """An OSError in words for an operator, with what to do for the usual causes."""
    if exc.errno == errno.EISDIR:
        return "it is a directory"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied; {NEEDS_WRITE}"
    if exc.errno == errno.EROFS:
        return f"it is on a read-only file system; {NEEDS_WRITE}"
    return exc.strerror or str(exc)


def in_use(path: Path | str) -> bool:
    """Whether a server holds the file (see ``hold``)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def backup(source: Path | str, target: Path) -> int:
    """Copy the database at ``source`` into the new file ``target``, consistently, while a
    server may be writing it (one read transaction; the copy is compacted); its size."""
    partial = target.with_name(f".{target.name}.partial")
    try:
        partial.unlink(missing_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot write {target}: {exc}") from exc
    try:
        conn = apsw.Connection(str(source), flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error as exc:
        raise StoreError(f"cannot open database {source}: {exc}") from exc
    try:
        conn.set_busy_timeout(5_000)
        conn.execute("VACUUM INTO ?", (str(partial),))
    except apsw.Error as exc:
        partial.unlink(missing_ok=True)
        raise StoreError(f"cannot write {target}: {exc}") from exc
    finally:
        conn.close()
    try:
        _durable_rename(partial, target)
    except OSError as exc:
        raise StoreError(f"cannot write {target}: {exc}") from exc
    return target.stat().st_size


def check(path: Path) -> str:
    """SQLite's integrity check of a file, and its schema version: '' when it is sound."""
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error as exc:
        return f"cannot open {path}: {exc}"
    try:
        found = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
        if found != ["ok"]:
            return f"{path} is damaged: {'; '.join(found[:3])}"
        app_id = conn.execute("PRAGMA application_id").fetchone()
        if schema.version(conn) == 0 or not app_id or app_id[0] != schema.APPLICATION_ID:
            return f"{path} is not a minifaktory database"
        if schema.version(conn) > schema.SCHEMA_VERSION:
            return f"{path} was written by a newer minifaktory (schema {schema.version(conn)})"
    except apsw.Error as exc:
        return f"{path} is not a SQLite database: {exc}"
    finally:
        conn.close()
    return ""


def restore(backup_file: Path, target: Path) -> None:
    """Replace the database ``target`` (no server may hold it) with a copy of a backup."""
    partial = target.with_name(f".{target.name}.partial")
    with backup_file.open("rb") as src, partial.open("wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    for suffix in ("-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    _durable_rename(partial, target)


def _durable_rename(partial: Path, target: Path) -> None:
    with partial.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(partial, target)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
