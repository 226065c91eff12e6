"""``minifaktory backup`` and ``restore``: a consistent copy under load, and back again."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import minifaktory
from minifaktory.cli import main
from minifaktory.client import Client
from minifaktory.errors import StoreError


def tool(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = main(list(args), environ={})
    return status, capsys.readouterr().out.strip()


def test_backup_under_load_then_restore(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    live = tmp_path / "live.db"
    copy = tmp_path / "backups" / "copy.db"
    copy.parent.mkdir()
    stop = threading.Event()
    with minifaktory.run(db_path=live, durability="normal") as srv:
        with Client(srv.url) as c:
            c.push_bulk([{"jobtype": "Before", "args": [i]} for i in range(500)])

        def keep_pushing() -> None:
            with Client(srv.url) as pusher:
                while not stop.is_set():
                    pusher.push_bulk([{"jobtype": "During", "args": [1]}] * 20)

        pusher = threading.Thread(target=keep_pushing)
        pusher.start()
        try:
            status, line = tool(capsys, "backup", str(copy), "--db", str(live))
        finally:
            stop.set()
            pusher.join(30)
        assert status == 0 and line.startswith(f"backed up {live} to {copy}"), line
        assert tool(capsys, "backup", str(copy), "--db", str(live))[1].endswith(
            "exists: choose another path or pass --force"
        )
        status, line = tool(capsys, "restore", str(copy), "--db", str(live))
        assert status == 1 and "in use by a running server" in line
        served = srv.info()["faktory"]["queues"]["default"]
    assert not list(copy.parent.glob(".*partial"))
    restored = tmp_path / "restored.db"
    status, line = tool(capsys, "restore", str(copy), "--db", str(restored))
    assert status == 0, line
    with minifaktory.run(db_path=restored) as srv:
        backed_up = srv.info()["faktory"]["queues"]["default"]
    # A consistent moment: whole PUSHB batches only, taken while pushing went on.
    assert 500 <= backed_up <= served and (backed_up - 500) % 20 == 0
    status, line = tool(capsys, "restore", str(copy), "--db", str(restored))
    assert status == 0 and "previous file is kept" in line
    assert (tmp_path / "restored.db.before-restore").exists()


def test_bad_paths_and_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    live = tmp_path / "live.db"
    with minifaktory.run(db_path=live) as srv:
        with Client(srv.url) as c:
            c.push({"jobtype": "Kept"})
        blocker = tmp_path / "a-file"
        blocker.write_text("x")
        status, line = tool(capsys, "backup", str(blocker / "copy.db"), "--db", str(live))
        assert status == 1 and line.startswith("minifaktory backup: cannot write"), line
        assert srv.info()["faktory"]["queues"]["default"] == 1  # serving on, nothing lost
    status, line = tool(capsys, "backup", str(tmp_path / "x.db"), "--db", str(tmp_path / "none"))
    assert (status, line) == (1, f"minifaktory backup: no database at {tmp_path / 'none'}")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite at all" * 100)
    status, line = tool(capsys, "restore", str(garbage), "--db", str(live))
    assert status == 1 and "not a SQLite database" in line, line
    status, line = tool(capsys, "restore", str(tmp_path / "missing"), "--db", str(live))
    assert status == 1 and "no file" in line


def test_a_second_server_on_the_same_file_is_refused(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    refused = pytest.raises(StoreError, match="in use by another minifaktory server")
    with minifaktory.run(db_path=live), refused, minifaktory.run(db_path=live):
        pass
    with minifaktory.run(db_path=live):  # released when the first one stopped
        pass
