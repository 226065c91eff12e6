"""Job options beyond open-source Faktory, read from the payload (spec §5).

* ``priority`` (top level, 1 to 9, default 5): higher first inside a queue;
* ``custom.unique_for`` / ``custom.unique_until``: unique jobs per queue;
* ``custom.expires_at`` / ``custom.expires_in``: jobs that must not run late.

Pure functions: they validate, normalise the payload (``expires_in`` becomes
``expires_at`` at push, as Faktory Enterprise does) and say what the broker
must do. Every error text names the field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from minifaktory.clock import NS, clamp_ns, format_ns, parse_ns
from minifaktory.errors import CommandError
from minifaktory.payloads import Job, encode

DEFAULT_PRIORITY = 5
MIN_PRIORITY = 1
MAX_PRIORITY = 9
#: Longer spans (a century) are treated as "forever" rather than overflowing.
MAX_SECONDS = 100 * 365 * 86_400
UNTIL_SUCCESS = "success"
UNTIL_START = "start"

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
                 "m": 60.0, "h": 3600.0}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Unique:
    """A uniqueness lock to take at push: key within the queue, lifetime, release point."""

    key: str
    ttl_ns: int
    until_start: bool


@dataclass(frozen=True, slots=True)
class Options:
    """What the broker needs to know about a pushed job beyond Faktory's own rules."""

    priority: int
    unique: Unique | None
    expires_at: int | None


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string such as ``"1h30m"`` or ``"250ms"``."""
    body = text.strip()
    sign = -1.0 if body.startswith("-") else 1.0
    body = body.lstrip("+-")
    if body == "0":
        return 0.0
    total, pos = 0.0, 0
    for m in _DURATION_PART.finditer(body):
        if m.start() != pos:
            break
        total += float(m[1]) * _UNIT_SECONDS[m[2]]
        pos = m.end()
    if not body or pos != len(body):
        raise ValueError(f"invalid duration {text!r}")
    return sign * total


def _seconds(value: Any, field: str, *, durations: bool = False) -> float:
    if isinstance(value, bool):
        raise CommandError(f"invalid custom.{field}: expected a number of seconds, got {value!r}")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an integer past float's range: as good as infinite
            seconds = math.inf
    elif durations and isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except ValueError:
            raise CommandError(
                f'invalid custom.{field}: {value!r} is neither seconds nor a duration like "1h30m"'
            ) from None
    else:
        raise CommandError(f"invalid custom.{field}: expected a number of seconds, got {value!r}")
    if not math.isfinite(seconds):
        raise CommandError(f"invalid custom.{field}: must be a finite number of seconds")
    if seconds <= 0:
        raise CommandError(f"invalid custom.{field}: must be greater than 0, got {value!r}")
    return min(seconds, MAX_SECONDS)


def unique_key(job: Job) -> str:
    """Identity of a unique job inside its queue: jobtype and canonical args."""
    import hashlib  # loads at the first unique job

    digest = hashlib.sha256(job.jobtype.encode() + b"\0" + encode(job.args or []))
    return digest.hexdigest()


def parse_options(job: Job, now_ns: int, scheduled_for: int | None) -> Options:
    """Validate the options of a pushed job; rewrites ``expires_in`` as ``expires_at``."""
    priority = job.priority or DEFAULT_PRIORITY
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise CommandError(
            f"jobs must have a priority from {MIN_PRIORITY} to {MAX_PRIORITY}, got {job.priority}"
        )
    custom = job.custom or {}
    unique: Unique | None = None
    if "unique_for" in custom and custom["unique_for"] is not None:
        seconds = _seconds(custom["unique_for"], "unique_for")
        until = custom.get("unique_until") or UNTIL_SUCCESS
        if until not in (UNTIL_SUCCESS, UNTIL_START):
            raise CommandError(
                f'invalid custom.unique_until: {until!r}, expected "success" or "start"'
            )
        start = max(scheduled_for or now_ns, now_ns)
        ttl = clamp_ns(start + int(seconds * NS)) - now_ns
        unique = Unique(unique_key(job), ttl, until == UNTIL_START)
    expires_at: int | None = None
    has_at = custom.get("expires_at") not in (None, "")
    has_in = custom.get("expires_in") not in (None, "")
    if has_at and has_in:
        raise CommandError("custom.expires_at and custom.expires_in cannot both be set")
    if has_in:
        seconds = _seconds(custom["expires_in"], "expires_in", durations=True)
        expires_at = clamp_ns(now_ns + int(seconds * NS))
        assert job.custom is not None
        del job.custom["expires_in"]
        job.custom["expires_at"] = format_ns(expires_at)
    elif has_at:
        expires_at = expiry_of(job)
    return Options(priority, unique, expires_at)


def expiry_of(job: Job) -> int | None:
    """``custom.expires_at`` in ns, or None; raises CommandError when unreadable."""
    value = (job.custom or {}).get("expires_at")
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise CommandError(f"invalid custom.expires_at: expected an RFC3339 time, got {value!r}")
    try:
        return parse_ns(value)
    except ValueError as exc:
        raise CommandError(f"invalid custom.expires_at: {exc}") from None


def releases_at_start(job: Job) -> bool:
    """Whether the job's uniqueness lock is released when it is fetched."""
    custom = job.custom or {}
    return "unique_for" in custom and custom.get("unique_until") == UNTIL_START


def holds_lock(job: Job) -> bool:
    """Whether the job was pushed with a uniqueness lock."""
    return (job.custom or {}).get("unique_for") is not None


def is_tracked(job: Job) -> bool:
    """Whether the job was pushed with ``custom.track = 1`` (TRACK SET/GET follow it)."""
    value = (job.custom or {}).get("track")
    return value is True or (isinstance(value, int | float) and value == 1)
