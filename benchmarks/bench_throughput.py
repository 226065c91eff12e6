"""Throughput benchmark for minifaktory, printed next to its baselines and targets.

Run: ``python benchmarks/bench_throughput.py [--jobs N] [--connections C]
[--durability full|normal|both] [--big N] [--quick] [--json PATH] [--profile DIR]``

Every server under test runs in its own process (``python -m minifaktory``) on
127.0.0.1 and is stopped with SIGTERM (SIGKILL after a timeout) by the PID this
script started. Every loop is bounded by a count and by a deadline. Nothing is
asserted: the numbers are reported next to the targets. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import apsw
from fwp_client import Client, FaktoryError, job_bytes, job_jid, new_wid

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
QUEUE = "bench"
BATCH = 1000  # jobs per PUSHB, as Faktory recommends
FILL_CONNECTIONS = 4
FETCH_CONNECTIONS = 10
FETCH_PER_ROUND = 500
FETCH_ROUNDS = 20
INFO_CALLS = 200
READY_STARTS = 10
STOP_TIMEOUT = 10.0

TARGET_E2E = 10000.0  # jobs/s at 50 connections, full durability
TARGET_E2E_SMALL = 5000.0  # jobs/s at 10 connections, full durability
TARGET_CPU_US = 60.0  # server CPU per job
TARGET_DEPTH_RATIO = 0.85  # fetch rate at the big depth within 15% of 1k
TARGET_INFO_S = 0.001
TARGET_READY_S = 0.050
TARGET_RSS_MB = 30.0
TARGET_HANDOFF_P50_S = 0.0005
TARGET_HANDOFF_P99_S = 0.002
HANDOFFS = 2000
#: The event loop of every server this script starts: "uvloop" (the default) or "asyncio".
SERVER_LOOP = {"loop": "uvloop"}

T = TypeVar("T")


# -- helpers ---------------------------------------------------------------------------


def run_async(coro: Coroutine[Any, Any, T], timeout: float) -> T:
    """Run ``coro`` on a fresh event loop (uvloop when importable), within ``timeout``."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    try:
        import uvloop
    except ImportError:
        return asyncio.run(bounded())
    result: T = uvloop.run(bounded())
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclasses.dataclass
class Proc:
    """A server process this script started."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def wait_ready(proc: Proc, deadline_s: float = 15.0) -> float:
    """Connect until the ``+HI`` greeting arrives; returns seconds waited."""
    start = time.perf_counter()
    end = start + deadline_s
    last: Exception | None = None
    while time.perf_counter() < end:
        if proc.popen.poll() is not None:
            raise RuntimeError(
                f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}"
            )
        try:
            with socket.create_connection((HOST, proc.port), timeout=1.0) as s:
                data = b""
                while b"\r\n" not in data and len(data) < 1024:
                    chunk = s.recv(1024)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(b"+HI "):
                    s.sendall(b'HELLO {"v":2}\r\nEND\r\n')
                    return time.perf_counter() - start
                last = RuntimeError(f"unexpected greeting {data!r}")
        except OSError as exc:
            last = exc
        time.sleep(0.02)
    raise RuntimeError(f"{proc.name} not ready after {deadline_s:.0f}s: {last}")


def stop(proc: Proc) -> None:
    """SIGTERM the process we started, then SIGKILL it if it does not exit in time."""
    if proc.popen.poll() is not None:
        return
    proc.popen.send_signal(signal.SIGTERM)
    try:
        proc.popen.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        print(f"  ! {proc.name} (pid {proc.pid}) ignored SIGTERM for {STOP_TIMEOUT:.0f}s; SIGKILL")
        proc.popen.kill()
        proc.popen.wait(STOP_TIMEOUT)


def server_command(port: int, db: Path, durability: str, *extra: str) -> list[str]:
    """``python -m minifaktory`` on ``HOST:port`` and ``db``, Web UI off, warnings only."""
    return [
        sys.executable,
        "-m",
        "minifaktory",
        "-b",
        f"{HOST}:{port}",
        "--db",
        str(db),
        "--durability",
        durability,
        "-w",
        f"{HOST}:0",
        "-l",
        "warn",
        *extra,
    ]


@contextlib.contextmanager
def server_process(
    workdir: Path, name: str, durability: str, extra: tuple[str, ...] = ()
) -> Iterator[Proc]:
    """A ``python -m minifaktory`` process on a fresh database file."""
    port = free_port()
    db = workdir / f"{name}.db"
    log_path = workdir / f"{name}.log"
    cmd = server_command(port, db, durability, *extra)
    env = {**os.environ, "MINIFAKTORY_LOOP": SERVER_LOOP["loop"]}
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    proc = Proc(name, popen, port, log_path)
    try:
        wait_ready(proc)
        yield proc
    finally:
        stop(proc)
        tail = proc.log_tail()
        if tail.strip():
            print(f"  [{name} log tail]\n    " + tail.replace("\n", "\n    "))


@contextlib.contextmanager
def baseline_process(workdir: Path, name: str, *args: str) -> Iterator[Proc]:
    """``benchmarks/<name>_server.py HOST PORT [args] LOOP`` on the servers' event loop."""
    port = free_port()
    log_path = workdir / f"{name}.log"
    script = str(HERE / f"{name}_server.py")
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            [sys.executable, script, HOST, str(port), *args, SERVER_LOOP["loop"]],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    proc = Proc(name, popen, port, log_path)
    try:
        wait_ready(proc)
        yield proc
    finally:
        stop(proc)


