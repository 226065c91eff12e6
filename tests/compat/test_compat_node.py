"""npm ``faktory-worker`` (the Node client) against minifaktory, and jobs crossing languages.

The Node side is ``tests/compat/node/push.js`` and ``work.js`` run as
subprocesses with ``FAKTORY_URL`` set (``npm ci --prefix tests/compat/node``
installs the pinned client). These tests are skipped only when ``node`` itself
is missing; a missing ``node_modules`` is a failure.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from tests.compat import compat_jobs
from tests.compat.compat_support import (
    DEADLINE,
    PASSWORD,
    ConsumerRun,
    Harness,
    Node,
    RecordingWorker,
    cdrx_running,
    counts,
    empty_sets,
    push_with_both_python_clients,
    retry_comes_due,
    rfc3339_in,
)

pytestmark = pytest.mark.compat


def test_push_work_ack(any_harness: Harness, node: Node) -> None:
    h = any_harness
    [jid] = node.push(h.url, [{"jobtype": "add", "args": [2, 3]}])
    assert counts(h) == {
        "processed": 0,
        "failures": 0,
        "sets": empty_sets(),
        "queued": {"default": 1},
    }

    worker = node.work(h.url, jobtypes=["add"], count=1)
    [job] = worker.jobs()
    assert job["jid"] == jid
    assert job["jobtype"] == "add"
    assert job["args"] == [2, 3]
    assert job["queue"] == "default"
    assert job["retry"] == 25
    acks = [e for e in worker.events if e["event"] == "ack"]
    assert acks == [{"event": "ack", "jid": jid, "reply": "OK"}]
    assert counts(h) == {"processed": 1, "failures": 0, "sets": empty_sets(), "queued": {}}


def test_push_bulk(harness: Harness, node: Node) -> None:
    jobs = [{"jobtype": "add", "args": [i], "queue": "bulk"} for i in range(3)]
    jids = node.push(harness.url, jobs, bulk=True)
    assert len(set(jids)) == 3
    assert counts(harness)["queued"] == {"bulk": 3}


def test_failing_job_is_retried_with_failure_info(harness: Harness, node: Node) -> None:
    h = harness
    [jid] = node.push(h.url, [{"jobtype": "boom", "args": ["x"]}])
    worker = node.work(h.url, jobtypes=["boom"], fail=["boom"], count=1)
    fails = [e for e in worker.events if e["event"] == "fail"]
    assert fails == [{"event": "fail", "jid": jid, "reply": "OK"}]
    retry_comes_due(h)
    worker = node.work(h.url, jobtypes=["boom"], count=1)  # succeeds this time
    [job] = worker.jobs()
    assert job["jid"] == jid
    failure = job["failure"]
    assert failure["errtype"] == "BoomError"  # Node sends the Error's `code`
    assert failure["message"] == 'kaboom ["x"]'
    assert failure["retry_count"] == 0
    assert failure["remaining"] == 25
    assert {"failed_at", "next_at"} <= failure.keys()
    backtrace = failure["backtrace"]
    assert backtrace[0] == 'Error: kaboom ["x"]'
    assert 1 < len(backtrace) <= 50
    assert counts(h) == {"processed": 2, "failures": 1, "sets": empty_sets(), "queued": {}}


def test_scheduled_job(harness: Harness, node: Node) -> None:
    h = harness
    at = rfc3339_in(60)
    [jid] = node.push(h.url, [{"jobtype": "add", "args": [1], "at": at}])
    assert counts(h)["sets"] == empty_sets(scheduled=1)
    assert counts(h)["queued"] == {}
    h.due()
    assert counts(h)["queued"] == {"default": 1}
    worker = node.work(h.url, jobtypes=["add"], count=1)
    [job] = worker.jobs()
    assert job["jid"] == jid
    assert job["at"] == at
    assert counts(h) == {"processed": 1, "failures": 0, "sets": empty_sets(), "queued": {}}


def test_queues_are_fetched_in_the_order_given(harness: Harness, node: Node) -> None:
    h = harness
    node.push(
        h.url,
        [
            {"jobtype": "note", "args": [name, i], "queue": name}
            for i in range(2)
            for name in ("low", "default", "critical")
        ],
    )
    worker = node.work(h.url, queues=["critical", "default", "low"], jobtypes=["note"], count=6)
    assert [job["args"] for job in worker.jobs()] == [
        ["critical", 0],
        ["critical", 1],
        ["default", 0],
        ["default", 1],
        ["low", 0],
        ["low", 1],
    ]
    assert counts(h)["processed"] == 6


@pytest.mark.parametrize("signal", ["quiet", "terminate"])
def test_heartbeat_carries_quiet_and_terminate(harness: Harness, node: Node, signal: str) -> None:
    h = harness
    wid = "node-" + uuid.uuid4().hex[:8]
    worker = node.start_worker(h.url, wid=wid, until=signal, beatInterval=0.1)
    assert worker.wait_for("started")["wid"] == wid
    workers = h.faktory()["tasks"]["Workers"]
    assert workers["size"] == 1
    h.signal_worker(wid, signal)
    done = worker.finish()
    assert done["reason"] == signal
    assert done["beats"][0] == "OK"
    assert done["beats"][-1] == signal  # bulk {"state":"..."} parsed by the client


def test_wrong_password_is_refused(secure_harness: Harness, node: Node) -> None:
    h = secure_harness
    wrong = h.url.replace(PASSWORD, "not-the-password")
    assert wrong != h.url
    done = node.push_raw(wrong, [{"jobtype": "add", "args": [1]}])
    assert done.returncode == 1
    assert "ERR Invalid password" in done.stderr
    assert counts(h)["queued"] == {}


def test_mutate_info_flush(harness: Harness, node: Node) -> None:
    h = harness
    jids = node.push(h.url, [{"jobtype": "add", "args": [i]} for i in range(2)])
    for jid in jids:
        h.fail_once(jid)
    node.push(h.url, [{"jobtype": "later", "args": [], "at": rfc3339_in(600)}])
    assert counts(h)["sets"] == empty_sets(retries=2, scheduled=1)

    results = node.admin(
        h.url,
        [
            {"op": "mutate", "target": "retries", "cmd": "kill", "jids": [jids[0]]},
            {"op": "mutate", "target": "dead", "cmd": "requeue", "jobtype": "add"},
            {"op": "mutate", "target": "retries", "cmd": "discard", "regexp": "*"},
            {"op": "info"},
            {"op": "mutate", "target": "scheduled", "cmd": "clear"},
            {"op": "info"},
            {"op": "flush"},
        ],
    )
    assert results[:3] == ["OK", "OK", "OK"]
    info = results[3]
    assert set(info) == {"now", "server_utc_time", "faktory", "server"}
    assert info["faktory"]["sets"] == empty_sets(scheduled=1)
    assert info["faktory"]["queues"] == {"default": 1}
    assert results[4] == "OK"
    assert results[5]["faktory"]["sets"] == empty_sets()
    assert results[6] == "OK"
    assert counts(h) == {"processed": 0, "failures": 0, "sets": empty_sets(), "queued": {}}


# --------------------------------------------------------------------------- across languages


@pytest.mark.usefixtures("keep_sigterm")
def test_node_jobs_worked_by_python_clients(
    any_harness: Harness, node: Node, tmp_path: Path
) -> None:
    h = any_harness
    out = str(tmp_path / "ran.jsonl")
    [cdrx_jid] = node.push(h.url, [{"jobtype": "add", "args": [4, 5], "queue": "to-cdrx"}])
    [pyf_jid] = node.push(
        h.url, [{"jobtype": "record", "args": [out, "from node"], "queue": "to-pyf"}]
    )

    seen: list[tuple[int, int]] = []
    worker = RecordingWorker(h.url, queues=["to-cdrx"])
    worker.register("add", lambda a, b: seen.append((a, b)))
    with cdrx_running(worker):
        assert worker.finished.wait(DEADLINE)
    assert seen == [(4, 5)]
    assert worker.results == [("ack", cdrx_jid)]

    run = ConsumerRun(h.url)
    with run.running(["to-pyf"], {"record": compat_jobs.record}):
        assert run.finished.wait(DEADLINE)
    assert compat_jobs.recorded(out) == [["from node"]]
    assert run.results == [("ack", pyf_jid)]

    assert counts(h) == {"processed": 2, "failures": 0, "sets": empty_sets(), "queued": {}}


def test_python_jobs_worked_by_node(any_harness: Harness, node: Node) -> None:
    h = any_harness
    cdrx_jid, pyf_jid = push_with_both_python_clients(h.url)

    worker = node.work(h.url, jobtypes=["add"], count=2)
    jobs = {job["jid"]: job["args"] for job in worker.jobs()}
    assert jobs == {cdrx_jid: [1, "cdrx"], pyf_jid: [2, "pyfaktory"]}
    assert sorted(e["jid"] for e in worker.events if e["event"] == "ack") == sorted(jobs)
    assert counts(h) == {"processed": 2, "failures": 0, "sets": empty_sets(), "queued": {}}
