"""PyPI ``faktory`` 1.0.0 (cdrx/faktory_worker_python) against minifaktory.

This client sends no ``v`` in HELLO and hashes the password once, so it only
authenticates through the server's legacy (v < 2) path; it reads ``$-1`` as an
empty string. Its ``Worker`` runs on a thread here (thread executor, one job
at a time) and is stopped with ``Worker.disconnect`` once the jobs are done.
"""

from __future__ import annotations

import uuid

import faktory
import pytest
from faktory._proto import Connection
from faktory.exceptions import FaktoryAuthenticationError
from tests.compat.compat_support import (
    DEADLINE,
    PASSWORD,
    Harness,
    RecordingWorker,
    cdrx_running,
    counts,
    empty_sets,
    retry_comes_due,
    rfc3339_in,
    wait_until,
)

pytestmark = [pytest.mark.compat, pytest.mark.usefixtures("keep_sigterm")]


def push(h: Harness, jobtype: str, *args: object, **options: object) -> str:
    jid = uuid.uuid4().hex
    with faktory.connection(h.url) as client:
        assert client.queue(jobtype, args=args, jid=jid, **options) is True
    return jid


def test_push_work_ack(any_harness: Harness) -> None:
    h = any_harness
    jid = push(h, "add", 2, 3)
    assert counts(h) == {
        "processed": 0,
        "failures": 0,
        "sets": empty_sets(),
        "queued": {"default": 1},
    }

    seen: list[tuple[int, int]] = []
    worker = RecordingWorker(h.url, queues=["default"])
    worker.register("add", lambda a, b: seen.append((a, b)))
    with cdrx_running(worker):
        assert worker.finished.wait(DEADLINE)

    assert seen == [(2, 3)]
    assert worker.results == [("ack", jid)]
    assert counts(h) == {"processed": 1, "failures": 0, "sets": empty_sets(), "queued": {}}


def test_payload_as_pushed(harness: Harness) -> None:
    """What the server keeps of cdrx's PUSH (retry 5 and backtrace 0 are its defaults)."""
    jid = push(harness, "add", 1, "two", {"three": [3]}, queue="cdrx")
    job = harness.fetch("cdrx")
    assert job is not None
    assert job["jid"] == jid
    assert job["jobtype"] == "add"
    assert job["queue"] == "cdrx"
    assert job["args"] == [1, "two", {"three": [3]}]
    assert job["retry"] == 5
    assert "created_at" in job and "enqueued_at" in job
    harness.ack(jid)


def test_failing_job_is_retried_with_failure_info(harness: Harness) -> None:
    h = harness
    jid = push(h, "boom", 7)

    def boom(x: int) -> None:
        raise ValueError(f"kaboom {x}")

    worker = RecordingWorker(h.url, queues=["default"])
    worker.register("boom", boom)
    with cdrx_running(worker):
        assert worker.finished.wait(DEADLINE)
    assert worker.results == [("fail", jid)]
    retry_comes_due(h)
    conn = Connection(h.url)
    conn.connect()
    try:
        job = conn.fetch(["default"])
        assert job is not None and job["jid"] == jid
        failure = job["failure"]
        assert failure["errtype"] == "ValueError"
        assert failure["message"] == "kaboom 7"
        assert failure["retry_count"] == 0
        assert failure["remaining"] == 5
        assert {"failed_at", "next_at"} <= failure.keys()
        assert "backtrace" not in failure  # cdrx's FAIL carries none
        conn.reply("ACK", {"jid": jid})
        assert next(conn.get_message()) == "OK"
    finally:
        conn.disconnect()
    assert counts(h) == {"processed": 2, "failures": 1, "sets": empty_sets(), "queued": {}}