@contextlib.contextmanager
def profiled(pid: int, out: Path | None) -> Iterator[None]:
    """Sample ``pid`` with py-spy (collapsed stacks into ``out``) for the block."""
    if out is None:
        yield
        return
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print("  ! py-spy not found; skipping profile")
        yield
        return
    spy = subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--format", "raw", "--rate", "250", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)  # let it attach
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            _, err = spy.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate()
        if not out.exists():
            print(f"  ! py-spy wrote nothing: {err.decode(errors='replace').strip()[-500:]}")


def summarize_profile(path: Path, top: int = 15) -> list[str]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    if not path.exists():
        return []
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if frames and frames[0].startswith("thread "):
            frames = frames[1:]
        if not frames:
            continue
        total += count
        own[_short(frames[-1])] += count
        for name in {_short(f) for f in frames}:
            inclusive[name] += count
    if not total:
        return []
    lines = [f"{total} samples; self time (leaf frames):"]
    lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in own.most_common(top)]
    lines.append("inclusive time (function anywhere on the stack):")
    lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in inclusive.most_common(top + 10)]
    return lines


def _short(frame: str) -> str:
    # py-spy raw frames look like "func (path/to/file.py:123)"; drop the line number
    # and shorten the path so one function aggregates over its lines.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    parts = Path(file).parts
    if "minifaktory" in parts:
        file = "/".join(parts[parts.index("minifaktory") :])
    else:
        file = "/".join(parts[-2:])
    return f"{name} ({file})"


# -- a. end to end ---------------------------------------------------------------------


JobMaker = Callable[[str, int], bytes]


def plain_job(jid: str, i: int) -> bytes:
    return job_bytes(jid, queue=QUEUE, arg=i)


async def end_to_end(
    port: int,
    jobs: int,
    connections: int,
    make_job: JobMaker = plain_job,
    queues: tuple[str, ...] = (QUEUE,),
) -> dict[str, Any]:
    """Producers PUSH while consumers FETCH + ACK, all at once, until every job is acked."""
    producers = max(1, connections // 2)
    consumers = max(1, connections - producers)
    prefix = secrets.token_hex(4)
    batches: list[list[bytes]] = []
    start = 0
    for share in split(jobs, producers):
        batches.append([make_job(f"{prefix}{i:012x}", i) for i in range(start, start + share)])
        start += share
    prod = await asyncio.gather(*(Client.connect(HOST, port) for _ in range(producers)))
    cons = await asyncio.gather(
        *(Client.connect(HOST, port, wid=new_wid()) for _ in range(consumers))
    )
    push_lat: list[float] = []
    fetch_lat: list[float] = []
    ack_lat: list[float] = []
    seen: set[str] = set()
    nulls = 0
    push_done = 0.0
    clock = time.perf_counter

    async def produce(client: Client, batch: list[bytes]) -> None:
        for job in batch:
            t = clock()
            await client.push(job)
            push_lat.append(clock() - t)

    async def consume(client: Client, quota: int) -> None:
        nonlocal nulls
        got = 0
        # Bounded: each empty FETCH blocks up to 2 s server-side, and the whole
        # phase runs under a deadline.
        while got < quota:
            t = clock()
            job = await client.fetch(*queues)
            t2 = clock()
            fetch_lat.append(t2 - t)
            if job is None:
                nulls += 1
                continue
            jid = job_jid(job)
            seen.add(jid)
            await client.ack(jid)
            ack_lat.append(clock() - t2)
            got += 1

    async def producers_all() -> None:
        nonlocal push_done
        await asyncio.gather(*(produce(c, b) for c, b in zip(prod, batches, strict=True)))
        push_done = clock() - t0

    t0 = clock()
    await asyncio.gather(
        producers_all(), *(consume(c, q) for c, q in zip(cons, split(jobs, consumers), strict=True))
    )
    elapsed = clock() - t0
    info = await prod[0].info()
    for c in (*prod, *cons):
        await c.close()
    faktory = info.get("faktory", {})
    problems: list[str] = []
    if len(seen) != jobs:
        problems.append(f"fetched {len(seen)} distinct jids, expected {jobs}")
    if any(not jid.startswith(prefix) for jid in seen):
        problems.append("fetched jids that were not pushed in this run")
    left = sum(faktory.get("queues", {}).get(q, 0) for q in queues)
    if left:
        problems.append(f"INFO shows {left} jobs left in {', '.join(queues)}")
    working = faktory.get("sets", {}).get("working", 0)
    if working:
        problems.append(f"INFO shows {working} jobs still in the working set")
    return {
        "jobs": jobs,
        "producers": producers,
        "consumers": consumers,
        "elapsed_s": elapsed,
        "push_phase_s": push_done,
        "jobs_per_s": jobs / elapsed,
        "commands_per_s": 3 * jobs / elapsed,
        "push_p50_ms": 1000 * percentile(push_lat, 50),
        "push_p99_ms": 1000 * percentile(push_lat, 99),
        "fetch_p50_ms": 1000 * percentile(fetch_lat, 50),
        "fetch_p99_ms": 1000 * percentile(fetch_lat, 99),
        "ack_p50_ms": 1000 * percentile(ack_lat, 50),
        "ack_p99_ms": 1000 * percentile(ack_lat, 99),
        "null_fetches": nulls,
        "total_processed": faktory.get("total_processed"),
        "problems": problems,
    }


# -- b. raw apsw commits ---------------------------------------------------------------


def apsw_commits(workdir: Path, durability: str, count: int, deadline_s: float) -> dict[str, Any]:
    """One INSERT + COMMIT per job in WAL mode: what one transaction per command costs."""
    path = workdir / f"raw-{durability}.db"
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
    conn.execute(
        "CREATE TABLE queued (id INTEGER PRIMARY KEY, queue TEXT NOT NULL,"
        " priority INTEGER NOT NULL DEFAULT 5, jid TEXT NOT NULL, payload BLOB NOT NULL)"
    )
    conn.execute("CREATE INDEX queued_order ON queued (queue, priority DESC, id)")
    prefix = secrets.token_hex(4)
    done = 0
    t0 = time.perf_counter()
    end = t0 + deadline_s
    while done < count and time.perf_counter() < end:
        jid = f"{prefix}{done:012x}"
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO queued (queue, jid, payload) VALUES (?, ?, ?)",
            (QUEUE, jid, job_bytes(jid, queue=QUEUE, arg=done)),
        )
        conn.execute("COMMIT")
        done += 1
    elapsed = time.perf_counter() - t0
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            os.unlink(f"{path}{suffix}")
    return {"commits": done, "elapsed_s": elapsed, "commits_per_s": done / elapsed}


