"""The ``[workers]`` limits from conf.d (see ``governance.py`` for what they do)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from minifaktory.clock import NS
from minifaktory.errors import ConfigError


@dataclass(frozen=True)
class WorkerLimits:
    """The ``[workers]`` limits; ``None`` means no limit."""

    max_rss_kb: int | None = None
    max_runtime_ns: int | None = None
    by_queue: Mapping[str, int] = field(default_factory=dict)
    by_jobtype: Mapping[str, int] = field(default_factory=dict)

    def runtime_limit(self, queue: str, jobtype: str) -> int | None:
        """Nanoseconds a job of this queue and jobtype may run (jobtype, queue, default)."""
        if jobtype in self.by_jobtype:
            return self.by_jobtype[jobtype]
        return self.by_queue.get(queue, self.max_runtime_ns)

    @property
    def limits_runtime(self) -> bool:
        return bool(self.max_runtime_ns or self.by_queue or self.by_jobtype)


def parse_limits(document: Mapping[str, Any]) -> WorkerLimits:
    """``[workers]`` from conf.d; ConfigError names the bad key."""
    table = document.get("workers", {})
    if not isinstance(table, dict):
        raise ConfigError("[workers] must be a table")
    unknown = set(table) - {"max_rss_mb", "max_job_runtime", "queues", "jobtypes"}
    if unknown:
        raise ConfigError(f"[workers]: unknown key {sorted(unknown)[0]!r}")
    rss = _positive(table, "max_rss_mb", "[workers]")
    runtime = _positive(table, "max_job_runtime", "[workers]")
    per: dict[str, dict[str, int]] = {}
    for group in ("queues", "jobtypes"):
        entries = table.get(group, {})
        if not isinstance(entries, dict):
            raise ConfigError(f"[workers.{group}] must be a table of tables")
        per[group] = {}
        for name, entry in entries.items():
            where = f"[workers.{group}.{name}]"
            if not isinstance(entry, dict) or set(entry) != {"max_job_runtime"}:
                raise ConfigError(f"{where}: expected only max_job_runtime = <seconds>")
            seconds = _positive(entry, "max_job_runtime", where)
            assert seconds is not None
            per[group][name] = int(seconds * NS)
    return WorkerLimits(
        max_rss_kb=int(rss * 1024) if rss is not None else None,
        max_runtime_ns=int(runtime * NS) if runtime is not None else None,
        by_queue=per["queues"],
        by_jobtype=per["jobtypes"],
    )


#: Upper bounds: seconds of run time (10 years) and megabytes of memory (1 EB).
LIMIT_MAX = {"max_job_runtime": 10 * 365 * 86_400, "max_rss_mb": 2**40}


def _positive(table: Mapping[str, Any], key: str, where: str) -> float | None:
    value = table.get(key)
    if value is None:
        return None
    most = LIMIT_MAX[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= most:
        raise ConfigError(
            f"{where}: {key} must be a number greater than 0 and at most {most}, not {value!r}"
        )
    return float(value)
