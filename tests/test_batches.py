"""Batches over the wire: spec §8 cases 55-59, plus failures, nesting and restarts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import minifaktory
from minifaktory.app import RunningServer
from minifaktory.clock import FakeClock
from tests.conftest import WireClient, job


def new_batch(c: WireClient, **spec: Any) -> str:
    spec.setdefault("success", {"jid": "success-cb-1", "jobtype": "Success", "args": []})
    spec.setdefault("complete", {"jid": "complete-cb", "jobtype": "Complete", "args": []})
    reply = c.call("BATCH NEW " + json.dumps(spec))
    assert reply.startswith(b"$"), reply
    bid = reply.split(b"\r\n")[1].decode()
    assert bid.startswith("b-")
    return bid


def status(c: WireClient, bid: str) -> dict[str, Any]:
    data: dict[str, Any] = c.json(f"BATCH STATUS {bid}")
    return data


def states(c: WireClient, bid: str) -> tuple[int, int, str, str]:
    s = status(c, bid)
    return s["pending"], s["failed"], s["complete_st"], s["success_st"]


def push_member(c: WireClient, bid: str, jid: str, **fields: Any) -> None:
    assert c.call("PUSH " + job(jid=jid, custom={"bid": bid}, **fields)) == b"+OK\r\n"


def work(c: WireClient, verb: str = "ACK", queue: str = "default") -> dict[str, Any]:
    reply = c.call(f"FETCH {queue}")
    assert reply != b"$-1\r\n", "nothing to fetch"
    fetched: dict[str, Any] = json.loads(reply.split(b"\r\n")[1])
    assert c.call(f'{verb} {{"jid":"{fetched["jid"]}"}}') == b"+OK\r\n"
    return fetched


def test_batch_lifecycle_and_nesting(client: WireClient) -> None:
    """Cases 55 and 56."""
    bid = new_batch(client, description="Top")
    push_member(client, bid, "member-job-1", queue="top")
    push_member(client, bid, "member-job-2", queue="top")
    assert client.call(f"BATCH OPEN {bid}") == f"${len(bid)}\r\n{bid}\r\n".encode()
    assert client.call(f"BATCH COMMIT {bid}") == b"+OK\r\n"
    assert client.call(f"BATCH OPEN {bid}").endswith(f"{bid}\r\n".encode())
    push_member(client, bid, "member-job-3", queue="top")
    push_member(client, bid, "member-job-4", queue="top")
    assert client.call(f"BATCH COMMIT {bid}") == b"+OK\r\n"
    child = new_batch(client, parent_bid=bid, description="Child")
    push_member(client, child, "child-job-01", queue="child")
    push_member(client, child, "child-job-02", queue="child")
    client.call(f"BATCH COMMIT {child}")
    got = status(client, child)
    assert (got["total"], got["pending"], got["complete_st"], got["success_st"]) == (2, 2, "", "")
    assert got["parent_bid"] == bid and got["description"] == "Child"
    assert list(got) == [
        "bid", "parent_bid", "description", "created_at", "complete_st", "success_st",
        "total", "pending", "failed",
    ]  # fmt: skip
    work(client, queue="child")
    work(client, queue="child")
    assert states(client, child) == (0, 0, "1", "")
    callback = work(client, queue="default")  # the complete callback runs first
    assert callback["jobtype"] == "Complete"
    assert callback["custom"] == {"_bid": child, "_cb": "complete"}
    assert states(client, child) == (0, 0, "2", "1")
    push_member(client, child, "child-job-03", queue="child")  # reopening from outside works


def test_empty_batch(client: WireClient) -> None:
    """Case 57: callbacks fire at commit; a failed success callback stays at "1"."""
    bid = new_batch(client)
    assert states(client, bid) == (0, 0, "", "")
    client.call(f"BATCH COMMIT {bid}")
    assert states(client, bid) == (0, 0, "1", "")
    assert work(client)["jobtype"] == "Complete"
    assert states(client, bid) == (0, 0, "2", "1")
    assert work(client, "FAIL")["jobtype"] == "Success"
    assert states(client, bid) == (0, 0, "2", "1")


def test_no_callbacks_before_commit(client: WireClient) -> None:
    """Case 58."""
    bid = new_batch(client, complete=None)
    push_member(client, bid, "member-job-1")
    work(client)
    assert states(client, bid) == (0, 0, "", "")
    client.call(f"BATCH COMMIT {bid}")
    assert states(client, bid) == (0, 0, "2", "1")  # no complete callback: success goes ahead
    assert work(client)["jobtype"] == "Success"
    assert states(client, bid) == (0, 0, "2", "2")


def test_unknown_batches(client: WireClient) -> None:
    """Case 59, and the same text everywhere a bid is looked up."""
    assert client.call("BATCH OPEN non-existent-batch-id") == (
        b"-ERR No such batch non-existent-batch-id\r\n"
    )
    for line in ["BATCH COMMIT nope", "BATCH STATUS nope", "BATCH CHILD nope nope"]:
        assert client.call(line) == b"-ERR No such batch nope\r\n"
    assert client.call("PUSH " + job(custom={"bid": "nope"})) == b"-ERR No such batch nope\r\n"
    assert client.call('BATCH NEW {"parent_bid":"nope"}') == b"-ERR No such batch nope\r\n"
    assert client.call("BATCH NEW x").startswith(b"-ERR invalid BATCH NEW: ")
    assert client.call('BATCH NEW {"success":{"args":[]}}') == (
        b"-ERR invalid success callback: jobs must have a jobtype parameter\r\n"
    )
    assert client.call("BATCH FROB x") == b"-ERR no such BATCH subcommand: FROB\r\n"
    assert client.json("INFO")["faktory"]["total_enqueued"] == 0


def test_failures_delay_success_until_retried(
    client: WireClient, server: RunningServer, clock: FakeClock
) -> None:
    bid = new_batch(client)
    push_member(client, bid, "member-job-1")
    push_member(client, bid, "member-job-2")
    client.call(f"BATCH COMMIT {bid}")
    work(client)
    work(client, "FAIL")
    assert states(client, bid) == (1, 1, "1", "")  # every job ran once: complete fires
    work(client)  # the complete callback
    assert states(client, bid) == (1, 1, "2", "")
    clock.advance(60)
    server.run_due_tasks()
    work(client)  # the retry succeeds
    assert states(client, bid) == (0, 0, "2", "1")


def test_parent_waits_for_its_child(client: WireClient) -> None:
    parent = new_batch(client, complete=None)
    child = new_batch(client, parent_bid=parent, complete=None,
                      success={"jobtype": "ChildSuccess", "args": [], "queue": "cb"})  # fmt: skip
    push_member(client, child, "child-job-01")
    client.call(f"BATCH COMMIT {parent}")
    assert states(client, parent) == (0, 0, "", "")  # the child has not finished
    client.call(f"BATCH COMMIT {child}")
    work(client)
    assert states(client, child) == (0, 0, "2", "1")
    assert states(client, parent) == (0, 0, "2", "")  # complete, but success waits
    assert work(client, queue="cb")["jobtype"] == "ChildSuccess"
    assert states(client, parent) == (0, 0, "2", "1")
    assert work(client)["jobtype"] == "Success"


def test_batch_child_command(client: WireClient) -> None:
    parent, child = new_batch(client), new_batch(client)
    assert client.call(f"BATCH CHILD {parent} {child}") == b"+OK\r\n"
    assert status(client, child)["parent_bid"] == parent


def test_batches_survive_restart_and_count_in_info(tmp_path: Path) -> None:
    db = tmp_path / "batch.db"
    with minifaktory.run(db_path=db) as srv:
        c = WireClient(srv.host, srv.port)
        c.call("HELLO {}")
        bid = new_batch(c)
        push_member(c, bid, "member-job-1")
        c.call(f"BATCH COMMIT {bid}")
        fetched = c.call("FETCH default")
        assert b"member-job-1" in fetched
        new_batch(c)
        assert c.json("INFO")["faktory"]["batches"] == {"open": 1, "committed": 1}
        c.close()
    with minifaktory.run(db_path=db) as srv:
        c = WireClient(srv.host, srv.port)
        c.call("HELLO {}")
        assert c.json("INFO")["faktory"]["batches"] == {"open": 1, "committed": 1}
        c.call('ACK {"jid":"member-job-1"}')
        assert states(c, bid) == (0, 0, "1", "")
        c.close()


def test_abandoned_open_batches_expire(
    client: WireClient, server: RunningServer, clock: FakeClock
) -> None:
    bid = new_batch(client)
    clock.advance(31 * 60)
    server.run_due_tasks()
    assert client.call(f"BATCH STATUS {bid}") == f"-ERR No such batch {bid}\r\n".encode()
    assert client.json("INFO")["faktory"]["batches"] == {"open": 0, "committed": 0}
