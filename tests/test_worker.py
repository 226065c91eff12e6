"""The Python worker against a real server: handlers, failures, middleware, the BEAT
contract (quiet, terminate), the shutdown grace period, and signals from a shell."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import anyio

import minifaktory
from minifaktory.client import Client
from minifaktory.worker import Job, Worker, current_job


def until(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def start(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False}, daemon=True)
    thread.start()
    return thread


def test_handlers_failures_and_middleware() -> None:
    seen: list[Any] = []
    order: list[str] = []
    with minifaktory.run(fetch_timeout=0.2) as srv:
        worker = Worker(srv.url, concurrency=3, beat_interval=0.1)

        async def around(job: Job, call_next: Any) -> Any:
            order.append(f"before {job.jobtype}")
            try:
                return await call_next()
            finally:
                order.append(f"after {job.jobtype}")

        worker.middleware.append(around)

        @worker.register("Add")
        def add(a: int, b: int) -> None:
            current_job().checkin_sync("adding", 10)
            seen.append(("add", a + b, current_job().jobtype, threading.current_thread().name))

        @worker.register("Hello")
        async def hello(name: str) -> None:
            job = current_job()
            await job.checkin("greeting", 50)
            seen.append(("hello", name, job.retry_count, job.retries_remaining))

        @worker.register("Boom")
        def boom() -> None:
            raise ValueError("no good")

        with Client(srv.url) as c:
            c.push({"jid": "add-job-001", "jobtype": "Add", "args": [2, 3], "custom": {"track": 1}})
            c.push(
                {"jid": "hello-job-1", "jobtype": "Hello", "args": ["ann"], "custom": {"track": 1}}
            )
            c.push({"jid": "boom-job-01", "jobtype": "Boom", "retry": 3})
            c.push({"jid": "what-job-01", "jobtype": "Unknown"})
            thread = start(worker)
            until(lambda: srv.info()["faktory"]["sets"]["retries"] == 2 and len(seen) == 2)
            assert c.track_get("hello-job-1")["desc"] == "greeting"
            assert c.track_get("add-job-001")["desc"] == "adding"  # from a sync handler
            worker.terminate()
            thread.join(10)
        assert not thread.is_alive()
        assert ("hello", "ann", 0, 25) in seen
        [added] = [s for s in seen if s[0] == "add"]
        assert added[1:3] == (5, "Add") and added[3] != "MainThread"  # sync: in a thread
        assert order.count("before Add") == order.count("after Add") == 1
        state = srv.info()["faktory"]
        assert state["total_processed"] == 4 and state["total_failures"] == 2
        with Client(srv.url) as c:
            c.mutate({"cmd": "requeue", "target": "retries", "filter": {"jids": ["boom-job-01"]}})
            job = c.fetch("default")
        assert job is not None and job["failure"]["errtype"] == "ValueError"
        assert job["failure"]["message"] == "no good"
        assert any("raise ValueError" in line for line in job["failure"]["backtrace"])


def test_beats_carry_quiet_and_terminate_from_the_server() -> None:
    with minifaktory.run(fetch_timeout=0.2) as srv:
        worker = Worker(srv.url, concurrency=2, beat_interval=0.05, labels=["py", "test"])
        thread = start(worker)
        until(lambda: worker.wid in (srv.server.services.registry.workers if srv.server.services
                                      else {}))  # fmt: skip
        assert srv.server.services is not None
        registry = srv.server.services.registry
        assert registry.workers[worker.wid].labels == ["py", "test"]
        until(lambda: registry.workers[worker.wid].rss_kb > 0)  # BEAT reports memory
        registry.signal(worker.wid, "quiet")
        until(lambda: worker.state == "quiet")
        time.sleep(0.5)  # a FETCH already waiting when the signal came may still take a job
        with Client(srv.url) as c:
            c.push({"jobtype": "Anything"})
        time.sleep(0.5)
        assert srv.info()["faktory"]["queues"]["default"] == 1  # quiet: nothing fetched
        registry.signal(worker.wid, "terminate")
        thread.join(10)
        assert not thread.is_alive() and worker.state == "terminate"


def test_jobs_still_running_at_the_deadline_are_failed_for_a_retry() -> None:
    started = threading.Event()
    with minifaktory.run(fetch_timeout=0.2) as srv:
        worker = Worker(srv.url, concurrency=1, beat_interval=0.1, shutdown_timeout=0.3)

        @worker.register("Slow")
        async def slow() -> None:
            started.set()
            await anyio.sleep(30)

        with Client(srv.url) as c:
            c.push({"jid": "slow-job-001", "jobtype": "Slow"})
        thread = start(worker)
        assert started.wait(10)
        began = time.monotonic()
        worker.terminate()
        thread.join(10)
        assert time.monotonic() - began < 5
        with Client(srv.url) as c:
            c.mutate({"cmd": "requeue", "target": "retries", "filter": {"jids": ["slow-job-001"]}})
            job = c.fetch("default")
        assert job is not None and job["failure"]["errtype"] == "Shutdown"


def test_signals_from_a_shell(tmp_path: Path) -> None:
    app = tmp_path / "jobsapp.py"
    app.write_text(
        textwrap.dedent("""
        import time
        from minifaktory import Worker

        worker = Worker(concurrency=1, beat_interval=0.1, shutdown_timeout=0.5)

        @worker.register("Sleepy")
        def sleepy():
            time.sleep(30)
    """)
    )
    with minifaktory.run(fetch_timeout=0.2) as srv:
        env = {**os.environ, "FAKTORY_URL": srv.url, "PYTHONPATH": str(tmp_path)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "minifaktory", "worker", "jobsapp:worker", "-l", "warn"],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            assert srv.server.services is not None
            registry = srv.server.services.registry
            until(lambda: len(registry.workers) == 1)
            [record] = registry.workers.values()
            with Client(srv.url) as c:
                c.push({"jid": "sleepy-job-1", "jobtype": "Sleepy"})
            until(lambda: srv.info()["faktory"]["sets"]["working"] == 1)
            proc.send_signal(signal.SIGTSTP)
            until(lambda: record.state.wire == "quiet")  # told the server through BEAT
            beat_before = record.last_beat
            until(lambda: record.last_beat > beat_before)  # quiet workers keep beating
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert proc.returncode == 0, out
        assert "still running at shutdown" in out
        assert srv.info()["faktory"]["sets"]["retries"] == 1
