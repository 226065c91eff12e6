"""The command table: one thin handler per verb (decode, one broker call, encode).

A handler returns the reply bytes, or ``None`` for END (close, no reply).
It raises ``CommandError`` for a ``-ERR``; the connection loop answers any
other exception with ``-ERR internal error``, as Faktory's panic recovery does.
"""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from minifaktory import protocol
from minifaktory.batches import batch_new_decoder
from minifaktory.broker import Broker
from minifaktory.clock import NS, Clock, format_ns, utc_clock_text
from minifaktory.config import FAKTORY_VERSION
from minifaktory.cron import CronEntry
from minifaktory.errors import CommandError, StoreError
from minifaktory.governance import Governor
from minifaktory.payloads import (
    Job,
    ack_decoder,
    beat_decoder,
    decode_error_text,
    decode_job,
    decode_jobs,
    decode_lenient,
    encode,
    encode_in_order,
    fail_decoder,
    go_float,
    mutate_decoder,
    track_set_decoder,
)
from minifaktory.protocol import Command
from minifaktory.state import Waiter
from minifaktory.store import SetName
from minifaktory.workers import Registry, Worker


class _Internal(Exception):
    """A payload shape that makes Faktory's handler panic (``-ERR internal error``)."""


@dataclass(slots=True)
class Stats:
    """Server-wide counters shown by INFO."""

    started_ns: int
    connections: int = 0
    commands: int = 0


@dataclass(slots=True)
class Services:
    """What handlers can reach: the broker, the worker registry and the figures."""

    broker: Broker
    registry: Registry
    clock: Clock
    stats: Stats
    task_stats: Callable[[], dict[str, dict[str, Any]]] = dict
    #: The cron entries in force (replaced on reload).
    cron: list[CronEntry] = field(default_factory=list)
    #: The ``[workers]`` limits (None in bare test set-ups).
    governor: Governor | None = None


@dataclass(slots=True, eq=False)
class Session:
    """Per-connection state after the handshake."""

    services: Services
    wid: str = ""
    worker: Worker | None = None
    #: Done once the client closed its side: a FETCH then takes what is there and
    #: stops waiting (the client may be gone; a job handed to it would sit reserved).
    hangup: asyncio.Future[None] | None = None


Handler = Callable[[Session, Command], Awaitable[bytes | None]]


def _payload(cmd: Command) -> bytes:
    if cmd.payload is None:
        raise _Internal(cmd.verb)
    return cmd.payload


async def end(session: Session, cmd: Command) -> bytes | None:
    return None


async def push(session: Session, cmd: Command) -> bytes | None:
    await session.services.broker.push(_job_of(cmd))
    return protocol.OK


def _job_of(cmd: Command) -> Job:
    try:
        return decode_job(_payload(cmd))
    except msgspec.DecodeError as exc:
        raise CommandError(f"invalid JSON: {decode_error_text(exc, cmd.payload or b'')}") from None


async def pushb(session: Session, cmd: Command) -> bytes | None:
    try:
        batch = decode_jobs(_payload(cmd))
    except msgspec.DecodeError as exc:
        raise CommandError(f"invalid JSON: {decode_error_text(exc, cmd.payload or b'')}") from None
    errors = await session.services.broker.push_many(batch)
    return protocol.bulk(encode(errors)) if errors else protocol.EMPTY_MAP


async def fetch(session: Session, cmd: Command) -> bytes | None:
    broker = session.services.broker
    job = await broker.fetch(_queues_of(cmd), session.wid, session.worker, hangup=session.hangup)
    return protocol.NULL if job is None else protocol.bulk(job)


def _queues_of(cmd: Command) -> list[str]:
    if cmd.payload is None:
        raise CommandError("must call fetch with at least one queue")
    return cmd.text.split(" ")


def _jid_of(cmd: Command) -> str:
    """The jid of an ``{"jid":"…"}`` payload (a map of strings, as Faktory decodes it)."""
    try:
        return decode_lenient(ack_decoder, _payload(cmd))["jid"]
    except (msgspec.DecodeError, KeyError):
        raise CommandError(f"invalid {cmd.verb} {cmd.text}") from None


async def ack(session: Session, cmd: Command) -> bytes | None:
    await session.services.broker.ack(_jid_of(cmd))
    return protocol.OK


# -- the same, without waiting ------------------------------------------------------
#
# A connection with nothing else in flight runs these as the command arrives: the
# change joins the tick's transaction with ``waiter``, and the connection writes the
# returned reply when ``waiter`` hears of the commit (or, for PUSH, the fsync).
# ``(reply, False)``: nothing to wait for, reply now. None: the command would wait
# (FETCH on empty queues); nothing was changed, and the connection's task runs it.

FastHandler = Callable[[Session, Command, Waiter], tuple[bytes, bool] | None]


