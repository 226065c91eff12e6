"""Long wire-level fuzzing run against a live minifaktory server.

Run: ``python benchmarks/bench_fuzz.py [--frames N] [--connections C] [--seed S]
[--deadline SECONDS] [--json PATH] [--workdir DIR]``

A seeded generator writes frames over C parallel connections (each opened with
HELLO, most of them with a wid): valid commands with valid payloads, mutated
versions of them (byte and bit flips, truncation, splicing, huge numbers, deep
nesting, invalid UTF-8, NUL bytes, bare CRs, empty lines, long verbs, JSON type
confusion) and garbage. Every line must get exactly one well-formed RESP reply
within ``--reply-deadline`` seconds (plus FETCH's 2 s wait), ``-ERR internal
error`` only where Faktory itself answers so (a bare verb), and the server log
must hold no traceback. The server's RSS and database size are sampled
throughout; at the end the server must still answer, ``PRAGMA integrity_check``
must say ok, and SIGTERM must stop it with exit code 0.

The server runs in its own process (``python -m minifaktory``) on 127.0.0.1 and
is stopped by the PID this script started. Every loop is bounded by a count and
by a deadline. Exit code 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import apsw
import msgspec

sys.path.insert(0, str(Path(__file__).parent))

from bench_throughput import environment, free_port, run_async, server_command

HOST = "127.0.0.1"
#: FETCH blocks this long server-side when its queues are empty (Faktory: 2 s).
FETCH_WAIT = 2.0
#: The server's line cap (minifaktory.config.MAX_LINE_BYTES); longer lines get "-ERR ... too long".
MAX_LINE = 16 * 1024 * 1024
OVERLONG_SIZE = MAX_LINE + 1024 * 1024
STOP_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0
MAX_CONNECT_FAILURES = 20
SAMPLE_EVERY_S = 0.5
PROGRESS_EVERY_S = 10.0
#: A client-side model of the server's line buffer resets itself beyond this many bytes.
MAX_PARTIAL = 256 * 1024
#: Fetched jids a connection holds before it must ACK or FAIL one.
MAX_HELD = 40
#: A mutated line is cut to this size after each mutation (chained mutations multiply).
MAX_MUTATED = 512 * 1024
#: A reply slower than this (beyond FETCH's wait) is counted as slow.
SLOW_S = 1.0
#: The client's own event loop counts as stalled when its ticker is this late (s).
STALL_S = 1.0
RESERVOIR = "fz.res"
RESERVOIR_LOW = 300
RESERVOIR_REFILL = 500
PREFILL = 2000
#: Memory counts as bounded when RSS at the end exceeds RSS at 10 % of the run by at
#: most this much (absolute MiB, or this share of the 10 % figure, whichever is larger).
RSS_SLACK_MB = 24.0
RSS_SLACK_SHARE = 0.25
#: The database (with its WAL) counts as bounded when it ends at most this large (MiB), or
#: at most this many times its size at 10 % of the run, whichever is larger.
DB_SLACK_MB = 64.0
DB_SLACK_FACTOR = 3.0
#: Runs shorter than this many frames report memory figures without a verdict.
MEMORY_VERDICT_MIN_FRAMES = 100_000
MAX_FINDINGS = 25
HISTORY = 6

T = TypeVar("T")

# -- vocabulary ------------------------------------------------------------------------

POOL = ["default", "fz.0", "fz.1", "fz.2", "fz.3", "fz.4", "fz-crit", "fz_low"]
BAD_QUEUES = ["", "bad name", "ü", "x" * 300, "a/b", "*", "fz.res\x00", "\u202e"]
JOBTYPES = ["Resize", "SendMail", "ünïcødé::Job", "日本語", "🚀", "a", "Job With Spaces", "x" * 120]
# A lone surrogate is JSON-escaped, or raw (invalid UTF-8) when written with surrogatepass.
STRINGS = ["", "plain", "héllo wörld", "日本語のテキスト", "🚀✨👩\u200d👩\u200d👧",
           "a\u0301e\u0301", "\u202eRTL override", "zero\u200bwidth", "nul\x00byte",
           "tab\tand\nnewline\r",
           "\ufeffbom", "\uffff\ufffe", "\ud800", "\U0001d518\U0001d52b\U0001d526",
           'quote"back\\slash', "<script>alert(1)</script>", "%s%n%x", "' OR 1=1 --", "*",
           "[a-z]"]  # fmt: skip
NUMBERS: list[Any] = [0, -1, 1, 7, 2**31, -(2**31) - 1, 2**53 + 1, 2**63 - 1, -(2**63), 2**64,
                      10**30, -(10**30), 0.5, -0.0, 1e308, 5e-324, 3.14159]  # fmt: skip
GLOBS = ["*", "*Resize*", '*"queue":"fz.1"*', "*ü*", "[a-z]*", "*?x*", "\\*", "[^a]*", "*[",
         "[]*", "*\\", "?", "*日本*", "[z-a]*"]  # fmt: skip
MUTATE_CMDS = ["clear", "kill", "discard", "requeue"]
MUTATE_TARGETS = ["retries", "scheduled", "dead"]
GARBAGE_VERBS = ["PUSH", "PUSHB", "FETCH", "ACK", "FAIL", "BEAT", "INFO", "MUTATE", "QUEUE",
                 "QUEUE PAUSE", "QUEUE LATENCY", "BATCH", "BATCH NEW", "BATCH OPEN",
                 "BATCH COMMIT", "BATCH STATUS", "BATCH CHILD", "TRACK", "TRACK GET", "TRACK SET",
                 "REQUEUE", "HELLO", "PING", "push", "", "GET", "*1"]  # fmt: skip
#: Lines Faktory itself answers with "-ERR internal error" (a handler panic on a nil payload).
BARE_INTERNAL = {b"PUSH", b"PUSHB", b"ACK", b"FAIL", b"BEAT", b"QUEUE", b"BATCH", b"TRACK",
                 b"REQUEUE"}  # fmt: skip
JSON_BULK_VERBS = {b"INFO", b"FETCH", b"PUSHB"}
TLS_HELLO = bytes.fromhex("160301012c0100012803035a5b5c5d5e5f")


def now_text(offset_s: float) -> str:
    """An RFC3339 time ``offset_s`` seconds from now."""
    t = time.time() + offset_s
    frac = f"{t % 1:.6f}"[1:]
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + frac + "Z"


def dumps(value: Any, rng: random.Random) -> bytes:
    """JSON of ``value``: compact or spaced, ASCII-escaped or raw UTF-8 (lone
    surrogates then become invalid UTF-8)."""
    ascii_only = rng.random() < 0.5
    seps = (",", ":") if rng.random() < 0.8 else (", ", ": ")
    text = json.dumps(value, ensure_ascii=ascii_only, separators=seps)
    return text.encode("utf-8", "surrogatepass")


def enc(text: str) -> bytes:
    """UTF-8, lone surrogates included (as invalid UTF-8)."""
    return text.encode("utf-8", "surrogatepass")


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# -- the frame generator -------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class Frame:
    """One write to the server: its kind (valid/mutated/garbage/overlong), a label, the bytes."""

    kind: str
    label: str
    data: bytes
    #: jids this frame pushes (valid frames only), for later ACK, FAIL, TRACK and MUTATE frames.
    pushes: list[str] = dataclasses.field(default_factory=list)


class Shared:
    """State every connection's generator reads and updates."""

    def __init__(self) -> None:
        self.bids: deque[str] = deque(maxlen=200)
        self.pushed: deque[str] = deque(maxlen=2000)
        self.reservoir = 0
        #: When a refill PUSHB was sent (0: none outstanding); a stale one is forgotten.
        self.refilling = 0.0
        self.jid_counter = 0

    def may_refill(self) -> bool:
        return self.reservoir < RESERVOIR_LOW and time.monotonic() - self.refilling > 30.0