def test_scheduled_job(harness: Harness) -> None:
    h = harness
    at = rfc3339_in(60)
    jid = push(h, "add", 1, 1, at=at)
    assert counts(h)["sets"] == empty_sets(scheduled=1)
    assert counts(h)["queued"] == {}

    conn = Connection(h.url)
    conn.connect()
    try:
        assert conn.fetch(["default"]) is None  # "$-1" reads as "" and becomes None
        h.due()
        job = conn.fetch(["default"])
        assert job is not None
        assert job["jid"] == jid
        assert job["at"] == at
        conn.reply("ACK", {"jid": jid})
        assert next(conn.get_message()) == "OK"
    finally:
        conn.disconnect()
    assert counts(h) == {"processed": 1, "failures": 0, "sets": empty_sets(), "queued": {}}


def test_queues_are_fetched_in_the_order_given(harness: Harness) -> None:
    h = harness
    for i in range(2):
        for name in ("low", "default", "critical"):
            push(h, "note", name, i, queue=name)

    seen: list[tuple[str, int]] = []
    worker = RecordingWorker(h.url, queues=["critical", "default", "low"], expect=6)
    worker.register("note", lambda name, i: seen.append((name, i)))
    with cdrx_running(worker):
        assert worker.finished.wait(DEADLINE)

    assert seen == [
        ("critical", 0),
        ("critical", 1),
        ("default", 0),
        ("default", 1),
        ("low", 0),
        ("low", 1),
    ]
    assert [kind for kind, _ in worker.results] == ["ack"] * 6
    assert counts(h)["processed"] == 6


def test_heartbeat_keeps_worker_and_carries_quiet_and_terminate(harness: Harness) -> None:
    """Driven step by step: connect as a worker, BEAT, get quieted and terminated."""
    h = harness
    worker = RecordingWorker(h.url, queues=["default"])
    worker.faktory.connect(worker_id=worker.worker_id)
    try:
        assert h.faktory()["tasks"]["Workers"] == {"reaped": 0, "size": 1}
        worker.heartbeat()
        assert not worker.is_quiet and not worker.is_disconnecting

        # A worker is reaped 60 s after its last BEAT, not after its HELLO.
        h.clock.advance(45)
        worker.heartbeat()
        h.due(45)
        assert h.faktory()["tasks"]["Workers"] == {"reaped": 0, "size": 1}

        h.signal_worker(worker.worker_id, "quiet")
        worker.heartbeat()  # reply: bulk {"state":"quiet"}
        assert worker.is_quiet and not worker.should_fetch_job
        assert not worker.is_disconnecting

        h.signal_worker(worker.worker_id, "terminate")
        worker.heartbeat()
        assert worker.is_disconnecting

        h.due(61)
        assert h.faktory()["tasks"]["Workers"] == {"reaped": 1, "size": 0}
    finally:
        worker.faktory.disconnect()


def test_running_worker_is_quieted_then_terminated_by_the_server(harness: Harness) -> None:
    h = harness
    worker = RecordingWorker(h.url, queues=["default"])
    worker.send_heartbeat_every = 0.05
    with cdrx_running(worker) as thread:
        assert worker.beat_seen.wait(DEADLINE)
        assert h.faktory()["tasks"]["Workers"]["size"] == 1
        h.signal_worker(worker.worker_id, "quiet")
        assert worker.quieted.wait(DEADLINE)
        h.signal_worker(worker.worker_id, "terminate")
        thread.join(DEADLINE)  # the worker leaves on its own
        assert not thread.is_alive()
    wait_until(lambda: h.faktory()["tasks"]["Workers"]["size"] == 0, "the worker to disconnect")


def test_wrong_or_missing_password_is_refused(secure_harness: Harness) -> None:
    h = secure_harness
    wrong = h.url.replace(PASSWORD, "not-the-password")
    assert wrong != h.url
    with pytest.raises(FaktoryAuthenticationError):
        faktory.Client(wrong).connect()
    missing = f"tcp://{h.server.host}:{h.server.port}"
    with pytest.raises(FaktoryAuthenticationError):
        faktory.Client(missing).connect()
    # The right password still works after the refusals.
    push(h, "add", 1, 2)
    assert counts(h)["queued"] == {"default": 1}
