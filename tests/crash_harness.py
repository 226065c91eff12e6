"""A SIGKILL crash harness: a server subprocess under mixed load from several
real-protocol clients is killed at a random moment and restarted on the same
file, cycle after cycle; after every restart the file and the server are checked
against a ledger of every reply the clients received.

How this works: producer threads PUSH (plain, scheduled, unique), PUSHB and build
batches (BATCH NEW, members with ``custom.bid``, BATCH COMMIT); consumer threads
with a ``wid`` FETCH and ACK most jobs, FAIL some and keep some reserved, and
finish reservations left over from earlier cycles. Each thread writes to the
``Ledger`` before it sends a command (the command "may have happened") and again
when the reply arrives (it did, or it did not). After the kill and the restart,
``check_cycle`` reads the database read-only in one transaction and the server's
INFO, checks every invariant, and resolves each "may have happened" from what the
file holds, so the ledger carries exact knowledge into the next cycle.

The run is seeded: the kill moments and every thread's choices come from the
seed (thread interleavings do not), so a failing seed usually replays the failure.
Used by tests/test_crash.py (20 cycles) and benchmarks/bench_crash.py (200+).
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import json
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apsw

HOST = "127.0.0.1"
LISTENING = re.compile(r"listening at tcp://([\d.]+):(\d+)")
OK = b"+OK\r\n"
NULL = b"$-1\r\n"
#: Every job asks for the longest reservation, so none expires behind the ledger's back.
RESERVE_FOR = 86_400
PLAIN_QUEUES = ("q1", "q2")
UNIQUE_QUEUE = "uq"
BATCH_QUEUE = "bq"
CALLBACK_QUEUE = "cb"
ALL_QUEUES = (*PLAIN_QUEUES, UNIQUE_QUEUE, BATCH_QUEUE, CALLBACK_QUEUE)
UNIQUE_JOBTYPE = "Uniq"
#: Unique jobs draw their args from this many values, so NOTUNIQUE replies are common.
UNIQUE_KEYS = 40
UNIQUE_FOR = (2, 4, 8)
RETRIES = (1, 2, 3, 25)
#: Producers pause while this many pushed jobs wait to be fetched.
BACKLOG = 1_500
#: Tolerance (s) between the harness's wall clock readings and the server's.
SLACK = 0.05
#: An uncommitted batch may be dropped by the server after 30 min without activity.
OPEN_BATCH_TTL = 29 * 60
#: Each load thread stops after this many commands even if the kill never comes.
MAX_OPS = 200_000
CALLBACK_KINDS = ("complete", "success")
#: The scheduled and retry scanners run on wall-clock seconds divisible by this.
SCAN_PERIOD = 5


class ServerFailed(Exception):
    """The server did not start (or did not stop) as it should."""


class ServerProcess:
    """``python -m minifaktory`` on 127.0.0.1 and a free port; signals go to its PID only."""

    def __init__(self, db: Path, durability: str) -> None:
        self.db = db
        self.durability = durability
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        #: Seconds from spawning to the first log line, and to listening.
        self.first_line_after = 0.0
        self.ready_after = 0.0
        self.lines: deque[str] = deque(maxlen=200)
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        return [sys.executable, "-m", "minifaktory", "-b", f"{HOST}:0", "-w", f"{HOST}:0",
                "--db", str(self.db), "--durability", self.durability]  # fmt: skip

    def start(self, timeout: float = 30.0) -> float:
        """Start the server; seconds from spawning it until it reports its port."""
        ready = self.spawn()
        if not ready.wait(timeout) or not self.port:
            assert self.proc is not None
            try:
                code: int | None = self.proc.wait(5)
            except subprocess.TimeoutExpired:
                code = None
            self.kill()
            state = f"exited with {code}" if code is not None else f"not ready in {timeout:.0f} s"
            raise ServerFailed(f"server {state}:\n{self.log_tail()}")
        return self.ready_after

    def spawn(self) -> threading.Event:
        """Start the process; the event is set once it listens (or exits)."""
        cmd = self.command()
        env = {**os.environ, "FAKTORY_ENV": "development"}
        env.pop("FAKTORY_PASSWORD", None)
        self.port = 0
        self.first_line_after = self.ready_after = 0.0
        ready = threading.Event()
        started = time.perf_counter()
        proc = self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, env=env,
        )  # fmt: skip

        def read() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                if not self.first_line_after:
                    self.first_line_after = time.perf_counter() - started
                self.lines.append(line.rstrip("\n"))
                if not ready.is_set() and (m := LISTENING.search(line)):
                    self.ready_after = time.perf_counter() - started
                    self.port = int(m[2])
                    ready.set()
            ready.set()  # the server exited

        self._reader = threading.Thread(target=read, name="server-stderr", daemon=True)
        self._reader.start()
        return ready

    def kill(self) -> None:
        """SIGKILL the server (when it still runs) and reap it."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        self._close()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait; SIGKILL after ``timeout``. The exit code."""
        proc = self.proc
        assert proc is not None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ServerFailed(f"server ignored SIGTERM for {timeout:.0f} s") from None
        self._close()
        return code

    def _close(self) -> None:
        if self._reader is not None:
            self._reader.join(10)
            self._reader = None
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(list(self.lines)[-lines:])


