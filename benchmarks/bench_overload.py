"""Overload benchmark: many connections, connect bursts, slow, flooding and oversized clients.

Run: ``python benchmarks/bench_overload.py [--connections N] [--burst B] [--repeat R]
[--oversize-mb M] [--oversize-count K] [--flood-seconds S] [--quick] [--json PATH]``

Every server runs in its own process (``python -m minifaktory``) on 127.0.0.1, with a
conf.d raising ``[faktory] max_connections`` above N, and is stopped with SIGTERM
(SIGKILL after a timeout) by the PID this script started. Memory is the server's
VmRSS (and VmHWM, its peak) from /proc. Every loop is bounded by a count and by a
deadline. Nothing is asserted: the numbers are printed next to the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import re
import resource
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_throughput import (
    HOST,
    Proc,
    attempt,
    environment,
    percentile,
    rss_mb,
    run_async,
    server_process,
)
from fwp_client import Client, job_bytes, job_jid

#: The handshake deadline (Faktory's): a burst of connects should be served within it.
TARGET_BURST_S = 2.0
#: Connections opened at a time while building the crowd.
GATE = 500
PROBES = 200
MB = 1024 * 1024


# -- helpers ---------------------------------------------------------------------------


def raise_file_limit(needed: int) -> int:
    """Raise this process's soft open-file limit to the hard one; returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return needed if soft == resource.RLIM_INFINITY else int(soft)


def status_mb(pid: int, field: str) -> float:
    """A /proc/PID/status memory figure (VmRSS, VmHWM) in MiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(m[1]) / 1024 if m else float("nan")


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux 4.0+)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@contextlib.contextmanager
def overload_server(workdir: Path, name: str, durability: str, max_conn: int) -> Iterator[Proc]:
    """A server process whose conf.d allows ``max_conn`` connections."""
    config = workdir / f"{name}-etc"
    (config / "conf.d").mkdir(parents=True, exist_ok=True)
    (config / "conf.d" / "overload.toml").write_text(f"[faktory]\nmax_connections = {max_conn}\n")
    with server_process(workdir, name, durability, ("-c", str(config))) as proc:
        yield proc


def ms_stats(seconds: list[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(seconds, 50) * 1000,
        "p99_ms": percentile(seconds, 99) * 1000,
        "max_ms": max(seconds, default=float("nan")) * 1000,
        "count": len(seconds),
    }


async def probe(port: int, count: int, seconds: float) -> list[float]:
    """PUSH + FETCH + ACK round trips from a fresh client (at most ``count`` or ``seconds``)."""
    client = await Client.connect(HOST, port, timeout=30)
    times: list[float] = []
    end = time.perf_counter() + seconds
    try:
        for i in range(count):
            if time.perf_counter() > end:
                break
            t = time.perf_counter()
            await client.push(job_bytes(f"probe{i:019d}", queue="probe"))
            job = await client.fetch("probe")
            assert job is not None
            await client.ack(job_jid(job))
            times.append(time.perf_counter() - t)
    finally:
        await client.close()
    return times


# -- a. ten thousand connections -----------------------------------------------------------


async def crowd(proc: Proc, connections: int) -> dict[str, Any]:
    """Open and handshake ``connections`` clients (GATE at a time), probe, then close them."""
    port = proc.port
    await asyncio.sleep(0.5)
    idle = rss_mb(proc.pid)
    gate = asyncio.Semaphore(GATE)

    async def one() -> Client:
        async with gate:
            return await Client.connect(HOST, port, timeout=30)

    start = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(connections)), return_exceptions=True)
    opened = time.perf_counter() - start
    held = [c for c in results if isinstance(c, Client)]
    failures = [repr(r) for r in results if not isinstance(r, Client)]
    try:
        await asyncio.sleep(0.5)
        with_them = rss_mb(proc.pid)
        checker = await Client.connect(HOST, port, timeout=30)
        counted = (await checker.info())["server"]["connections"] - 1
        await checker.close()
        round_trips = await probe(port, PROBES, 20)
    finally:
        for client in held:
            client.abort()
    start = time.perf_counter()
    counted_after = counted
    while counted_after > 0 and time.perf_counter() - start < 30:
        await asyncio.sleep(0.1)
        checker = await Client.connect(HOST, port, timeout=30)
        counted_after = (await checker.info())["server"]["connections"] - 1
        await checker.close()
    released = time.perf_counter() - start
    return {
        "connections": connections,
        "opened": len(held),
        "failures": len(failures),
        "first_failures": failures[:3],
        "open_s": opened,
        "connections_per_s": len(held) / opened if opened else float("nan"),
        "counted_by_info": counted,
        "rss_idle_mb": idle,
        "rss_held_mb": with_them,
        "kb_per_connection": (with_them - idle) * 1024 / max(len(held), 1),
        "probe": ms_stats(round_trips),
        "release_s": released,
        "after_release": counted_after,
    }


# -- b. burst of simultaneous connects -----------------------------------------------------


async def burst(port: int, size: int) -> dict[str, Any]:
    """``size`` connects started at once; seconds from the start until each one's +OK."""
    start = time.perf_counter()

    async def one() -> tuple[Client, float]:
        client = await Client.connect(HOST, port, timeout=30)
        return client, time.perf_counter() - start

    results = await asyncio.gather(*(one() for _ in range(size)), return_exceptions=True)
    times = [r[1] for r in results if isinstance(r, tuple)]
    for r in results:
        if isinstance(r, tuple):
            r[0].abort()
    return {
        "size": size,
        "handshaken": len(times),
        "failed": size - len(times),
        "p50_s": percentile(times, 50),
        "p99_s": percentile(times, 99),
        "max_s": max(times, default=float("nan")),
    }


