"""The admin tools against a running server: tables for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

import minifaktory
from minifaktory.app import RunningServer
from minifaktory.cli import main
from minifaktory.client import Client
from tests.test_webui import free_port


@pytest.fixture
def srv() -> Iterator[RunningServer]:
    with minifaktory.run(password="admin-pw", web_binding=f"127.0.0.1:{free_port()}") as server:
        yield server


def run(capsys: pytest.CaptureFixture[str], srv: RunningServer, *args: str) -> tuple[int, str]:
    web = f"http://127.0.0.1:{srv.server.web_port}"
    status = main([args[0], "--web", web, *args[1:]], environ={"FAKTORY_PASSWORD": "admin-pw"})
    return status, capsys.readouterr().out.strip()


def failing(srv: RunningServer, count: int) -> None:
    with Client(srv.url) as c:
        for i in range(count):
            c.push({"jid": f"failing-job-{i:03d}", "jobtype": "Boom", "args": [i],
                    "custom": {"tags": ["billing"] if i % 2 else ["eu"]}})  # fmt: skip
            c.fetch("default")
            c.fail(f"failing-job-{i:03d}", "KeyError", f"no key {i}")


def test_info_and_queues(capsys: pytest.CaptureFixture[str], srv: RunningServer) -> None:
    with Client(srv.url) as c:
        c.push_bulk([{"jobtype": "A", "queue": "mail"}] * 3)
    status, out = run(capsys, srv, "info")
    assert status == 0 and "enqueued     3" in out and "Faktory 1.10.0" in out
    status, out = run(capsys, srv, "info", "--json")
    assert json.loads(out)["faktory"]["queues"] == {"mail": 3}
    status, out = run(capsys, srv, "queues")
    assert out.splitlines()[0].split() == ["queue", "size", "latency", "s", "paused", "locks"]
    assert out.splitlines()[1].split()[:2] == ["mail", "3"]
    assert run(capsys, srv, "queue", "pause", "mail") == (0, "pause: mail")
    assert json.loads(run(capsys, srv, "queues", "--json")[1])[0]["paused"] is True
    assert run(capsys, srv, "queue", "clear", "mail")[0] == 0
    assert "mail" not in srv.info()["faktory"]["queues"]
    status, out = run(capsys, srv, "queue", "resume", "nope")
    assert (status, out) == (1, "minifaktory queue: 404 No such queue 'nope'")


def test_jobs_in_sets(capsys: pytest.CaptureFixture[str], srv: RunningServer) -> None:
    failing(srv, 6)
    status, out = run(capsys, srv, "jobs", "list", "retries", "--limit", "4")
    lines = out.splitlines()
    assert status == 0 and len(lines) == 5 and lines[0].split()[:3] == ["key", "jid", "at"]
    assert "KeyError: no key" in lines[1]
    tagged = json.loads(run(capsys, srv, "jobs", "list", "retries", "--tag", "billing",
                            "--json")[1])  # fmt: skip
    assert sorted(j["jid"] for j in tagged) == [f"failing-job-{i:03d}" for i in (1, 3, 5)]
    key_of_3 = next(j["key"] for j in tagged if j["jid"] == "failing-job-003")
    shown = json.loads(run(capsys, srv, "jobs", "show", "retries", "failing-job-002")[1])
    assert shown["job"]["failure"]["message"] == "no key 2" and shown["timeline"]
    assert run(capsys, srv, "jobs", "retry", "retries", "failing-job-000") == (
        0, "retry: 1 job(s)",
    )  # fmt: skip
    assert run(capsys, srv, "jobs", "kill", "retries", "failing-job-001", key_of_3)[1] == (
        "kill: 2 job(s)"
    )
    sets = srv.info()["faktory"]["sets"]
    assert (sets["retries"], sets["dead"]) == (3, 2)
    assert run(capsys, srv, "jobs", "delete", "dead", "--all") == (0, "delete: 2 job(s)")
    status, out = run(capsys, srv, "jobs", "delete", "retries")
    assert status == 1 and "which jobs?" in out
    status, out = run(capsys, srv, "jobs", "show", "retries", "no-such-jid")
    assert (status, out) == (1, "minifaktory jobs: no job no-such-jid in retries")


def test_jobs_in_a_queue(capsys: pytest.CaptureFixture[str], srv: RunningServer) -> None:
    with Client(srv.url) as c:
        c.push({"jid": "waiting-job-1", "jobtype": "Wait", "args": [1], "queue": "slow"})
        c.push({"jid": "waiting-job-2", "jobtype": "Wait", "args": [2], "queue": "slow"})
    status, out = run(capsys, srv, "jobs", "list", "slow")
    assert status == 0 and "waiting-job-1" in out and "priority" in out.splitlines()[0]
    status, out = run(capsys, srv, "jobs", "edit", "slow", "waiting-job-1", "--args", "[42]",
                      "--queue", "fast", "--json")  # fmt: skip
    assert status == 0, out
    edited = json.loads(out)
    assert (edited["args"], edited["queue"], edited["jobtype"]) == ([42], "fast", "Wait")
    with Client(srv.url) as c:
        job = c.fetch("fast")
    assert job is not None and job["args"] == [42] and job["jid"] == "waiting-job-1"
    status, out = run(capsys, srv, "jobs", "edit", "slow", "waiting-job-2", "--args", "{bad")
    assert status == 1 and "--args is not valid JSON" in out
    status, out = run(capsys, srv, "jobs", "edit", "slow", "waiting-job-2", "--priority", "12")
    assert status == 1 and out.startswith("minifaktory jobs: 400 ")
    assert run(capsys, srv, "jobs", "delete", "slow", "waiting-job-2") == (0, "delete: 1 job(s)")
    status, out = run(capsys, srv, "jobs", "retry", "slow", "x")
    assert status == 1 and "not a queue" in out


def test_workers(capsys: pytest.CaptureFixture[str], srv: RunningServer) -> None:
    with Client(srv.url, wid="w-admin-1") as worker:
        status, out = run(capsys, srv, "workers")
        assert status == 0 and "w-admin-1" in out
        assert run(capsys, srv, "workers", "quiet", "w-admin-1")[1] == (
            "quiet: w-admin-1 (on its next BEAT)"
        )
        assert worker.beat() == "quiet"
        assert run(capsys, srv, "workers", "terminate", "nope")[0] == 1
        assert run(capsys, srv, "workers", "terminate")[1].endswith("terminate WID|all")


def test_unreachable_and_unauthorised(
    capsys: pytest.CaptureFixture[str], srv: RunningServer
) -> None:
    web = f"http://127.0.0.1:{srv.server.web_port}"
    assert main(["info", "--web", web], environ={}) == 1
    assert "wants the web password" in capsys.readouterr().out
    assert main(["info", "--web", f"http://:admin-pw@127.0.0.1:{srv.server.web_port}"],
                environ={}) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["info", "--web", f"http://127.0.0.1:{free_port()}"], environ={}) == 1
    assert "cannot reach the Web UI" in capsys.readouterr().out
