"""Unique jobs, expiring jobs, priorities and REQUEUE over the wire (spec §5, cases 60-61)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import minifaktory
from minifaktory.app import RunningServer
from minifaktory.clock import FakeClock, format_ns
from tests.conftest import WireClient, job

Connect = Callable[[], WireClient]
NOTUNIQUE = b"-NOTUNIQUE Job not unique\r\n"


def unique(jid: str, seconds: float = 60, until: str | None = None, **fields: Any) -> str:
    custom: dict[str, Any] = {"unique_for": seconds}
    if until is not None:
        custom["unique_until"] = until
    return job(jid=jid, jobtype="Unique", args=[1, "a"], custom=custom, **fields)


def fetched_jid(client: WireClient, queues: str = "default") -> str | None:
    reply = client.call(f"FETCH {queues}")
    if reply == b"$-1\r\n":
        return None
    jid: str = json.loads(reply.split(b"\r\n")[1])["jid"]
    return jid


def locks(client: WireClient) -> dict[str, int]:
    data: dict[str, int] = client.json("INFO")["faktory"]["unique_locks"]
    return data


# -- unique jobs --------------------------------------------------------------------


def test_duplicate_rejected_while_locked(client: WireClient) -> None:
    assert client.call("PUSH " + unique("unique-01")) == b"+OK\r\n"
    assert client.call("PUSH " + unique("unique-02")) == NOTUNIQUE
    other_args = job(jid="unique-03", jobtype="Unique", args=[2], custom={"unique_for": 60})
    assert client.call("PUSH " + other_args) == b"+OK\r\n"
    assert client.call("PUSH " + unique("unique-04", queue="other")) == b"+OK\r\n"
    bypass = job(jid="unique-05", jobtype="Unique", args=[1, "a"])
    assert client.call("PUSH " + bypass) == b"+OK\r\n"
    assert locks(client) == {"default": 2, "other": 1}


def test_lock_released_on_success_not_on_failure(client: WireClient) -> None:
    client.call("PUSH " + unique("unique-01", retry=3))
    assert fetched_jid(client) == "unique-01"
    assert client.call("PUSH " + unique("unique-02")) == NOTUNIQUE  # still running
    client.call('FAIL {"jid":"unique-01"}')
    assert client.call("PUSH " + unique("unique-02")) == NOTUNIQUE  # waiting in retries
    client.call("MUTATE " + json.dumps({"cmd": "requeue", "target": "retries"}).replace(" ", ""))
    assert fetched_jid(client) == "unique-01"
    client.call('ACK {"jid":"unique-01"}')
    assert client.call("PUSH " + unique("unique-02")) == b"+OK\r\n"


def test_unique_until_start(client: WireClient) -> None:
    client.call("PUSH " + unique("unique-01", until="start"))
    assert client.call("PUSH " + unique("unique-02", until="start")) == NOTUNIQUE
    assert fetched_jid(client) == "unique-01"
    assert client.call("PUSH " + unique("unique-02", until="start")) == b"+OK\r\n"


def test_lock_expires(client: WireClient, server: RunningServer, clock: FakeClock) -> None:
    client.call("PUSH " + unique("unique-01", seconds=2.5))
    clock.advance(2)
    assert client.call("PUSH " + unique("unique-02")) == NOTUNIQUE
    clock.advance(1)
    assert client.call("PUSH " + unique("unique-02")) == b"+OK\r\n"
    assert locks(client) == {"default": 1}
    clock.advance(61)
    server.run_due_tasks()
    assert locks(client) == {}


def test_scheduled_lock_lasts_delay_plus_unique_for(client: WireClient, clock: FakeClock) -> None:
    at = format_ns(clock.now_ns() + 3600 * 10**9)
    client.call("PUSH " + unique("unique-01", seconds=600, at=at))
    clock.advance(3600 + 599)
    assert client.call("PUSH " + unique("unique-02")) == NOTUNIQUE
    clock.advance(2)
    assert client.call("PUSH " + unique("unique-02")) == b"+OK\r\n"


def test_clearing_a_queue_clears_its_locks(client: WireClient) -> None:
    client.call("PUSH " + unique("unique-01", queue="a"))
    client.call("PUSH " + unique("unique-02", queue="b"))
    client.call("QUEUE REMOVE a")
    assert locks(client) == {"b": 1}
    assert client.call("PUSH " + unique("unique-03", queue="a")) == b"+OK\r\n"
    assert client.call("PUSH " + unique("unique-04", queue="b")) == NOTUNIQUE
    client.call("FLUSH")
    assert locks(client) == {}
    assert client.call("PUSH " + unique("unique-05", queue="b")) == b"+OK\r\n"


def test_discarding_jobs_releases_their_locks(client: WireClient, clock: FakeClock) -> None:
    at = format_ns(clock.now_ns() + 60 * 10**9)
    client.call("PUSH " + unique("unique-01", at=at))
    discard = {"cmd": "discard", "target": "scheduled", "filter": {"jids": ["unique-01"]}}
    client.call("MUTATE " + json.dumps(discard, separators=(",", ":")))
    assert client.call("PUSH " + unique("unique-02", at=at)) == b"+OK\r\n"
    client.call('MUTATE {"cmd":"clear","target":"scheduled"}')
    assert locks(client) == {}


def test_pushb_reports_duplicates_per_job(client: WireClient) -> None:
    batch = [json.loads(unique(f"unique-{i:02d}")) for i in range(3)]
    assert client.json("PUSHB " + json.dumps(batch)) == {
        "unique-01": "NOTUNIQUE Job not unique",
        "unique-02": "NOTUNIQUE Job not unique",
    }


@pytest.mark.parametrize(
    ("custom", "error"),
    [
        ({"unique_for": "abc"}, "invalid custom.unique_for: expected a number of seconds"),
        ({"unique_for": -5}, "invalid custom.unique_for: must be greater than 0"),
        ({"unique_for": 0}, "invalid custom.unique_for: must be greater than 0"),
        ({"unique_for": True}, "invalid custom.unique_for"),
        ({"unique_for": 5, "unique_until": "sometimes"}, "invalid custom.unique_until"),
        ({"expires_in": "soon"}, "invalid custom.expires_in"),
        ({"expires_in": 0}, "invalid custom.expires_in: must be greater than 0"),
        ({"expires_at": "tomorrow"}, "invalid custom.expires_at"),
        ({"expires_at": 5}, "invalid custom.expires_at"),
        (
            {"expires_at": "2030-01-01T00:00:00Z", "expires_in": 5},
            "custom.expires_at and custom.expires_in cannot both be set",
        ),
    ],
)
def test_invalid_options(client: WireClient, custom: dict[str, Any], error: str) -> None:
    reply = client.call("PUSH " + job(custom=custom))
    assert reply.startswith(f"-ERR {error}".encode()), reply
    assert client.json("INFO")["faktory"]["total_enqueued"] == 0


def test_locks_survive_restart(tmp_path: Path) -> None:
    db = tmp_path / "locks.db"
    with minifaktory.run(db_path=db) as srv:
        c = WireClient(srv.host, srv.port)
        c.call("HELLO {}")
        c.call("PUSH " + unique("unique-01"))
        assert fetched_jid(c) == "unique-01"
        c.close()
    with minifaktory.run(db_path=db) as srv:
        c = WireClient(srv.host, srv.port)
        c.call("HELLO {}")
        assert c.call("PUSH " + unique("unique-02")) == NOTUNIQUE
        c.call('ACK {"jid":"unique-01"}')
        assert c.call("PUSH " + unique("unique-02")) == b"+OK\r\n"
        c.close()


# -- expiring jobs ------------------------------------------------------------------


def test_expired_job_is_never_handed_out(client: WireClient, clock: FakeClock) -> None:
    expires = format_ns(clock.now_ns() + 3 * 10**9)
    client.call("PUSH " + job(jid="expiring-1", custom={"expires_at": expires}))
    assert fetched_jid(client) == "expiring-1"
    client.call("PUSH " + job(jid="expiring-2", custom={"expires_at": expires}))
    client.call("PUSH " + job(jid="lasting-01"))
    clock.advance(6)
    assert fetched_jid(client) == "lasting-01"
    state = client.json("INFO")["faktory"]
    assert state["total_expired"] == 1
    assert state["queues"] == {"default": 0}


def test_expires_in_becomes_expires_at(client: WireClient, clock: FakeClock) -> None:
    client.call("PUSH " + job(custom={"expires_in": "1h30m"}))
    payload = json.loads(client.call("FETCH default").split(b"\r\n")[1])
    assert payload["custom"] == {"expires_at": format_ns(clock.now_ns() + 5400 * 10**9)}


def test_expired_jobs_are_swept_from_queues(
    client: WireClient, server: RunningServer, clock: FakeClock
) -> None:
    for i in range(3):
        client.call("PUSH " + job(jid=f"expiring-{i}", custom={"expires_in": 10}))
    client.call("PUSH " + job(jid="lasting-01"))
    clock.advance(11)
    server.run_due_tasks()
    state = client.json("INFO")["faktory"]
    assert (state["queues"], state["total_expired"]) == ({"default": 1}, 3)
    assert state["tasks"]["Expired"]["enqueued"] == 3


# -- priorities ----------------------------------------------------------------------


def test_priority_inside_a_queue(client: WireClient) -> None:
    for jid, priority in [("low-job-1", 1), ("mid-job-1", 0), ("high-job-1", 9), ("mid-job-2", 5)]:
        body = job(jid=jid, priority=priority) if priority else job(jid=jid)
        assert client.call("PUSH " + body) == b"+OK\r\n"
    order = [fetched_jid(client) for _ in range(4)]
    assert order == ["high-job-1", "mid-job-1", "mid-job-2", "low-job-1"]


def test_priority_is_kept_and_validated(client: WireClient) -> None:
    client.call("PUSH " + job(priority=7))
    payload = json.loads(client.call("FETCH default").split(b"\r\n")[1])
    assert payload["priority"] == 7
    client.call("PUSH " + job(jid="no-priority"))
    assert "priority" not in json.loads(client.call("FETCH default").split(b"\r\n")[1])
    assert client.call("PUSH " + job(priority=10)) == (
        b"-ERR jobs must have a priority from 1 to 9, got 10\r\n"
    )
    assert client.call("PUSH " + job(priority="high")).startswith(b"-ERR invalid JSON: ")


def test_queues_still_fetch_in_strict_order(client: WireClient) -> None:
    client.call("PUSH " + job(jid="low-queue-job", queue="low", priority=9))
    client.call("PUSH " + job(jid="high-queue-job", queue="high", priority=1))
    assert fetched_jid(client, "high low") == "high-queue-job"


# -- REQUEUE -------------------------------------------------------------------------


def test_requeue_goes_to_the_front_without_a_retry(client: WireClient) -> None:
    client.call("PUSH " + job(jid="first-job-1"))
    client.call("PUSH " + job(jid="second-job"))
    assert fetched_jid(client) == "first-job-1"
    assert client.call('REQUEUE {"jid":"first-job-1"}') == b"+OK\r\n"
    payload = json.loads(client.call("FETCH default").split(b"\r\n")[1])
    assert payload["jid"] == "first-job-1" and "failure" not in payload
    state = client.json("INFO")["faktory"]
    assert (state["total_processed"], state["total_failures"]) == (0, 0)


def test_requeue_errors(client: WireClient) -> None:
    assert client.call('REQUEUE {"jid":"nobody-home"}') == (
        b"-ERR requeue: Can't requeue job with no reservation\r\n"
    )
    assert client.call("REQUEUE nope") == b"-ERR invalid REQUEUE nope\r\n"
    assert client.call("REQUEUE") == b"-ERR internal error\r\n"


# -- tracking (case 62) and reservation extension -------------------------------------


def track(client: WireClient, jid: str) -> dict[str, Any]:
    data: dict[str, Any] = client.json(f"TRACK GET {jid}")
    return data


def test_tracking_lifecycle(client: WireClient, clock: FakeClock) -> None:
    client.call("PUSH " + job(jid="tracked-job", custom={"track": 1}))
    assert track(client, "tracked-job") == {
        "jid": "tracked-job", "state": "enqueued", "updated_at": format_ns(clock.now_ns()),
    }  # fmt: skip
    assert fetched_jid(client) == "tracked-job"
    assert client.call('TRACK SET {"jid":"tracked-job","percent":32,"desc":"Step 1"}') == (
        b"+OK\r\n"
    )
    clock.advance(1)
    client.call('TRACK SET {"jid":"tracked-job","percent":33}')
    got = track(client, "tracked-job")
    assert got == {
        "jid": "tracked-job", "state": "working", "updated_at": format_ns(clock.now_ns()),
        "percent": 33, "desc": "Step 1",
    }  # fmt: skip
    client.call('ACK {"jid":"tracked-job"}')
    assert track(client, "tracked-job")["state"] == "success"
    assert track(client, "tracked-job")["percent"] == 33
    assert client.call('TRACK SET {"jid":"tracked-job","percent":100}') == b"+OK\r\n"


def test_untracked_job_is_unknown(client: WireClient) -> None:
    client.call("PUSH " + job(jid="plain-job-1"))
    fetched_jid(client)
    assert client.call('TRACK SET {"jid":"plain-job-1","percent":50}') == b"+OK\r\n"
    assert track(client, "plain-job-1") == {
        "jid": "plain-job-1",
        "state": "unknown",
        "updated_at": "",
    }
    assert client.call("TRACK GET nobody") == (
        b'$50\r\n{"jid":"nobody","state":"unknown","updated_at":""}\r\n'
    )


def test_tracked_failures(client: WireClient) -> None:
    client.call("PUSH " + job(jid="tracked-ret", retry=2, custom={"track": 1}))
    fetched_jid(client)
    client.call('FAIL {"jid":"tracked-ret"}')
    assert track(client, "tracked-ret")["state"] == "failed"
    client.call("PUSH " + job(jid="tracked-dead", retry=-1, custom={"track": 1}))
    fetched_jid(client)
    client.call('FAIL {"jid":"tracked-dead"}')
    assert track(client, "tracked-dead")["state"] == "dead"


def test_track_errors(client: WireClient) -> None:
    assert client.call("TRACK SET nope") == b"-ERR invalid TRACK SET nope\r\n"
    assert client.call('TRACK SET {"percent":5}') == b"-ERR missing JID\r\n"
    assert client.call('TRACK SET {"jid":"x","percent":101}') == (
        b"-ERR invalid TRACK SET percent 101: must be 0 to 100\r\n"
    )
    assert client.call('TRACK SET {"jid":"x","reserve_until":"later"}').startswith(
        b"-ERR invalid TRACK SET reserve_until: "
    )
    assert client.call("TRACK WHAT x") == b"-ERR no such TRACK subcommand: WHAT\r\n"
    assert client.call("TRACK") == b"-ERR internal error\r\n"


def test_reserve_until_keeps_a_long_job(
    client: WireClient, server: RunningServer, clock: FakeClock
) -> None:
    client.call("PUSH " + job(jid="long-job-01", reserve_for=60))
    fetched_jid(client)
    until = format_ns(clock.now_ns() + 600 * 10**9)
    assert client.call(f'TRACK SET {{"jid":"long-job-01","reserve_until":"{until}"}}') == (
        b"+OK\r\n"
    )
    shorter = format_ns(clock.now_ns() + 120 * 10**9)
    client.call(f'TRACK SET {{"jid":"long-job-01","reserve_until":"{shorter}"}}')
    clock.advance(300)
    server.run_due_tasks()
    assert client.json("INFO")["faktory"]["sets"]["working"] == 1
    clock.advance(301)
    server.run_due_tasks()
    state = client.json("INFO")["faktory"]
    assert (state["sets"]["working"], state["sets"]["retries"]) == (0, 1)


def test_reserve_until_survives_restart(tmp_path: Path) -> None:
    db = tmp_path / "extend.db"
    clock = FakeClock()
    with minifaktory.run(db_path=db, clock=clock) as srv:
        c = WireClient(srv.host, srv.port)
        c.call("HELLO {}")
        c.call("PUSH " + job(jid="long-job-01", reserve_for=60, custom={"track": 1}))
        fetched_jid(c)
        until = format_ns(clock.now_ns() + 3600 * 10**9)
        c.call(f'TRACK SET {{"jid":"long-job-01","reserve_until":"{until}","desc":"x"}}')
        c.close()
    clock.advance(120)
    with minifaktory.run(db_path=db, clock=clock) as srv:
        srv.run_due_tasks()
        c = WireClient(srv.host, srv.port)
        c.call("HELLO {}")
        assert c.json("INFO")["faktory"]["sets"]["working"] == 1
        assert track(c, "long-job-01")["desc"] == "x"
        c.close()


def test_far_future_times_are_clamped_not_fatal(client: WireClient, connect: Connect) -> None:
    """Times past 2262 (64-bit ns) and huge spans must not break the shared commit."""
    other = connect()
    other.call("HELLO {}")
    other.send("PUSH " + job(jid="innocent-01"))  # shares a group commit with the next pushes
    assert client.call("PUSH " + job(jid="far-future-1", at="2999-01-01T00:00:00Z")) == b"+OK\r\n"
    assert other.reply() == b"+OK\r\n"
    big = {"unique_for": 1e300, "expires_in": 1e300}
    assert client.call("PUSH " + job(jid="huge-spans-1", custom=big)) == b"+OK\r\n"
    early = job(jid="ancient-job-1", at="0001-01-01T00:00:00Z")
    assert client.call("PUSH " + early) == b"+OK\r\n"
    state = client.json("INFO")["faktory"]
    assert state["sets"]["scheduled"] == 1
    assert state["queues"] == {"default": 3}
