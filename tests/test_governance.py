"""Worker limits (``[workers]``) and the report on workers that vanish holding jobs."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

import minifaktory
from minifaktory.clock import FakeClock
from minifaktory.config import load_config
from minifaktory.errors import ConfigError
from minifaktory.limits import WorkerLimits, parse_limits
from tests.conftest import WireClient, job

LIMITS = {
    "workers": {
        "max_rss_mb": 100,
        "max_job_runtime": 60,
        "queues": {"reports": {"max_job_runtime": 600}},
        "jobtypes": {"Quick": {"max_job_runtime": 5}},
    }
}


def test_parsing() -> None:
    limits = parse_limits(LIMITS)
    assert limits.max_rss_kb == 100 * 1024
    assert limits.runtime_limit("default", "Other") == 60 * 10**9
    assert limits.runtime_limit("reports", "Other") == 600 * 10**9
    assert limits.runtime_limit("reports", "Quick") == 5 * 10**9  # jobtype beats queue
    assert parse_limits({}) == WorkerLimits()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"workers": {"max_rss_mb": 0}}, "max_rss_mb must be a number greater than 0"),
        ({"workers": {"max_rss_mb": "1G"}}, "max_rss_mb must be a number greater than 0"),
        ({"workers": {"max_job_runtime": True}}, "max_job_runtime must be a number"),
        ({"workers": {"maxrss": 1}}, "unknown key 'maxrss'"),
        ({"workers": {"queues": {"q": {"limit": 1}}}}, "[workers.queues.q]: expected only"),
        ({"workers": []}, "[workers] must be a table"),
    ]
    for bad, message in cases:
        with pytest.raises(ConfigError) as raised:
            parse_limits(bad)
        assert message in str(raised.value)


def beat(c: WireClient, wid: str, rss_kb: int = 0) -> bytes:
    return c.call("BEAT " + json.dumps({"wid": wid, "rss_kb": rss_kb}))


def test_a_fat_worker_is_told_to_terminate(caplog: pytest.LogCaptureFixture) -> None:
    with minifaktory.run(toml=LIMITS) as srv:
        c = WireClient(srv.host, srv.port)
        c.hello(v=2, wid="w-fat", hostname="box", pid=7)
        assert beat(c, "w-fat", 90 * 1024) == b"+OK\r\n"
        with caplog.at_level(logging.WARNING):
            assert beat(c, "w-fat", 150 * 1024) == b'$21\r\n{"state":"terminate"}\r\n'
        assert "worker w-fat (box:7) uses 150 MB, over [workers] max_rss_mb = 100" in caplog.text
        assert beat(c, "w-fat", 150 * 1024) == b'$21\r\n{"state":"terminate"}\r\n'
        assert srv.server.services is not None and srv.server.services.governor is not None
        assert srv.server.services.governor.terminated == {"rss": 1, "runtime": 0}
        c.close()


def test_the_debug_page_counts_them() -> None:
    import httpx

    from tests.test_webui import free_port

    with minifaktory.run(toml=LIMITS, web_binding=f"127.0.0.1:{free_port()}") as srv:
        c = WireClient(srv.host, srv.port)
        c.hello(v=2, wid="w-fat-2")
        beat(c, "w-fat-2", 500 * 1024)
        debug = httpx.get(f"http://127.0.0.1:{srv.server.web_port}/api/debug").json()
        assert debug["workers_terminated"] == {"rss": 1, "runtime": 0}
        c.close()


def test_a_worker_stuck_in_a_job_is_told_to_terminate(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    with minifaktory.run(toml=LIMITS, clock=clock) as srv:
        c = WireClient(srv.host, srv.port)
        c.hello(v=2, wid="w-slow", hostname="box", pid=8)
        c.call("PUSH " + job(jid="slow-job-001", jobtype="Crunch", queue="reports"))
        c.call("PUSH " + job(jid="fast-job-001", jobtype="Crunch"))
        c.call("FETCH reports")
        clock.advance(120)  # over the default 60 s, under the reports queue's 600 s
        assert beat(c, "w-slow") == b"+OK\r\n"
        srv.run_due_tasks()
        assert beat(c, "w-slow") == b"+OK\r\n"
        c.call("FETCH default")
        clock.advance(61)
        assert beat(c, "w-slow") == b"+OK\r\n"
        with caplog.at_level(logging.WARNING):
            srv.run_due_tasks()
        assert beat(c, "w-slow") == b'$21\r\n{"state":"terminate"}\r\n'
        assert "has run job fast-job-001 (Crunch, queue default) for 61 s" in caplog.text
        assert "slow-job-001" not in caplog.text
        c.close()


def test_a_vanished_worker_holding_jobs_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    with minifaktory.run(clock=clock) as srv:
        c = WireClient(srv.host, srv.port)
        c.hello(v=2, wid="w-gone", hostname="box", pid=9)
        c.call("PUSH " + job(jid="held-job-0001", jobtype="Mail", queue="mail"))
        c.call("FETCH mail")
        clock.advance(75)
        with caplog.at_level(logging.WARNING):
            srv.run_due_tasks()
        assert (
            "worker w-gone (box:9) disappeared: no heartbeat for 75 s, and it still holds 1"
            " job(s): held-job-0001 (Mail from mail, running 75 s)"
        ) in caplog.text
        assert "the first in 1725 s" in caplog.text
        c.close()


def test_reload_changes_the_limits(tmp_path: Path) -> None:
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "workers.toml").write_text("[workers]\nmax_rss_mb = 100\n")
    argv = ["-c", str(tmp_path), "--db", str(tmp_path / "r.db"), "-b", "127.0.0.1:0", "-w", ":0"]
    with minifaktory.run(load_config(argv, {"HOME": str(tmp_path)})) as srv:
        assert srv.server.services is not None and srv.server.services.governor is not None
        governor = srv.server.services.governor
        assert governor.limits.max_rss_kb == 100 * 1024
        (conf_d / "workers.toml").write_text("[workers]\nmax_rss_mb = 200\n")

        async def reload() -> None:
            srv.server.reload()

        srv.call(reload())
        assert governor.limits.max_rss_kb == 200 * 1024
        (conf_d / "workers.toml").write_text("[workers]\nmax_rss_mb = -1\n")
        srv.call(reload())
        assert governor.limits.max_rss_kb == 200 * 1024  # a bad file keeps the running limits
