"""``minifaktory migrate``: jobs move to a second server, re-runs send only the rest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import minifaktory
from minifaktory.cli import main
from minifaktory.client import Client

FUTURE = "2999-01-01T00:00:00Z"


def fill(path: Path) -> None:
    """A source database with queued, scheduled, retrying and dead jobs; then stopped."""
    with minifaktory.run(db_path=path) as srv, Client(srv.url) as c:
        c.push_bulk([{"jid": f"queued-job-{i:03d}", "jobtype": "Q", "args": [i], "queue": "mail",
                      "custom": {"tags": ["x"]}} for i in range(7)])  # fmt: skip
        c.push({"jid": "urgent-job-1", "jobtype": "Q", "queue": "mail", "priority": 9})
        c.push({"jid": "scheduled-job-1", "jobtype": "S", "at": FUTURE, "retry": 3})
        c.push({"jid": "retrying-job-1", "jobtype": "R", "queue": "work", "retry": 5})
        c.fetch("work")
        c.fail("retrying-job-1", "IOError", "disk on fire")
        c.push({"jid": "dead-job-0002", "jobtype": "D", "queue": "work"})
        c.fetch("work")
        c.fail("dead-job-0002", "E", "m")
        c.mutate({"cmd": "kill", "target": "retries", "filter": {"jids": ["dead-job-0002"]}})


def migrate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["migrate", *args], environ={})
    out = capsys.readouterr()
    return status, out.out.strip(), out.err


def test_jobs_move_and_a_rerun_skips_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "source.db"
    fill(source)
    dead_file = tmp_path / "dead.jsonl"
    with minifaktory.run(password="target-pw") as target:
        to = f"tcp://:target-pw@{target.host}:{target.port}"
        status, out, err = migrate(capsys, "--to", to, "--db", str(source), "--dry-run")
        assert (status, out) == (0, "8 queued, 1 scheduled, 1 retries to move")
        status, out, err = migrate(capsys, "--to", to, "--db", str(source),
                                   "--dead-file", str(dead_file), "--batch", "3")  # fmt: skip
        assert status == 0, out
        assert out.splitlines()[0] == (
            f"moved 8 queued, 1 scheduled, 1 retries to tcp://{target.host}:{target.port}"
        )
        assert "10/10 jobs" in err  # progress
        state = target.info()["faktory"]
        assert state["queues"] == {"mail": 8} and state["sets"]["scheduled"] == 2
        with Client(to) as c:
            first = c.fetch("mail")
            assert first is not None and first["jid"] == "urgent-job-1"  # fetch order kept
            second = c.fetch("mail")
            assert second is not None and second["jid"] == "queued-job-000"
            assert second["custom"] == {"tags": ["x"]} and second["created_at"]
        dead = [json.loads(line) for line in dead_file.read_text().splitlines()]
        assert [d["jid"] for d in dead] == ["dead-job-0002"]
        status, out, _ = migrate(capsys, "--to", to, "--db", str(source),
                                 "--dead-file", str(dead_file))  # fmt: skip
        assert status == 0 and out.splitlines()[:2] == [
            f"moved 0 queued, 0 scheduled, 0 retries to tcp://{target.host}:{target.port}",
            "10 moved by an earlier run were skipped",
        ]
        assert target.info()["faktory"]["sets"]["scheduled"] == 2
    with minifaktory.run(db_path=source) as again:
        assert again.info()["faktory"]["queues"]["mail"] == 8  # the source keeps its jobs


def test_the_retry_keeps_its_failure_and_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "source.db"
    fill(source)
    with minifaktory.run() as target:
        to = f"tcp://{target.host}:{target.port}"
        assert migrate(capsys, "--to", to, "--db", str(source),
                       "--dead-file", str(tmp_path / "d.jsonl"))[0] == 0  # fmt: skip
        with Client(to) as c:
            c.mutate({"cmd": "requeue", "target": "scheduled",
                      "filter": {"jids": ["retrying-job-1"]}})  # fmt: skip
            job = c.fetch("work")
        assert job is not None and job["retry"] == 5
        assert job["failure"]["message"] == "disk on fire" and job["failure"]["retry_count"] == 0


def test_refused_jobs_stay_and_go_on_the_next_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "source.db"
    with minifaktory.run(db_path=source) as srv, Client(srv.url) as c:
        for i in range(4):
            c.push({"jid": f"unique-job-{i}", "jobtype": "U", "args": [i % 2],
                    "custom": {"unique_for": 600}} if i < 2 else {"jid": f"plain-job-{i}",
                    "jobtype": "P"})  # fmt: skip
    with minifaktory.run() as target, Client(target.url) as t:
        t.push({"jobtype": "U", "args": [0], "custom": {"unique_for": 600}})  # holds a lock
        to = f"tcp://{target.host}:{target.port}"
        status, out, _ = migrate(capsys, "--to", to, "--db", str(source),
                                 "--dead-file", str(tmp_path / "d.jsonl"))  # fmt: skip
        assert status == 1
        assert "1 refused by the target" in out and "unique-job-0: NOTUNIQUE" in out, out
        t.flush()  # the lock is gone now
        status, out, _ = migrate(capsys, "--to", to, "--db", str(source),
                                 "--dead-file", str(tmp_path / "d.jsonl"))  # fmt: skip
        assert status == 0 and out.startswith("moved 1 queued") and "3 moved by an earlier" in out


def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "source.db"
    fill(source)
    status, out, _ = migrate(capsys, "--to", "tcp://127.0.0.1:1", "--db", str(source))
    assert status == 1 and "cannot connect" in out
    status, out, _ = migrate(capsys, "--to", "http://x", "--db", str(source))
    assert status == 1 and "scheme" in out
    status, out, _ = migrate(capsys, "--to", "tcp://x:1", "--db", str(tmp_path / "none.db"))
    assert (status, out) == (1, f"minifaktory migrate: no database at {tmp_path / 'none.db'}")
    with minifaktory.run(db_path=source), minifaktory.run() as target:
        status, out, _ = migrate(capsys, "--to", target.url, "--db", str(source))
        assert status == 1 and "in use by another minifaktory server" in out