# -- c. slow clients -------------------------------------------------------------------------


class Slow(asyncio.Protocol):
    """Reads the greeting, then sends nothing (or one byte of a HELLO every ``drip`` s)."""

    def __init__(self, drip: float | None) -> None:
        self.drip = drip
        self.start = time.perf_counter()
        self.closed_after: float | None = None
        self.lost = asyncio.get_running_loop().create_future()
        self.handle: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.line = b'HELLO {"hostname":"' + b"h" * 1000 + b'"}\r\n'
        self.sent = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.drip is not None:
            self._send()

    def _send(self) -> None:
        if self.transport is None or self.transport.is_closing() or self.sent >= len(self.line):
            return
        self.transport.write(self.line[self.sent : self.sent + 1])
        self.sent += 1
        assert self.drip is not None
        self.handle = asyncio.get_running_loop().call_later(self.drip, self._send)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed_after = time.perf_counter() - self.start
        if self.handle is not None:
            self.handle.cancel()
        if not self.lost.done():
            self.lost.set_result(None)


async def slow_clients(port: int, count: int) -> dict[str, Any]:
    """``count`` silent and ``count`` dripping clients: when the server closes each."""
    loop = asyncio.get_running_loop()
    out: dict[str, Any] = {"count": count}
    protos: dict[str, list[Slow]] = {"silent": [], "drip": []}
    for kind, drip in (("silent", None), ("drip", 0.05)):
        for _ in range(count):
            _, proto = await loop.create_connection(functools.partial(Slow, drip), HOST, port)
            protos[kind].append(proto)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(15):
            await asyncio.gather(*(p.lost for ps in protos.values() for p in ps))
    for kind, ps in protos.items():
        closed = [p.closed_after for p in ps if p.closed_after is not None]
        out[kind] = {
            "closed": len(closed),
            "p50_s": percentile(closed, 50),
            "max_s": max(closed, default=float("nan")),
        }
        for p in ps:
            if p.transport is not None:
                p.transport.abort()
    return out


# -- d. a client that never reads ----------------------------------------------------------