# -- c. echo baseline ------------------------------------------------------------------


async def echo_round_trips(port: int, connections: int, total: int) -> dict[str, Any]:
    """Sequential request/reply round trips over ``connections`` with the same client."""
    clients = await asyncio.gather(*(Client.connect(HOST, port) for _ in range(connections)))
    line = b"PUSH " + job_bytes("0123456789abcdef0123", queue=QUEUE)

    async def loop(client: Client, count: int) -> None:
        for _ in range(count):
            if await client.call(line) != b"OK":
                raise FaktoryError("echo server gave a wrong reply")

    t0 = time.perf_counter()
    await asyncio.gather(
        *(loop(c, k) for c, k in zip(clients, split(total, connections), strict=True))
    )
    elapsed = time.perf_counter() - t0
    for c in clients:
        await c.close()
    return {"round_trips": total, "elapsed_s": elapsed, "round_trips_per_s": total / elapsed}


# -- c2. hand-off latency ----------------------------------------------------------------


async def handoff(port: int, count: int) -> dict[str, Any]:
    """A worker waits in FETCH on an empty queue; a producer PUSHes one job. Time from
    sending the PUSH to the FETCH reply, ``count`` times; one connection's PING round
    trip is the baseline."""
    worker = await Client.connect(HOST, port, wid=new_wid())
    producer = await Client.connect(HOST, port)
    prefix = secrets.token_hex(4)
    lat: list[float] = []
    ping: list[float] = []
    for i in range(count):
        fetched = worker.send(f"FETCH {QUEUE}".encode())
        await asyncio.sleep(0.001)  # the FETCH is waiting in the server now
        t = time.perf_counter()
        pushed = producer.send(b"PUSH " + job_bytes(f"{prefix}{i:012x}", queue=QUEUE, arg=i))
        payload = await fetched
        lat.append(time.perf_counter() - t)
        await pushed
        if not isinstance(payload, bytes):
            raise FaktoryError(f"FETCH returned {payload!r}")
        await worker.ack(job_jid(payload))
        t = time.perf_counter()
        await producer.call(b'ACK {"jid":"not-a-reservation"}')
        ping.append(time.perf_counter() - t)
    await worker.close()
    await producer.close()
    return {
        "handoffs": count,
        "p50_ms": 1000 * percentile(lat, 50),
        "p99_ms": 1000 * percentile(lat, 99),
        "max_ms": 1000 * max(lat),
        "ping_p50_ms": 1000 * percentile(ping, 50),
        "ping_p99_ms": 1000 * percentile(ping, 99),
    }


def handoff_once(workdir: Path, durability: str, count: int) -> dict[str, Any]:
    with server_process(workdir, f"handoff-{durability}", durability) as proc:
        return run_async(handoff(proc.port, count), 60.0 + count / 50)


# -- d/e. queue depth ------------------------------------------------------------------


def batch_array(prefix: str, start: int, count: int) -> bytes:
    return (
        b"["
        + b",".join(
            job_bytes(f"{prefix}{i:012x}", queue=QUEUE, arg=i) for i in range(start, start + count)
        )
        + b"]"
    )


