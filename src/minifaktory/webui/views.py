"""What the pages show: plain dicts built from the broker's figures and the reader's rows.

The HTML templates and the JSON API render the same dicts, so a page and its
API twin cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgspec

from minifaktory.clock import NS, format_ns
from minifaktory.commands import Services, throttle_table
from minifaktory.config import Config
from minifaktory.store import BatchRow
from minifaktory.store.reader import Reader, Row

#: A worker that has not beaten for this long is shown as late (Faktory reaps at 60 s).
LATE_BEAT_NS = 30 * NS

#: Batch callback states as Faktory Enterprise stores them.
CALLBACK_STATES = {"": "not yet", "1": "pushed", "2": "succeeded"}


@dataclass(eq=False)
class Web:
    """What the pages read from.

    Quick reads (a page by key, one job) run on the event loop; searches, which may
    read a whole set, run on ``scanner``, one thread with its own connection, so the
    server keeps serving meanwhile.
    """

    services: Services
    reader: Reader
    config: Config
    scanner: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="minifaktory-search")
    )

    @property
    def broker(self) -> Any:
        return self.services.broker

    def close(self) -> None:
        """Stop the search thread and close the read connections."""
        self.scanner.shutdown(wait=True, cancel_futures=True)
        self.reader.close()


def history(web: Web, days: int) -> list[dict[str, Any]]:
    """Processed and failed jobs per day, for the last ``days`` days (UTC)."""
    now = web.services.clock.now_ns()
    today = dt.datetime.fromtimestamp(now // NS, dt.UTC).date()
    first = today - dt.timedelta(days=days - 1)
    known = web.reader.history(first.isoformat())
    out = []
    for offset in range(days):
        day = (first + dt.timedelta(days=offset)).isoformat()
        processed, failed = known.get(day, (0, 0))
        out.append({"date": day, "processed": processed, "failed": failed})
    return out


def queue_rows(web: Web) -> list[dict[str, Any]]:
    """Every queue with its size, latency, paused state, locks and throttle."""
    broker = web.broker
    names = sorted(broker.queues)
    latency = broker.latency(names)
    return [
        {
            "name": name,
            "size": broker.queues[name].size,
            "paused": broker.queues[name].paused,
            "latency": round(latency[name], 3),
            "unique_locks": broker.locks.get(name, 0),
        }
        for name in names
    ]


def cron(web: Web) -> list[dict[str, Any]]:
    """The cron entries in force, with their last and next firing."""
    entries = web.services.cron
    table: list[dict[str, Any]] = web.broker.cron_table(entries)
    return [{"key": e.key, **row} for e, row in zip(entries, table, strict=True)]


def throttles(web: Web) -> dict[str, Any]:
    """Each throttled queue's limit and the slots in use."""
    return throttle_table(web.broker, web.services.clock.now_ns())


def locks(web: Web) -> list[dict[str, Any]]:
    """Per queue: how many uniqueness locks it holds, and the soonest to expire."""
    out = []
    for name, count in sorted(web.broker.locks.items()):
        held = web.reader.locks(name, 100)
        out.append({
            "queue": name, "count": count,
            "locks": [{"key": k, "jid": j, "expires_at": format_ns(e)} for k, j, e in held],
        })  # fmt: skip
    return out


def batch_summary(row: BatchRow) -> dict[str, Any]:
    """A batch as the list shows it."""
    return {
        "bid": row.bid,
        "parent_bid": row.parent,
        "description": row.description,
        "created_at": format_ns(row.created_at),
        "updated_at": format_ns(row.updated_at),
        "committed": bool(row.committed),
        "total": row.total,
        "pending": row.pending,
        "failed": row.failed,
        "state": _batch_state(row),
        "complete": _callback(row.complete_job, row.complete_st),
        "success": _callback(row.success_job, row.success_st),
    }


def batch_detail(web: Web, bid: str) -> dict[str, Any] | None:
    """A batch with its child batches and the members that failed."""
    found = web.reader.batch(bid)
    if found is None:
        return None
    row, children, failed = found
    return {
        **batch_summary(row),
        "children": [batch_summary(c) for c in children],
        "failed_jids": failed,
    }


def _batch_state(row: BatchRow) -> str:
    if not row.committed:
        return "open"
    if row.pending == 0:
        return "succeeded"
    if row.pending == row.failed:
        return "complete, with failures"
    return "running"


def _callback(payload: bytes | None, state: str) -> dict[str, Any] | None:
    if payload is None:
        return None
    try:
        job = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        job = {}
    return {
        "jobtype": job.get("jobtype", ""),
        "queue": job.get("queue") or "default",
        "args": job.get("args", []),
        "state": CALLBACK_STATES.get(state, state),
    }


