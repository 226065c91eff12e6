"""Unique, expiring and prioritised jobs set through the real clients' own fields
(``custom`` in every client, ``priority`` where the client has it)."""

from __future__ import annotations

import json

import faktory
import pyfaktory
import pytest
from tests.compat.compat_support import Harness, Node, rfc3339_in

pytestmark = pytest.mark.compat


def order(h: Harness, queue: str, n: int) -> list[str]:
    jids = []
    for _ in range(n):
        job = h.fetch(queue)
        assert job is not None
        jids.append(job["jid"])
    return jids


def test_node_unique_jobs(harness: Harness, node: Node) -> None:
    job = {"jobtype": "report", "args": [7], "custom": {"unique_for": 60}}
    [first] = node.push(harness.url, [job])
    duplicate = node.push_raw(harness.url, [job])
    assert duplicate.returncode == 1
    assert "NOTUNIQUE" in duplicate.stderr
    out = node.push_raw(harness.url, [job, {**job, "args": [8]}], bulk=True)
    assert out.returncode == 0, out.stderr
    # The Node client turns PUSHB's map into {jid: {reason, payload}}.
    [rejected] = json.loads(out.stdout)["rejected"].values()
    assert rejected["reason"] == "NOTUNIQUE Job not unique"
    assert rejected["payload"]["args"] == [7]
    fetched = harness.fetch("default")
    assert fetched is not None and fetched["jid"] == first


def test_node_priorities_and_expiry(harness: Harness, node: Node) -> None:
    jids = node.push(harness.url, [
        {"jobtype": "low", "args": [], "priority": 1},
        {"jobtype": "high", "args": [], "priority": 9},
        {"jobtype": "normal", "args": []},  # the Node client sends priority 5 by default
        {"jobtype": "gone", "args": [], "custom": {"expires_at": rfc3339_in(-60)}},
    ])  # fmt: skip
    low, high, normal, _gone = jids
    assert order(harness, "default", 3) == [high, normal, low]
    assert harness.fetch("default") is None  # the expired job is never handed out
    assert harness.faktory()["total_expired"] == 1


def test_pyfaktory_unique_and_expiring(harness: Harness) -> None:
    with pyfaktory.Client(faktory_url=harness.url, role="producer") as client:
        producer = pyfaktory.Producer(client=client)
        job = pyfaktory.Job(jobtype="sync", args=[1], custom={"unique_for": 30})
        assert producer.push(job)
        again = pyfaktory.Job(jobtype="sync", args=[1], custom={"unique_for": 30})
        with pytest.raises(Exception, match="NOTUNIQUE"):
            producer.push(again)
        soon = pyfaktory.Job(jobtype="sync", args=[2], custom={"expires_in": "1h"})
        assert producer.push(soon)
    fetched = harness.fetch("default")
    assert fetched is not None and fetched["jid"] == job.jid
    second = harness.fetch("default")
    assert second is not None and set(second["custom"]) == {"expires_at"}


def test_cdrx_priority_and_unique(harness: Harness) -> None:
    with faktory.connection(harness.url) as client:
        assert client.queue("low", args=(1,), priority=2)
        assert client.queue("high", args=(1,), priority=8)
        assert client.queue("once", args=(1,), custom={"unique_for": 60})
        assert not client.queue("once", args=(1,), custom={"unique_for": 60})
    kinds = [harness.fetch("default") for _ in range(3)]
    assert [k["jobtype"] for k in kinds if k] == ["high", "once", "low"]  # once: priority 5
