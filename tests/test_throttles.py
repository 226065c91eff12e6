"""Throttled queues: limits server-wide and per worker, release, timeout, restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import minifaktory
from minifaktory.app import RunningServer
from minifaktory.clock import FakeClock
from minifaktory.errors import ConfigError
from minifaktory.throttles import parse_throttles
from tests.conftest import WireClient, job

THROTTLES = {
    "throttles": {
        "api": {"concurrency": 2, "timeout": 60},
        "bulk": {"worker": 1, "timeout": 30},
    }
}


@pytest.fixture
def throttled(clock: FakeClock) -> Iterator[RunningServer]:
    with minifaktory.run(clock=clock, fetch_timeout=0.2, toml=THROTTLES) as srv:
        yield srv


def worker(srv: RunningServer, wid: str) -> WireClient:
    c = WireClient(srv.host, srv.port)
    assert c.hello(wid=wid, v=2) == b"+OK\r\n"
    return c


def fetch(c: WireClient, queues: str) -> str | None:
    reply = c.call(f"FETCH {queues}")
    if reply == b"$-1\r\n":
        return None
    jid: str = json.loads(reply.split(b"\r\n")[1])["jid"]
    return jid


def fill(c: WireClient, queue: str, n: int) -> None:
    for i in range(n):
        assert c.call("PUSH " + job(jid=f"{queue}-job-{i:04d}", queue=queue)) == b"+OK\r\n"


def test_concurrency_limit_is_server_wide(throttled: RunningServer) -> None:
    a, b = worker(throttled, "w-a"), worker(throttled, "w-b")
    fill(a, "api", 4)
    fill(a, "other", 1)
    assert fetch(a, "api") == "api-job-0000"
    assert fetch(b, "api") == "api-job-0001"
    assert fetch(a, "api other") == "other-job-0000"  # api is full: skipped, not blocking
    assert fetch(b, "api") is None
    info: dict[str, Any] = a.json("INFO")["faktory"]["throttles"]
    assert info == {
        "api": {"limit": 2, "per": "server", "in_use": 2},
        "bulk": {"limit": 1, "per": "worker", "in_use": 0},
    }
    a.call('ACK {"jid":"api-job-0000"}')
    assert fetch(b, "api") == "api-job-0002"
    b.call('FAIL {"jid":"api-job-0001"}')
    assert fetch(a, "api") == "api-job-0003"
    a.close()
    b.close()


def test_worker_limit_is_per_wid(throttled: RunningServer) -> None:
    a, b = worker(throttled, "w-a"), worker(throttled, "w-b")
    fill(a, "bulk", 3)
    assert fetch(a, "bulk") == "bulk-job-0000"
    assert fetch(a, "bulk") is None
    assert fetch(b, "bulk") == "bulk-job-0001"
    a.call('REQUEUE {"jid":"bulk-job-0000"}')
    assert fetch(a, "bulk") == "bulk-job-0000"
    a.close()
    b.close()


def test_slot_frees_after_timeout(throttled: RunningServer, clock: FakeClock) -> None:
    a = worker(throttled, "w-a")
    fill(a, "bulk", 2)
    assert fetch(a, "bulk") == "bulk-job-0000"
    assert fetch(a, "bulk") is None
    clock.advance(31)
    assert fetch(a, "bulk") == "bulk-job-0001"
    a.close()


def test_slots_survive_restart(tmp_path: Path) -> None:
    db = tmp_path / "throttle.db"
    with minifaktory.run(db_path=db, fetch_timeout=0.2, toml=THROTTLES) as srv:
        a = worker(srv, "w-a")
        fill(a, "api", 3)
        fetch(a, "api")
        fetch(a, "api")
        a.close()
    with minifaktory.run(db_path=db, fetch_timeout=0.2, toml=THROTTLES) as srv:
        a = worker(srv, "w-a")
        assert fetch(a, "api") is None
        a.call('ACK {"jid":"api-job-0000"}')
        assert fetch(a, "api") == "api-job-0002"
        a.close()


def test_waiting_fetch_wakes_when_a_slot_frees(throttled: RunningServer) -> None:
    a, b = worker(throttled, "w-a"), worker(throttled, "w-b")
    fill(a, "api", 3)
    fetch(a, "api")
    fetch(a, "api")
    b.send("FETCH api")
    a.call('ACK {"jid":"api-job-0000"}')
    assert b"api-job-0002" in b.reply()
    a.close()
    b.close()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"q": {"concurrency": 2}}, "timeout"),
        ({"q": {"concurrency": 0, "timeout": 5}}, "at least 1"),
        ({"q": {"concurrency": 1, "worker": 1, "timeout": 5}}, "exactly one"),
        ({"q": {"timeout": 5}}, "exactly one"),
        ({"q": {"concurrency": 1, "timeout": 5, "speed": 3}}, "unknown key"),
        ({"bad name": {"concurrency": 1, "timeout": 5}}, "queue names must match"),
        ({"q": 5}, "expected"),
    ],
)
def test_bad_throttle_config(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_throttles({"throttles": table})


def test_bad_throttle_config_stops_start_up() -> None:
    bad = {"throttles": {"q": {"concurrency": 1}}}
    with pytest.raises(ConfigError, match=r"\[throttles\] q"), minifaktory.run(toml=bad):
        pass