class Generator:
    """Frames for one connection slot, from its own seeded ``random.Random``."""

    def __init__(self, rng: random.Random, shared: Shared, slot: int) -> None:
        self.rng = rng
        self.shared = shared
        self.slot = slot
        self.wid = ""
        self.held: list[str] = []
        #: The fetched jid the last frame finishes; it goes back to ``held`` if that failed.
        self.taken = ""
        self.follow: deque[Frame] = deque()
        self.valid_table: list[tuple[str, float, Callable[[], Frame]]] = [
            ("PUSH", 13, self.push),
            ("PUSHB", 3, self.pushb),
            ("FETCH", 24, self.fetch),
            ("ACK", 12, self.ack),
            ("FAIL", 5, self.fail),
            ("ACK*", 1, self.ack_fake),
            ("FAIL*", 1, self.fail_fake),
            ("BEAT", 3, self.beat),
            ("INFO", 2, self.info),
            ("MUTATE", 2, self.mutate),
            ("QUEUE", 2, self.queue),
            ("BATCH", 3, self.batch),
            ("TRACK", 3, self.track),
            ("REQUEUE", 1, self.requeue),
            ("END", 0.05, self.end),
            ("FLUSH", 0.004, self.flush),
        ]
        self._valid_weights = [w for _, w, _ in self.valid_table]
        # Mutation sources: FETCH rarely (a mutated FETCH of an empty queue waits 2 s).
        self._source_weights = [w / 20 if n == "FETCH" else w for n, w, _ in self.valid_table]
        self._source_weights[-2:] = [0, 0]  # no END or FLUSH as mutation sources
        self.mutators: list[tuple[str, Callable[[bytes], bytes]]] = [
            ("flip", self.m_flip),
            ("bitflip", self.m_bitflip),
            ("insert", self.m_insert),
            ("delete", self.m_delete),
            ("truncate", self.m_truncate),
            ("splice", self.m_splice),
            ("hugenum", self.m_hugenum),
            ("nest", self.m_nest),
            ("utf8", self.m_utf8),
            ("nul", self.m_nul),
            ("cr", self.m_cr),
            ("emptylines", self.m_emptylines),
            ("longverb", self.m_longverb),
            ("json", self.m_json),
            ("spaces", self.m_spaces),
            ("case", self.m_case),
            ("bare", self.m_bare),
            ("newline", self.m_newline),
        ]

    # -- helpers ---------------------------------------------------------------------

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def new_jid(self) -> str:
        self.shared.jid_counter += 1
        n = self.shared.jid_counter
        r = self.rng.random()
        if r < 0.85:
            return f"fz{self.slot:02d}{n:012x}"
        if r < 0.95:
            return f"jïd-ü-{n}-{self.rng.choice(STRINGS)}"
        return self.rng.choice(["", "short", "12345678", "x" * 500, f"{n}\u202e"])

    def string(self) -> str:
        r = self.rng.random()
        if r < 0.6:
            return self.rng.choice(STRINGS)
        if r < 0.9:
            return "".join(
                chr(self.rng.randrange(32, 0x2FFF)) for _ in range(self.rng.randrange(12))
            )
        return "".join(chr(self.rng.randrange(0, 0x110000)) for _ in range(self.rng.randrange(6)))

    def value(self, depth: int = 0) -> Any:
        r = self.rng.random()
        if depth >= 3 or r < 0.3:
            return self.rng.choice(NUMBERS)
        if r < 0.6:
            return self.string()
        if r < 0.7:
            return self.rng.choice([None, True, False])
        if r < 0.85:
            return [self.value(depth + 1) for _ in range(self.rng.randrange(4))]
        return {self.string(): self.value(depth + 1) for _ in range(self.rng.randrange(4))}

    def job(self) -> dict[str, Any]:
        rng = self.rng
        job: dict[str, Any] = {
            "jid": self.new_jid(),
            "jobtype": rng.choice(JOBTYPES),
            "args": [self.value() for _ in range(rng.randrange(4))],
        }
        job["queue"] = rng.choice(BAD_QUEUES if self.chance(0.03) else POOL)
        if self.chance(0.3):
            job["retry"] = rng.choice([None, 0, 1, 2, 3, 25, -1])
        if self.chance(0.2):
            job["reserve_for"] = rng.choice([0, 1, 59, 60, 600, 1800, 86400])
        if self.chance(0.15):
            job["at"] = rng.choice(
                [now_text(-60), now_text(rng.uniform(0.5, 20)), now_text(86400 * 365), ""]
            )
        if self.chance(0.1):
            job["priority"] = rng.randrange(1, 10)
        if self.chance(0.05):
            job["backtrace"] = rng.randrange(0, 30)
        if self.chance(0.05):
            job["created_at"] = now_text(-rng.uniform(0, 1000))
        if self.chance(0.35):
            custom: dict[str, Any] = {}
            if self.chance(0.2):
                custom["unique_for"] = rng.choice([1, 5, 30, 0.5])
                if self.chance(0.5):
                    custom["unique_until"] = rng.choice(["success", "start"])
            if self.chance(0.15):
                if self.chance(0.5):
                    custom["expires_in"] = rng.choice([1, 30, "1m", "250ms", "1h30m"])
                else:
                    custom["expires_at"] = now_text(rng.choice([-5, 5, 600]))
            if self.chance(0.2):
                custom["track"] = 1
            if self.shared.bids and self.chance(0.25):
                custom["bid"] = rng.choice(self.shared.bids)
            if self.chance(0.3):
                custom["tags"] = [self.string() for _ in range(rng.randrange(3))]
            for _ in range(rng.randrange(3)):
                custom[self.string()] = self.value()
            job["custom"] = custom
        if self.chance(0.05):
            job[self.string()] = self.value()  # an unknown top-level field
        return job

    def held_jid(self) -> str:
        """A fetched jid to finish (taken off the list), else another known one."""
        if not self.held:
            return self.known_jid()
        self.taken = self.held.pop(self.rng.randrange(len(self.held)))
        return self.taken

    def known_jid(self) -> str:
        if self.held and self.chance(0.3):
            return self.rng.choice(self.held)
        if self.shared.pushed and self.chance(0.8):
            return self.rng.choice(self.shared.pushed)
        return self.new_jid()

    def glob(self) -> str:
        rng = self.rng
        if self.chance(0.02):
            # Many stars around a character every stored job has plenty of, no match at the end.
            char = rng.choice('",:0e')
            return "*" + "*".join(char * rng.randrange(8, 17)) + "*Q"
        if self.chance(0.2):
            return f"*{rng.choice(self.shared.pushed) if self.shared.pushed else 'fz'}*"
        return rng.choice(GLOBS)

    # -- valid commands ------------------------------------------------------------------

    def valid(self) -> Frame:
        self.taken = ""
        if self.follow:
            return self.follow.popleft()
        if self.shared.may_refill():
            return self.refill()
        if len(self.held) > MAX_HELD:
            return self.ack() if self.chance(0.8) else self.fail()
        (_, _, make) = self.rng.choices(self.valid_table, self._valid_weights)[0]
        return make()

    def line(self, label: str, text: bytes, pushes: list[str] | None = None) -> Frame:
        end = b"\r\n" if self.chance(0.9) else b"\n"
        return Frame("valid", label, text + end, pushes or [])

    def refill(self) -> Frame:
        self.shared.refilling = time.monotonic()
        self.shared.jid_counter += 1
        base = f"rf{self.slot:02d}{self.shared.jid_counter:010x}"
        jobs = [
            {"jid": f"{base}{i:04d}", "jobtype": "Fill", "args": [i], "queue": RESERVOIR}
            for i in range(RESERVOIR_REFILL)
        ]
        return self.line("refill", b"PUSHB " + compact(jobs))

    def push(self) -> Frame:
        job = self.job()
        return self.line("PUSH", b"PUSH " + dumps(job, self.rng), [str(job["jid"])])

    def pushb(self) -> Frame:
        jobs = [self.job() for _ in range(self.rng.randrange(0, 12))]
        return self.line("PUSHB", b"PUSHB " + dumps(jobs, self.rng), [str(j["jid"]) for j in jobs])

    def fetch(self) -> Frame:
        names = self.rng.sample(POOL, self.rng.randrange(0, 4))
        return self.line("FETCH", " ".join(["FETCH", *names, RESERVOIR]).encode())

    def ack(self) -> Frame:
        jid = self.held_jid()
        return self.line("ACK", b"ACK " + dumps({"jid": jid}, self.rng))

    def ack_fake(self) -> Frame:
        payload = {"jid": self.new_jid()}
        if self.chance(0.3):
            payload[self.string()] = self.string()
        return self.line("ACK", b"ACK " + dumps(payload, self.rng))

    def failure(self, jid: str) -> dict[str, Any]:
        rng = self.rng
        report: dict[str, Any] = {"jid": jid}
        if self.chance(0.9):
            report["errtype"] = rng.choice(["RuntimeError", "", "   ", "E" * 300, self.string()])
        if self.chance(0.9):
            report["message"] = rng.choice(["boom", "", "m" * 3000, self.string()])
        if self.chance(0.6):
            report["backtrace"] = [self.string() for _ in range(rng.choice([0, 1, 5, 80]))]
        return report

    def fail(self) -> Frame:
        jid = self.held_jid()
        return self.line("FAIL", b"FAIL " + dumps(self.failure(jid), self.rng))

    def fail_fake(self) -> Frame:
        return self.line("FAIL", b"FAIL " + dumps(self.failure(self.new_jid()), self.rng))

    def beat(self) -> Frame:
        rng = self.rng
        own = bool(self.wid) and self.chance(0.9)
        payload: dict[str, Any] = {"wid": self.wid if own else self.new_jid()}
        if self.chance(0.5):
            payload["rss_kb"] = rng.choice([0, 1024, 2**40, 123456])
        if self.chance(0.3):
            payload["current_state"] = rng.choice(["", "running", "bogus", "quiet", "terminate"])
        return self.line("BEAT", b"BEAT " + dumps(payload, rng))

    def info(self) -> Frame:
        return self.line("INFO", b"INFO" if self.chance(0.9) else b"INFO " + enc(self.string()))

    def mutate(self) -> Frame:
        rng = self.rng
        op: dict[str, Any] = {"cmd": rng.choice(MUTATE_CMDS), "target": rng.choice(MUTATE_TARGETS)}
        if self.chance(0.8):
            flt: dict[str, Any] = {}
            r = rng.random()
            if r < 0.3:
                flt["jids"] = [self.known_jid() for _ in range(rng.randrange(1, 4))]
            elif r < 0.7:
                flt["regexp"] = self.glob()
            if self.chance(0.4):
                flt["jobtype"] = rng.choice(JOBTYPES)
            op["filter"] = flt
        return self.line("MUTATE", b"MUTATE " + compact(op).replace(b" ", b"_"))

    def queue(self) -> Frame:
        rng = self.rng
        sub = rng.choice(["PAUSE", "RESUME", "REMOVE", "LATENCY", "pause", "resume"])
        names = rng.sample(POOL, rng.randrange(1, 4))
        wildcard = {"RESUME": 0.3, "PAUSE": 0.002, "REMOVE": 0.01}.get(sub.upper(), 0.0)
        if self.chance(wildcard):
            names = ["*"]
        elif sub == "LATENCY" and self.chance(0.2):
            names.append(RESERVOIR)
        return self.line("QUEUE", " ".join(["QUEUE", sub, *names]).encode("utf-8"))

    def batch(self) -> Frame:
        rng = self.rng
        bids = self.shared.bids
        r = rng.random()
        if r < 0.3 or not bids:
            spec: dict[str, Any] = {"description": self.string()}
            if self.chance(0.8):
                spec["success"] = {"jobtype": "BatchDone", "args": [1], "queue": rng.choice(POOL)}
            if self.chance(0.8):
                spec["complete"] = {"jobtype": "BatchSeen", "args": [], "queue": rng.choice(POOL)}
            if bids and self.chance(0.2):
                spec["parent_bid"] = rng.choice(bids)
            return self.line("BATCH", b"BATCH NEW " + dumps(spec, rng))
        bid = rng.choice(bids) if self.chance(0.9) else "b-" + self.new_jid()
        sub = rng.choice(["OPEN", "COMMIT", "COMMIT", "STATUS", "STATUS", "CHILD"])
        if sub == "CHILD":
            return self.line("BATCH", enc(f"BATCH CHILD {bid} {rng.choice(bids)}"))
        return self.line("BATCH", enc(f"BATCH {sub} {bid}"))

    def track(self) -> Frame:
        rng = self.rng
        jid = self.known_jid()
        if self.chance(0.5):
            return self.line("TRACK", enc(f"TRACK GET {jid}"))
        report: dict[str, Any] = {"jid": jid}
        if self.chance(0.7):
            report["percent"] = rng.choice([0, 50, 100, -5, 101, 2**40])
        if self.chance(0.7):
            report["desc"] = self.string()
        if self.chance(0.3):
            report["reserve_until"] = rng.choice([now_text(600), now_text(-10), "soon", ""])
        return self.line("TRACK", b"TRACK SET " + dumps(report, rng))

    def requeue(self) -> Frame:
        jid = self.held_jid()
        return self.line("REQUEUE", b"REQUEUE " + dumps({"jid": jid}, self.rng))

    def end(self) -> Frame:
        return self.line("END", b"END")

    def flush(self) -> Frame:
        return self.line("FLUSH", b"FLUSH")

    # -- mutated and garbage frames ------------------------------------------------------

    def source_line(self) -> bytes:
        (_, _, make) = self.rng.choices(self.valid_table, self._source_weights)[0]
        held = list(self.held)
        frame = make()
        self.held, self.taken = held, ""  # a mutated ACK/FAIL does not use up a real jid
        self.follow.clear()
        return frame.data.rstrip(b"\r\n")

    def mutated(self) -> Frame:
        rng = self.rng
        data = self.source_line()
        names = []
        for _ in range(1 if self.chance(0.7) else rng.randrange(2, 4)):
            name, mutate = rng.choice(self.mutators)
            names.append(name)
            data = mutate(data)[:MAX_MUTATED]
        end = rng.choice([b"\r\n"] * 6 + [b"\n"] * 2 + [b"", b"\r", b"\n\r", b"\r\r\n"])
        return Frame("mutated", "+".join(names), self.tame(data + end))

    def garbage(self) -> Frame:
        rng = self.rng
        r = rng.random()
        if r < 0.25:
            data = rng.randbytes(rng.randrange(0, 300))
            label = "bytes"
        elif r < 0.45:
            data = bytes(rng.randrange(32, 127) for _ in range(rng.randrange(0, 200)))
            label = "ascii"
        elif r < 0.75:
            verb = rng.choice(GARBAGE_VERBS).encode()
            tail = rng.choice(
                [
                    b"",
                    b" ",
                    rng.randbytes(rng.randrange(1, 80)),
                    b" " + dumps(self.value(), rng),
                    b" " + enc(self.string()),
                    b" {",
                    b" []",
                    b" null",
                    b" " + b"[" * rng.randrange(1, 5000),
                ]
            )
            data = verb + tail
            label = "verb+junk"
        elif r < 0.9:
            data = rng.choice(
                [
                    b"GET / HTTP/1.1\r\nHost: x\r\n",
                    TLS_HELLO,
                    b"*1\r\n$4\r\nPING",
                    b'HELLO {"v":2}',
                    b'{"jid":"x"}',
                    b"\r" * rng.randrange(1, 100),
                    b"\x00" * rng.randrange(1, 100),
                    b"\xff\xfe\xfd",
                ]
            )
            label = "known-junk"
        elif r < 0.95:
            # Now and then more lines than the server queues before it stops reading (256).
            data = b"\n" * (300 if self.chance(0.05) else rng.randrange(1, 6))
            label = "newlines"
        else:
            data = rng.choice([b"A", b"PUSH", b"\xff", b" "]) * rng.randrange(1000, 300_000)
            label = "long"
        end = rng.choice([b"\r\n", b"\n", b"", b"\r"])
        return Frame("garbage", label, self.tame(data + end))

    def overlong(self) -> Frame:
        return Frame("overlong", "overlong", b"PUSH " + b"x" * OVERLONG_SIZE + b"\r\n")

    def tame(self, data: bytes) -> bytes:
        """Mostly append the reservoir to FETCH lines, so that few of them wait 2 s."""
        if b"FETCH" not in data:
            return data
        parts = data.split(b"\n")
        for i in range(len(parts) - 1):
            body = parts[i]
            cr = body.endswith(b"\r")
            if cr:
                body = body[:-1]
            if body.partition(b" ")[0] == b"FETCH" and self.chance(0.9):
                parts[i] = body + b" " + RESERVOIR.encode() + (b"\r" if cr else b"")
        return b"\n".join(parts)

    def m_flip(self, d: bytes) -> bytes:
        if not d:
            return bytes([self.rng.randrange(256)])
        i = self.rng.randrange(len(d))
        return d[:i] + bytes([self.rng.randrange(256)]) + d[i + 1 :]

    def m_bitflip(self, d: bytes) -> bytes:
        if not d:
            return d
        i = self.rng.randrange(len(d))
        return d[:i] + bytes([d[i] ^ (1 << self.rng.randrange(8))]) + d[i + 1 :]

    def m_insert(self, d: bytes) -> bytes:
        i = self.rng.randrange(len(d) + 1)
        return d[:i] + self.rng.randbytes(self.rng.randrange(1, 16)) + d[i:]

    def m_delete(self, d: bytes) -> bytes:
        if not d:
            return d
        i = self.rng.randrange(len(d))
        return d[:i] + d[i + self.rng.randrange(1, 32) :]

    def m_truncate(self, d: bytes) -> bytes:
        return d[: self.rng.randrange(len(d) + 1)]

    def m_splice(self, d: bytes) -> bytes:
        other = self.source_line()
        return d[: self.rng.randrange(len(d) + 1)] + other[self.rng.randrange(len(other) + 1) :]

    def m_hugenum(self, d: bytes) -> bytes:
        huge = self.rng.choice(
            [
                b"9" * self.rng.randrange(20, 5000),
                b"-" + b"9" * self.rng.randrange(20, 400),
                b"1e999",
                b"-1e309",
                b"NaN",
                b"Infinity",
                b"0.0000000000000000000000001",
                b"18446744073709551616",
                b"-9223372036854775809",
            ]
        )
        spans = [m.span() for m in re.finditer(rb"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?", d)]
        if not spans:
            return d + b" " + huge
        a, b = self.rng.choice(spans)
        return d[:a] + huge + d[b:]

    def m_nest(self, d: bytes) -> bytes:
        depth = self.rng.choice([64, 512, 2000, 10_000, 100_000])
        opener, closer = (b"[", b"]") if self.chance(0.7) else (b'{"a":', b"}")
        nested = opener * depth + b"1" + closer * (depth if self.chance(0.7) else 0)
        i = d.find(b"[")
        if i < 0 or self.chance(0.3):
            verb = d.partition(b" ")[0]
            return verb + b" " + nested
        return d[:i] + nested + b"," + d[i + 1 :]

    def m_utf8(self, d: bytes) -> bytes:
        bad = self.rng.choice(
            [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xe2\x82"]
        )
        i = self.rng.randrange(len(d) + 1)
        return d[:i] + bad + d[i:]

    def m_nul(self, d: bytes) -> bytes:
        i = self.rng.randrange(len(d) + 1)
        return d[:i] + b"\x00" * self.rng.randrange(1, 4) + d[i:]

    def m_cr(self, d: bytes) -> bytes:
        i = self.rng.randrange(len(d) + 1)
        return d[:i] + b"\r" + d[i:]

    def m_emptylines(self, d: bytes) -> bytes:
        return self.rng.choice([b"\r\n", b"\n"]) * self.rng.randrange(1, 5) + d

    def m_longverb(self, d: bytes) -> bytes:
        head, sep, rest = d.partition(b" ")
        before, nl, verb = head.rpartition(b"\n")
        times = min(self.rng.randrange(2, 20_000), MAX_MUTATED // max(len(verb), 1))
        return before + nl + verb * max(times, 2) + sep + rest

    def m_json(self, d: bytes) -> bytes:
        """Replace, drop or add one node of the JSON payload (type confusion)."""
        start = d.find(b"{")
        first_bracket = d.find(b"[")
        if start < 0 or (0 <= first_bracket < start):
            start = first_bracket
        if start < 0:
            return d
        try:
            doc = json.loads(d[start:])
        except (ValueError, RecursionError):
            return d
        nodes: list[tuple[Any, Any]] = []

        def walk(node: Any, depth: int) -> None:
            if depth > 6:
                return
            if isinstance(node, dict):
                for k, v in node.items():
                    nodes.append((node, k))
                    walk(v, depth + 1)
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    nodes.append((node, i))
                    walk(v, depth + 1)

        walk(doc, 0)
        odd: list[Any] = [
            None,
            True,
            0,
            -1,
            2**64,
            1.5,
            "",
            "x",
            [],
            {},
            [[]],
            {"a": None},
            "\ud800",
        ]
        if not nodes:
            doc = self.rng.choice(odd)
        else:
            parent, key = self.rng.choice(nodes)
            r = self.rng.random()
            if r < 0.6:
                parent[key] = self.rng.choice(odd) if self.chance(0.7) else self.value()
            elif r < 0.8 and isinstance(parent, dict):
                del parent[key]
            elif isinstance(parent, dict):
                parent[self.rng.choice(["jid", "queue", "args", "custom", "retry", "at"])] = (
                    self.value()
                )
            else:
                parent.append(self.value())
        return d[:start] + dumps(doc, self.rng)

    def m_spaces(self, d: bytes) -> bytes:
        verb, _, rest = d.partition(b" ")
        r = self.rng.random()
        if r < 0.3:
            return verb + b"  " + rest
        if r < 0.5:
            return verb + b"\t" + rest
        if r < 0.7:
            return d + b" " * self.rng.randrange(1, 5)
        return b" " + d

    def m_case(self, d: bytes) -> bytes:
        verb, sep, rest = d.partition(b" ")
        if self.chance(0.5):
            return verb.lower() + sep + rest
        return verb + sep + rest.lower()

    def m_bare(self, d: bytes) -> bytes:
        verb, _, rest = d.partition(b" ")
        if verb in (b"QUEUE", b"BATCH", b"TRACK") and rest and self.chance(0.5):
            return verb + b" " + rest.partition(b" ")[0]
        return verb if self.chance(0.7) else verb + b" "

    def m_newline(self, d: bytes) -> bytes:
        i = self.rng.randrange(len(d) + 1)
        return d[:i] + self.rng.choice([b"\n", b"\r\n"]) + d[i:]

    def hello(self, fuzz: bool) -> tuple[bytes, str]:
        """A HELLO line and the wid it registers ('' for none)."""
        rng = self.rng
        wid = ""
        payload: dict[str, Any] = {"v": rng.choice([2, 2, 2, 1, 0])}
        if self.chance(0.7):
            wid = f"w{self.slot}-{rng.getrandbits(48):012x}"
            payload["wid"] = wid
            payload["hostname"] = rng.choice(["fuzz", self.string()])
            payload["pid"] = rng.choice([os.getpid(), 0, 2**31])
            payload["labels"] = [self.string() for _ in range(rng.randrange(3))]
        if self.chance(0.3):
            payload["username"] = self.string()
        if self.chance(0.1):
            payload["pwdhash"] = "00" * 32
        line = b"HELLO " + dumps(payload, rng)
        if fuzz:
            _, mutate = rng.choice(self.mutators)
            line = mutate(line).replace(b"\n", b" ")
            wid = ""
        return line + b"\r\n", wid


# -- the client side of the wire -----------------------------------------------------


class Malformed(Exception):
    """The server sent bytes that are not a well-formed RESP2 reply."""


@dataclasses.dataclass(slots=True)
class Reply:
    kind: str  # "+", "-", "$"
    data: bytes | None


_ERR_LINE = re.compile(rb"[A-Z][A-Z0-9_]* [^\r\n]*")
_BULK_LEN = re.compile(rb"-1|0|[1-9][0-9]{0,9}")


class Wire(asyncio.Protocol):
    """A raw connection: bytes out, strictly parsed RESP2 replies in."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.eof = False
        self.waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _parse(self) -> Reply | None:
        buf = self.buf
        nl = buf.find(b"\n")
        if nl < 0:
            if len(buf) > OVERLONG_SIZE:
                raise Malformed(f"no line end within {len(buf)} bytes: {bytes(buf[:80])!r}")
            return None
        if nl == 0 or buf[nl - 1] != 0x0D:
            raise Malformed(f"line not ended by CRLF: {bytes(buf[: nl + 1][:200])!r}")
        head = bytes(buf[: nl - 1])
        kind = head[:1]
        if kind == b"+":
            if b"\r" in head:
                raise Malformed(f"CR inside a simple string: {head[:200]!r}")
            del buf[: nl + 1]
            return Reply("+", head[1:])
        if kind == b"-":
            if not _ERR_LINE.fullmatch(head[1:]) or b"\r" in head:
                raise Malformed(f"error reply without CODE and message: {head[:200]!r}")
            del buf[: nl + 1]
            return Reply("-", head[1:])
        if kind == b"$":
            if not _BULK_LEN.fullmatch(head[1:]):
                raise Malformed(f"bad bulk length: {head[:200]!r}")
            size = int(head[1:])
            if size < 0:
                del buf[: nl + 1]
                return Reply("$", None)
            stop = nl + 1 + size
            if len(buf) < stop + 2:
                return None
            if buf[stop : stop + 2] != b"\r\n":
                raise Malformed(f"bulk body not followed by CRLF: {bytes(buf[:200])!r}")
            body = bytes(buf[nl + 1 : stop])
            del buf[: stop + 2]
            return Reply("$", body)
        raise Malformed(f"unknown reply type: {head[:200]!r}")

    async def reply(self) -> Reply | None:
        """The next reply, or None at end of stream; raises Malformed."""
        loop = asyncio.get_running_loop()
        while True:
            parsed = self._parse()
            if parsed is not None:
                return parsed
            if self.eof:
                if self.buf:
                    raise Malformed(f"connection closed inside a reply: {bytes(self.buf[:200])!r}")
                return None
            self.waiter = loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None


class LineModel:
    """The server's view of the byte stream: complete lines, one trailing CR dropped."""

    def __init__(self) -> None:
        self.partial = b""

    def feed(self, data: bytes) -> list[bytes]:
        parts = (self.partial + data).split(b"\n")
        self.partial = parts.pop()
        return [p[:-1] if p.endswith(b"\r") else p for p in parts]


# -- the run ---------------------------------------------------------------------------


@dataclasses.dataclass
class Finding:
    """An anomaly with the frame that caused it and the frames before it on its connection."""

    what: str
    slot: int
    frame_kind: str
    frame_label: str
    frame: str
    frame_len: int
    line: str
    reply: str
    history: list[str]
    at_s: float
    #: For a hang: when the wait for this reply began (the earliest one points at the cause).
    waiting_since_s: float | None = None


def show(data: bytes, limit: int = 300) -> str:
    text = repr(data[:limit])
    return text + (f"... ({len(data)} bytes)" if len(data) > limit else "")


_PLAIN_WORD = re.compile(r"[a-z][a-z_.]*|[A-Z][a-z]+")
_UPPER_WORDS = {"JSON", "JID", "ACK", "FAIL", "BEAT", "PUSH", "PUSHB", "FETCH", "TRACK", "BATCH",
                "SET", "GET", "NEW", "OPEN", "COMMIT", "STATUS", "CHILD", "QUEUE", "LATENCY",
                "REQUEUE", "MUTATE", "INFO", "HELLO", "PING", "FLUSH"}  # fmt: skip


def err_key(body: bytes) -> str:
    """An error reply grouped by code and the plain words its message starts with
    (``-ERR unknown command PUSH``, ``-ERR invalid JSON``, ``-ERR unknown worker``)."""
    code, _, msg = body.decode("utf-8", "replace").partition(" ")
    words: list[str] = []
    for word in msg.split(" ")[:5]:
        bare = word.rstrip(":")
        if not (_PLAIN_WORD.fullmatch(bare) or bare in _UPPER_WORDS):
            break
        words.append(bare)
        if bare != word:
            break
    return f"-{code} {' '.join(words)}".rstrip()


class Run:
    """Counters, findings and the shared generator state of one fuzzing run."""

    def __init__(self, args: argparse.Namespace, port: int, popen: subprocess.Popen[bytes]) -> None:
        self.args = args
        self.port = port
        self.popen = popen
        self.total = args.frames
        self.sent = 0
        self.lines = 0
        self.kinds: Counter[str] = Counter()
        self.labels: Counter[str] = Counter()
        self.replies: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.reconnects: Counter[str] = Counter()
        self.handshakes: Counter[str] = Counter()
        self.findings: dict[str, list[Finding]] = {}
        self.finding_counts: Counter[str] = Counter()
        self.fetch_waits: Counter[str] = Counter()
        #: Replies that took over SLOW_S, and the slowest: (seconds, sent at, slot, line).
        self.slow = 0
        #: The monitor's INFO calls: slowest round trip, failures and the last one's error.
        self.info_max_s = 0.0
        self.info_failures = 0
        self.last_info_failure = ""
        self.slowest: list[tuple[float, float, int, str]] = []
        self.expected_internal = 0
        self.shared = Shared()
        self.start = time.perf_counter()
        self.end_by = self.start + args.deadline
        self.stop = False
        self.finished = False
        self.stop_reason = ""
        #: Updated every 0.1 s by ``ticker``; how late it is shows a stalled client loop.
        self.tick = time.monotonic()
        self.client_stalls = 0
        self.max_stall_s = 0.0
        self.crash: str | None = None

    def done(self) -> bool:
        return self.stop or self.sent >= self.total or time.perf_counter() >= self.end_by

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def latency(self, took: float, slot: int, line: bytes, t0: float) -> None:
        """Count a slow reply (FETCH's own wait not included); keep the slowest few."""
        if took < SLOW_S:
            return
        self.slow += 1
        self.slowest.append((round(took, 3), round(t0 - self.start, 2), slot, show(line, 160)))
        self.slowest.sort(reverse=True)
        del self.slowest[10:]

    def find(
        self,
        what: str,
        slot: int,
        frame: Frame,
        line: bytes,
        reply: str,
        history: deque[Frame],
        since: float | None = None,
    ) -> None:
        self.finding_counts[what] += 1
        bucket = self.findings.setdefault(what, [])
        if len(bucket) < MAX_FINDINGS:
            bucket.append(
                Finding(
                    what,
                    slot,
                    frame.kind,
                    frame.label,
                    show(frame.data),
                    len(frame.data),
                    show(line),
                    reply,
                    [f"{f.kind}/{f.label}: {show(f.data, 160)}" for f in history],
                    round(self.elapsed(), 2),
                    None if since is None else round(since - self.start, 3),
                )
            )


class Conn:
    """One live connection with its line model."""

    def __init__(self, wire: Wire, wid: str) -> None:
        self.wire = wire
        self.wid = wid
        self.model = LineModel()
        self.opened = time.monotonic()
        self.last_beat = self.opened


def is_expected_internal(line: bytes) -> bool:
    """Whether Faktory itself answers this line with ``-ERR internal error``."""
    verb, sep, payload = line.partition(b" ")
    if not sep:
        return verb in BARE_INTERNAL
    if verb == b"QUEUE":
        tokens = payload.decode("utf-8", "replace").split(" ")
        return tokens[0].upper() in ("PAUSE", "RESUME", "REMOVE") and len(tokens) == 1
    return False


async def open_conn(run: Run, gen: Generator, slot: int) -> Conn | None:
    """Connect and handshake (sometimes with a mutated HELLO); None when rejected."""
    loop = asyncio.get_running_loop()
    fuzz = gen.chance(run.args.handshake_fuzz)
    async with asyncio.timeout(CONNECT_TIMEOUT):
        _, wire = await loop.create_connection(Wire, HOST, run.port)
        greeting = await wire.reply()
        if (
            greeting is None
            or greeting.kind != "+"
            or not (greeting.data or b"").startswith(b"HI ")
        ):
            wire.close()
            raise Malformed(f"unexpected greeting {greeting!r}")
        line, wid = gen.hello(fuzz)
        wire.write(line)
        reply = await wire.reply()
    if fuzz:
        run.sent += 1
        run.kinds["handshake"] += 1
    if reply is not None and reply.kind == "+" and reply.data == b"OK":
        run.handshakes["accepted" if fuzz else "valid"] += 1
        gen.wid = wid
        return Conn(wire, wid)
    wire.close()
    if reply is None and fuzz:
        run.handshakes["rejected (closed)"] += 1
        return None
    history: deque[Frame] = deque()
    frame = Frame("handshake", "hello", line)
    what = "bad handshake reply" if fuzz else "valid HELLO rejected"
    run.find(
        what, slot, frame, line, "connection closed" if reply is None else repr(reply), history
    )
    return None


async def exchange(
    run: Run, conn: Conn, gen: Generator, frame: Frame, slot: int, history: deque[Frame]
) -> str:
    """Send one frame and check every reply; returns '' to go on, else why to reconnect."""
    lines = conn.model.feed(frame.data)
    if len(conn.model.partial) > MAX_PARTIAL:
        frame.data += b"\r\n"
        lines += conn.model.feed(b"\r\n")
    conn.wire.write(frame.data)
    run.lines += len(lines)
    deadline = run.args.reply_deadline
    ended = told_to_stop = False
    for line in lines:
        verb = line.partition(b" ")[0]
        if verb == b"END" and len(line) <= MAX_LINE:
            ended = True
            break
        wait = deadline + (FETCH_WAIT if verb == b"FETCH" else 0.0)
        t0 = time.perf_counter()
        try:
            reply = await wait_reply(run, conn, wait)
        except TimeoutError:
            run.find("hang", slot, frame, line, f"no reply within {wait:g}s", history, t0)
            if not run.args.keep_going:
                run.stop = True
                run.stop_reason = "hang"
            return "hang"
        except Malformed as exc:
            run.find("malformed reply", slot, frame, line, str(exc), history)
            return "malformed"
        if reply is None:
            if run.popen.poll() is not None:
                return "server exited"
            if conn.wid and time.monotonic() - conn.last_beat > 55:
                return "reaped"
            run.find("closed without END", slot, frame, line, "EOF", history)
            return "unexpected close"
        took = time.perf_counter() - t0
        if verb == b"FETCH":
            if took > FETCH_WAIT * 0.75:
                run.fetch_waits[f"{frame.kind}/{frame.label}"] += 1
            took = max(took - FETCH_WAIT, 0.0)
        run.latency(took, slot, line, t0)
        classify(run, conn, gen, frame, line, verb, reply, slot, history)
        if reply.kind == "$" and reply.data is not None and reply.data.startswith(b'{"state":'):
            told_to_stop = True  # quiet/terminate: a worker stops fetching and goes away
            break
    if frame.kind == "valid" and frame.pushes:
        run.shared.pushed.extend(frame.pushes)
    if told_to_stop:
        return "told to quiet/terminate"
    if not ended:
        return ""
    try:
        after = await wait_reply(run, conn, deadline)
    except TimeoutError:
        run.find("hang", slot, frame, b"END", "connection not closed after END", history)
        if not run.args.keep_going:
            run.stop = True
            run.stop_reason = "hang"
        return "hang"
    except Malformed as exc:
        run.find("malformed reply", slot, frame, b"END", str(exc), history)
        return "malformed"
    if after is not None:
        run.find("reply after END", slot, frame, b"END", repr(after), history)
    return "END"


async def wait_reply(run: Run, conn: Conn, wait: float) -> Reply | None:
    """The next reply within ``wait`` seconds, not counting time this client's own
    event loop was stalled (a timer that fires late is not the server's fault)."""
    for _ in range(3):
        try:
            async with asyncio.timeout(wait):
                return await conn.wire.reply()
        except TimeoutError:
            lag = time.monotonic() - run.tick
            if lag <= STALL_S:
                raise
            run.client_stalls += 1
            run.max_stall_s = max(run.max_stall_s, lag)
    raise TimeoutError


def classify(
    run: Run,
    conn: Conn,
    gen: Generator,
    frame: Frame,
    line: bytes,
    verb: bytes,
    reply: Reply,
    slot: int,
    history: deque[Frame],
) -> None:
    """Count one reply and learn from it (fetched jids, new bids, an empty reservoir)."""
    data = reply.data
    shared = run.shared
    if reply.kind == "+":
        run.replies["+OK" if data == b"OK" else "+other"] += 1
        if verb == b"BEAT" and conn.wid:
            conn.last_beat = time.monotonic()
        elif data == b"OK" and verb in (b"FLUSH", b"QUEUE"):
            notice_reservoir(shared, gen, line)
        return
    if reply.kind == "-":
        assert data is not None
        run.replies["-error"] += 1
        run.errors[err_key(data)] += 1
        if data == b"ERR internal error":
            if is_expected_internal(line):
                run.expected_internal += 1
            else:
                run.find("internal error", slot, frame, line, "-ERR internal error", history)
        elif data.startswith(b"ERR storage error"):
            run.find("storage error", slot, frame, line, show(data), history)
        if frame.label == "refill":
            shared.refilling = 0.0
        elif frame.kind == "valid" and gen.taken and not data.startswith(b"ERR Job not found"):
            gen.held.append(gen.taken)  # e.g. joined to an unfinished line: try again later
            gen.taken = ""
        return
    if data is None:
        run.replies["$-1 nil"] += 1
        if verb == b"FETCH" and RESERVOIR.encode() in line:
            shared.reservoir = 0  # flushed, removed or paused: refill and resume it
            gen.follow.append(Frame("valid", "QUEUE", f"QUEUE RESUME {RESERVOIR}\r\n".encode()))
        return
    run.replies["$bulk"] += 1
    if verb == b"BEAT" and conn.wid:
        conn.last_beat = time.monotonic()
    doc: Any = None
    if verb in JSON_BULK_VERBS or line.startswith(
        (b"BATCH STATUS", b"TRACK GET", b"QUEUE LATENCY")
    ):
        try:
            doc = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            run.find("bulk reply is not JSON", slot, frame, line, f"{exc}: {show(data)}", history)
            return
    if verb == b"FETCH" and isinstance(doc, dict):
        jid = doc.get("jid")
        if isinstance(jid, str):
            gen.held.append(jid)  # fetched by a mutated line too: still ours to ACK
        if doc.get("queue") == RESERVOIR:
            shared.reservoir -= 1
    elif frame.label == "refill":
        rejected = len(doc) if isinstance(doc, dict) else RESERVOIR_REFILL
        shared.reservoir += RESERVOIR_REFILL - rejected
        shared.refilling = 0.0
    elif frame.kind == "valid" and line.startswith(b"BATCH NEW"):
        shared.bids.append(data.decode("utf-8", "replace"))


def notice_reservoir(shared: Shared, gen: Generator, line: bytes) -> None:
    """Refill the reservoir at once after FLUSH or its removal, and resume it after a pause,
    instead of learning so from FETCHes that wait 2 s."""
    if line == b"FLUSH" or line.startswith(b"FLUSH "):
        shared.reservoir = 0
        return
    tokens = line.decode("utf-8", "replace").split(" ")
    sub, names = tokens[1].upper() if len(tokens) > 1 else "", tokens[2:]
    if "*" not in names and RESERVOIR not in names:
        return
    if sub == "REMOVE":
        shared.reservoir = 0
    elif sub == "PAUSE":
        gen.follow.append(Frame("valid", "QUEUE", f"QUEUE RESUME {RESERVOIR}\r\n".encode()))


async def slot_loop(run: Run, slot: int) -> None:
    """One connection slot: frames until the run is done, reconnecting as needed."""
    rng = random.Random(f"{run.args.seed}:{slot}")
    gen = Generator(rng, run.shared, slot)
    history: deque[Frame] = deque(maxlen=HISTORY)
    conn: Conn | None = None
    failures = 0
    overlong_every = run.args.overlong_every
    mix_valid, mix_mutated = run.args.mix[0], run.args.mix[0] + run.args.mix[1]
    while not run.done():
        if conn is None:
            try:
                conn = await open_conn(run, gen, slot)
                failures = 0
            except (OSError, TimeoutError, Malformed) as exc:
                failures += 1
                if run.popen.poll() is not None or failures >= MAX_CONNECT_FAILURES:
                    run.stop = True
                    run.stop_reason = run.stop_reason or f"cannot connect: {exc!r}"
                    return
                await asyncio.sleep(0.05 * failures)
                continue
            if conn is None:
                run.reconnects["handshake rejected"] += 1
                continue
            history.clear()
        run.sent += 1
        if overlong_every and run.sent % overlong_every == 0:
            frame = gen.overlong()
        else:
            r = gen.rng.random() * 100
            if r < mix_valid or gen.follow:
                frame = gen.valid()
            elif r < mix_mutated:
                frame = gen.mutated()
            else:
                frame = gen.garbage()
        run.kinds[frame.kind] += 1
        if frame.kind == "valid":
            run.labels[frame.label] += 1
        history.append(frame)
        if frame.label == "refill" and conn.model.partial:
            frame.data = b"\n" + frame.data  # not joined to an unfinished line: it must land
        why = await exchange(run, conn, gen, frame, slot, history)
        if frame.label == "refill":
            run.shared.refilling = 0.0  # answered or not; INFO from the monitor tells the rest
        if why:
            run.reconnects[why] += 1
            conn.wire.close()
            conn = None
            if why == "server exited":
                run.stop = True
                return
    if conn is not None:
        conn.wire.close()


# -- server process --------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def db_bytes(db: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += os.path.getsize(f"{db}{suffix}")
    return total


def start_server(db: Path, log_path: Path, port: int, durability: str) -> subprocess.Popen[bytes]:
    cmd = server_command(port, db, durability)
    with open(log_path, "wb") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(popen: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    end = time.monotonic() + 20.0
    last: Exception | None = None
    while time.monotonic() < end:
        if popen.poll() is not None:
            raise RuntimeError(f"server exited with {popen.returncode}:\n{tail(log_path)}")
        try:
            with socket.create_connection((HOST, port), timeout=1.0) as s:
                if s.recv(64).startswith(b"+HI "):
                    s.sendall(b'HELLO {"v":2}\r\nEND\r\n')
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"server not ready after 20 s: {last}")


def stop_server(popen: subprocess.Popen[bytes]) -> dict[str, Any]:
    """SIGTERM the server this script started; SIGKILL if it does not exit in time."""
    if popen.poll() is not None:
        return {"signal": None, "returncode": popen.returncode, "seconds": 0.0, "killed": False}
    t0 = time.perf_counter()
    popen.send_signal(signal.SIGTERM)
    killed = False
    try:
        popen.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait(STOP_TIMEOUT)
        killed = True
    return {
        "signal": "SIGTERM",
        "returncode": popen.returncode,
        "seconds": round(time.perf_counter() - t0, 3),
        "killed": killed,
    }


def tail(path: Path, lines: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def scan_log(path: Path) -> dict[str, Any]:
    """Tracebacks and error lines in the server's log, and the commonest warnings."""
    needles = ("Traceback", "internal error", "command failed", "connection failed")
    hits: Counter[str] = Counter()
    examples: list[str] = []
    warnings: Counter[str] = Counter()
    lines = 0
    try:
        with open(path, "rb") as f:
            for raw in f:
                lines += 1
                text = raw.decode("utf-8", "replace").rstrip()
                for needle in needles:
                    if needle in text:
                        hits[needle] += 1
                        if len(examples) < 40:
                            examples.append(text[:500])
                if text[:2] in ("W ", "E ") or "WARN" in text or "ERROR" in text:
                    warnings[re.sub(r"\d+", "N", text.split(" ", 2)[-1])[:100]] += 1
    except OSError as exc:
        return {"error": str(exc)}
    return {
        "lines": lines,
        "hits": dict(hits),
        "examples": examples,
        "top_warnings": warnings.most_common(8),
    }


def integrity(db: Path) -> str:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()
    return "; ".join(rows)[:500]


# -- phases ----------------------------------------------------------------------------


async def plain_hello(port: int) -> tuple[Wire, Reply | None]:
    """A new connection after its greeting and a plain ``HELLO``; the HELLO's reply."""
    loop = asyncio.get_running_loop()
    _, wire = await loop.create_connection(Wire, HOST, port)
    await wire.reply()
    wire.write(b'HELLO {"v":2}\r\n')
    return wire, await wire.reply()


async def prefill(port: int) -> int:
    """Put jobs on the reservoir queue so that FETCH rarely waits."""
    wire, _ = await plain_hello(port)
    pushed = 0
    for start in range(0, PREFILL, 1000):
        jobs = [
            {"jid": f"pre{i:013d}", "jobtype": "Fill", "args": [i], "queue": RESERVOIR}
            for i in range(start, start + 1000)
        ]
        wire.write(b"PUSHB " + compact(jobs) + b"\r\n")
        reply = await wire.reply()
        if reply is None or reply.data != b"{}":
            raise RuntimeError(f"prefill failed: {reply!r}")
        pushed += len(jobs)
    wire.write(b"END\r\n")
    wire.close()
    return pushed


async def monitor(run: Run, db: Path, samples: list[dict[str, Any]], quiet: bool) -> None:
    """Sample RSS and database size; read the reservoir's size with INFO on a side
    connection (mutated lines take jobs from it unseen); print progress; notice a crash."""
    pid = run.popen.pid
    next_print = time.perf_counter() + PROGRESS_EVERY_S
    side: Wire | None = None
    while not run.done():
        await asyncio.sleep(SAMPLE_EVERY_S)
        t = run.elapsed()
        samples.append(
            {"t": round(t, 2), "frames": run.sent, "rss_kb": rss_kb(pid), "db_bytes": db_bytes(db)}
        )
        if run.popen.poll() is not None:
            run.crash = f"server exited with {run.popen.returncode} after {t:.1f}s"
            run.stop = True
            run.stop_reason = "crash"
            break
        try:
            if side is None:
                side = await open_side(run.port)
            t0 = time.perf_counter()
            side.write(b"INFO\r\n")
            async with asyncio.timeout(run.args.reply_deadline):
                info = await side.reply()
            run.info_max_s = max(run.info_max_s, time.perf_counter() - t0)
            if info is None or info.kind != "$" or not info.data:
                raise Malformed(f"INFO answered {info!r}")
            queues = msgspec.json.decode(info.data)["faktory"]["queues"]
            run.shared.reservoir = int(queues.get(RESERVOIR, 0))
        except (OSError, TimeoutError, Malformed, msgspec.DecodeError, KeyError) as exc:
            run.info_failures += 1
            run.last_info_failure = repr(exc)[:200]
            if side is not None:
                side.close()
            side = None
        if not quiet and time.perf_counter() >= next_print:
            next_print += PROGRESS_EVERY_S
            s = samples[-1]
            print(
                f"  {t:6.0f}s {run.sent:>9,} frames ({run.sent / t:,.0f}/s)"
                f"  RSS {s['rss_kb'] / 1024:6.1f} MiB  db {s['db_bytes'] / 2**20:7.1f} MiB"
                f"  slow {run.slow}  findings {sum(run.finding_counts.values())}",
                flush=True,
            )
    if side is not None:
        side.close()


async def open_side(port: int) -> Wire:
    """A producer connection for the monitor's INFO calls."""
    async with asyncio.timeout(CONNECT_TIMEOUT):
        wire, reply = await plain_hello(port)
    if reply is None or reply.data != b"OK":
        wire.close()
        raise Malformed(f"side connection: HELLO answered {reply!r}")
    return wire


async def final_probe(port: int, timeout: float) -> dict[str, Any]:
    """INFO and PING on a fresh connection."""
    out: dict[str, Any] = {}
    async with asyncio.timeout(timeout):
        wire, hello = await plain_hello(port)
        out["hello"] = None if hello is None else (hello.kind + repr(hello.data))
        t0 = time.perf_counter()
        wire.write(b"INFO\r\n")
        info = await wire.reply()
        out["info_ms"] = round(1000 * (time.perf_counter() - t0), 2)
        if info is not None and info.kind == "$" and info.data:
            doc = msgspec.json.decode(info.data)
            fk = doc.get("faktory", {})
            out["info_ok"] = True
            out["queues"] = fk.get("total_queues")
            out["enqueued"] = fk.get("total_enqueued")
            out["sets"] = fk.get("sets")
            out["processed"] = fk.get("total_processed")
            out["failures"] = fk.get("total_failures")
            out["connections"] = doc.get("server", {}).get("connections")
            out["command_count"] = doc.get("server", {}).get("command_count")
        else:
            out["info_ok"] = False
            out["info_reply"] = repr(info)
        wire.write(b"PING\r\n")
        ping = await wire.reply()
        out["ping"] = None if ping is None else f"{ping.kind}{(ping.data or b'').decode()}"
        wire.write(b"END\r\n")
        out["end_closed"] = await wire.reply() is None
        wire.close()
    return out


async def ticker(run: Run) -> None:
    """Mark the client's loop as alive until every slot has finished."""
    while not run.finished and time.perf_counter() < run.end_by + 600:
        run.tick = time.monotonic()
        await asyncio.sleep(0.1)


async def fuzz(run: Run, db: Path, samples: list[dict[str, Any]], quiet: bool) -> None:
    loop = asyncio.get_running_loop()

    def interrupted() -> None:
        run.stop = True
        run.stop_reason = run.stop_reason or "interrupted"

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted)  # stop sending; the checks still run
    helpers = [
        asyncio.create_task(monitor(run, db, samples, quiet)),
        asyncio.create_task(ticker(run)),
    ]
    try:
        await asyncio.gather(*(slot_loop(run, slot) for slot in range(run.args.connections)))
    finally:
        run.stop = run.finished = True
        await asyncio.gather(*helpers)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


# -- report ----------------------------------------------------------------------------


def memory_summary(samples: list[dict[str, Any]], frames: int) -> dict[str, Any]:
    if not samples:
        return {"verdict": "no samples"}
    rss = [s["rss_kb"] for s in samples if s["rss_kb"]]
    dbs = [s["db_bytes"] for s in samples]
    tenth = next((s for s in samples if s["frames"] >= frames * 0.1), samples[0])
    out: dict[str, Any] = {
        "rss_start_mb": round(rss[0] / 1024, 1) if rss else None,
        "rss_at_10pct_mb": round(tenth["rss_kb"] / 1024, 1),
        "rss_peak_mb": round(max(rss) / 1024, 1) if rss else None,
        "rss_end_mb": round(rss[-1] / 1024, 1) if rss else None,
        "db_at_10pct_mb": round(tenth["db_bytes"] / 2**20, 1),
        "db_peak_mb": round(max(dbs) / 2**20, 1),
        "db_end_mb": round(dbs[-1] / 2**20, 1),
    }
    short = frames < MEMORY_VERDICT_MIN_FRAMES
    db_limit = max(DB_SLACK_MB, DB_SLACK_FACTOR * tenth["db_bytes"] / 2**20)
    out["db_limit_mb"] = round(db_limit, 1)
    if short:
        out["db_verdict"] = f"n/a (fewer than {MEMORY_VERDICT_MIN_FRAMES:,} frames)"
    else:
        out["db_verdict"] = "bounded" if dbs[-1] / 2**20 <= db_limit else "GROWING"
    if rss:
        at10 = tenth["rss_kb"] / 1024
        growth = rss[-1] / 1024 - at10
        limit = max(RSS_SLACK_MB, RSS_SLACK_SHARE * at10)
        out["rss_growth_after_10pct_mb"] = round(growth, 1)
        out["rss_growth_limit_mb"] = round(limit, 1)
        if short:
            out["verdict"] = f"n/a (fewer than {MEMORY_VERDICT_MIN_FRAMES:,} frames)"
        else:
            out["verdict"] = "bounded" if growth <= limit else "GROWING"
    return out


def downsample(samples: list[dict[str, Any]], keep: int = 120) -> list[dict[str, Any]]:
    if len(samples) <= keep:
        return samples
    step = len(samples) / keep
    return [samples[int(i * step)] for i in range(keep)] + [samples[-1]]


def report(results: dict[str, Any]) -> list[str]:
    r = results
    lines = ["", "minifaktory wire fuzzing"]
    add = lines.append
    cfg = r["config"]
    add(
        f"  seed {cfg['seed']}, {cfg['connections']} connections, target {cfg['frames']:,} frames,"
        f" deadline {cfg['deadline_s']:.0f}s, durability {cfg['durability']}"
    )
    add("")
    add(f"  {'frames sent':<34}{r['frames']:>12,}")
    for kind in ("valid", "mutated", "garbage", "handshake", "overlong"):
        add(f"    {kind:<32}{r['kinds'].get(kind, 0):>12,}")
    add(f"  {'lines (as the server splits them)':<34}{r['lines']:>12,}")
    add(f"  {'wall time':<34}{r['wall_s']:>11.1f}s")
    add(f"  {'frames/s':<34}{r['frames_per_s']:>12,.0f}")
    add("  replies")
    for key in ("+OK", "+other", "-error", "$bulk", "$-1 nil"):
        add(f"    {key:<32}{r['replies'].get(key, 0):>12,}")
    add("  -ERR by message (top 10)")
    for key, n in r["top_errors"]:
        add(f"    {key[:60]:<60}{n:>10,}")
    add(f"  {'-ERR internal error, bare verb':<34}{r['expected_internal']:>12,}  (as Faktory)")
    add(f"  {'FETCH replies that waited ~2 s':<34}{r['fetch_waits']:>12,}")
    add(f"  {f'replies slower than {SLOW_S:g} s':<34}{r['slow_replies']:>12,}")
    add(
        f"  {'INFO from the monitor, slowest':<34}{r['monitor_info_max_s']:>11.3f}s"
        f"  ({r['monitor_info_failures']} failed)"
    )
    for took, at, slot, line in r["slowest_replies"][:3]:
        add(f"    {took:7.2f}s (sent at {at}s, slot {slot}): {line[:100]}")
    if r["client_stalls"]:
        add(
            f"  {'waits extended (client stalled)':<34}{r['client_stalls']:>12,}"
            f"  (longest {r['max_client_stall_s']}s)"
        )
    add("  reconnects")
    for key, n in sorted(r["reconnects"].items(), key=lambda kv: -kv[1]):
        add(f"    {key:<32}{n:>12,}")
    hs = r["handshakes"]
    add(
        f"  handshakes: {hs.get('valid', 0):,} valid, {hs.get('accepted', 0):,} fuzzed accepted,"
        f" {hs.get('rejected (closed)', 0):,} fuzzed rejected"
    )
    m = r["memory"]
    add("  memory and storage")
    add(
        f"    RSS start {m.get('rss_start_mb')} MiB, at 10% {m.get('rss_at_10pct_mb')} MiB,"
        f" peak {m.get('rss_peak_mb')} MiB, end {m.get('rss_end_mb')} MiB"
        f" -> {m.get('verdict')}"
    )
    add(
        f"    database (with WAL) at 10% {m.get('db_at_10pct_mb')} MiB, peak {m.get('db_peak_mb')}"
        f" MiB, end {m.get('db_end_mb')} MiB -> {m.get('db_verdict')}"
    )
    add("  checks")
    for name, (ok, detail) in r["checks"].items():
        add(f"    [{'ok' if ok else 'FAIL'}] {name}: {detail}")
    if r["findings"]:
        add("  findings (the first of each kind; of hangs, the non-FETCH reply awaited longest)")
        for what, items in r["findings"].items():
            f = items[0]
            add(f"    {what} x{r['finding_counts'][what]}: slot {f['slot']} at {f['at_s']}s")
            if f["waiting_since_s"] is not None:
                add(f"      waiting since {f['waiting_since_s']}s")
            add(f"      frame ({f['frame_kind']}/{f['frame_label']}): {f['frame'][:400]}")
            add(f"      line: {f['line'][:400]}")
            add(f"      reply: {f['reply'][:300]}")
            for h in f["history"][:-1]:
                add(f"      before: {h[:200]}")
            if what == "hang" and len(items) > 1:
                add("      other lines without a reply, by when their wait began:")
                for other in items[1:8]:
                    since, where = other["waiting_since_s"], other["slot"]
                    add(f"        {since}s slot {where}: {other['line'][:160]}")
    add("")
    add(f"  RESULT: {'PASS' if r['passed'] else 'FAIL'}")
    return lines


def parse_mix(text: str) -> tuple[float, float, float]:
    parts = [float(p) for p in text.split(",")]
    if len(parts) != 3 or any(p < 0 for p in parts) or sum(parts) <= 0:
        raise argparse.ArgumentTypeError("expected three non-negative numbers, e.g. 60,30,10")
    total = sum(parts)
    return (100 * parts[0] / total, 100 * parts[1] / total, 100 * parts[2] / total)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--frames", type=int, default=1_000_000, help="frames to send (1000000)")
    p.add_argument("--connections", type=int, default=16, help="parallel connections (16)")
    p.add_argument("--seed", type=int, default=1, help="random seed (1)")
    p.add_argument("--deadline", type=float, default=900.0, help="wall-time cap in s (900)")
    p.add_argument(
        "--reply-deadline",
        type=float,
        default=10.0,
        help="seconds a reply may take beyond FETCH's wait before it counts as a hang (10)",
    )
    p.add_argument(
        "--mix", type=parse_mix, default="60,30,10", help="valid,mutated,garbage shares (60,30,10)"
    )
    p.add_argument(
        "--handshake-fuzz", type=float, default=0.03, help="share of mutated HELLOs (0.03)"
    )
    p.add_argument(
        "--overlong-every",
        type=int,
        default=200_000,
        help="send a line over the 16 MiB cap every N frames; 0: never (200000)",
    )
    p.add_argument("--durability", choices=["full", "normal"], default="full")
    p.add_argument("--keep-going", action="store_true", help="do not stop at the first hang")
    p.add_argument("--json", type=Path, help="write the results to this JSON file")
    p.add_argument("--workdir", type=Path, help="keep the database and server log here")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    if args.frames < 1 or args.connections < 1 or args.deadline <= 0:
        p.error("need --frames >= 1, --connections >= 1, --deadline > 0")
    return args


@contextlib.contextmanager
def workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="mf-fuzz-") as tmp:
        yield Path(tmp)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def catch_signals() -> None:
    """SIGTERM, and SIGINT even when started in the background, end the script through its
    ``finally`` blocks, so the server it started is stopped too."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    catch_signals()
    results: dict[str, Any] = {
        "config": {
            "frames": args.frames,
            "connections": args.connections,
            "seed": args.seed,
            "deadline_s": args.deadline,
            "reply_deadline_s": args.reply_deadline,
            "mix": list(args.mix),
            "durability": args.durability,
            "overlong_every": args.overlong_every,
        },
        "environment": environment(),
    }
    samples: list[dict[str, Any]] = []
    checks: dict[str, tuple[bool, str]] = {}
    with workdir(args.workdir) as wd:
        db = wd / "fuzz.db"
        log_path = wd / "server.log"
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.unlink(f"{db}{suffix}")
        port = free_port()
        popen = start_server(db, log_path, port, args.durability)
        stopped: dict[str, Any] | None = None
        try:
            wait_ready(popen, port, log_path)
            run_async(prefill(port), 60.0)
            run = Run(args, port, popen)
            run.shared.reservoir = PREFILL
            if not args.quiet:
                print(
                    f"fuzzing 127.0.0.1:{port} (pid {popen.pid}): {args.frames:,} frames over"
                    f" {args.connections} connections, seed {args.seed}",
                    flush=True,
                )
            try:
                run_async(fuzz(run, db, samples, args.quiet), args.deadline + 60.0)
            except TimeoutError:
                run.stop_reason = run.stop_reason or "run exceeded its deadline"
            catch_signals()  # the event loop's own handlers are gone with it
            wall = run.elapsed()
            samples.append(
                {
                    "t": round(wall, 2),
                    "frames": run.sent,
                    "rss_kb": rss_kb(popen.pid),
                    "db_bytes": db_bytes(db),
                }
            )
            alive = popen.poll() is None
            probe: dict[str, Any] = {}
            if alive:
                try:
                    probe = run_async(final_probe(port, 30.0), 40.0)
                except (OSError, TimeoutError, Malformed, msgspec.DecodeError) as exc:
                    probe = {"error": repr(exc)}
            try:
                live_integrity = integrity(db)
            except apsw.Error as exc:
                live_integrity = f"error: {exc}"
        finally:
            stopped = stop_server(popen)
        try:
            final_integrity = integrity(db)
        except apsw.Error as exc:
            final_integrity = f"error: {exc}"
        log_scan = scan_log(log_path)
        log_tail = tail(log_path, 20)
    memory = memory_summary(samples, run.sent)
    hangs = run.findings.get("hang")
    if hangs:
        # A FETCH may wait 2 s by design; the line that blocked the server is another one.
        hangs.sort(key=lambda f: (f.line.startswith("b'FETCH"), f.waiting_since_s or 0.0))
    findings = {k: [dataclasses.asdict(f) for f in v] for k, v in run.findings.items()}
    sent = min(run.sent, args.frames)
    checks["frames sent"] = (
        sent >= args.frames,
        f"{sent:,} of {args.frames:,}"
        + (f" (stopped: {run.stop_reason})" if run.stop_reason else ""),
    )
    checks["no crash"] = (run.crash is None and alive, run.crash or ("alive" if alive else "dead"))
    for what in ("internal error", "hang", "malformed reply", "closed without END"):
        n = run.finding_counts.get(what, 0)
        checks[f"no {what}"] = (n == 0, f"{n}")
    other = {
        k: v for k, v in run.finding_counts.items() if k not in checks and f"no {k}" not in checks
    }
    checks["no other anomaly"] = (
        not other,
        ", ".join(f"{k} x{v}" for k, v in other.items()) or "0",
    )
    hits = log_scan.get("hits", {})
    checks["server log clean"] = (not hits, ", ".join(f"{k} x{v}" for k, v in hits.items()) or "0")
    checks["answers INFO after the run"] = (
        bool(probe.get("info_ok")),
        f"INFO in {probe.get('info_ms')} ms, PING -> {probe.get('ping')}"
        if probe.get("info_ok")
        else str(probe),
    )
    checks["integrity_check (live, read-only)"] = (live_integrity == "ok", live_integrity)
    checks["integrity_check (after exit)"] = (final_integrity == "ok", final_integrity)
    checks["clean exit on SIGTERM"] = (
        stopped is not None and stopped["returncode"] == 0 and not stopped["killed"],
        f"exit code {stopped and stopped['returncode']} in {stopped and stopped['seconds']}s"
        + (" (SIGKILL needed)" if stopped and stopped["killed"] else ""),
    )
    verdict = memory.get("verdict", "")
    checks["memory bounded"] = (
        verdict != "GROWING",
        f"{verdict}: RSS {memory.get('rss_at_10pct_mb')} MiB at 10% ->"
        f" {memory.get('rss_end_mb')} MiB at the end",
    )
    checks["database size bounded"] = (
        memory.get("db_verdict") != "GROWING",
        f"{memory.get('db_verdict')}: {memory.get('db_at_10pct_mb')} MiB at 10% ->"
        f" {memory.get('db_end_mb')} MiB at the end (limit {memory.get('db_limit_mb')} MiB)",
    )
    results.update(
        {
            "frames": run.sent,
            "lines": run.lines,
            "wall_s": round(wall, 2),
            "frames_per_s": round(run.sent / wall, 1) if wall else 0.0,
            "kinds": dict(run.kinds),
            "valid_commands": dict(run.labels.most_common()),
            "replies": dict(run.replies),
            "top_errors": run.errors.most_common(10),
            "errors_distinct": len(run.errors),
            "expected_internal": run.expected_internal,
            "monitor_info_max_s": round(run.info_max_s, 3),
            "monitor_info_failures": run.info_failures,
            "slow_replies": run.slow,
            "slowest_replies": run.slowest,
            "fetch_waits": run.fetch_waits.total(),
            "fetch_waits_by_frame": dict(run.fetch_waits.most_common(10)),
            "client_stalls": run.client_stalls,
            "max_client_stall_s": round(run.max_stall_s, 2),
            "reconnects": dict(run.reconnects),
            "handshakes": dict(run.handshakes),
            "finding_counts": dict(run.finding_counts),
            "findings": findings,
            "memory": memory,
            "final_probe": probe,
            "stop": stopped,
            "server_log": log_scan,
            "checks": {k: list(v) for k, v in checks.items()},
            "samples": downsample(samples),
        }
    )
    results["passed"] = all(ok for ok, _ in checks.values())
    printable = dict(results)
    printable["checks"] = checks
    for line in report(printable):
        print(line)
    if not results["passed"] and log_tail.strip():
        print("  [server log tail]\n    " + log_tail.replace("\n", "\n    "))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"results written to {args.json}")
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