def debug(web: Web) -> dict[str, Any]:
    """Storage and runtime figures, and the configuration with its passwords masked."""
    config = web.config
    broker = web.broker
    governor = web.services.governor
    settings = {
        "environment": config.environment, "binding": config.binding,
        "web_binding": config.web_binding, "durability": config.durability,
        "database": str(config.resolved_db_path()),
        "password": "********" if config.password else "",
        "unix_socket": str(config.unix_socket or ""),
        "conf.d": masked(config.toml),
    }  # fmt: skip
    return {
        "files": web.reader.file_sizes(),
        "group_commits": broker.commit_stats.summary(),
        "wal_fsyncs": broker.sync_stats.summary(),
        "checkpoints": broker.store.checkpoints.summary(),
        "workers_terminated": dict(governor.terminated) if governor is not None else {},
        "config": settings,
    }


def masked(value: Any) -> Any:
    """``value`` with every ``password`` key hidden."""
    if isinstance(value, dict):
        return {k: "********" if k == "password" and v else masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value


def describe(row: Row) -> dict[str, Any]:
    """A job of a queue or set as the pages show it (and the API returns it)."""
    try:
        job = msgspec.json.decode(row.payload)
    except msgspec.DecodeError:
        job = {}
    failure = job.get("failure") or {}
    return {
        "key": str(row.key),
        "jid": row.jid,
        "at": format_ns(row.score),
        "jobtype": job.get("jobtype", ""),
        "queue": job.get("queue", ""),
        "args": job.get("args", []),
        "retry_count": failure.get("retry_count"),
        "tags": tags(job),
        "error": ": ".join(x for x in (failure.get("errtype"), failure.get("message")) if x),
        "job": job,
    }


def tags(job: dict[str, Any]) -> list[str]:
    """``custom.tags``, shown as tags (a list of strings, or one string)."""
    found = (job.get("custom") or {}).get("tags")
    if isinstance(found, str):
        return [found]
    return [t for t in found if isinstance(t, str)] if isinstance(found, list) else []


def timeline(
    job: dict[str, Any], events: list[tuple[int, str, str]], *, retrying: bool
) -> list[dict[str, str]]:
    """What happened to a job, oldest first: its own timestamps (created, scheduled,
    enqueued), the events the broker recorded (fetched, failed, retried, moved), and,
    for a job in the retries set, its next retry."""
    out: list[tuple[str, str, str]] = []
    if job.get("created_at"):
        out.append((job["created_at"], "pushed", f"to {job.get('queue') or 'default'}"))
    if job.get("at"):
        out.append((job["at"], "scheduled", "run at this time"))
    if job.get("enqueued_at"):
        out.append((job["enqueued_at"], "enqueued", "latest enqueue"))
    out += [(format_ns(at), event, detail) for at, event, detail in events]
    failure = job.get("failure") or {}
    if retrying and failure.get("next_at"):
        out.append((failure["next_at"], "next retry", f"retry {failure.get('retry_count', 0) + 1}"))
    out.sort(key=lambda e: _sortable(e[0]))
    return [{"at": at, "event": event, "detail": detail} for at, event, detail in out]


def _sortable(stamp: str) -> str:
    # RFC3339 in UTC sorts as text once the fraction is padded: "...:05Z" < "...:05.1Z".
    head, _, frac = stamp.rstrip("Z").partition(".")
    return f"{head}.{frac.ljust(9, '0')}"


def workers(web: Web) -> list[dict[str, Any]]:
    """Every worker process with its beat, state, in-flight count and recent jobs."""
    now = web.services.clock.now_ns()
    busy: dict[str, int] = {}
    for reservation in web.broker.working.values():
        busy[reservation.wid] = busy.get(reservation.wid, 0) + 1
    return [
        {
            "wid": w.wid, "hostname": w.hostname, "pid": w.pid, "labels": w.labels,
            "state": w.state.wire, "started_at": format_ns(w.started_at),
            "last_beat": format_ns(w.last_beat), "late": now - w.last_beat > LATE_BEAT_NS,
            "rss_kb": w.rss_kb, "connections": len(w.connections), "busy": busy.get(w.wid, 0),
            "recent": [
                {**done, "finished_at": format_ns(int(done["finished_at"]))}
                for done in web.broker.recent.get(w.wid, ())
            ],
        }
        for w in sorted(web.services.registry.workers.values(), key=lambda w: w.wid)
    ]  # fmt: skip


def in_flight(web: Web) -> list[dict[str, Any]]:
    """Reserved jobs, soonest expiry first, with run time and tracked progress."""
    now = web.services.clock.now_ns()
    out = []
    for r in web.reader.working(500):
        try:
            job = msgspec.json.decode(r.payload)
        except msgspec.DecodeError:
            job = {}
        out.append({
            "jid": r.jid, "queue": r.queue, "wid": r.wid, "jobtype": job.get("jobtype", ""),
            "args": job.get("args", []), "started": format_ns(r.reserved_at),
            "running_s": round(max(now - r.reserved_at, 0) / NS, 1),
            "expires_at": format_ns(r.expires_at), "percent": r.percent, "desc": r.desc,
        })  # fmt: skip
    return out
