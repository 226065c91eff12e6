"""Start-up on a file the server cannot use, and a disk that fills up while it serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from minifaktory.store import schema
from tests.conftest import WireClient, job
from tests.crash_harness import server_process

pytestmark = pytest.mark.crash

ROOT = os.geteuid() == 0


def start(db: Path, *, timeout: float = 30) -> tuple[int, str]:
    """Run the server on ``db`` until it exits (it should refuse to start).

    As root, without the capabilities that let root ignore file modes.
    """
    cmd = [sys.executable, "-m", "minifaktory", "-b", "127.0.0.1:0", "-w", "127.0.0.1:0",
           "--db", str(db)]  # fmt: skip
    if ROOT:
        cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]
    env = {**os.environ, "FAKTORY_ENV": "development", "HOME": str(db.parent)}
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the server started on a file it should refuse: {exc.stderr!r}")
    return done.returncode, done.stderr


def refused(db: Path) -> str:
    """The one-line reason the server gave for not starting on ``db``."""
    status, err = start(db)
    assert status == 1, err
    assert "Traceback" not in err, err
    reasons = [line for line in err.splitlines() if "Unable to run minifaktory" in line]
    assert len(reasons) == 1, err
    return reasons[0]


def make_db(db: Path) -> None:
    """A valid, current database, left by a clean shutdown (no -wal or -shm file)."""
    with server_process(db, "full") as (proc, _):
        proc.terminate()
        proc.wait(10)
    assert not Path(f"{db}-wal").exists()


def test_garbage_file(tmp_path: Path) -> None:
    db = tmp_path / "garbage.db"
    db.write_bytes(os.urandom(8192))
    before = db.read_bytes()
    assert "file is not a database" in refused(db)
    assert db.read_bytes() == before


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    assert "it is a directory" in refused(tmp_path / "dir.db")


def test_newer_and_foreign_files(tmp_path: Path) -> None:
    newer, foreign = tmp_path / "newer.db", tmp_path / "foreign.db"
    conn = apsw.Connection(str(newer))
    conn.execute(f"PRAGMA application_id={schema.APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version={schema.SCHEMA_VERSION + 1}")
    conn.close()
    conn = apsw.Connection(str(foreign))
    conn.execute("CREATE TABLE mine (x); INSERT INTO mine VALUES (1)")
    conn.close()
    assert "newer than this minifaktory understands" in refused(newer)
    assert "not created by minifaktory" in refused(foreign)
    conn = apsw.Connection(str(foreign))
    assert conn.execute("SELECT x FROM mine").fetchall() == [(1,)]
    conn.close()


def test_file_served_by_another_server(tmp_path: Path) -> None:
    db = tmp_path / "served.db"
    with server_process(db, "full") as (_, port):
        assert "in use by another minifaktory server" in refused(db)
        c = WireClient("127.0.0.1", port)
        assert c.hello() == b"+OK\r\n"
        assert c.call("PUSH " + job()) == b"+OK\r\n"
        c.close()


def test_file_locked_by_another_program(tmp_path: Path) -> None:
    db = tmp_path / "locked.db"
    make_db(db)
    other = apsw.Connection(str(db))
    other.execute("BEGIN IMMEDIATE")
    try:
        reason = refused(db)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert "another program holds its write lock" in reason


def test_read_only_file_and_directory(tmp_path: Path) -> None:
    db = tmp_path / "ro.db"
    make_db(db)
    db.chmod(0o444)
    assert "permission denied; the server must be able to write the file" in refused(db)
    db.chmod(0o644)
    tmp_path.chmod(0o555)  # the file is writable, but its -wal file cannot be created
    try:
        reason = refused(db)
    finally:
        tmp_path.chmod(0o755)
    assert "readonly database; the server must be able to write the file" in reason


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, mounted for this test (root only)."""
    if not ROOT:
        pytest.skip("mounting a small file system needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if made.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr!r}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def remount(mount: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], check=True)


def test_read_only_file_system(small_disk: Path) -> None:
    db = small_disk / "ro.db"
    make_db(db)
    remount(small_disk, "ro")
    reason = refused(db)
    assert "read-only file system; the server must be able to write the file" in reason


def test_full_disk_answers_err_and_recovers(small_disk: Path) -> None:
    db = small_disk / "full.db"
    pushed: list[str] = []
    refused_pushes = 0
    body = "x" * 4000
    with server_process(db, "full") as (proc, port):
        c = WireClient("127.0.0.1", port)
        assert c.hello(wid="w1") == b"+OK\r\n"
        for i in range(2000):
            jid = f"fill-{i:05d}"
            reply = c.call("PUSH " + job(jid=jid, args=[body]))
            if reply == b"+OK\r\n":
                pushed.append(jid)
                continue
            assert reply.startswith(b"-ERR storage error: commit failed: database or disk is full")
            refused_pushes += 1
            if refused_pushes >= 5:
                break
        assert refused_pushes == 5, "the disk never filled"
        assert len(pushed) > 10
        # Still serving while full: reads work, and the queue holds what was acknowledged.
        info = c.json("INFO")["faktory"]
        assert info["queues"]["default"] == len(pushed)
        assert b"storage error" in c.call("PUSH " + job(jid="while-full", args=[body]))
        # Space comes back: the same connection goes on, nothing was lost.
        remount(small_disk, "size=8m")
        for i in range(20):
            jid = f"after-{i:03d}"
            assert c.call("PUSH " + job(jid=jid, args=[body])) == b"+OK\r\n"
            pushed.append(jid)
        fetched = json.loads(c.call("FETCH default").split(b"\r\n", 1)[1])["jid"]
        assert c.call(f'ACK {{"jid":"{fetched}"}}') == b"+OK\r\n"
        c.close()
        assert proc.poll() is None
    with server_process(db, "full") as (_, port):
        c = WireClient("127.0.0.1", port)
        c.hello()
        assert c.json("INFO")["faktory"]["queues"]["default"] == len(pushed) - 1
        c.close()
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = {str(r[0]) for r in conn.execute("SELECT jid FROM queued")}
    finally:
        conn.close()
    assert set(pushed) - {fetched} <= stored
    assert "while-full" not in stored
