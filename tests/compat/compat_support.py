"""Helpers for the client-compatibility tests: a reference wire client, and runners for
the cdrx Worker, the pyfaktory Consumer and the Node scripts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import multiprocessing
import os
import queue
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import faktory
import pyfaktory
from pyfaktory.util.enums import State

from minifaktory.app import RunningServer
from minifaktory.clock import FakeClock

#: The server answers an empty FETCH after this long (Faktory: 2 s).
FETCH_TIMEOUT = 0.25
#: Upper bound for anything a test waits for.
DEADLINE = 12.0
#: The password of the password-protected servers.
PASSWORD = "c0mpat-Secret"
#: Moves a first retry (15-44 s) or a job scheduled a minute ahead into its queue.
DUE_SECONDS = 120.0

NODE_DIR = Path(__file__).parent / "node"


def rfc3339_in(seconds: float) -> str:
    """Real wall-clock time ``seconds`` from now, as clients write ``at``."""
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``predicate`` until true; for state that lives in another process or thread."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class Wire:
    """A minimal, correct protocol client (v2 handshake) for setting up and checking state."""

    def __init__(self, host: str, port: int, password: str = "") -> None:
        self.sock = socket.create_connection((host, port), timeout=DEADLINE)
        self.file = self.sock.makefile("rb")
        greeting = self.file.readline()
        assert greeting.startswith(b"+HI "), greeting
        hello: dict[str, Any] = {"v": 2}
        challenge = json.loads(greeting[4:])
        if "s" in challenge:
            digest = (password + challenge["s"]).encode()
            for _ in range(int(challenge["i"])):
                digest = hashlib.sha256(digest).digest()
            hello["pwdhash"] = digest.hex()
        assert self.call("HELLO " + json.dumps(hello)) == "OK"

    def call(self, line: str) -> str | None:
        """Send one command; return the simple/bulk string, None for ``$-1``."""
        self.sock.sendall(line.encode() + b"\r\n")
        first = self.file.readline()
        if first.startswith(b"-"):
            raise AssertionError(f"{line!r} got {first!r}")
        if first.startswith(b"+"):
            return first[1:].rstrip(b"\r\n").decode()
        assert first.startswith(b"$"), first
        size = int(first[1:])
        if size < 0:
            return None
        return self.file.read(size + 2)[:-2].decode()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@dataclass
class Harness:
    """A running server with a fake clock, plus shortcuts the tests share."""

    server: RunningServer
    clock: FakeClock
    password: str = ""

    @property
    def url(self) -> str:
        url: str = self.server.url
        return url

    def faktory(self) -> dict[str, Any]:
        """The ``faktory`` block of INFO."""
        info: dict[str, Any] = self.server.info()["faktory"]
        return info

    def wire(self) -> Wire:
        return Wire(self.server.host, self.server.port, self.password)

    def due(self, seconds: float = DUE_SECONDS, keep: tuple[str, ...] = ()) -> None:
        """Move server time forward and run the scanners (scheduled, retries, ...).

        Workers are reaped 60 s (server time) after their last BEAT, and clients beat
        on real time; the wids in ``keep`` get a BEAT after every step of at most
        50 s so that a connected worker survives the jump.
        """
        left = seconds
        while left > 0:
            step = min(left, 50.0) if keep else left
            self.clock.advance(step)
            left -= step
            for wid in keep:
                conn = self.wire()
                try:
                    assert conn.call("BEAT " + json.dumps({"wid": wid})) == "OK"
                finally:
                    conn.close()
        self.server.run_due_tasks()

    def signal_worker(self, wid: str, state: str) -> None:
        """Quiet or terminate a worker as the Web UI would: its next BEAT gets the state."""
        conn = self.wire()
        try:
            reply = conn.call("BEAT " + json.dumps({"wid": wid, "current_state": state}))
            assert reply == json.dumps({"state": state}, separators=(",", ":")), reply
        finally:
            conn.close()

    def fetch(self, *queues: str) -> dict[str, Any] | None:
        """FETCH once with the reference client (producer connection)."""
        conn = self.wire()
        try:
            raw = conn.call("FETCH " + " ".join(queues))
            return None if raw is None else dict(json.loads(raw))
        finally:
            conn.close()

    def fail_once(self, jid: str, queue: str = "default") -> None:
        """FETCH ``jid`` from ``queue`` and FAIL it, so it lands in the retries set."""
        conn = self.wire()
        try:
            raw = conn.call("FETCH " + queue)
            assert raw is not None and json.loads(raw)["jid"] == jid, raw
            failure = {"jid": jid, "errtype": "Setup", "message": "failed on purpose"}
            assert conn.call("FAIL " + json.dumps(failure)) == "OK"
        finally:
            conn.close()

    def ack(self, jid: str) -> None:
        conn = self.wire()
        try:
            assert conn.call("ACK " + json.dumps({"jid": jid})) == "OK"
        finally:
            conn.close()


def counts(h: Harness) -> dict[str, Any]:
    """The figures most tests check: processed, failures, set sizes, non-empty queues."""
    info = h.faktory()
    return {
        "processed": info["total_processed"],
        "failures": info["total_failures"],
        "sets": info["sets"],
        "queued": {name: size for name, size in info["queues"].items() if size},
    }


def retry_comes_due(h: Harness) -> None:
    """After one FAIL: the job waits in retries, then its retry reaches the queue."""
    assert counts(h) == {
        "processed": 1,
        "failures": 1,
        "sets": empty_sets(retries=1),
        "queued": {},
    }
    h.due()
    assert counts(h)["queued"] == {"default": 1}


def empty_sets(**sizes: int) -> dict[str, int]:
    base = {"scheduled": 0, "retries": 0, "dead": 0, "working": 0}
    base.update(sizes)
    return base


# --------------------------------------------------------------------------- Node


@dataclass
class NodeWorker:
    """A ``work.js`` process; its JSON-line events arrive through a reader thread."""

    proc: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    _lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    _stderr: list[str] = field(default_factory=list)

    _pumps: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for stream, is_stdout in ((self.proc.stdout, True), (self.proc.stderr, False)):
            pump = threading.Thread(target=self._pump, args=(stream, is_stdout), daemon=True)
            pump.start()
            self._pumps.append(pump)

    def _pump(self, stream: IO[str], is_stdout: bool) -> None:
        for line in stream:
            if is_stdout:
                self._lines.put(line)
            else:
                self._stderr.append(line)
        if is_stdout:
            self._lines.put(None)

    def next_event(self, timeout: float = DEADLINE) -> dict[str, Any]:
        """The next event line; fails on EOF or after ``timeout``."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event from work.js within {timeout} s") from None
        if line is None:
            self.proc.wait(timeout=DEADLINE)
            raise AssertionError(
                f"work.js exited ({self.proc.returncode}) early; stderr: {''.join(self._stderr)}"
            )
        event: dict[str, Any] = json.loads(line)
        self.events.append(event)
        return event

    def wait_for(self, name: str, timeout: float = DEADLINE) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            event = self.next_event(max(0.01, end - time.monotonic()))
            if event["event"] == name:
                return event

    def finish(self) -> dict[str, Any]:
        """Wait for the ``done`` event and a clean exit; returns the ``done`` event."""
        done = self.wait_for("done")
        assert self.proc.wait(timeout=DEADLINE) == 0, "".join(self._stderr)
        assert done["errors"] == [], done
        return done

    def jobs(self) -> list[dict[str, Any]]:
        return [e["job"] for e in self.events if e["event"] == "job"]

    def close(self) -> None:
        """Kill the process if it is still running; reap it and close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=DEADLINE)
        for pump in self._pumps:
            pump.join(DEADLINE)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


class Node:
    """Runs the scripts in ``tests/compat/node`` with ``FAKTORY_URL`` set."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.started: list[NodeWorker] = []

    def _env(self, url: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAKTORY")}
        env["FAKTORY_URL"] = url
        env["COMPAT_DEADLINE_MS"] = str(int(DEADLINE * 1000))
        return env

    def push_raw(self, url: str, jobs: list[dict[str, Any]], *, bulk: bool = False) -> Any:
        spec = json.dumps({"jobs": jobs, "bulk": bulk})
        return subprocess.run(
            [self.node, str(NODE_DIR / "push.js"), spec],
            env=self._env(url),
            capture_output=True,
            text=True,
            timeout=DEADLINE + 5,
            check=False,
        )

    def push(self, url: str, jobs: list[dict[str, Any]], *, bulk: bool = False) -> list[str]:
        """Push ``jobs`` with ``client.job(...).push()`` (or ``pushBulk``); their jids."""
        done = self.push_raw(url, jobs, bulk=bulk)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert out["rejected"] == {}, out
        jids: list[str] = out["jids"]
        return jids

    def admin(self, url: str, ops: list[dict[str, Any]]) -> list[Any]:
        """Run ``admin.js`` (MUTATE, INFO, FLUSH through the Client); one result per op."""
        done = subprocess.run(
            [self.node, str(NODE_DIR / "admin.js"), json.dumps(ops)],
            env=self._env(url),
            capture_output=True,
            text=True,
            timeout=DEADLINE + 5,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        results: list[Any] = json.loads(done.stdout)
        return results

    def start_worker(self, url: str, **config: Any) -> NodeWorker:
        proc = subprocess.Popen(
            [self.node, str(NODE_DIR / "work.js"), json.dumps(config)],
            env=self._env(url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        worker = NodeWorker(proc)
        self.started.append(worker)
        return worker

    def work(self, url: str, **config: Any) -> NodeWorker:
        """Run ``work.js`` until it is done (``count`` jobs ACKed/FAILed by default)."""
        worker = self.start_worker(url, **config)
        worker.finish()
        return worker

    def cleanup(self) -> None:
        for worker in self.started:
            worker.close()


# --------------------------------------------------------------------------- cdrx (PyPI faktory)


class RecordingWorker(faktory.Worker):  # type: ignore[misc]
    """cdrx's ``Worker`` (thread executor, one job at a time) that reports what it sent.

    ``results`` gets ("ack"|"fail", jid) after the library has sent the command and
    read the reply; ``finished`` is set once ``expect`` jobs got either.
    """

    def __init__(self, url: str, *, queues: list[str], expect: int = 1) -> None:
        super().__init__(
            faktory=url,
            queues=queues,
            concurrency=1,
            use_threads=True,
            disconnect_wait=5,
            labels=["compat"],
        )
        self.expect = expect
        self.results: list[tuple[str, str]] = []
        self.finished = threading.Event()
        self.beats = 0
        self.beat_seen = threading.Event()
        self.quieted = threading.Event()

    def _done(self, kind: str, jid: str) -> None:
        self.results.append((kind, jid))
        if len(self.results) >= self.expect:
            self.finished.set()

    def _ack(self, jid: str) -> None:
        super()._ack(jid)
        self._done("ack", jid)

    def _fail(self, jid: str, exception: BaseException | None = None) -> None:
        super()._fail(jid, exception=exception)
        self._done("fail", jid)

    def heartbeat(self) -> None:
        super().heartbeat()
        self.beats += 1
        self.beat_seen.set()
        if self.is_quiet:
            self.quieted.set()


@contextlib.contextmanager
def cdrx_running(worker: RecordingWorker) -> Iterator[threading.Thread]:
    """``worker.run()`` on a thread; asks it to stop (gracefully) at the end of the block."""

    def target() -> None:
        with contextlib.suppress(SystemExit):  # run() always ends with sys.exit(1)
            worker.run()

    thread = threading.Thread(target=target, name="cdrx-worker", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        if thread.is_alive():
            worker.disconnect(wait=5)
        thread.join(DEADLINE)
        assert not thread.is_alive(), "cdrx Worker.run() did not return"


# --------------------------------------------------------------------------- pyfaktory


class ConsumerRun:
    """A pyfaktory consumer ``Client`` (with its heartbeat thread) and, on demand, a
    ``Consumer`` that runs job functions in spawned processes, one at a time, fetching
    its queues in strict order.
    """

    def __init__(self, url: str, *, beat_period: float = 0.2, expect: int = 1) -> None:
        self.wid = uuid.uuid4().hex
        self.client = pyfaktory.Client(
            url, role="consumer", worker_id=self.wid, beat_period=beat_period, labels=["compat"]
        )
        self.expect = expect
        self.results: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.finished = threading.Event()
        self.beats = 0
        self.beat_seen = threading.Event()
        self.consumer: Any = None
        self.thread: threading.Thread | None = None
        self._instrument()

    def _instrument(self) -> None:
        client = self.client
        ack, fail, beat = client._ack, client._fail, client._beat

        def done(kind: str, call: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
            try:
                result = call(**kwargs)
            except Exception as exc:
                self.errors.append(f"{kind}: {exc!r}")
                raise
            finally:
                self.results.append((kind, kwargs["jid"]))
                if len(self.results) >= self.expect:
                    self.finished.set()
            return result

        def on_ack(**kwargs: Any) -> Any:
            return done("ack", ack, kwargs)

        def on_fail(**kwargs: Any) -> Any:
            return done("fail", fail, kwargs)

        def on_beat(**kwargs: Any) -> Any:
            result = beat(**kwargs)
            self.beats += 1
            self.beat_seen.set()
            return result

        client._ack, client._fail, client._beat = on_ack, on_fail, on_beat

    def connect(self) -> ConsumerRun:
        self.client.connect()
        return self

    def start(self, queues: list[str], handlers: dict[str, Callable[..., Any]]) -> None:
        self.consumer = pyfaktory.Consumer(
            self.client,
            queues=queues,
            priority="strict",
            concurrency=1,
            grace_period=5,
            context=multiprocessing.get_context("spawn"),
        )
        for name, func in handlers.items():
            self.consumer.register(name, func)

        def target() -> None:
            with contextlib.suppress(SystemExit):  # run() always ends with sys.exit(1)
                self.consumer.run()

        self.thread = threading.Thread(target=target, name="pyfaktory-consumer", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """END the connection and wait for the consumer and heartbeat threads to finish."""
        client = self.client

        def no_beat(**kwargs: Any) -> bool:
            return True

        # The heartbeat thread checks the state before taking the client's lock; a
        # BEAT it sends after the END below would raise in that thread.
        client._beat = no_beat
        if client.state not in (State.DISCONNECTED, State.END):
            client.disconnect()
        if self.thread is not None:
            self.thread.join(DEADLINE)
            assert not self.thread.is_alive(), "pyfaktory Consumer.run() did not return"
        elif self.consumer is not None:
            self.consumer.pool.stop()
            self.consumer.pool.join(DEADLINE)
        heart = getattr(client, "heartbeat_thread", None)
        if heart is not None:
            heart.join(DEADLINE)
            assert not heart.is_alive(), "pyfaktory heartbeat thread did not stop"

    @contextlib.contextmanager
    def running(
        self, queues: list[str], handlers: dict[str, Callable[..., Any]]
    ) -> Iterator[ConsumerRun]:
        if self.client.state is State.DISCONNECTED:
            self.connect()
        self.start(queues, handlers)
        try:
            yield self
        finally:
            self.stop()


def push_with_both_python_clients(url: str) -> tuple[str, str]:
    """One ``add`` job from the PyPI ``faktory`` client and one from ``pyfaktory``;
    their jids."""
    import uuid

    import faktory
    import pyfaktory

    cdrx_jid = uuid.uuid4().hex
    with faktory.connection(url) as client:
        assert client.queue("add", args=(1, "cdrx"), jid=cdrx_jid) is True
    with pyfaktory.Client(url) as pclient:
        pyf_job = pyfaktory.Job(jobtype="add", args=[2, "pyfaktory"])
        assert pyfaktory.Producer(pclient).push(pyf_job) is True
    return cdrx_jid, str(pyf_job.jid)