async def fill(
    port: int,
    target: int,
    deadline_s: float,
    make_batch: Callable[[int, int], bytes] | None = None,
    batch_size: int = BATCH,
    connections: int = FILL_CONNECTIONS,
) -> dict[str, Any]:
    """PUSHB batches of ``batch_size`` over a few connections until ``target`` jobs or the
    deadline; ``make_batch(start, count)`` builds each array (default: plain jobs)."""
    if make_batch is None:
        prefix = secrets.token_hex(4)

        def make_batch(start: int, count: int) -> bytes:
            return batch_array(prefix, start, count)

    build = make_batch
    clients = await asyncio.gather(*(Client.connect(HOST, port) for _ in range(connections)))
    next_index = 0
    pushed = 0
    rejected = 0
    t0 = time.perf_counter()
    end = t0 + deadline_s

    async def worker(client: Client) -> None:
        nonlocal next_index, pushed, rejected
        while next_index < target and time.perf_counter() < end:
            start = next_index
            count = min(batch_size, target - start)
            next_index += count
            errors = await client.pushb(build(start, count))
            rejected += len(errors)
            pushed += count - len(errors)

    await asyncio.gather(*(worker(c) for c in clients))
    elapsed = time.perf_counter() - t0
    for c in clients:
        await c.close()
    return {
        "pushed": pushed,
        "rejected": rejected,
        "elapsed_s": elapsed,
        "jobs_per_s": pushed / elapsed if elapsed else 0.0,
    }


async def fetch_rate(port: int, rounds: int, per_round: int) -> dict[str, Any]:
    """Rounds of FETCH + ACK over ``FETCH_CONNECTIONS``, each refilled (untimed) by one PUSHB.

    The queue depth therefore stays between its start size and that minus ``per_round``.
    """
    clients = await asyncio.gather(
        *(Client.connect(HOST, port, wid=new_wid()) for _ in range(FETCH_CONNECTIONS))
    )
    producer = await Client.connect(HOST, port)
    prefix = secrets.token_hex(4)
    nulls = 0
    timed = 0.0
    per_round_rates: list[float] = []
    fetch_lat: list[float] = []
    clock = time.perf_counter

    async def consume(client: Client, quota: int) -> None:
        nonlocal nulls
        got = 0
        misses = 0
        while got < quota and misses < 3:
            t = clock()
            job = await client.fetch(QUEUE)
            fetch_lat.append(clock() - t)
            if job is None:
                nulls += 1
                misses += 1
                continue
            await client.ack(job_jid(job))
            got += 1

    for r in range(-1, rounds):  # round -1 warms up and is not counted
        if r == 0:
            fetch_lat.clear()
            nulls = 0
        t0 = clock()
        await asyncio.gather(
            *(consume(c, k) for c, k in zip(clients, split(per_round, len(clients)), strict=True))
        )
        dt = clock() - t0
        if r >= 0:
            timed += dt
            per_round_rates.append(per_round / dt)
        errors = await producer.pushb(batch_array(prefix, (r + 1) * per_round, per_round))
        if errors:
            raise FaktoryError(f"refill rejected {len(errors)} jobs: {next(iter(errors.items()))}")
    info = await producer.info()
    for c in (*clients, producer):
        await c.close()
    return {
        "fetched": rounds * per_round,
        "elapsed_s": timed,
        "fetch_ack_per_s": rounds * per_round / timed,
        "round_min_per_s": min(per_round_rates),
        "round_max_per_s": max(per_round_rates),
        "fetch_p50_ms": 1000 * percentile(fetch_lat, 50),
        "fetch_p99_ms": 1000 * percentile(fetch_lat, 99),
        "null_fetches": nulls,
        "queue_size_after": info.get("faktory", {}).get("queues", {}).get(QUEUE),
    }


async def info_latency(port: int, calls: int) -> dict[str, Any]:
    client = await Client.connect(HOST, port)
    lat: list[float] = []
    size = None
    for _ in range(calls):
        t = time.perf_counter()
        raw = await client.info_raw()
        lat.append(time.perf_counter() - t)
        size = len(raw)
    doc = json.loads(await client.info_raw())
    await client.close()
    return {
        "calls": calls,
        "median_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * percentile(lat, 99),
        "max_ms": 1000 * max(lat),
        "reply_bytes": size,
        "queue_size": doc.get("faktory", {}).get("queues", {}).get(QUEUE),
        "used_memory_mb": doc.get("server", {}).get("used_memory_mb"),
    }


