"""Crash safety: SIGKILL a server subprocess under load, restart it on the same file,
and account for every acknowledged job; then many such cycles under mixed load
(tests/crash_harness.py)."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import apsw
import pytest

from tests.conftest import WireClient, job
from tests.crash_harness import HarnessConfig, run_harness, server_process

pytestmark = pytest.mark.crash

#: Cycles of the mixed-load run (the long run is benchmarks/bench_crash.py).
CYCLES = 20


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


@pytest.mark.timeout(200)
def test_sigkill_cycles_under_mixed_load(tmp_path: Path) -> None:
    """Twenty SIGKILLs under mixed load (durability alternating full and normal, both of
    which must survive a process kill), each followed by a restart on the same file and
    every invariant of tests/crash_harness.py. ``CRASH_SEED=N`` replays a seed."""
    seed = int(os.environ.get("CRASH_SEED") or random.SystemRandom().randrange(1, 2**31))
    config = HarnessConfig(tmp_path / "crash.db", cycles=CYCLES, seed=seed, deadline=100.0)
    report = run_harness(config)
    summary = "\n".join([f"replay with CRASH_SEED={seed}", *report.summary()])
    assert not report.violations, f"{summary}\nserver log:\n{report.log_tail}"
    assert report.cycles == report.kills == CYCLES, summary
    assert report.clean_restart, summary
    assert report.integrity_ok == report.integrity_checks == CYCLES + 2, summary
    done = report.counts
    for key in ("pushed_plain", "pushed_scheduled", "pushed_unique", "pushed_member", "pushb",
                "not_unique", "batches_committed", "callbacks", "acked", "failed"):  # fmt: skip
        assert done.get(key), f"no {key} in the load\n{summary}"