def push_now(session: Session, cmd: Command, waiter: Waiter) -> tuple[bytes, bool] | None:
    session.services.broker.push_now(_job_of(cmd), waiter)
    return protocol.OK, True


def fetch_now(session: Session, cmd: Command, waiter: Waiter) -> tuple[bytes, bool] | None:
    broker = session.services.broker
    job = broker.fetch_now(_queues_of(cmd), session.wid, session.worker, waiter)
    return None if job is None else (protocol.bulk(job), True)


def ack_now(session: Session, cmd: Command, waiter: Waiter) -> tuple[bytes, bool] | None:
    return protocol.OK, session.services.broker.ack_now(_jid_of(cmd), waiter)


FAST_COMMANDS: dict[str, FastHandler] = {"PUSH": push_now, "FETCH": fetch_now, "ACK": ack_now}


async def requeue(session: Session, cmd: Command) -> bytes | None:
    await session.services.broker.requeue(_jid_of(cmd))
    return protocol.OK


async def fail(session: Session, cmd: Command) -> bytes | None:
    data = _payload(cmd)
    try:
        report = decode_lenient(fail_decoder, data)
    except msgspec.DecodeError:
        raise CommandError(f"invalid FAIL {cmd.text}") from None
    await session.services.broker.fail(report.jid, report.errtype, report.message, report.backtrace)
    return protocol.OK


async def beat(session: Session, cmd: Command) -> bytes | None:
    data = _payload(cmd)
    try:
        heartbeat = decode_lenient(beat_decoder, data)
    except msgspec.DecodeError:
        raise CommandError(f"invalid BEAT {cmd.text}") from None
    services = session.services
    worker = services.registry.beat(
        heartbeat.wid, heartbeat.current_state, heartbeat.rss_kb, services.clock.now_ns()
    )
    if worker is None:
        raise CommandError(f"unknown worker {heartbeat.wid}")
    if not worker.busy_signal:
        return protocol.OK
    return protocol.bulk(b'{"state":"%s"}' % worker.state.wire.encode())


async def info(session: Session, cmd: Command) -> bytes | None:
    return protocol.bulk(encode_in_order(current_state(session.services)))


async def flush(session: Session, cmd: Command) -> bytes | None:
    await session.services.broker.flush()
    return protocol.OK


async def mutate(session: Session, cmd: Command) -> bytes | None:
    if cmd.payload is None or b" " in cmd.payload:
        raise CommandError("invalid format")
    try:
        op = decode_lenient(mutate_decoder, cmd.payload)
    except msgspec.DecodeError as exc:
        raise CommandError(decode_error_text(exc, cmd.payload, "Operation")) from None
    await session.services.broker.mutate(op.cmd, op.target, op.filter)
    return protocol.OK


async def queue(session: Session, cmd: Command) -> bytes | None:
    tokens = _payload(cmd).decode("utf-8", "replace").split(" ")
    sub, names = tokens[0].upper(), tokens[1:]
    broker = session.services.broker
    if sub == "LATENCY":
        if names == ["*"]:
            raise CommandError("QUEUE LATENCY does not support wildcards")
        latencies = broker.latency(names)
        return protocol.bulk(encode({n: go_float(v) for n, v in latencies.items()}))
    if sub not in ("PAUSE", "RESUME", "REMOVE"):
        raise CommandError(f"no such QUEUE subcommand: {sub}")
    if not names:
        raise _Internal(cmd.verb)
    if sub == "REMOVE":
        await broker.remove(names)
    else:
        await broker.pause(names, paused=sub == "PAUSE")
    return protocol.OK


async def batch(session: Session, cmd: Command) -> bytes | None:
    sub, _, rest = _payload(cmd).decode("utf-8", "replace").partition(" ")
    broker = session.services.broker
    if sub == "NEW":
        try:
            spec = decode_lenient(batch_new_decoder, rest.encode())
        except msgspec.DecodeError as exc:
            raise CommandError(f"invalid BATCH NEW: {decode_error_text(exc)}") from None
        return protocol.bulk((await broker.batch_new(spec)).encode())
    if sub == "OPEN":
        await broker.batch_open(rest)
        return protocol.bulk(rest.encode())
    if sub == "COMMIT":
        await broker.batch_commit(rest)
        return protocol.OK
    if sub == "STATUS":
        return protocol.bulk(encode_in_order(broker.batch_status(rest)))
    if sub == "CHILD":
        parent, _, child = rest.partition(" ")
        await broker.batch_child(parent, child)
        return protocol.OK
    raise CommandError(f"no such BATCH subcommand: {sub}")


