"""PyPI ``pyfaktory`` (ghilesmeddour/faktory_worker_python) against minifaktory.

This client sends ``"v":2`` and the iterated password hash, sends ``"at":""``
on every job, and answers BEAT replies with its own state machine. Its
``Consumer`` runs job functions in spawned processes (``compat_jobs``); the
tests read back what they recorded.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pyfaktory
import pytest
from pyfaktory.util.enums import State
from pyfaktory.util.exceptions import FaktroyWorkProtocolError
from tests.compat import compat_jobs
from tests.compat.compat_support import (
    DEADLINE,
    PASSWORD,
    ConsumerRun,
    Harness,
    counts,
    empty_sets,
    retry_comes_due,
    rfc3339_in,
    wait_until,
)

pytestmark = pytest.mark.compat


def push(h: Harness, jobtype: str, args: list[Any], **fields: Any) -> str:
    jid = uuid.uuid4().hex
    with pyfaktory.Client(h.url) as client:
        job = pyfaktory.Job(jid=jid, jobtype=jobtype, args=args, **fields)
        assert pyfaktory.Producer(client).push(job) is True
    return jid


def test_push_work_ack(any_harness: Harness, tmp_path: Path) -> None:
    h = any_harness
    out = str(tmp_path / "ran.jsonl")
    jid = push(h, "record", [out, 2, 3])
    assert counts(h) == {
        "processed": 0,
        "failures": 0,
        "sets": empty_sets(),
        "queued": {"default": 1},
    }

    run = ConsumerRun(h.url)
    with run.running(["default"], {"record": compat_jobs.record}):
        assert run.finished.wait(DEADLINE)

    assert compat_jobs.recorded(out) == [[2, 3]]
    assert run.results == [("ack", jid)]
    assert run.errors == []
    assert counts(h) == {"processed": 1, "failures": 0, "sets": empty_sets(), "queued": {}}


def test_payload_as_pushed(harness: Harness) -> None:
    """pyfaktory sends reserve_for 1800, backtrace 5, retry 25 and an empty ``at``."""
    jid = push(harness, "record", ["x", 1, {"two": [2]}], queue="pyf", custom={"k": "v"})
    job = harness.fetch("pyf")
    assert job is not None
    assert job["jid"] == jid
    assert job["jobtype"] == "record"
    assert job["queue"] == "pyf"
    assert job["args"] == ["x", 1, {"two": [2]}]
    assert job["retry"] == 25
    assert job["reserve_for"] == 1800
    assert job["backtrace"] == 5
    assert job["custom"] == {"k": "v"}
    assert job.get("at", "") == ""
    harness.ack(jid)


def test_push_bulk(harness: Harness) -> None:
    jobs = [pyfaktory.Job(jobtype="record", args=["x", i], queue="bulk") for i in range(3)]
    with pyfaktory.Client(harness.url) as client:
        assert pyfaktory.Producer(client).push_bulk(jobs) == {}
    assert counts(harness)["queued"] == {"bulk": 3}


def test_failing_job_is_retried_with_failure_info(harness: Harness, tmp_path: Path) -> None:
    h = harness
    out = str(tmp_path / "ran.jsonl")
    jid = push(h, "explode", [out, 7])

    run = ConsumerRun(h.url)
    with run.running(["default"], {"explode": compat_jobs.explode}):
        assert run.finished.wait(DEADLINE)
    assert run.results == [("fail", jid)]
    assert run.errors == []
    assert compat_jobs.recorded(out) == [[7]]
    retry_comes_due(h)
    run = ConsumerRun(h.url).connect()
    try:
        job = run.client._fetch(["default"])
        assert job is not None and job["jid"] == jid
        failure = job["failure"]
        assert failure["errtype"] == "ValueError"
        assert failure["message"] == "kaboom [7]"
        assert failure["retry_count"] == 0
        assert failure["remaining"] == 25
        assert {"failed_at", "next_at"} <= failure.keys()
        backtrace = failure["backtrace"]
        assert 0 < len(backtrace) <= 5 and all(isinstance(line, str) for line in backtrace)
        assert run.client._ack(jid=jid) is True
    finally:
        run.stop()
    assert counts(h) == {"processed": 2, "failures": 1, "sets": empty_sets(), "queued": {}}


def test_scheduled_job(harness: Harness) -> None:
    h = harness
    at = rfc3339_in(60)
    jid = push(h, "record", ["x"], at=at)
    assert counts(h)["sets"] == empty_sets(scheduled=1)
    assert counts(h)["queued"] == {}

    run = ConsumerRun(h.url).connect()
    try:
        assert run.client._fetch(["default"]) is None  # "$-1"
        h.due(keep=(run.wid,))
        job = run.client._fetch(["default"])
        assert job is not None
        assert job["jid"] == jid
        assert job["at"] == at
        assert run.client._ack(jid=jid) is True
    finally:
        run.stop()
    assert counts(h) == {"processed": 1, "failures": 0, "sets": empty_sets(), "queued": {}}


def test_queues_are_fetched_in_the_order_given(harness: Harness, tmp_path: Path) -> None:
    h = harness
    out = str(tmp_path / "ran.jsonl")
    for i in range(2):
        for name in ("low", "default", "critical"):
            push(h, "record", [out, name, i], queue=name)

    run = ConsumerRun(h.url, expect=6)
    with run.running(["critical", "default", "low"], {"record": compat_jobs.record}):
        assert run.finished.wait(DEADLINE)

    assert compat_jobs.recorded(out) == [
        ["critical", 0],
        ["critical", 1],
        ["default", 0],
        ["default", 1],
        ["low", 0],
        ["low", 1],
    ]
    assert [kind for kind, _ in run.results] == ["ack"] * 6
    assert counts(h)["processed"] == 6


def test_heartbeat_then_quiet_then_terminate(harness: Harness, tmp_path: Path) -> None:
    """The heartbeat thread BEATs; the server's quiet/terminate reach the client state."""
    h = harness
    run = ConsumerRun(h.url).connect()
    try:
        assert run.beat_seen.wait(DEADLINE)
        assert h.faktory()["tasks"]["Workers"] == {"reaped": 0, "size": 1}
        run.start(["default"], {"record": compat_jobs.record})

        h.signal_worker(run.wid, "quiet")
        wait_until(lambda: run.client.state is State.QUIET, "pyfaktory to turn quiet")
        # A quiet client keeps beating, now with "current_state":"quiet".
        beats = run.beats
        wait_until(lambda: run.beats > beats + 1, "BEATs from the quiet client")

        h.signal_worker(run.wid, "terminate")
        wait_until(lambda: run.client.state is State.TERMINATING, "pyfaktory to terminate")
        assert run.thread is not None
        run.thread.join(DEADLINE)  # the consumer loop ends on its own
        assert not run.thread.is_alive()
    finally:
        run.stop()
    wait_until(lambda: h.faktory()["tasks"]["Workers"]["size"] == 0, "the worker to go away")


