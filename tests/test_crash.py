"""Crash safety: SIGKILL a server subprocess under load, restart it on the same file,
and account for every acknowledged job."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import apsw
import pytest

from tests.conftest import WireClient, job

pytestmark = pytest.mark.crash

LISTENING = re.compile(r"listening at tcp://([\d.]+):(\d+)")


@contextmanager
def server_process(db: Path, durability: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Start ``python -m minifaktory`` on a free port; yields (process, port)."""
    cmd = [sys.executable, "-m", "minifaktory", "-b", "127.0.0.1:0", "-w", "127.0.0.1:0",
           "--db", str(db), "--durability", durability]  # fmt: skip
    env = {**os.environ, "FAKTORY_ENV": "development"}
    env.pop("FAKTORY_PASSWORD", None)
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    drain: threading.Thread | None = None
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 20
        port = 0
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            m = LISTENING.search(line)
            if m:
                port = int(m[2])
                break
        assert port, "server did not report its port"
        drain = threading.Thread(target=proc.stderr.read, daemon=True)  # keep the pipe drained
        drain.start()
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if drain is not None:
            drain.join(10)
        if proc.stderr is not None:
            proc.stderr.close()


class Ledger:
    """What the clients were told: pushes and acks that got ``+OK``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pushed: set[str] = set()
        self.acked: set[str] = set()
        self.ack_sent: set[str] = set()
        self.fetched: set[str] = set()


def producer(port: int, name: str, ledger: Ledger, stop: threading.Event, limit: int) -> None:
    c = WireClient("127.0.0.1", port)
    try:
        c.call("HELLO {}")
        for i in range(limit):
            if stop.is_set():
                return
            jid = f"{name}-{i:07d}"
            if c.call("PUSH " + job(jid=jid, queue=("a", "b")[i % 2])) == b"+OK\r\n":
                with ledger.lock:
                    ledger.pushed.add(jid)
    except OSError:
        return
    finally:
        c.close()


def consumer(port: int, ledger: Ledger, stop: threading.Event) -> None:
    c = WireClient("127.0.0.1", port)
    try:
        c.call('HELLO {"wid":"crash-worker","v":2}')
        n = 0
        while not stop.is_set():
            reply = c.call("FETCH a b")
            if not reply.startswith(b"$") or reply == b"$-1\r\n":
                continue
            jid = json.loads(reply.split(b"\r\n", 1)[1])["jid"]
            with ledger.lock:
                ledger.fetched.add(jid)
            n += 1
            if n % 3 == 0:
                continue  # leave some reservations open
            with ledger.lock:
                ledger.ack_sent.add(jid)
            if c.call(json.dumps({"jid": jid}).join(["ACK ", ""])) == b"+OK\r\n":
                with ledger.lock:
                    ledger.acked.add(jid)
    except (OSError, ValueError):
        return
    finally:
        c.close()


@pytest.mark.parametrize("durability", ["full", "normal"])
def test_sigkill_loses_nothing_acknowledged(tmp_path: Path, durability: str) -> None:
    db = tmp_path / "crash.db"
    ledger = Ledger()
    stop = threading.Event()
    with server_process(db, durability) as (proc, port):
        threads = [
            threading.Thread(target=producer, args=(port, f"p{n}", ledger, stop, 3000))
            for n in range(3)
        ] + [threading.Thread(target=consumer, args=(port, ledger, stop)) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with ledger.lock:
                if len(ledger.acked) >= 150 and len(ledger.pushed) >= 600:
                    break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # the PID this test started
        proc.wait(10)
        stop.set()
        for t in threads:
            t.join(10)
    assert ledger.pushed and ledger.acked

    with server_process(db, durability) as (proc, port):
        c = WireClient("127.0.0.1", port)
        c.call('HELLO {"wid":"after-restart","v":2}')
        state = c.json("INFO")["faktory"]
        reserved = reserved_jids(db)
        assert state["sets"]["working"] == len(reserved)
        seen: list[str] = []
        for _ in range(state["total_enqueued"]):
            reply = c.call("FETCH a b")
            seen.append(json.loads(reply.split(b"\r\n", 1)[1])["jid"])
        assert c.call("FETCH a b") == b"$-1\r\n"
        # Reservations came back: each one can still be acknowledged, once.
        for jid in sorted(reserved | ledger.acked):
            assert c.call(json.dumps({"jid": jid}).join(["ACK ", ""])) == b"+OK\r\n"
        after = c.json("INFO")["faktory"]
        c.close()
        os.kill(proc.pid, signal.SIGTERM)

    assert len(seen) == len(set(seen)), "a job came back twice"
    queued = set(seen)
    assert not (queued & reserved), "a job is both queued and reserved"
    # An acknowledged ACK is final; a fetched job never goes back to its queue.
    assert not ((queued | reserved) & ledger.acked)
    assert not (queued & ledger.fetched)
    # Every acknowledged PUSH is queued, reserved, or was acknowledged (or its ACK was sent).
    missing = ledger.pushed - queued - reserved - ledger.ack_sent
    assert not missing, f"{len(missing)} acknowledged pushes lost, e.g. {sorted(missing)[:3]}"
    # Jobs the consumers held unacknowledged at the kill are still reserved.
    assert ledger.fetched - ledger.ack_sent <= reserved
    assert after["total_processed"] - state["total_processed"] == len(reserved)


def reserved_jids(db: Path) -> set[str]:
    """Jids of the reservations in the file, read through a second connection."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return {str(row[0]) for row in conn.execute("SELECT jid FROM working")}
    finally:
        conn.close()