class Flooder(asyncio.Protocol):
    """Handshakes, stops reading, then writes ``chunk`` whenever the socket takes it."""

    def __init__(self, chunk: bytes, until: float) -> None:
        self.chunk = chunk
        self.until = until
        self.sent = 0
        self.paused = False
        self.buf = b""
        self.state = "greeting"
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.state == "greeting" and b"\r\n" in self.buf:
            self.buf = self.buf.split(b"\r\n", 1)[1]
            self.state = "hello"
            assert self.transport is not None
            self.transport.write(b"HELLO {}\r\n")
        if self.state == "hello" and b"\r\n" in self.buf:
            self.state = "flooding"
            assert self.transport is not None
            self.transport.pause_reading()  # never read a reply again
            self._fill()

    def _fill(self) -> None:
        transport = self.transport
        while (
            transport is not None
            and not self.paused
            and not transport.is_closing()
            and time.perf_counter() < self.until
        ):
            transport.write(self.chunk)
            self.sent += len(self.chunk)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._fill()


async def flood(proc: Proc, kind: str, seconds: float) -> dict[str, Any]:
    """Others' PUSH+FETCH+ACK latency and the server's RSS while one client floods."""
    loop = asyncio.get_running_loop()
    port = proc.port
    quiet = await probe(port, 500, 2)
    rss_before = rss_mb(proc.pid)
    if kind == "INFO":
        chunk = b"INFO\r\n" * 1000
    else:
        chunk = b"".join(
            b"PUSH " + job_bytes(f"flood{i:019d}", queue="flood") + b"\r\n" for i in range(200)
        )
    # The probe starts first, so that the start of the flood falls inside it.
    probing = asyncio.create_task(probe(port, 1_000_000, seconds))
    await asyncio.sleep(0.3)
    until = time.perf_counter() + seconds
    transport, flooder = await loop.create_connection(lambda: Flooder(chunk, until), HOST, port)
    peak = rss_before
    stop = False

    async def sample() -> None:
        nonlocal peak
        while not stop:
            peak = max(peak, rss_mb(proc.pid))
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    try:
        during = await probing
        await asyncio.sleep(max(until - time.perf_counter(), 0))
    finally:
        stop = True
        await sampler
        transport.abort()
    rss_after = rss_mb(proc.pid)
    checker = await Client.connect(HOST, port, timeout=30)
    pushed = (await checker.info())["faktory"]["queues"].get("flood", 0)
    await checker.close()
    return {
        "kind": kind,
        "flood_jobs_pushed": pushed,
        "seconds": seconds,
        "sent_mb": flooder.sent / MB,
        "quiet": ms_stats(quiet),
        "during": ms_stats(during),
        "rss_before_mb": rss_before,
        "rss_peak_mb": peak,
        "rss_after_mb": rss_after,
    }


# -- e. oversized lines --------------------------------------------------------------------


def oversized(proc: Proc, size_mb: int, count: int) -> dict[str, Any]:
    """``count`` PUSH lines of ``size_mb`` MiB on one connection, each refused."""
    filler = b"x" * MB
    head = b'PUSH {"jid":"oversized-000000000000000","jobtype":"Big","args":["'
    with socket.create_connection((HOST, proc.port), timeout=60) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(b"HELLO {}\r\n")
        assert reader.readline() == b"+OK\r\n"
        rss_before = rss_mb(proc.pid)
        peak_known = reset_peak(proc.pid)
        replies: list[bytes] = []
        times: list[float] = []
        for _ in range(count):
            t = time.perf_counter()
            sock.sendall(head)
            for _ in range(size_mb):
                sock.sendall(filler)
            sock.sendall(b'"]}\r\n')
            replies.append(reader.readline())
            times.append(time.perf_counter() - t)
        peak = status_mb(proc.pid, "VmHWM") if peak_known else float("nan")
        sock.sendall(b"PUSH " + job_bytes("after-oversized-0000001") + b"\r\n")
        after_ok = reader.readline() == b"+OK\r\n"
        reader.close()
    return {
        "size_mb": size_mb,
        "count": count,
        "refused": sum(r.startswith(b"-ERR command line too long") for r in replies),
        "next_command_ok": after_ok,
        "mb_per_s": size_mb * count / sum(times),
        "rss_before_mb": rss_before,
        "rss_peak_mb": peak,
        "rss_after_mb": rss_mb(proc.pid),
    }