def test_fetch_without_queues_sends_a_trailing_space(harness: Harness) -> None:
    """``_fetch([])`` writes ``FETCH \\r\\n``: one queue named "" that never has jobs."""
    push(harness, "record", ["x"])
    run = ConsumerRun(harness.url).connect()
    try:
        assert run.client._fetch([]) is None
    finally:
        run.stop()
    assert counts(harness)["queued"] == {"default": 1}


def test_mutate_queue_commands_info_flush(harness: Harness) -> None:
    h = harness
    jids = [push(h, "record", ["x", i]) for i in range(2)]
    for jid in jids:
        h.fail_once(jid)
    assert counts(h)["sets"] == empty_sets(retries=2)

    def op(cmd: str, target: str, **filters: Any) -> pyfaktory.MutateOperation:
        flt = {"jids": None, "regexp": None, "jobtype": None, **filters}
        return pyfaktory.MutateOperation(cmd=cmd, target=target, filter=pyfaktory.JobFilter(**flt))

    with pyfaktory.Client(h.url) as client:
        # MUTATE is sent as compact JSON (a space in its payload is an error).
        assert client.mutate(op("kill", "retries", jids=[jids[0]])) is True
        assert counts(h)["sets"] == empty_sets(retries=1, dead=1)
        assert client.mutate(op("requeue", "dead", jobtype="record")) is True
        assert client.mutate(op("discard", "retries", regexp="*")) is True
        assert counts(h)["sets"] == empty_sets()
        assert counts(h)["queued"] == {"default": 1}

        assert client.queue_pause(["default"]) is True
        assert h.fetch("default") is None
        assert client.queue_unpause(["default"]) is True
        info = client.info()
        assert set(info) == {"now", "server_utc_time", "faktory", "server"}
        assert info["faktory"]["queues"] == {"default": 1}
        assert client.queue_remove(["default"]) is True
        assert "default" not in client.info()["faktory"]["queues"]
        assert client._flush() is True
    assert counts(h) == {"processed": 0, "failures": 0, "sets": empty_sets(), "queued": {}}


def test_wrong_or_missing_password_is_refused(secure_harness: Harness) -> None:
    h = secure_harness
    wrong = h.url.replace(PASSWORD, "not-the-password")
    assert wrong != h.url
    client = pyfaktory.Client(wrong)
    with pytest.raises(FaktroyWorkProtocolError, match="ERR Invalid password"):
        client.connect()
    client.sock.close()
    # Without a password the client refuses by itself once it sees the challenge.
    client = pyfaktory.Client(f"tcp://{h.server.host}:{h.server.port}")
    with pytest.raises(ValueError, match="Password required"):
        client.connect()
    client.sock.close()
    push(h, "record", ["x"])
    assert counts(h)["queued"] == {"default": 1}