def queue_depth(
    workdir: Path, durability: str, big: int, budget_s: float, profile_dir: Path | None
) -> dict[str, Any]:
    """Fetch rate at 1k vs ``big`` queued jobs on one server; INFO latency at ``big``; RSS."""
    out: dict[str, Any] = {"durability": durability, "target_big": big}
    started = time.perf_counter()
    with server_process(workdir, f"depth-{durability}", durability) as proc:
        time.sleep(0.5)  # let start-up allocation settle before reading RSS
        out["idle_rss_mb"] = rss_mb(proc.pid)
        out["small_fill"] = run_async(fill(proc.port, 1000, 30.0), 60.0)
        out["small"] = run_async(fetch_rate(proc.port, FETCH_ROUNDS, FETCH_PER_ROUND), 120.0)
        remaining = budget_s - (time.perf_counter() - started) - 30.0
        out["big_fill"] = run_async(fill(proc.port, big - 1000, remaining), remaining + 60.0)
        out["rss_after_fill_mb"] = rss_mb(proc.pid)
        out["big"] = run_async(fetch_rate(proc.port, FETCH_ROUNDS, FETCH_PER_ROUND), 120.0)
        out["info"] = run_async(info_latency(proc.port, INFO_CALLS), 60.0)
        if profile_dir is not None:
            spy_out = profile_dir / "fetch-big.txt"
            with profiled(proc.pid, spy_out):
                out["big_profiled"] = run_async(
                    fetch_rate(proc.port, FETCH_ROUNDS * 4, FETCH_PER_ROUND), 240.0
                )
            out["profile_fetch_big"] = summarize_profile(spy_out)
    out["elapsed_s"] = time.perf_counter() - started
    return out


# -- f. start-up -----------------------------------------------------------------------


def ready_times(starts: int) -> dict[str, Any]:
    """``minifaktory.run()`` until its ``with`` body runs, in this process, ``starts`` times."""
    import minifaktory

    enter: list[float] = []
    leave: list[float] = []
    for _ in range(starts):
        t0 = time.perf_counter()
        with minifaktory.run() as server:
            t1 = time.perf_counter()
            assert server.port
        leave.append(time.perf_counter() - t1)
        enter.append(t1 - t0)
    return {
        "starts": starts,
        "median_ms": 1000 * statistics.median(enter),
        "first_ms": 1000 * enter[0],
        "max_ms": 1000 * max(enter),
        "stop_median_ms": 1000 * statistics.median(leave),
    }


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def e2e_once(workdir: Path, durability: str, jobs: int, connections: int) -> dict[str, Any]:
    with server_process(workdir, f"e2e-{durability}", durability) as proc:
        return e2e_with_cpu(proc, jobs, connections)


def e2e_with_cpu(proc: Proc, jobs: int, connections: int) -> dict[str, Any]:
    """The end-to-end run against ``proc``, with the server's CPU per job."""
    user0, sys0 = cpu_times(proc.pid)
    result = run_async(end_to_end(proc.port, jobs, connections), max(60.0, jobs / 200))
    user1, sys1 = cpu_times(proc.pid)
    result["server_user_us_per_job"] = 1e6 * (user1 - user0) / jobs
    result["server_system_us_per_job"] = 1e6 * (sys1 - sys0) / jobs
    result["server_cpu_us_per_job"] = (
        result["server_user_us_per_job"] + result["server_system_us_per_job"]
    )
    return result


def echo_once(workdir: Path, connections: int, round_trips: int) -> dict[str, Any]:
    with baseline_process(workdir, "echo") as proc:
        user0, sys0 = cpu_times(proc.pid)
        result = run_async(
            echo_round_trips(proc.port, connections, round_trips), max(60.0, round_trips / 600)
        )
        user1, sys1 = cpu_times(proc.pid)
        # Three round trips make a job (PUSH, FETCH, ACK).
        result["server_cpu_us_per_3"] = 3e6 * (user1 - user0 + sys1 - sys0) / round_trips
        return result


def floor_once(workdir: Path, jobs: int, connections: int) -> dict[str, Any]:
    """The end-to-end run against ``floor_server.py`` (durability full)."""
    db = workdir / f"floor-{secrets.token_hex(4)}.db"
    with baseline_process(workdir, "floor", str(db)) as proc:
        return e2e_with_cpu(proc, jobs, connections)


def median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The run with the median ``key`` (lower median), plus every run's ``key`` and problems."""
    ordered = sorted(runs, key=lambda r: float(r[key]))
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["runs"] = [r[key] for r in runs]
    problems = [p for r in runs for p in r.get("problems", [])]
    if problems or "problems" in chosen:
        chosen["problems"] = problems
    return chosen


def spread(part: dict[str, Any]) -> str:
    runs = part.get("runs", [])
    if len(runs) < 2:
        return ""
    return f" [{fmt(min(runs))}..{fmt(max(runs))} over {len(runs)}]"


# -- report ----------------------------------------------------------------------------


def fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def attempt(results: dict[str, Any], key: str, fn: Callable[[], T]) -> T | None:
    """Run one part; record and print an error instead of aborting the whole run."""
    t0 = time.perf_counter()
    try:
        value = fn()
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}"
        print(f"  ! {key} failed after {time.perf_counter() - t0:.1f}s: {detail}")
        results.setdefault("errors", {})[key] = detail
        return None
    results[key] = value
    print(f"  {key} done in {time.perf_counter() - t0:.1f}s")
    return value


