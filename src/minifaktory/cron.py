"""Cron entries from ``conf.d``: parsing, validation and firing times (spec §5.3).

Both forms of the job table are read::

    [[cron]]
      schedule = "*/5 * * * *"          # or 6 fields (seconds first), @hourly, @every 90s
      timezone = "Europe/Berlin"         # optional; default UTC or [cron_settings] timezone
      [cron.job]
        type = "FiveJob"
        queue = "critical"
        retry = 3
        reserve_for = 4000
        args = [1, 2]                    # or [[cron.job.args]] tables
        [cron.job.custom]
          expires_in = 60

Pure: times are nanoseconds, schedules are evaluated with croniter.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from croniter import croniter

from minifaktory import jobs, options
from minifaktory.clock import NS
from minifaktory.errors import CommandError, ConfigError
from minifaktory.options import parse_duration
from minifaktory.payloads import Job

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
JOB_KEYS = {"type", "queue", "args", "retry", "reserve_for", "custom"}
ENTRY_KEYS = {"schedule", "job", "timezone"}


@dataclass(frozen=True, slots=True)
class CronEntry:
    """One ``[[cron]]`` entry, validated."""

    key: str
    schedule: str
    source: str
    timezone: str
    job: dict[str, Any]
    #: ``@every`` interval; None for calendar schedules.
    every_ns: int | None
    #: The 5- or 6-field expression croniter evaluates (6: seconds first).
    expression: str

    def latest_due(self, now: int, last: int) -> int | None:
        """The latest firing time in (last, now], or None when nothing is due."""
        if self.every_ns is not None:
            if now - last < self.every_ns:
                return None
            return last + (now - last) // self.every_ns * self.every_ns
        base = _datetime(now // NS * NS + NS, self.timezone)
        prev = _ns(self._iter(base).get_prev(dt.datetime))
        return prev if prev > last else None

    def next_after(self, after: int) -> int:
        """The first firing time strictly after ``after``."""
        if self.every_ns is not None:
            return after + self.every_ns
        return _ns(self._iter(_datetime(after, self.timezone)).get_next(dt.datetime))

    def _iter(self, base: dt.datetime) -> croniter:
        from croniter import croniter  # loads only when a cron entry is configured

        return croniter(self.expression, base, second_at_beginning=_has_seconds(self.expression))

    def make_job(self) -> Job:
        """A fresh job for one firing (new jid, as every Faktory cron firing has)."""
        spec = self.job
        return Job(
            jid=jobs.new_jid(),
            jobtype=spec["type"],
            queue=spec.get("queue", ""),
            args=list(spec.get("args", [])),
            retry=spec.get("retry"),
            reserve_for=spec.get("reserve_for", 0),
            custom=dict(spec["custom"]) if spec.get("custom") else None,
        )


def _has_seconds(expression: str) -> bool:
    return len(expression.split()) == 6


def _datetime(ns: int, timezone: str) -> dt.datetime:
    # Whole seconds and microseconds as integers: a float timestamp would round a time a
    # few nanoseconds before a firing up to the firing itself, and skip it.
    import zoneinfo  # this module's heavier imports load only when cron is configured

    moment = dt.datetime.fromtimestamp(ns // NS, zoneinfo.ZoneInfo(timezone))
    return moment.replace(microsecond=ns % NS // 1000)


def _ns(value: dt.datetime) -> int:
    return int(value.timestamp()) * NS


def parse_cron(
    document: Mapping[str, Any], sources: Sequence[str] = (), default_timezone: str = "UTC"
) -> list[CronEntry]:
    """Every ``[[cron]]`` entry of the merged document; ConfigError says which and why.

    ``sources[i]`` names the file entry ``i`` came from, for error messages.
    """
    settings = document.get("cron_settings", {})
    if isinstance(settings, dict) and isinstance(settings.get("timezone"), str):
        default_timezone = settings["timezone"]
    entries = document.get("cron", [])
    if not isinstance(entries, list):
        raise ConfigError("cron must be declared as [[cron]] entries")
    out = []
    for index, raw in enumerate(entries):
        source = sources[index] if index < len(sources) else "conf.d"
        where = f"{source}: [[cron]] entry {index + 1}"
        out.append(_parse_entry(raw, where, default_timezone))
    return out


def _parse_entry(raw: Any, where: str, default_timezone: str) -> CronEntry:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = set(raw) - ENTRY_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    schedule = raw.get("schedule")
    if not isinstance(schedule, str) or not schedule.strip():
        raise ConfigError(f"{where}: schedule is required")
    where = f"{where} ({schedule!r})"
    timezone = raw.get("timezone", default_timezone)
    import hashlib
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(str(timezone))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a name that is a directory of the zone database, or far too long.
        raise ConfigError(f"{where}: unknown time zone {timezone!r}") from None
    every_ns, expression = _parse_schedule(schedule.strip(), where)
    job = raw.get("job")
    if not isinstance(job, dict):
        raise ConfigError(f"{where}: a [cron.job] table is required")
    _check_job(job, where)
    key = hashlib.sha256(
        json.dumps([schedule, str(timezone), job], sort_keys=True, default=str).encode()
    ).hexdigest()[:32]
    entry = CronEntry(key, schedule, where, str(timezone), job, every_ns, expression)
    try:
        entry.next_after(time.time_ns())
    except ValueError:  # croniter's "no such date", e.g. February 30th
        raise ConfigError(f"{where}: the schedule never fires") from None
    try:  # the job must pass the same rules as a PUSH, once, at start-up
        sample = entry.make_job()
        options.parse_options(sample, 0, jobs.prepare_push(sample, 0))
    except CommandError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None
    return entry


#: The longest ``@every`` interval (longer ones would overflow the nanosecond clock).
MAX_EVERY_SECONDS = 100 * 365 * 86_400


def _parse_schedule(schedule: str, where: str) -> tuple[int | None, str]:
    if schedule.startswith("@every"):
        text = schedule.removeprefix("@every").strip()
        try:
            seconds = parse_duration(text)
        except ValueError:
            raise ConfigError(f"{where}: @every needs a duration such as 90s or 1h30m") from None
        if seconds < 1:
            raise ConfigError(f"{where}: @every must be at least 1s")
        if seconds > MAX_EVERY_SECONDS:
            raise ConfigError(f"{where}: @every must be at most 100 years")
        return int(seconds * NS), ""
    expression = MACROS.get(schedule, schedule)
    if expression.startswith("@"):
        raise ConfigError(f"{where}: unknown schedule macro {schedule!r}")
    from croniter import croniter

    fields = len(expression.split())
    if fields not in (5, 6) or not croniter.is_valid(expression, second_at_beginning=fields == 6):
        raise ConfigError(f"{where}: not a valid 5- or 6-field cron schedule")
    return None, expression


def _check_job(job: dict[str, Any], where: str) -> None:
    unknown = set(job) - JOB_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown [cron.job] key(s) {', '.join(sorted(unknown))}")
    if not isinstance(job.get("type"), str) or not job["type"]:
        raise ConfigError(f"{where}: [cron.job] type is required")
    checks: dict[str, Callable[[Any], bool]] = {
        "queue": lambda v: isinstance(v, str),
        "args": lambda v: isinstance(v, list),
        "retry": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "reserve_for": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "custom": lambda v: isinstance(v, dict),
    }
    for name, ok in checks.items():
        if name in job and not ok(job[name]):
            raise ConfigError(f"{where}: [cron.job] {name} has the wrong type")