# -- report ------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> list[str]:
    rows: list[tuple[str, str, str]] = []
    c = results.get("crowd")
    if c:
        rows += [
            (
                f"open + handshake {c['connections']:,} connections",
                f"{c['open_s']:.1f} s",
                f"{c['connections_per_s']:,.0f}/s, {GATE} at a time; {c['failures']} failed; "
                f"INFO counts {c['counted_by_info']:,}",
            ),
            (
                "  server RSS idle -> with them",
                f"{c['rss_idle_mb']:.0f} -> {c['rss_held_mb']:.0f} MB",
                f"{c['kb_per_connection']:.1f} KB per connection",
            ),
            (
                "  PUSH+FETCH+ACK from a fresh client",
                f"p50 {c['probe']['p50_ms']:.2f} ms",
                f"p99 {c['probe']['p99_ms']:.2f}, max {c['probe']['max_ms']:.2f} ms "
                f"({c['probe']['count']} round trips)",
            ),
            (
                "  all closed: server lets go",
                f"{c['release_s']:.1f} s",
                f"{c['after_release']} still counted",
            ),
        ]
    for i, b in enumerate(results.get("bursts", [])):
        ok = b["failed"] == 0 and b["max_s"] <= TARGET_BURST_S
        rows.append(
            (
                f"burst of {b['size']:,} simultaneous connects #{i + 1}",
                f"max {b['max_s']:.3f} s",
                f"p99 {b['p99_s']:.3f}, p50 {b['p50_s']:.3f} s; {b['failed']} failed; "
                f"<= {TARGET_BURST_S:.0f} s: {'meets' if ok else 'MISSES'}",
            )
        )
    s = results.get("slow")
    if s:
        for kind, label in (("silent", "silent"), ("drip", "dripping a HELLO, 1 B / 50 ms")):
            part = s[kind]
            rows.append(
                (
                    f"{s['count']} clients {label}: closed after",
                    f"p50 {part['p50_s']:.2f} s",
                    f"max {part['max_s']:.2f} s; {part['closed']}/{s['count']} closed "
                    "(deadline 2 s)",
                )
            )
    for f in results.get("floods", []):
        rows += [
            (
                f"client flooding {f['kind']} and never reading ({f['seconds']:.0f} s)",
                f"{f['sent_mb']:.1f} MB written",
                f"{f['flood_jobs_pushed']:,} of its jobs pushed"
                if f["kind"] == "PUSH"
                else "the server stops reading from it once its replies back up",
            ),
            (
                "  others' PUSH+FETCH+ACK quiet -> during",
                f"p50 {f['quiet']['p50_ms']:.2f} -> {f['during']['p50_ms']:.2f} ms",
                f"p99 {f['quiet']['p99_ms']:.2f} -> {f['during']['p99_ms']:.2f}, "
                f"max {f['during']['max_ms']:.1f} ms ({f['during']['count']} round trips)",
            ),
            (
                "  server RSS before / peak / after",
                f"{f['rss_before_mb']:.0f} / {f['rss_peak_mb']:.0f} / {f['rss_after_mb']:.0f} MB",
                "",
            ),
        ]
    o = results.get("oversized")
    if o:
        rows += [
            (
                f"{o['count']} x {o['size_mb']} MiB PUSH lines",
                f"{o['refused']}/{o['count']} refused",
                f"next command {'works' if o['next_command_ok'] else 'FAILS'}; "
                f"discarded at {o['mb_per_s']:,.0f} MB/s",
            ),
            (
                "  server RSS before / peak / after",
                f"{o['rss_before_mb']:.0f} / {o['rss_peak_mb']:.0f} / {o['rss_after_mb']:.0f} MB",
                "limit 16 MiB per line",
            ),
        ]
    widths = [max(len(r[i]) for r in rows) if rows else 10 for i in range(3)]
    out = ["  ".join(r[i].ljust(widths[i]) for i in range(3)).rstrip() for r in rows]
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--connections", type=int, help="connections held (default 10000)")
    p.add_argument("--burst", type=int, help="simultaneous connects (default 1000)")
    p.add_argument("--repeat", type=int, default=3, help="bursts, one second apart")
    p.add_argument("--slow", type=int, default=100, help="silent and dripping clients each")
    p.add_argument("--flood-seconds", type=float, default=5.0)
    p.add_argument("--oversize-mb", type=int, default=64)
    p.add_argument("--oversize-count", type=int, default=10)
    p.add_argument("--durability", choices=["full", "normal"], default="full")
    p.add_argument("--quick", action="store_true", help="2,000 connections, smaller parts")
    p.add_argument("--json", type=Path, help="write every result to this JSON file")
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["crowd", "burst", "slow", "flood", "oversized"],
    )
    args = p.parse_args(argv)
    if args.connections is None:
        args.connections = 2000 if args.quick else 10_000
    if args.burst is None:
        args.burst = 1000
    if args.quick:
        args.repeat, args.oversize_count, args.flood_seconds = 1, 2, 2.0
    if min(args.connections, args.burst, args.repeat, args.slow, args.oversize_mb) < 1:
        p.error("sizes must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limit = raise_file_limit(args.connections + 500)
    if args.connections + 500 > limit:
        args.connections = max(limit - 500, 1)
        print(f"  ! open-file limit {limit}: holding {args.connections} connections instead")
    results: dict[str, Any] = {"config": vars(args) | {"json": str(args.json)}}
    results["environment"] = environment()
    env = results["environment"]
    print(
        f"minifaktory overload benchmark: connections={args.connections} burst={args.burst}"
        f" | Python {env['python']}, uvloop {env['uvloop']}, {env['cpus']} CPUs"
    )
    max_conn = max(args.connections, args.burst) + 100
    total = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mf-overload-") as tmp:
        workdir = Path(tmp)
        if "crowd" not in args.skip:

            def crowd_part() -> dict[str, Any]:
                with overload_server(workdir, "crowd", args.durability, max_conn) as proc:
                    return run_async(crowd(proc, args.connections), 180)

            attempt(results, "crowd", crowd_part)
        if "burst" not in args.skip:

            def burst_part() -> list[dict[str, Any]]:
                runs = []
                with overload_server(workdir, "burst", args.durability, max_conn) as proc:
                    for _ in range(args.repeat):
                        runs.append(run_async(burst(proc.port, args.burst), 60))
                        time.sleep(1)
                return runs

            attempt(results, "bursts", burst_part)
        if "slow" not in args.skip:

            def slow_part() -> dict[str, Any]:
                with overload_server(workdir, "slow", args.durability, max_conn) as proc:
                    return run_async(slow_clients(proc.port, args.slow), 60)

            attempt(results, "slow", slow_part)
        if "flood" not in args.skip:

            def flood_part() -> list[dict[str, Any]]:
                runs = []
                for kind in ("INFO", "PUSH"):
                    name = f"flood-{kind.lower()}"
                    with overload_server(workdir, name, args.durability, max_conn) as proc:
                        runs.append(run_async(flood(proc, kind, args.flood_seconds), 120))
                return runs

            attempt(results, "floods", flood_part)
        if "oversized" not in args.skip:

            def oversized_part() -> dict[str, Any]:
                with overload_server(workdir, "oversized", args.durability, max_conn) as proc:
                    return oversized(proc, args.oversize_mb, args.oversize_count)

            attempt(results, "oversized", oversized_part)
    results["total_elapsed_s"] = time.perf_counter() - total
    print()
    for line in report(results):
        print(line)
    for key, detail in results.get("errors", {}).items():
        print(f"! {key}: {detail}")
    print(f"\ntotal {results['total_elapsed_s']:.0f}s")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