def report(results: dict[str, Any]) -> list[str]:
    rows: list[tuple[str, str, str, str]] = []
    raw = results.get("raw_apsw", {})
    echo = results.get("echo")
    floor = results.get("floor")
    for durability in ("full", "normal"):
        e2e = results.get(f"e2e_{durability}")
        if e2e is None:
            continue
        base = raw.get(durability)
        vs = (
            f"{e2e['jobs_per_s'] / base['commits_per_s']:.2f}x raw commits "
            f"({fmt(base['commits_per_s'])}/s)"
            if base
            else ""
        )
        if floor and durability == "full":
            vs += f"; {e2e['jobs_per_s'] / floor['jobs_per_s']:.2f}x floor"
        target = ""
        if durability == "full":
            target = f">= {fmt(TARGET_E2E)} {verdict(e2e['jobs_per_s'] >= TARGET_E2E)}"
        label = f"end-to-end jobs/s ({durability}, {e2e['producers']}+{e2e['consumers']} conns)"
        rows.append((label, fmt(e2e["jobs_per_s"]) + spread(e2e), vs, target))
        cpu = e2e.get("server_cpu_us_per_job")
        if cpu is not None:
            rows.append(
                (
                    f"  server CPU µs/job ({durability})",
                    f"{cpu:.0f}",
                    f"{e2e['server_user_us_per_job']:.0f} user + "
                    f"{e2e['server_system_us_per_job']:.0f} system, all threads"
                    + (
                        f"; {cpu / floor['server_cpu_us_per_job']:.2f}x floor"
                        if floor and durability == "full"
                        else ""
                    ),
                    f"<= {TARGET_CPU_US:.0f} {verdict(cpu <= TARGET_CPU_US)}"
                    if durability == "full"
                    else "",
                )
            )
        if echo:
            rows.append(
                (
                    f"  commands/s ({durability}: PUSH+FETCH+ACK)",
                    fmt(e2e["commands_per_s"]),
                    f"{e2e['commands_per_s'] / echo['round_trips_per_s']:.2f}x echo round trips",
                    "",
                )
            )
        rows.append(
            (
                "  latency ms p50/p99 push|fetch|ack",
                f"{e2e['push_p50_ms']:.2f}/{e2e['push_p99_ms']:.2f}"
                f" | {e2e['fetch_p50_ms']:.2f}/{e2e['fetch_p99_ms']:.2f}"
                f" | {e2e['ack_p50_ms']:.2f}/{e2e['ack_p99_ms']:.2f}",
                f"{e2e['null_fetches']} empty FETCH replies",
                "",
            )
        )
        for problem in e2e["problems"]:
            rows.append(("  ! problem", problem, "", ""))
    small = results.get("e2e_small")
    if small:
        rows.append(
            (
                f"end-to-end jobs/s (full, {small['producers']}+{small['consumers']} conns)",
                fmt(small["jobs_per_s"]) + spread(small),
                f"server CPU {small['server_cpu_us_per_job']:.0f} µs/job",
                f">= {fmt(TARGET_E2E_SMALL)} {verdict(small['jobs_per_s'] >= TARGET_E2E_SMALL)}",
            )
        )
    for key in ("handoff_full", "handoff_normal"):
        hand = results.get(key)
        if not hand:
            continue
        ok50 = hand["p50_ms"] <= TARGET_HANDOFF_P50_S * 1000
        ok99 = hand["p99_ms"] <= TARGET_HANDOFF_P99_S * 1000
        rows.append(
            (
                f"PUSH → waiting FETCH hand-off ms p50/p99 ({key.split('_')[1]})",
                f"{hand['p50_ms']:.3f}/{hand['p99_ms']:.3f}",
                f"no-op ACK round trip {hand['ping_p50_ms']:.3f}/{hand['ping_p99_ms']:.3f}",
                f"<= {TARGET_HANDOFF_P50_S * 1000:.1f}/{TARGET_HANDOFF_P99_S * 1000:.0f}:"
                f" p50 {verdict(ok50)}, p99 {verdict(ok99)}",
            )
        )
    for durability, base in raw.items():
        rows.append(
            (
                f"baseline: raw apsw commits/s ({durability})",
                fmt(base["commits_per_s"]) + spread(base),
                "",
                "",
            )
        )
    if echo:
        rows.append(
            (
                f"baseline: echo round trips/s ({SERVER_LOOP['loop']})",
                fmt(echo["round_trips_per_s"]) + spread(echo),
                f"server CPU {echo['server_cpu_us_per_3']:.0f} µs per 3 round trips",
                "",
            )
        )
    if floor:
        rows.append(
            (
                "baseline: floor server jobs/s (full)",
                fmt(floor["jobs_per_s"]) + spread(floor),
                f"server CPU {floor['server_cpu_us_per_job']:.0f} µs/job "
                f"({floor['server_user_us_per_job']:.0f} user + "
                f"{floor['server_system_us_per_job']:.0f} system)",
                "",
            )
        )
        for problem in floor["problems"]:
            rows.append(("  ! floor problem", problem, "", ""))
    depth = results.get("depth")
    if depth:
        small, big = depth["small"], depth["big"]
        queued = big.get("queue_size_after") or depth["big_fill"]["pushed"] + 1000
        ratio = big["fetch_ack_per_s"] / small["fetch_ack_per_s"]
        rows.append(
            (
                f"fetch+ack/s, ~1k queued ({depth['durability']})",
                fmt(small["fetch_ack_per_s"]),
                f"rounds {fmt(small['round_min_per_s'])}..{fmt(small['round_max_per_s'])}",
                "",
            )
        )
        rows.append(
            (
                f"fetch+ack/s, {fmt(queued)} queued",
                fmt(big["fetch_ack_per_s"]),
                f"{ratio:.2f}x the 1k rate; rounds "
                f"{fmt(big['round_min_per_s'])}..{fmt(big['round_max_per_s'])}",
                f">= {TARGET_DEPTH_RATIO:.2f}x {verdict(ratio >= TARGET_DEPTH_RATIO)}",
            )
        )
        bf = depth["big_fill"]
        rows.append(
            (
                "  PUSHB fill rate jobs/s",
                fmt(bf["jobs_per_s"]),
                f"{fmt(bf['pushed'])} in {bf['elapsed_s']:.1f}s, {bf['rejected']} rejected",
                "",
            )
        )
        info = depth["info"]
        limit = TARGET_INFO_S * 1000
        rows.append(
            (
                f"INFO latency ms median/p99 ({fmt(queued)} queued)",
                f"{info['median_ms']:.3f}/{info['p99_ms']:.3f}",
                f"max {info['max_ms']:.3f}",
                f"<= {TARGET_INFO_S * 1000:.0f} ms: median {verdict(info['median_ms'] <= limit)},"
                f" p99 {verdict(info['p99_ms'] <= limit)}",
            )
        )
        rows.append(
            (
                "idle RSS MB (fresh server process)",
                f"{depth['idle_rss_mb']:.1f}",
                f"{depth['rss_after_fill_mb']:.1f} MB after the fill",
                f"<= {TARGET_RSS_MB:.0f} MB {verdict(depth['idle_rss_mb'] <= TARGET_RSS_MB)}",
            )
        )
    ready = results.get("ready")
    if ready:
        rows.append(
            (
                f"run() time to ready ms (median of {ready['starts']})",
                f"{ready['median_ms']:.1f}",
                f"first {ready['first_ms']:.1f}, max {ready['max_ms']:.1f}, "
                f"stop {ready['stop_median_ms']:.1f}",
                f"<= {TARGET_READY_S * 1000:.0f} ms "
                f"{verdict(ready['median_ms'] <= TARGET_READY_S * 1000)}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)] if rows else [0, 0, 0, 0]
    header = ("metric", "result", "baseline / ratio / detail", "target")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    for row in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return out


def environment() -> dict[str, Any]:
    try:
        import uvloop

        uv = str(getattr(uvloop, "__version__", "?"))
    except ImportError:
        uv = "not installed"
    return {
        "python": platform.python_version(),
        "uvloop": uv,
        "sqlite": apsw.sqlite_lib_version(),
        "apsw": apsw.apsw_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--jobs", type=int, help="end-to-end jobs (default 20000; --quick 3000)")
    p.add_argument("--connections", type=int, default=50, help="end-to-end connections")
    p.add_argument("--durability", choices=["full", "normal", "both"], default="both")
    p.add_argument("--big", type=int, help="big queue size (default 1000000; --quick 100000)")
    p.add_argument("--quick", action="store_true", help="smaller sizes for a fast check")
    p.add_argument("--json", type=Path, help="write every result to this JSON file")
    p.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="also sample the server with py-spy in extra, separately run parts",
    )
    p.add_argument(
        "--repeat",
        type=int,
        help="end-to-end, raw and echo runs, median shown (default 3; --quick 1)",
    )
    p.add_argument(
        "--depth-budget",
        type=float,
        default=180.0,
        help="seconds for the queue-depth part, the big fill included (default 180)",
    )
    p.add_argument(
        "--small-connections",
        type=int,
        default=10,
        help="connections of the second end-to-end run (full durability)",
    )
    p.add_argument(
        "--server-loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="event loop of the servers under test (MINIFAKTORY_LOOP) and of the echo baseline",
    )
    p.add_argument(
        "--skip", action="append", default=[], choices=["e2e", "small", "handoff", "depth", "ready"]
    )
    args = p.parse_args(argv)
    if args.jobs is None:
        args.jobs = 3000 if args.quick else 20000
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.big is None:
        args.big = 100_000 if args.quick else 1_000_000
    if args.connections < 2 or args.jobs < 1 or args.big < 2000 or args.repeat < 1:
        p.error("need --connections >= 2, --jobs >= 1, --big >= 2000, --repeat >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    SERVER_LOOP["loop"] = args.server_loop
    durabilities = ["full", "normal"] if args.durability == "both" else [args.durability]
    depth_durability = "full" if args.durability == "both" else args.durability
    results: dict[str, Any] = {
        "config": {
            "jobs": args.jobs,
            "connections": args.connections,
            "durabilities": durabilities,
            "big": args.big,
            "quick": args.quick,
            "repeat": args.repeat,
            "small_connections": args.small_connections,
            "server_loop": args.server_loop,
        },
        "environment": environment(),
    }
    profile_dir: Path | None = args.profile
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    env = results["environment"]
    print(
        f"minifaktory benchmark: jobs={args.jobs} connections={args.connections} big={args.big}"
        f" | Python {env['python']}, uvloop {env['uvloop']}, SQLite {env['sqlite']},"
        f" {env['cpus']} CPUs; server loop {args.server_loop}"
    )
    total_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mf-bench-") as tmp:
        workdir = Path(tmp)
        if "e2e" not in args.skip:
            e2e_runs: dict[str, list[dict[str, Any]]] = {d: [] for d in durabilities}
            raw_runs: dict[str, list[dict[str, Any]]] = {d: [] for d in durabilities}
            echo_runs: list[dict[str, Any]] = []
            floor_runs: list[dict[str, Any]] = []
            # Repeats are interleaved so that slow drifts of the machine hit every part alike.
            for rep in range(args.repeat):
                for durability in durabilities:
                    value = attempt(
                        results,
                        f"e2e_{durability} #{rep + 1}",
                        functools.partial(
                            e2e_once, workdir, durability, args.jobs, args.connections
                        ),
                    )
                    if value is not None:
                        e2e_runs[durability].append(value)
                    value = attempt(
                        results,
                        f"raw_apsw_{durability} #{rep + 1}",
                        functools.partial(apsw_commits, workdir, durability, args.jobs, 10.0),
                    )
                    if value is not None:
                        raw_runs[durability].append(value)
                value = attempt(
                    results,
                    f"echo #{rep + 1}",
                    functools.partial(echo_once, workdir, args.connections, 3 * args.jobs),
                )
                if value is not None:
                    echo_runs.append(value)
                if "full" in durabilities:
                    value = attempt(
                        results,
                        f"floor #{rep + 1}",
                        functools.partial(floor_once, workdir, args.jobs, args.connections),
                    )
                    if value is not None:
                        floor_runs.append(value)
            for durability in durabilities:
                if e2e_runs[durability]:
                    results[f"e2e_{durability}"] = median_run(e2e_runs[durability], "jobs_per_s")
            results["raw_apsw"] = {
                d: median_run(runs, "commits_per_s") for d, runs in raw_runs.items() if runs
            }
            if echo_runs:
                results["echo"] = median_run(echo_runs, "round_trips_per_s")
            if floor_runs:
                results["floor"] = median_run(floor_runs, "jobs_per_s")
            for key in [k for k in results if " #" in k]:  # kept once, inside the medians
                del results[key]
            if profile_dir is not None:

                def e2e_profiled(durability: str, spy_dir: Path) -> dict[str, Any]:
                    with server_process(workdir, f"e2e-profiled-{durability}", durability) as proc:
                        spy_out = spy_dir / f"e2e-{durability}.txt"
                        with profiled(proc.pid, spy_out):
                            value = run_async(
                                end_to_end(proc.port, args.jobs * 2, args.connections),
                                max(120.0, args.jobs / 100),
                            )
                        value["profile"] = summarize_profile(spy_out)
                        return value

                for durability in durabilities:
                    attempt(
                        results,
                        f"e2e_{durability}_profiled",
                        functools.partial(e2e_profiled, durability, profile_dir),
                    )
        if "small" not in args.skip:
            small_runs: list[dict[str, Any]] = []
            for rep in range(args.repeat):
                value = attempt(
                    results,
                    f"e2e_small #{rep + 1}",
                    functools.partial(e2e_once, workdir, "full", args.jobs, args.small_connections),
                )
                if value is not None:
                    small_runs.append(value)
            for key in [k for k in results if k.startswith("e2e_small #")]:
                del results[key]
            if small_runs:
                results["e2e_small"] = median_run(small_runs, "jobs_per_s")
        if "handoff" not in args.skip:
            for durability in durabilities:
                attempt(
                    results,
                    f"handoff_{durability}",
                    functools.partial(handoff_once, workdir, durability, HANDOFFS),
                )
        if "depth" not in args.skip:
            attempt(
                results,
                "depth",
                lambda: queue_depth(
                    workdir, depth_durability, args.big, args.depth_budget, profile_dir
                ),
            )
        if "ready" not in args.skip:
            attempt(results, "ready", lambda: ready_times(READY_STARTS))
    results["total_elapsed_s"] = time.perf_counter() - total_start
    print()
    for line in report(results):
        print(line)
    for key, label in (
        ("e2e_full_profiled", "end to end, full durability"),
        ("e2e_normal_profiled", "end to end, normal durability"),
        ("depth", "FETCH + ACK at the big depth"),
    ):
        part = results.get(key) or {}
        lines = part.get("profile") or part.get("profile_fetch_big")
        if lines:
            print(f"\nserver profile during {label} (py-spy):")
            for line in lines:
                print("  " + line)
    for key, detail in results.get("errors", {}).items():
        print(f"! {key}: {detail}")
    print(f"\ntotal {results['total_elapsed_s']:.0f}s")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