@contextmanager
def server_process(db: Path, durability: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Start ``python -m minifaktory`` on a free port; yields (process, port)."""
    server = ServerProcess(db, durability)
    server.start()
    try:
        assert server.proc is not None
        yield server.proc, server.port
    finally:
        server.kill()


# -- a small wire client -----------------------------------------------------------------


class Lost(Exception):
    """The connection ended before a complete reply: the command may or may not have run."""


class Conn:
    """One blocking protocol connection; every reply is returned raw and complete."""

    def __init__(self, port: int, timeout: float = 20.0) -> None:
        try:
            self.sock = socket.create_connection((HOST, port), timeout=timeout)
        except OSError as exc:
            raise Lost(f"connect: {exc}") from None
        self.file = self.sock.makefile("rb")
        if not self._line().startswith(b"+HI"):
            self.close()
            raise Lost("no greeting")

    def _line(self) -> bytes:
        try:
            line = self.file.readline(1 << 24)
        except OSError as exc:
            raise Lost(str(exc)) from None
        if not line.endswith(b"\r\n"):
            raise Lost("connection closed")
        return line

    def call(self, line: str) -> bytes:
        """Send one command; its reply (``+OK\\r\\n``, ``$-1\\r\\n``, ``$3\\r\\nabc\\r\\n``)."""
        try:
            self.sock.sendall(line.encode() + b"\r\n")
        except OSError as exc:
            raise Lost(str(exc)) from None
        first = self._line()
        if first.startswith(b"$") and first != NULL:
            size = int(first[1:-2])
            try:
                body = self.file.read(size + 2)
            except OSError as exc:
                raise Lost(str(exc)) from None
            if len(body) != size + 2:
                raise Lost("connection closed inside a reply")
            return first + body
        return first

    def close(self) -> None:
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass


def bulk(raw: bytes) -> bytes:
    """The payload of a raw bulk reply."""
    return raw.split(b"\r\n", 1)[1][:-2]


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def unique_key(jobtype: str, args: list[Any]) -> str:
    """The server's lock key of a unique job: jobtype and canonical args."""
    return hashlib.sha256(jobtype.encode() + b"\0" + dumps(args).encode()).hexdigest()


# -- the ledger ---------------------------------------------------------------------------


class St(enum.Enum):
    """What the clients know about a job."""

    PUSH_MAYBE = "push sent, no reply"
    WAITING = "pushed"
    RESERVED = "reserved"
    ACK_MAYBE = "ACK sent, no reply"
    ACKED = "acknowledged"
    FAIL_MAYBE = "FAIL sent, no reply"
    FAILED = "failed"
    ABSENT = "never pushed"


#: Where the file may hold a job in each state: Q a queue, S scheduled, R retries,
#: D dead, W working, "" nowhere. (S only for scheduled jobs; see ``allowed``.)
ALLOWED: dict[St, frozenset[str]] = {
    St.PUSH_MAYBE: frozenset({"", "Q", "S"}),
    St.WAITING: frozenset({"Q", "S"}),
    St.RESERVED: frozenset({"W"}),
    St.ACK_MAYBE: frozenset({"", "W"}),
    St.ACKED: frozenset({""}),
    St.FAIL_MAYBE: frozenset({"W", "R", "D"}),
    St.FAILED: frozenset({"R", "D", "Q"}),
    St.ABSENT: frozenset({""}),
}
#: States in which a job may be handed out by FETCH.
FETCHABLE = frozenset({St.PUSH_MAYBE, St.WAITING, St.FAILED})
LOCATIONS = {"": "nowhere", "Q": "queued", "S": "scheduled", "R": "in retries",
             "D": "dead", "W": "reserved"}  # fmt: skip


@dataclass(slots=True, eq=False)
class Rec:
    """One job as the clients know it."""

    jid: str
    kind: str  # plain, scheduled, unique, member, callback
    queue: str
    args: list[Any]
    cycle: int
    state: St = St.PUSH_MAYBE
    #: The worker holding it (RESERVED, ACK_MAYBE, FAIL_MAYBE).
    wid: str = ""
    #: Scheduled for (wall-clock seconds); 0 when pushed without ``at``.
    at: float = 0.0
    retry: int = 25
    bid: str = ""
    #: The uniqueness lock key and lifetime (unique jobs).
    key: str = ""
    unique_for: int = 0
    #: The push was sent at / its reply arrived by (the kill, when it never came).
    sent: float = 0.0
    replied: float = math.inf
    ack_sent: float = math.inf
    ack_replied: float = math.inf
    #: Committed FAILs.
    fails: int = 0
    not_unique: bool = False
    #: The PUSHB this job was part of (0: a PUSH).
    group: int = 0

    def describe(self) -> str:
        return f"{self.jid} ({self.kind}, {self.state.value}, cycle {self.cycle})"


@dataclass(slots=True, eq=False)
class BatchRec:
    """One batch as the clients know it."""

    desc: str
    cycle: int
    bid: str = ""
    #: COMMIT: "no" (never sent), "maybe" (no reply), "yes" (+OK).
    commit: str = "no"
    touched: float = 0.0
    members: list[Rec] = field(default_factory=list)


class Ledger:
    """Everything the server told the clients, across every cycle. Thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cycle = 0
        #: Jobs that exist or may exist, by jid.
        self.live: dict[str, Rec] = {}
        #: Jids acknowledged or never pushed: never in the file again.
        self.gone: set[str] = set()
        self.batches: dict[str, BatchRec] = {}
        #: BATCH NEW sent without a reply, by description (unique per BATCH NEW).
        self.new_batches: dict[str, BatchRec] = {}
        #: Callback jobs seen per (bid, kind).
        self.callbacks: dict[tuple[str, str], list[Rec]] = {}
        #: Committed unique jobs per lock key, and those still to be checked.
        self.unique_done: dict[str, list[Rec]] = {}
        self.unique_new: list[Rec] = []
        #: PUSHBs without a reply yet, and those whose reply the kill cut off.
        self.open_groups: dict[int, list[Rec]] = {}
        self.maybe_groups: dict[int, list[Rec]] = {}
        self.groups = itertools.count(1)
        #: Workers (wid) whose FETCH was out at the kill: each may hold one reservation
        #: the clients never heard of.
        self.ghosts: dict[str, int] = {}
        #: Committed ACKs and FAILs (the server's processed and failures counters).
        self.acks = 0
        self.fails = 0
        self.counts: Counter[str] = Counter()
        self.violations: list[str] = []
        self.waiting = 0
        #: Batches whose success callback finished: only their existence is checked.
        self.finished: dict[str, str] = {}

    def violation(self, text: str) -> None:
        """Record a broken invariant (call with the lock held or with no thread running)."""
        self.violations.append(f"cycle {self.cycle}: {text}")

    def backlog(self) -> int:
        """About how many pushed jobs wait in queues or the scheduled set."""
        return self.waiting

    def _forget(self, rec: Rec) -> None:
        self.live.pop(rec.jid, None)
        self.gone.add(rec.jid)

    # -- producers ------------------------------------------------------------------------

    def push_sent(self, recs: list[Rec], group: bool) -> int:
        now = time.time()
        with self.lock:
            number = next(self.groups) if group else 0
            if number:
                self.open_groups[number] = recs
            for rec in recs:
                rec.sent, rec.group, rec.cycle = now, number, self.cycle
                self.live[rec.jid] = rec
                if rec.key:
                    self.unique_new.append(rec)
                if rec.bid:
                    self.batches[rec.bid].members.append(rec)
                    self.batches[rec.bid].touched = now
            return number

    def group_done(self, number: int) -> None:
        with self.lock:
            self.open_groups.pop(number, None)

    def push_ok(self, rec: Rec) -> None:
        now = time.time()
        with self.lock:
            rec.replied = min(rec.replied, now)
            if rec.state is St.PUSH_MAYBE:
                rec.state = St.WAITING
                self.waiting += 1
                self._confirmed(rec)

    def _confirmed(self, rec: Rec) -> None:
        """A push is known to have been committed (counted once)."""
        self.counts["pushed"] += 1
        self.counts[f"pushed_{rec.kind}"] += 1

    def push_not_unique(self, rec: Rec) -> None:
        with self.lock:
            rec.replied = time.time()
            if rec.state is not St.PUSH_MAYBE:
                self.violation(f"NOTUNIQUE for {rec.describe()}, which was already fetched")
                return
            rec.not_unique = True
            rec.state = St.ABSENT
            self._forget(rec)
            self.counts["not_unique"] += 1

    def unexpected(self, what: str, raw: bytes) -> None:
        with self.lock:
            self.violation(f"unexpected reply to {what}: {raw[:200]!r}")

    def batch_new_sent(self, desc: str) -> BatchRec:
        with self.lock:
            batch = self.new_batches[desc] = BatchRec(desc, self.cycle, touched=time.time())
            return batch

    def batch_new_ok(self, batch: BatchRec, bid: str) -> None:
        with self.lock:
            del self.new_batches[batch.desc]
            if bid in self.batches:
                self.violation(f"BATCH NEW returned {bid} twice")
            batch.bid = bid
            self.batches[bid] = batch
            self.counts["batches"] += 1

    def commit_sent(self, batch: BatchRec) -> None:
        with self.lock:
            batch.commit, batch.touched = "maybe", time.time()

    def commit_ok(self, batch: BatchRec) -> None:
        with self.lock:
            batch.commit = "yes"
            self.counts["batches_committed"] += 1

    # -- consumers ------------------------------------------------------------------------

    def fetched(self, job: dict[str, Any], wid: str) -> Rec | None:
        """A FETCH handed out ``job`` to ``wid``: its record, now RESERVED (None: unusable)."""
        now = time.time()
        jid = str(job.get("jid"))
        with self.lock:
            rec = self.live.get(jid)
            if rec is None:
                if jid in self.gone:
                    self.violation(f"FETCH handed out {jid}, which was acknowledged or not pushed")
                    return None
                rec = self._learn_callback(jid, job, "FETCH")
                if rec is None:
                    return None
            elif rec.state not in FETCHABLE:
                self.violation(f"FETCH handed out {rec.describe()} again")
                return None
            if rec.kind != "callback" and job.get("args") != rec.args:
                self.violation(f"FETCH of {jid}: args {job.get('args')!r}, pushed {rec.args!r}")
            if rec.at and now < rec.at - SLACK:
                self.violation(f"{rec.describe()} fetched {rec.at - now:.2f} s before its time")
            if rec.state is St.PUSH_MAYBE:
                rec.replied = min(rec.replied, now)  # committed before it could be fetched
                self._confirmed(rec)
            elif rec.state is St.WAITING:
                self.waiting -= 1
            rec.state, rec.wid = St.RESERVED, wid
            self.counts["fetched"] += 1
            return rec

    def _learn_callback(self, jid: str, job: dict[str, Any], where: str) -> Rec | None:
        """A job the server pushed itself: a batch callback, or else a violation."""
        custom = job.get("custom") or {}
        bid, kind = custom.get("_bid"), custom.get("_cb")
        if not isinstance(bid, str) or kind not in CALLBACK_KINDS:
            self.violation(f"{where}: unknown job {jid}: {dumps(job)[:200]}")
            return None
        if bid not in self.batches:
            self.violation(f"{where}: {kind} callback {jid} of unknown batch {bid}")
        rec = Rec(jid, "callback", str(job.get("queue")), [], self.cycle, St.WAITING, bid=bid)
        rec.sent = rec.replied = time.time()
        seen = self.callbacks.setdefault((bid, str(kind)), [])
        seen.append(rec)
        if len(seen) > 1:
            self.violation(f"batch {bid} fired its {kind} callback {len(seen)} times")
        self.live[jid] = rec
        self.waiting += 1
        self.counts["callbacks"] += 1
        return rec

    def ack_sent(self, rec: Rec) -> None:
        with self.lock:
            rec.state, rec.ack_sent = St.ACK_MAYBE, time.time()

    def ack_ok(self, rec: Rec) -> None:
        with self.lock:
            self._acked(rec, time.time())

    def _acked(self, rec: Rec, at: float) -> None:
        rec.state, rec.ack_replied = St.ACKED, at
        self.acks += 1
        self.counts["acked"] += 1
        if rec.bid in self.batches:
            self.batches[rec.bid].touched = at
        self._forget(rec)

    def fail_sent(self, rec: Rec) -> None:
        with self.lock:
            rec.state = St.FAIL_MAYBE

    def fail_ok(self, rec: Rec) -> None:
        with self.lock:
            self._failed(rec, time.time())

    def _failed(self, rec: Rec, at: float) -> None:
        rec.state, rec.wid = St.FAILED, ""
        rec.fails += 1
        self.fails += 1
        self.counts["failed"] += 1
        if rec.bid in self.batches:
            self.batches[rec.bid].touched = at

    # -- between cycles -------------------------------------------------------------------

    def killed(self, at: float, ghosts: dict[str, int]) -> None:
        """The server died at ``at``: no reply still missing can come later than that."""
        for rec in self.live.values():
            if rec.state is St.PUSH_MAYBE:
                rec.replied = min(rec.replied, at)
            elif rec.state is St.ACK_MAYBE:
                rec.ack_replied = min(rec.ack_replied, at)
        self.maybe_groups, self.open_groups = self.open_groups, {}
        self.ghosts = ghosts

    def orphans(self) -> list[Rec]:
        """Reservations whose worker is gone (every one, between cycles)."""
        return [r for r in self.live.values() if r.state is St.RESERVED]

    def open_batches(self) -> list[BatchRec]:
        return [b for b in self.batches.values() if b.commit == "no"]


# -- load -----------------------------------------------------------------------------


class LoadThread(threading.Thread):
    """A protocol connection driven by a seeded RNG until the server dies or ``stop``."""

    def __init__(
        self, name: str, port: int, ledger: Ledger, rng: random.Random, stop: threading.Event
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.port = port
        self.ledger = ledger
        self.rng = rng
        self.stop = stop
        self.ops = 0
        self.lost = ""
        self.conn: Conn | None = None

    def run(self) -> None:
        conn: Conn | None = None
        try:
            conn = self.conn = Conn(self.port)
            self.load(conn)
        except Lost as exc:
            self.lost = str(exc)
        except Exception as exc:
            with self.ledger.lock:
                self.ledger.violation(f"{self.name} crashed: {exc!r}")
        finally:
            if conn is not None:
                conn.close()

    def load(self, conn: Conn) -> None:
        raise NotImplementedError

    def call(self, line: str) -> bytes:
        assert self.conn is not None
        return self.conn.call(line)


class Producer(LoadThread):
    """PUSH (plain, scheduled, unique), PUSHB, and batches: NEW, members, COMMIT."""

    def __init__(
        self,
        name: str,
        port: int,
        ledger: Ledger,
        rng: random.Random,
        stop: threading.Event,
        carried: list[BatchRec],
    ) -> None:
        super().__init__(name, port, ledger, rng, stop)
        self.carried = carried
        self.seq = 0

    def load(self, conn: Conn) -> None:
        if conn.call('HELLO {"v":2}') != OK:
            raise Lost("HELLO refused")
        ops: list[Callable[[], None]] = [self.plain, self.scheduled, self.unique, self.pushb,
                                         self.batch]  # fmt: skip
        weights = [35, 15, 18, 17, 15]
        for _ in range(MAX_OPS):
            while not self.stop.is_set() and self.ledger.backlog() > BACKLOG:
                self.stop.wait(0.01)
            if self.stop.is_set():
                return
            self.rng.choices(ops, weights)[0]()
            self.ops += 1

    def new(self, kind: str, *, bid: str = "") -> Rec:
        self.seq += 1
        cycle = self.ledger.cycle
        jid = f"{self.name}-c{cycle}-{self.seq:06d}"
        rng = self.rng
        queue = {"unique": UNIQUE_QUEUE, "member": BATCH_QUEUE}.get(kind) or rng.choice(
            PLAIN_QUEUES
        )
        rec = Rec(jid, kind, queue, [cycle, self.seq], cycle, retry=rng.choice(RETRIES), bid=bid)
        if kind == "scheduled":
            ahead = rng.uniform(0.5, 6.0) if rng.random() < 0.7 else -rng.uniform(0.5, 3.0)
            rec.at = time.time() + ahead
        elif kind == "unique":
            rec.args = [rng.randrange(UNIQUE_KEYS)]
            rec.unique_for = rng.choice(UNIQUE_FOR)
            rec.key = unique_key(UNIQUE_JOBTYPE, rec.args)
        return rec

    @staticmethod
    def body(rec: Rec) -> dict[str, Any]:
        jobtype = UNIQUE_JOBTYPE if rec.key else rec.kind.capitalize()
        job: dict[str, Any] = {
            "jid": rec.jid,
            "jobtype": jobtype,
            "args": rec.args,
            "queue": rec.queue,
            "retry": rec.retry,
            "reserve_for": RESERVE_FOR,
        }
        custom: dict[str, Any] = {}
        if rec.key:
            custom["unique_for"] = rec.unique_for
        if rec.bid:
            custom["bid"] = rec.bid
        if custom:
            job["custom"] = custom
        if rec.at:
            job["at"] = rfc3339(rec.at)
        return job

    def push(self, rec: Rec) -> None:
        self.ledger.push_sent([rec], group=False)
        raw = self.call("PUSH " + dumps(self.body(rec)))
        if raw == OK:
            self.ledger.push_ok(rec)
        elif raw.startswith(b"-NOTUNIQUE") and rec.key:
            self.ledger.push_not_unique(rec)
        else:
            self.ledger.unexpected(f"PUSH {rec.jid}", raw)

    def push_many(self, recs: list[Rec]) -> None:
        number = self.ledger.push_sent(recs, group=True)
        raw = self.call("PUSHB " + dumps([self.body(r) for r in recs]))
        self.ledger.group_done(number)
        if not raw.startswith(b"$") or raw == NULL:
            self.ledger.unexpected("PUSHB", raw)
            return
        errors = json.loads(bulk(raw))
        with self.ledger.lock:
            self.ledger.counts["pushb"] += 1
        for rec in recs:
            error = errors.get(rec.jid)
            if error is None:
                self.ledger.push_ok(rec)
            elif str(error).startswith("NOTUNIQUE") and rec.key:
                self.ledger.push_not_unique(rec)
            else:
                self.ledger.unexpected(f"PUSHB job {rec.jid}", str(error).encode())

    def plain(self) -> None:
        self.push(self.new("plain"))

    def scheduled(self) -> None:
        self.push(self.new("scheduled"))

    def unique(self) -> None:
        self.push(self.new("unique"))

    def pushb(self) -> None:
        kinds = self.rng.choices(
            ["plain", "scheduled", "unique"], [60, 20, 20], k=self.rng.randint(2, 8)
        )
        self.push_many([self.new(kind) for kind in kinds])

    def batch(self) -> None:
        batch = self.carried.pop() if self.carried else None
        if batch is None:
            self.seq += 1
            desc = f"{self.name}-c{self.ledger.cycle}-{self.seq:06d}"
            callback = {"args": [desc], "queue": CALLBACK_QUEUE, "reserve_for": RESERVE_FOR}
            spec = {"description": desc, "complete": {"jobtype": "BatchComplete", **callback},
                    "success": {"jobtype": "BatchSuccess", **callback}}  # fmt: skip
            batch = self.ledger.batch_new_sent(desc)
            raw = self.call("BATCH NEW " + dumps(spec))
            if not raw.startswith(b"$") or raw == NULL:
                self.ledger.unexpected("BATCH NEW", raw)
                return
            self.ledger.batch_new_ok(batch, bulk(raw).decode())
        members = [self.new("member", bid=batch.bid) for _ in range(self.rng.randint(0, 4))]
        if len(members) > 1 and self.rng.random() < 0.5:
            self.push_many(members)
        else:
            for rec in members:
                self.push(rec)
        if self.rng.random() < 0.2:
            return  # left open: a producer of a later cycle commits it
        self.ledger.commit_sent(batch)
        raw = self.call("BATCH COMMIT " + batch.bid)
        if raw == OK:
            self.ledger.commit_ok(batch)
        else:
            self.ledger.unexpected(f"BATCH COMMIT {batch.bid}", raw)


class Consumer(LoadThread):
    """A worker: FETCH, then ACK most, FAIL some, keep some reserved; it first finishes
    some reservations left over from earlier cycles."""

    def __init__(
        self,
        name: str,
        port: int,
        ledger: Ledger,
        rng: random.Random,
        stop: threading.Event,
        orphans: list[Rec],
    ) -> None:
        super().__init__(name, port, ledger, rng, stop)
        self.wid = f"{name}-c{ledger.cycle}"
        self.orphans = orphans
        #: A FETCH is out with no reply yet: the server may have reserved a job for it.
        self.fetching = False

    def load(self, conn: Conn) -> None:
        hello = {"wid": self.wid, "v": 2, "hostname": "crash-harness", "pid": os.getpid()}
        if conn.call("HELLO " + dumps(hello)) != OK:
            raise Lost("HELLO refused")
        for rec in self.orphans:
            if self.stop.is_set():
                return
            if self.rng.random() < 0.7 or rec.kind == "callback":
                self.ack(rec)
            else:
                self.fail(rec)
            self.ops += 1
        for _ in range(MAX_OPS):
            if self.stop.is_set():
                return
            queues = list(ALL_QUEUES)
            self.rng.shuffle(queues)
            self.fetching = True
            raw = conn.call("FETCH " + " ".join(queues))
            self.fetching = False
            self.ops += 1
            if raw == NULL:
                continue
            if not raw.startswith(b"$"):
                self.ledger.unexpected("FETCH", raw)
                continue
            got = self.ledger.fetched(json.loads(bulk(raw)), self.wid)
            if got is None:
                continue
            r = self.rng.random()
            if got.kind == "callback" or r < 0.75:
                self.ack(got)
            elif r < 0.88:
                self.fail(got)
            # else: kept reserved; a later cycle finishes it

    def ack(self, rec: Rec) -> None:
        self.ledger.ack_sent(rec)
        raw = self.call(dumps({"jid": rec.jid}).join(["ACK ", ""]))
        if raw == OK:
            self.ledger.ack_ok(rec)
        else:
            self.ledger.unexpected(f"ACK {rec.describe()}", raw)

    def fail(self, rec: Rec) -> None:
        self.ledger.fail_sent(rec)
        report = {"jid": rec.jid, "errtype": "CrashHarness", "message": "failed on purpose",
                  "backtrace": ["crash_harness.py"]}  # fmt: skip
        raw = self.call("FAIL " + dumps(report))
        if raw == OK:
            self.ledger.fail_ok(rec)
        else:
            self.ledger.unexpected(f"FAIL {rec.describe()}", raw)


# -- reading the file ---------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """Where the file holds a job."""

    where: str  # Q, S, R, D, W
    queue: str
    wid: str
    job: dict[str, Any]


@dataclass
class Snapshot:
    """The whole database, read in one read transaction while the server runs."""

    taken: float
    rows: dict[str, Row]
    duplicates: list[str]
    locks: list[tuple[str, str, str, int]]
    batches: dict[str, dict[str, Any]]
    batch_failed: Counter[str]
    counters: dict[str, int]
    history: tuple[int, int]
    integrity: list[str]
    foreign_keys: list[Any]
    figures: dict[str, Any]


def read_snapshot(db: Path) -> Snapshot:
    """Every job, lock, batch and counter in the file, and its integrity check."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.set_busy_timeout(10_000)
        conn.execute("BEGIN")
        rows: dict[str, Row] = {}
        duplicates: list[str] = []

        def add(jid: str, where: str, queue: str, wid: str, payload: bytes) -> None:
            try:
                job = json.loads(payload)
            except ValueError:
                job = {}
            if job.get("jid") != jid:
                job = {"jid": jid, "corrupt": payload[:200].decode("utf-8", "replace")}
            if jid in rows:
                duplicates.append(f"{jid} ({rows[jid].where} and {where})")
            rows[jid] = Row(where, queue, wid, job)

        queue_sizes: Counter[str] = Counter()
        for jid, queue, payload in conn.execute("SELECT jid, queue, payload FROM queued"):
            add(jid, "Q", queue, "", payload)
            queue_sizes[queue] += 1
        taken = time.time()  # the read transaction's snapshot is older than this
        kinds = {1: "S", 2: "R", 3: "D"}
        set_sizes = {"scheduled": 0, "retries": 0, "dead": 0}
        names = {"S": "scheduled", "R": "retries", "D": "dead"}
        for kind, jid, payload in conn.execute("SELECT kind, jid, payload FROM sorted"):
            where = kinds.get(kind, f"?{kind}")
            add(jid, where, "", "", payload)
            rows[jid].queue = str(rows[jid].job.get("queue", ""))
            set_sizes[names.get(where, where)] = set_sizes.get(names.get(where, where), 0) + 1
        working = 0
        for jid, queue, wid, payload in conn.execute(
            "SELECT jid, queue, wid, payload FROM working"
        ):
            add(jid, "W", queue, wid, payload)
            working += 1
        locks = [
            (str(q), str(k), str(j), int(e))
            for q, k, j, e in conn.execute("SELECT queue, key, jid, expires_at FROM unique_locks")
        ]
        columns = ("bid", "description", "committed", "total", "pending", "failed",
                   "complete_st", "success_st")  # fmt: skip
        batches = {
            str(r[0]): dict(zip(columns, r, strict=True))
            for r in conn.execute(f"SELECT {', '.join(columns)} FROM batches")
        }
        batch_failed: Counter[str] = Counter(
            {
                str(b): int(n)
                for b, n in conn.execute("SELECT bid, count(*) FROM batch_failed GROUP BY bid")
            }
        )
        counters = {str(k): int(v) for k, v in conn.execute("SELECT name, value FROM counters")}
        row = conn.execute(
            "SELECT coalesce(sum(processed), 0), coalesce(sum(failures), 0) FROM history"
        ).fetchone()
        history = (int(row[0]), int(row[1])) if row else (0, 0)
        integrity = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
        foreign_keys = list(conn.execute("PRAGMA foreign_key_check"))
        conn.execute("COMMIT")
    finally:
        conn.close()
    lock_counts = Counter(q for q, _, _, _ in locks)
    committed = sum(1 for b in batches.values() if b["committed"])
    figures = {
        "queues": dict(sorted(queue_sizes.items())),
        "sets": {**set_sizes, "working": working},
        "total_processed": counters.get("processed", 0),
        "total_failures": counters.get("failures", 0),
        "unique_locks": dict(sorted(lock_counts.items())),
        "batches": {"open": len(batches) - committed, "committed": committed},
    }
    return Snapshot(taken, rows, duplicates, locks, batches, batch_failed, counters, history,
                    integrity, foreign_keys, figures)  # fmt: skip


def info_figures(conn: Conn) -> dict[str, Any]:
    """INFO's figures shaped like ``Snapshot.figures``."""
    raw = conn.call("INFO")
    if not raw.startswith(b"$") or raw == NULL:
        raise Lost(f"INFO answered {raw[:200]!r}")
    state = json.loads(bulk(raw))["faktory"]
    return {
        "queues": {q: n for q, n in sorted(state["queues"].items()) if n},
        "sets": state["sets"],
        "total_processed": state["total_processed"],
        "total_failures": state["total_failures"],
        "unique_locks": {q: n for q, n in sorted(state["unique_locks"].items()) if n},
        "batches": state["batches"],
    }


# -- the checks ---------------------------------------------------------------------------


def check_cycle(ledger: Ledger, port: int, db: Path) -> bool:
    """Check every invariant against the restarted server and its file, then resolve
    every "maybe" in the ledger; whether the integrity check passed."""
    conn = Conn(port)
    try:
        if conn.call('HELLO {"v":2}') != OK:
            raise Lost("HELLO refused")
        for _ in range(5):
            before = info_figures(conn)
            snap = read_snapshot(db)
            after = info_figures(conn)
            if before == after:  # nothing moved meanwhile (the scanners run every 5 s)
                break
        else:
            ledger.violation("INFO kept changing while the server was idle")
    finally:
        conn.close()
    ghosts, ledger.ghosts = ledger.ghosts, {}
    reconcile(ledger, snap, ghosts)
    if before == after and before != snap.figures:
        ledger.violation(f"INFO {before} differs from the file {snap.figures}")
    return snap.integrity == ["ok"]


def reconcile(ledger: Ledger, snap: Snapshot, ghosts: dict[str, int]) -> None:
    """Check the ledger against a snapshot; resolve what the last kill left open."""
    v = ledger.violation
    rows = snap.rows
    if snap.integrity != ["ok"]:
        v(f"integrity_check: {snap.integrity[:5]}")
    if snap.foreign_keys:
        v(f"foreign_key_check: {snap.foreign_keys[:5]}")
    for text in snap.duplicates:
        v(f"job stored twice: {text}")
    for jid in sorted(ledger.gone & rows.keys())[:20]:
        v(f"{jid} is {LOCATIONS[rows[jid].where]} after it was acknowledged or never pushed")
    for jid, row in rows.items():
        if jid not in ledger.live and jid not in ledger.gone:
            ledger._learn_callback(jid, row.job, "the file")
    for rec in list(ledger.live.values()):
        _check_job(ledger, rec, rows.get(rec.jid), snap.taken, ghosts)
    _check_groups(ledger)
    _check_batches(ledger, snap)
    _check_locks(ledger, snap)
    _check_uniqueness(ledger, snap.taken)
    processed, failures = snap.counters.get("processed", 0), snap.counters.get("failures", 0)
    if (processed, failures) != (ledger.acks + ledger.fails, ledger.fails):
        v(f"counters processed={processed} failures={failures}; the clients were told of "
          f"{ledger.acks} ACKs and {ledger.fails} FAILs")  # fmt: skip
    if snap.history != (processed, failures):
        v(f"history sums {snap.history} differ from the counters {(processed, failures)}")


def _check_job(
    ledger: Ledger, rec: Rec, row: Row | None, taken: float, ghosts: dict[str, int]
) -> None:
    where = row.where if row is not None else ""
    allowed = ALLOWED[rec.state]
    if "S" in allowed and rec.at <= rec.sent:
        allowed = allowed - {"S"}
    ok = where in allowed
    ghost = False
    # A FETCH out at the kill may have reserved it: at most one job per such worker.
    if row is not None and where == "W" and rec.state in FETCHABLE and ghosts.get(row.wid, 0):
        ghosts[row.wid] -= 1
        ok = ghost = True
        rec.wid = row.wid
    if not ok:
        ledger.violation(f"{rec.describe()} is {LOCATIONS.get(where, where)}")
    elif row is not None:
        if where == "W" and not ghost and row.wid != rec.wid:
            ledger.violation(f"{rec.describe()} is reserved by {row.wid}, not {rec.wid}")
        if where in ("Q", "W") and row.queue != rec.queue:
            ledger.violation(f"{rec.describe()} is in queue {row.queue}, not {rec.queue}")
        if rec.kind != "callback" and row.job.get("args") != rec.args:
            ledger.violation(f"{rec.describe()} has args {row.job.get('args')!r}")
        if where == "Q" and rec.state is not St.FAILED and rec.at > taken + SLACK:
            ledger.violation(f"{rec.describe()} was enqueued {rec.at - taken:.2f} s early")
        _check_failures(ledger, rec, row)
    # Resolve what the kill left open: the file is the truth now.
    if ghost:
        if rec.state is St.PUSH_MAYBE:
            ledger._confirmed(rec)
            ledger.counts["maybe_push_kept"] += 1
        elif rec.state is St.WAITING:
            ledger.waiting -= 1
        rec.state = St.RESERVED
        ledger.counts["ghost_reservations"] += 1
    elif rec.state is St.PUSH_MAYBE:
        if row is None:
            rec.state = St.ABSENT
            ledger._forget(rec)
            ledger.counts["maybe_push_lost"] += 1
        else:
            rec.state = St.WAITING
            ledger.waiting += 1
            ledger._confirmed(rec)
            ledger.counts["maybe_push_kept"] += 1
    elif rec.state is St.ACK_MAYBE:
        if row is None:
            ledger._acked(rec, rec.ack_replied)
            ledger.counts["maybe_ack_done"] += 1
        else:
            rec.state, rec.ack_sent, rec.ack_replied = St.RESERVED, math.inf, math.inf
    elif rec.state is St.FAIL_MAYBE:
        if where == "W":
            rec.state = St.RESERVED
        else:
            ledger._failed(rec, taken)
            ledger.counts["maybe_fail_done"] += 1


def _check_failures(ledger: Ledger, rec: Rec, row: Row) -> None:
    """Each committed FAIL was recorded once; a job is dead once its FAILs exceed its
    ``retry`` (a FAIL that is still "maybe" may have been recorded or not)."""
    failure = row.job.get("failure") or {}
    count = failure.get("retry_count", -1) + 1 if failure else 0
    maybe = rec.state is St.FAIL_MAYBE and row.where != "W"
    if count != rec.fails + maybe:
        ledger.violation(f"{rec.describe()} failed {rec.fails} times, stored count {count}")
    dead = rec.fails + maybe > rec.retry
    if (
        rec.state in (St.FAILED, St.FAIL_MAYBE)
        and row.where in ("R", "D")
        and (row.where == "D") != dead
    ):
        ledger.violation(f"{rec.describe()} with retry {rec.retry} is {LOCATIONS[row.where]}")


def _check_groups(ledger: Ledger) -> None:
    """A PUSHB is one transaction: its jobs (uniques aside) all exist, or none does."""
    for recs in ledger.maybe_groups.values():
        present = {r.state is not St.ABSENT for r in recs if not r.key}
        if len(present) > 1:
            ledger.violation(f"a PUSHB cut by the kill was half applied: {[r.jid for r in recs]}")
    ledger.maybe_groups.clear()


def _check_batches(ledger: Ledger, snap: Snapshot) -> None:
    v = ledger.violation
    by_desc = {b["description"]: bid for bid, b in snap.batches.items()}
    for desc, batch in list(ledger.new_batches.items()):
        del ledger.new_batches[desc]
        bid = by_desc.get(desc)
        if bid is not None:  # BATCH NEW was committed; its reply was lost
            batch.bid = bid
            ledger.batches[bid] = batch
            ledger.counts["batches"] += 1
    for bid in snap.batches.keys() - ledger.batches.keys() - ledger.finished.keys():
        v(f"unknown batch {bid} ({snap.batches[bid]['description']!r})")
    for bid, desc in ledger.finished.items():
        row = snap.batches.get(bid)
        if row is None or (row["committed"], row["success_st"], row["pending"]) != (1, "2", 0):
            v(f"finished batch {bid} ({desc}) is now {row}")
    for bid, batch in list(ledger.batches.items()):
        row = snap.batches.get(bid)
        if row is None:
            if batch.commit == "yes" or snap.taken - batch.touched < OPEN_BATCH_TTL:
                v(f"batch {bid} ({batch.desc}) is gone")
            del ledger.batches[bid]
            continue
        if batch.commit == "maybe":
            batch.commit = "yes" if row["committed"] else "no"
            ledger.counts["batches_committed"] += bool(row["committed"])
        elif bool(row["committed"]) != (batch.commit == "yes"):
            v(f"batch {bid}: committed={row['committed']}, but COMMIT was {batch.commit!r}")
        members = [m for m in batch.members if m.state is not St.ABSENT]
        present = [m for m in members if m.state is not St.ACKED]
        failed = sum(1 for m in present if m.fails)
        expect = {"total": len(members), "pending": len(present), "failed": failed}
        found = {k: row[k] for k in expect}
        if found != expect or snap.batch_failed[bid] != failed:
            v(f"batch {bid}: {found}, {snap.batch_failed[bid]} failure rows; expected {expect}")
        for kind, st in (("complete", row["complete_st"]), ("success", row["success_st"])):
            seen = ledger.callbacks.get((bid, kind), [])
            stored = [r for r in seen if r.jid in snap.rows]
            if (
                (st == "" and seen)
                or (st == "1" and len(stored) != 1)
                or (st == "2" and (stored or not seen))
            ):
                v(f"batch {bid}: {kind}_st={st!r}, callbacks seen {len(seen)}, "
                  f"stored {len(stored)}")  # fmt: skip
            if st not in ("", "1", "2"):
                v(f"batch {bid}: {kind}_st={st!r}")
        if row["committed"] and row["complete_st"] == "" and row["pending"] == row["failed"]:
            v(f"batch {bid}: every member ran but its complete callback never fired")
        if row["complete_st"] == "2" and row["success_st"] == "" and row["pending"] == 0:
            v(f"batch {bid}: every member succeeded but its success callback never fired")
        if not row["committed"] and (row["complete_st"] or row["success_st"]):
            v(f"batch {bid}: a callback fired before COMMIT")
        if row["success_st"] == "2" and not present:
            del ledger.batches[bid]  # nothing in it can change any more
            ledger.finished[bid] = batch.desc


def _check_locks(ledger: Ledger, snap: Snapshot) -> None:
    """Every lock names a stored job pushed with that key; every stored unique job whose
    lock cannot have expired holds it."""
    held: dict[tuple[str, str], str] = {}
    for queue, key, jid, _expires in snap.locks:
        held[(queue, key)] = jid
        rec = ledger.live.get(jid)
        if rec is None or jid not in snap.rows or (rec.queue, rec.key) != (queue, key):
            state = rec.describe() if rec else ("gone" if jid in ledger.gone else "unknown")
            ledger.violation(f"lock {key[:12]} in {queue} names {jid}: {state}")
    for rec in ledger.live.values():
        if (
            rec.key
            and rec.jid in snap.rows
            and rec.sent + rec.unique_for > snap.taken + SLACK
            and held.get((rec.queue, rec.key)) != rec.jid
        ):
            ledger.violation(f"{rec.describe()} lost its uniqueness lock")


def _check_uniqueness(ledger: Ledger, now: float) -> None:
    """A unique push succeeds only when no lock can be held on its key, and NOTUNIQUE
    only when one may be."""
    new, ledger.unique_new = ledger.unique_new, []
    for rec in new:
        if rec.state is not St.ABSENT:
            ledger.unique_done.setdefault(rec.key, []).append(rec)
    for rec in new:
        others = [a for a in ledger.unique_done.get(rec.key, []) if a is not rec]
        if rec.state is not St.ABSENT:
            for a in others:
                if (
                    a.replied + SLACK < rec.sent
                    and rec.replied + SLACK < a.sent + a.unique_for
                    and rec.replied + SLACK < a.ack_sent
                ):
                    ledger.violation(f"{rec.describe()} was pushed while {a.describe()} "
                                     "held the same uniqueness lock")  # fmt: skip
        elif rec.not_unique and not any(
            a.sent < rec.replied + SLACK
            and a.replied + a.unique_for + SLACK > rec.sent
            and a.ack_replied + SLACK > rec.sent
            for a in others
        ):
            ledger.violation(f"NOTUNIQUE for {rec.jid} though no job held its lock")
    for key, recs in ledger.unique_done.items():  # locks long expired matter no more
        ledger.unique_done[key] = [a for a in recs if a.replied + a.unique_for + 1 > now]


# -- the run ------------------------------------------------------------------------------


@dataclass
class HarnessConfig:
    """One run: how many cycles, the seed, durability, and how long each cycle loads."""

    db: Path
    cycles: int = 20
    seed: int = 1
    #: full, normal, or both (alternating per cycle, full first).
    durability: str = "both"
    #: The kill comes at a uniformly random moment within this many seconds of load.
    load_seconds: float = 1.0
    #: The whole run stops starting new cycles after this many seconds.
    deadline: float = 600.0
    #: Share of cycles that first kill a server while it starts (before or just after
    #: it listens), then start it again.
    startup_kills: float = 0.1
    producers: int = 3
    consumers: int = 3
    progress: Callable[[str], None] | None = None
    #: How the server is started (a subclass may run it differently).
    server_class: type[ServerProcess] = ServerProcess


@dataclass
class Report:
    """What a run did and found."""

    seed: int
    durability: str
    cycles_planned: int
    cycles: int = 0
    kills: int = 0
    startup_kills: int = 0
    #: Per start: spawn to listening, and the server's own part (first log line to
    #: listening: opening the file, WAL recovery, loading the state).
    recovery_s: list[float] = field(default_factory=list)
    open_s: list[float] = field(default_factory=list)
    integrity_checks: int = 0
    integrity_ok: int = 0
    violations: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    drained: int = 0
    clean_restart: bool = False
    stopped_by_deadline: bool = False
    wall_s: float = 0.0
    log_tail: str = ""

    def summary(self) -> list[str]:
        c = self.counts
        rec = self.recovery_s
        lines = [
            f"seed {self.seed}, durability {self.durability}: {self.cycles} of "
            f"{self.cycles_planned} cycles, {self.kills} SIGKILLs under load and "
            f"{self.startup_kills} during start-up, {self.wall_s:.1f} s"
            + (" (stopped by the deadline)" if self.stopped_by_deadline else ""),
            f"jobs pushed {c.get('pushed', 0)} (plain {c.get('pushed_plain', 0)}, scheduled "
            f"{c.get('pushed_scheduled', 0)}, unique {c.get('pushed_unique', 0)}, batch members "
            f"{c.get('pushed_member', 0)}; {c.get('pushb', 0)} PUSHB), NOTUNIQUE "
            f"{c.get('not_unique', 0)}",
            f"fetched {c.get('fetched', 0)}, acked {c.get('acked', 0)}, failed "
            f"{c.get('failed', 0)}; batches {c.get('batches', 0)} (committed "
            f"{c.get('batches_committed', 0)}), callbacks {c.get('callbacks', 0)}",
            f"cut by a kill: pushes kept {c.get('maybe_push_kept', 0)} / lost "
            f"{c.get('maybe_push_lost', 0)}, ACKs done {c.get('maybe_ack_done', 0)}, FAILs done "
            f"{c.get('maybe_fail_done', 0)}, reservations of lost FETCHes "
            f"{c.get('ghost_reservations', 0)}",
            f"recovery over {len(rec)} starts: spawn to listening max {ms(max(rec, default=0))}, "
            f"median {ms(median(rec))}; of which the server's own start (first log line to "
            f"listening) max {ms(max(self.open_s, default=0))}, median {ms(median(self.open_s))}",
            f"integrity_check ok {self.integrity_ok} of {self.integrity_checks}; final drain "
            f"{self.drained} jobs; clean SIGTERM restart "
            + ("ok" if self.clean_restart else "not reached"),
            f"violations: {len(self.violations)}",
        ]
        lines += [f"  ! {text}" for text in self.violations[:20]]
        return lines

    def as_json(self) -> dict[str, Any]:
        rec = self.recovery_s
        return {
            "seed": self.seed,
            "durability": self.durability,
            "cycles_planned": self.cycles_planned,
            "cycles": self.cycles,
            "kills": self.kills,
            "startup_kills": self.startup_kills,
            "recovery_s": {
                "max": max(rec, default=0.0),
                "median": median(rec),
                "all": [round(r, 4) for r in self.recovery_s],
            },
            "open_s": {
                "max": max(self.open_s, default=0.0),
                "median": median(self.open_s),
                "all": [round(r, 4) for r in self.open_s],
            },
            "integrity_checks": self.integrity_checks,
            "integrity_ok": self.integrity_ok,
            "violations": self.violations,
            "counts": dict(sorted(self.counts.items())),
            "drained": self.drained,
            "clean_restart": self.clean_restart,
            "stopped_by_deadline": self.stopped_by_deadline,
            "wall_s": round(self.wall_s, 2),
        }


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def durability_of(config: HarnessConfig, cycle: int) -> str:
    if config.durability == "both":
        return ("full", "normal")[cycle % 2]
    return config.durability


def run_harness(config: HarnessConfig) -> Report:
    """Run up to ``config.cycles`` kill-and-restart cycles, then drain, stop cleanly and
    check once more. Stops at the first cycle that finds a violation."""
    started = time.monotonic()
    deadline = started + config.deadline
    rng = random.Random(config.seed)
    ledger = Ledger()
    report = Report(config.seed, config.durability, config.cycles)
    server: ServerProcess | None = None
    say = config.progress or (lambda _text: None)

    def start(cycle: int) -> ServerProcess | None:
        ledger.cycle = cycle
        srv = config.server_class(config.db, durability_of(config, cycle))
        try:
            report.recovery_s.append(srv.start())
            report.open_s.append(srv.ready_after - srv.first_line_after)
        except ServerFailed as exc:
            ledger.violation(f"the server did not restart: {exc}")
            return None
        return srv

    def check(srv: ServerProcess) -> None:
        report.integrity_checks += 1
        try:
            report.integrity_ok += check_cycle(ledger, srv.port, config.db)
        except Exception as exc:
            ledger.violation(f"checking the restarted server failed: {exc!r}")

    try:
        for cycle in range(config.cycles):
            if time.monotonic() > deadline:
                report.stopped_by_deadline = True
                break
            if rng.random() < config.startup_kills:
                early = config.server_class(config.db, durability_of(config, cycle))
                early.spawn()
                time.sleep(rng.uniform(0.0, 0.3))
                early.kill()
                report.startup_kills += 1
            server = start(cycle)
            if server is None:
                break
            check(server)
            if ledger.violations:
                break
            stop = threading.Event()
            orphans = ledger.orphans()
            rng.shuffle(orphans)
            orphans = orphans[: len(orphans) // 2]
            carried = ledger.open_batches()
            threads: list[LoadThread] = []
            for n in range(config.producers):
                name = f"p{n}"
                rng_n = thread_rng(config, cycle, name)
                carried_n = carried[n :: config.producers]
                threads.append(Producer(name, server.port, ledger, rng_n, stop, carried_n))
            consumers = [
                Consumer(
                    f"w{n}",
                    server.port,
                    ledger,
                    thread_rng(config, cycle, f"w{n}"),
                    stop,
                    orphans[n :: config.consumers],
                )
                for n in range(config.consumers)
            ]
            threads += consumers
            for t in threads:
                t.start()
            time.sleep(kill_delay(config, rng))
            server.kill()
            kill_time = time.time()
            report.kills += 1
            stop.set()
            for t in threads:
                t.join(20)
            hung = [t.name for t in threads if t.is_alive()]
            if hung:
                ledger.violation(f"load threads still running after the kill: {hung}")
                break
            ledger.killed(kill_time, {c.wid: 1 for c in consumers if c.fetching})
            report.cycles += 1
            say(f"cycle {cycle}: {server.durability}, {sum(t.ops for t in threads)} commands, "
                f"killed; {len(ledger.live)} jobs live")  # fmt: skip
            server = None
        if not ledger.violations:
            server = finish(config, ledger, report, start, check)
    finally:
        if server is not None:
            report.log_tail = server.log_tail()
            server.kill()
        report.violations = list(ledger.violations)
        report.counts = dict(ledger.counts)
        report.wall_s = time.monotonic() - started
    return report


def kill_delay(config: HarnessConfig, rng: random.Random) -> float:
    """When to kill: a random moment of the load or, when the scanners' next run comes
    up within it, often while they run (cutting their transaction) or just after."""
    anywhere = rng.uniform(0.0, config.load_seconds)
    cut = rng.uniform(-0.02, 0.25)
    after = rng.uniform(0.4, 1.0)
    coin = rng.random()
    to_scan = SCAN_PERIOD - time.time() % SCAN_PERIOD
    if to_scan < config.load_seconds + 0.3:
        if coin < 0.3:
            return max(to_scan + cut, 0.0)
        if coin < 0.7:
            return to_scan + after
    return anywhere


def thread_rng(config: HarnessConfig, cycle: int, name: str) -> random.Random:
    return random.Random(f"{config.seed}:{cycle}:{name}")


def finish(
    config: HarnessConfig,
    ledger: Ledger,
    report: Report,
    start: Callable[[int], ServerProcess | None],
    check: Callable[[ServerProcess], None],
) -> ServerProcess | None:
    """After the last kill: restart, check, drain every queue and reservation, stop with
    SIGTERM, restart, and check again. The server still running (None when stopped)."""
    last = report.cycles
    server = start(last)
    if server is None:
        return None
    check(server)
    if ledger.violations:
        return server
    report.drained = drain(ledger, server.port)
    if ledger.violations or not stopped(ledger, server):
        return server
    server = start(last + 1)
    if server is None:
        return None
    check(server)
    report.clean_restart = not ledger.violations
    return None if stopped(ledger, server) else server


def stopped(ledger: Ledger, server: ServerProcess) -> bool:
    """Stop the server with SIGTERM; whether it exited with 0."""
    try:
        code = server.stop()
    except ServerFailed as exc:
        ledger.violation(str(exc))
        return False
    if code != 0:
        ledger.violation(f"the server exited with {code} on SIGTERM:\n{server.log_tail()}")
    return code == 0


def drain(ledger: Ledger, port: int, timeout: float = 120.0) -> int:
    """ACK every reservation and every queued job (new callbacks included); how many."""
    deadline = time.monotonic() + timeout
    conn: Conn | None = None
    wid = f"drain-c{ledger.cycle}"
    done = 0
    try:
        conn = Conn(port)
        if conn.call(f'HELLO {{"wid":"{wid}","v":2}}') != OK:
            raise Lost("HELLO refused")

        def ack(rec: Rec) -> None:
            assert conn is not None
            ledger.ack_sent(rec)
            raw = conn.call(dumps({"jid": rec.jid}).join(["ACK ", ""]))
            if raw == OK:
                ledger.ack_ok(rec)
            else:
                ledger.unexpected(f"ACK {rec.describe()}", raw)

        for rec in ledger.orphans():
            ack(rec)
            done += 1
        limit = len(ledger.live) + 10_000
        for _ in range(limit):
            if time.monotonic() > deadline:
                ledger.violation("the final drain did not finish in time")
                break
            if info_figures(conn)["queues"] == {}:
                break
            raw = conn.call("FETCH " + " ".join(ALL_QUEUES))
            if raw == NULL:
                continue
            if not raw.startswith(b"$"):
                ledger.unexpected("FETCH", raw)
                break
            got = ledger.fetched(json.loads(bulk(raw)), wid)
            if got is None:
                break
            ack(got)
            done += 1
        working = info_figures(conn)["sets"]["working"]
        if working:
            ledger.violation(f"after the drain INFO still shows {working} reservations")
    except Lost as exc:
        ledger.violation(f"the final drain lost its connection: {exc}")
    finally:
        if conn is not None:
            conn.close()
    return done
