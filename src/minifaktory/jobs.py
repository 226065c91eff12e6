"""Faktory's job rules: validation texts and order, defaults, reservation and retry timing.

Pure functions over ``payloads.Job``; every text here is a wire-visible error
(spec §1.6, §2.3).
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
from collections.abc import Callable

from minifaktory import clock
from minifaktory.errors import CommandError
from minifaktory.payloads import DEFAULT_RETRY, Failure, Job


def new_jid() -> str:
    """16 random url-safe characters: the jid of a job (or the id of a batch) the server makes."""
    return base64.urlsafe_b64encode(os.urandom(12)).decode().rstrip("=")


DEFAULT_QUEUE = "default"
MIN_JID_LENGTH = 8
MAX_RESERVE_FOR = 86_400
DEFAULT_RESERVE_FOR = 1_800
MIN_RESERVE_FOR = 60
DEAD_TTL_SECONDS = 180 * 86_400
MAX_ERRTYPE_BYTES = 100
MAX_MESSAGE_BYTES = 1_000
MAX_BACKTRACE_LINES = 50
EXPIRED_ERRTYPE = "ReservationExpired"
EXPIRED_MESSAGE = "Faktory job reservation expired"

_QUEUE_NAME = re.compile(r"[a-zA-Z0-9._-]+")


def go_quote(text: str) -> str:
    """A string quoted the way Go's ``%q`` prints it, close enough for error texts."""
    return json.dumps(text, ensure_ascii=False)


def check_queue_name(name: str) -> None:
    """Faktory's rule for queue names (spec §3.2)."""
    if not name:
        raise CommandError(f"cannot get {go_quote(name)} queue: queue name cannot be blank")
    if _QUEUE_NAME.fullmatch(name) is None:
        raise CommandError(
            f"cannot get {go_quote(name)} queue: queue names must match "
            r"\A[a-zA-Z0-9._-]+\z"
        )


def prepare_push(job: Job, now_ns: int, created_at: str = "") -> int | None:
    """Validate and default a pushed job in Faktory's order.

    Returns the time (ns) the job is scheduled for when ``at`` is in the future,
    else ``None`` (enqueue now). Raises CommandError with Faktory's texts.
    """
    if job.retry is None:
        job.retry = DEFAULT_RETRY
    if len(job.jid) < MIN_JID_LENGTH:
        raise CommandError("jobs must have a reasonable jid parameter")
    if not job.jobtype:
        raise CommandError("jobs must have a jobtype parameter")
    if job.args is None:
        raise CommandError("jobs must have an args parameter")
    if job.reserve_for > MAX_RESERVE_FOR:
        raise CommandError("jobs cannot be reserved for more than one day")
    if not job.created_at:
        job.created_at = created_at or clock.format_ns(now_ns)
    if not job.queue:
        job.queue = DEFAULT_QUEUE
    if not job.custom:
        job.custom = None
    if job.failure is not None:
        job.failure.normalise()
    scheduled_for: int | None = None
    if job.at:
        try:
            at_ns = clock.parse_ns(job.at)
        except ValueError as exc:
            raise CommandError(f"invalid timestamp for 'at': {go_quote(job.at)}: {exc}") from None
        if at_ns > now_ns:
            scheduled_for = at_ns
    # Faktory checks the name only when the job reaches its queue, so a scheduled
    # job with a bad name is silently lost later; minifaktory refuses it up front.
    check_queue_name(job.queue)
    return scheduled_for


def reservation_seconds(reserve_for: int) -> int:
    """How long a fetched job stays reserved: 0→1800, <60→60, >86400→86400."""
    if reserve_for == 0:
        return DEFAULT_RESERVE_FOR
    return min(max(reserve_for, MIN_RESERVE_FOR), MAX_RESERVE_FOR)


def retry_delay_seconds(count: int, rand: Callable[[int], int] = random.randrange) -> int:
    """Faktory's backoff: ``count^4 + 15 + rand(30) * (count + 1)`` seconds."""
    return count**4 + 15 + rand(30) * (count + 1)


def _truncate_utf8(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


def record_failure(
    job: Job, errtype: str, message: str, backtrace: list[str] | None, now_ns: int
) -> None:
    """Fill or update ``job.failure`` the way Faktory does on FAIL (spec §3.5)."""
    errtype = _truncate_utf8(errtype.strip() or "unknown", MAX_ERRTYPE_BYTES)
    message = _truncate_utf8(message.strip() or "unknown", MAX_MESSAGE_BYTES)
    lines = (backtrace or [])[:MAX_BACKTRACE_LINES]
    retry = job.retry if job.retry is not None else DEFAULT_RETRY
    job.retry = retry
    failure = job.failure
    if failure is None:
        failure = Failure(failed_at=clock.format_ns(now_ns), retry_count=0, remaining=retry)
        job.failure = failure
    else:
        failure.retry_count += 1
        if failure.remaining > 0:
            failure.remaining -= 1
        if not failure.failed_at:
            failure.failed_at = clock.format_ns(now_ns)
    failure.errtype = errtype
    failure.message = message
    failure.backtrace = lines
    failure.normalise()


def failure_outcome(job: Job) -> str:
    """After ``record_failure``: ``"discard"``, ``"retry"`` or ``"dead"``."""
    retry = job.retry if job.retry is not None else DEFAULT_RETRY
    count = job.failure.retry_count if job.failure is not None else 0
    if retry == 0:
        return "discard"
    if count < retry:
        return "retry"
    return "dead"


def redis_glob(pattern: str) -> re.Pattern[str]:
    """Translate a Redis glob (``*``, ``?``, ``[...]``, ``[^...]``, ``\\x``) to a regex
    for ``fullmatch``.

    Every ``*`` but the last becomes an atomic ``(?>.*?segment)``: the earliest place a
    segment fits is always as good as a later one, and never backtracking into it keeps
    the match polynomial (a plain ``.*`` per star is exponential on stars around a
    common character).
    """
    # Segments between stars, each a list of single-character regexes.
    segments: list[list[str]] = [[]]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            segments.append([])
        elif ch == "?":
            segments[-1].append(".")
        elif ch == "\\" and i + 1 < n:
            i += 1
            segments[-1].append(re.escape(pattern[i]))
        elif ch == "[":
            i, item = _glob_class(pattern, i)
            segments[-1].append(item)
        else:
            segments[-1].append(re.escape(ch))
        i += 1
    out = "".join(segments[0])
    if len(segments) > 1:
        out += "".join(f"(?>.*?{''.join(middle)})" for middle in segments[1:-1] if middle)
        out += ".*" + "".join(segments[-1])
    return re.compile(out, re.DOTALL)


def _glob_class(pattern: str, i: int) -> tuple[int, str]:
    """The ``[...]`` starting at ``pattern[i]``: the index of its last character, and
    its regex."""
    n = len(pattern)
    j = i + 1
    negate = j < n and pattern[j] == "^"
    if negate:
        j += 1
    items: list[str] = []
    while j < n and pattern[j] != "]":
        if pattern[j] == "\\" and j + 1 < n:
            j += 1
            items.append(re.escape(pattern[j]))
        elif j + 2 < n and pattern[j + 1] == "-" and pattern[j + 2] != "]":
            lo, hi = sorted((pattern[j], pattern[j + 2]))
            items.append(f"{re.escape(lo)}-{re.escape(hi)}")
            j += 2
        else:
            items.append(re.escape(pattern[j]))
        j += 1
    body = "".join(items)
    if not body:
        return j, "[^\\s\\S]" if not negate else "[\\s\\S]"
    return j, f"[{'^' if negate else ''}{body}]"