async def track(session: Session, cmd: Command) -> bytes | None:
    sub, _, rest = _payload(cmd).partition(b" ")
    broker = session.services.broker
    if sub == b"GET":
        return protocol.bulk(encode_in_order(broker.track_get(rest.decode("utf-8", "replace"))))
    if sub == b"SET":
        try:
            report = decode_lenient(track_set_decoder, rest)
        except msgspec.DecodeError:
            raise CommandError(f"invalid TRACK SET {rest.decode('utf-8', 'replace')}") from None
        await broker.track_set(report.jid, report.percent, report.desc, report.reserve_until)
        return protocol.OK
    raise CommandError(f"no such TRACK subcommand: {sub.decode('utf-8', 'replace')}")


COMMANDS: dict[str, Handler] = {
    "END": end,
    "PUSH": push,
    "PUSHB": pushb,
    "FETCH": fetch,
    "ACK": ack,
    "FAIL": fail,
    "BEAT": beat,
    "INFO": info,
    "FLUSH": flush,
    "MUTATE": mutate,
    "BATCH": batch,
    "TRACK": track,
    "QUEUE": queue,
    "REQUEUE": requeue,
}


async def dispatch(session: Session, cmd: Command) -> bytes | None:
    """Run one command and return its reply (None: close without replying)."""
    handler = COMMANDS.get(cmd.verb)
    if handler is None:
        return protocol.error(f"unknown command {cmd.verb}")
    session.services.stats.commands += 1
    try:
        return await handler(session, cmd)
    except (CommandError, _Internal, StoreError) as exc:
        return error_reply(exc)


def run_now(session: Session, cmd: Command, waiter: Waiter) -> tuple[bytes, bool] | None:
    """Run a verb of ``FAST_COMMANDS`` at once: ``(reply, wait for waiter first)``, or
    None when the connection's task must run it (another verb, or FETCH must wait)."""
    fast = FAST_COMMANDS.get(cmd.verb)
    if fast is None:
        return None
    try:
        outcome = fast(session, cmd, waiter)
    except (CommandError, _Internal, StoreError) as exc:
        outcome = error_reply(exc), False
    if outcome is not None:
        session.services.stats.commands += 1
    return outcome


def error_reply(exc: CommandError | _Internal | StoreError) -> bytes:
    """The reply to a command that failed with one of the expected errors."""
    if isinstance(exc, CommandError):
        return protocol.error(exc.message, exc.code)
    if isinstance(exc, _Internal):
        return protocol.error("internal error")
    return protocol.error(f"storage error: {exc}")


def current_state(services: Services) -> dict[str, Any]:
    """INFO's JSON document, key for key in Faktory's order (spec §1.5)."""
    broker = services.broker
    now = services.clock.now_ns()
    queues = {name: broker.queues[name].size for name in sorted(broker.queues)}
    return {
        "now": format_ns(now),
        "server_utc_time": utc_clock_text(now),
        "faktory": {
            "queues": queues,
            "sets": {
                "scheduled": broker.sets[SetName.SCHEDULED],
                "retries": broker.sets[SetName.RETRIES],
                "dead": broker.sets[SetName.DEAD],
                "working": len(broker.working),
            },
            "tasks": dict(sorted(services.task_stats().items())),
            "total_failures": broker.failures,
            "total_processed": broker.processed,
            "total_enqueued": sum(queues.values()),
            "total_queues": len(queues),
            # Beyond Faktory's document (clients ignore unknown keys): expired jobs
            # dropped so far and uniqueness locks held per queue.
            "total_expired": broker.expired,
            "unique_locks": {name: broker.locks[name] for name in sorted(broker.locks)},
            "throttles": throttle_table(broker, now),
            "cron": broker.cron_table(services.cron),
            "batches": {
                "open": broker.batches.open_count,
                "committed": broker.batches.committed_count,
            },
        },
        "server": {
            "description": "Faktory",
            "faktory_version": FAKTORY_VERSION,
            "uptime": max(now - services.stats.started_ns, 0) // NS,
            "connections": services.stats.connections,
            "command_count": services.stats.commands,
            "used_memory_mb": used_memory_mb(),
            # Beyond Faktory's document: whether the file takes writes, for health checks.
            "store": store_health(broker),
        },
    }


def throttle_table(broker: Broker, now: int) -> dict[str, dict[str, Any]]:
    """Each throttled queue's limit, scope and slots in use."""
    return {
        name: {
            "limit": slots.throttle.limit,
            "per": "worker" if slots.throttle.per_worker else "server",
            "in_use": slots.in_use(now),
        }
        for name, slots in sorted(broker.slots.items())
    }


def store_health(broker: Any) -> dict[str, Any]:
    """Whether the last write reached the disk, when it did, and the error if not."""
    return {
        "writable": not broker.write_error,
        "last_write": format_ns(broker.last_write_ns) if broker.last_write_ns else "",
        "error": broker.write_error,
    }


def used_memory_mb() -> int:
    """Resident memory of this process in MiB."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
