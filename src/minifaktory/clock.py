"""Time: the server clock, Faktory's timestamp format, and timing of repeated work.

Faktory emits UTC RFC3339 with up to nine fractional digits, trailing zeros
trimmed (Go's ``RFC3339Nano``, spec §2.4). Time is kept as integer nanoseconds
since the epoch so nothing is lost between parsing and printing.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import threading
import time
from dataclasses import dataclass
from typing import Protocol

NS = 1_000_000_000
#: Times are stored as 64-bit nanoseconds (years 1677 to 2262); later or earlier
#: times, which Faktory's RFC3339 allows, are clamped to the ends of that range.
MAX_NS = 2**63 - 1
MIN_NS = -(2**63)

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))\Z"
)


class Clock(Protocol):
    """Anything that tells the time in nanoseconds since the epoch."""

    def now_ns(self) -> int: ...


class SystemClock:
    """The real wall clock."""

    def now_ns(self) -> int:
        return time.time_ns()


class FakeClock:
    """A clock that only moves when told to; for tests of retries, expiry and reaping."""

    def __init__(self, start_ns: int | None = None) -> None:
        self._now = time.time_ns() if start_ns is None else start_ns
        self._lock = threading.Lock()

    def now_ns(self) -> int:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        with self._lock:
            self._now += int(seconds * NS)


class TravelClock:
    """Real time plus an offset that tests move forward ("time travel"): scheduled
    jobs, retries, expiry and cron come due without sleeping, while time still flows."""

    def __init__(self) -> None:
        self.offset_ns = 0

    def now_ns(self) -> int:
        return time.time_ns() + self.offset_ns

    def advance(self, seconds: float) -> None:
        """Jump ``seconds`` into the future."""
        self.offset_ns += int(seconds * NS)

    def reset(self) -> None:
        """Back to real time."""
        self.offset_ns = 0


@functools.lru_cache(maxsize=64)
def _second_text(secs: int) -> str:
    return dt.datetime.fromtimestamp(secs, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def format_ns(ns: int) -> str:
    """``1719828000123400000`` → ``"2024-07-01T10:00:00.1234Z"`` (Go RFC3339Nano, UTC)."""
    secs, frac = divmod(ns, NS)
    stamp = _second_text(secs)
    if frac:
        return f"{stamp}.{frac:09d}".rstrip("0") + "Z"
    return stamp + "Z"


def parse_ns(text: str) -> int:
    """Parse RFC3339 with optional fraction and ``Z`` or numeric offset, as Go does.

    Raises ValueError with Go-like wording on anything else.
    """
    m = _RFC3339.match(text)
    if m is None:
        raise ValueError(f'parsing time "{text}" as "2006-01-02T15:04:05Z07:00": cannot parse')
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    try:
        base = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
    except ValueError as exc:
        raise ValueError(f'parsing time "{text}": {exc}') from None
    if second > 59 or hour > 23 or minute > 59:
        raise ValueError(f'parsing time "{text}": second out of range')
    frac = m.group(7) or ""
    nanos = int((frac + "000000000")[:9]) if frac else 0
    offset = 0
    if m.group(9):
        offset = (int(m.group(10)) * 60 + int(m.group(11))) * 60
        if m.group(9) == "-":
            offset = -offset
    seconds = int(base.timestamp()) - offset
    return clamp_ns(seconds * NS + nanos)


def clamp_ns(ns: int) -> int:
    """``ns`` limited to what a 64-bit integer (and SQLite) can hold."""
    return min(max(ns, MIN_NS), MAX_NS)


def utc_date(ns: int) -> str:
    """The UTC calendar day of ``ns`` as ``YYYY-MM-DD`` (the daily history key)."""
    return _second_text(ns // NS)[:10]


def utc_clock_text(ns: int) -> str:
    """INFO's ``server_utc_time``: ``HH:MM:SS UTC``."""
    return dt.datetime.fromtimestamp(ns // NS, dt.UTC).strftime("%H:%M:%S UTC")


@dataclass(slots=True)
class Timing:
    """Count, total and worst of a repeated operation, in seconds."""

    count: int = 0
    total: float = 0.0
    worst: float = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.worst = max(self.worst, seconds)

    def summary(self) -> dict[str, float]:
        mean = self.total / self.count if self.count else 0.0
        return {"count": self.count, "mean_ms": round(mean * 1000, 3),
                "worst_ms": round(self.worst * 1000, 3)}  # fmt: skip
