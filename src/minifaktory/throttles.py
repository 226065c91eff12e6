"""Throttles: at most N jobs of a queue in flight, server-wide or per worker (spec §5.6).

Configured in ``conf.d/*.toml``::

    [throttles]
    instagram = { concurrency = 4, timeout = 60 }
    bulk      = { worker = 5,      timeout = 60 }

A slot is taken when FETCH reserves a job of the queue and freed by ACK, FAIL,
REQUEUE, the reservation's expiry, or ``timeout`` seconds after it was taken,
so a crashed worker cannot hold it forever. Slots are not stored separately:
they are the queue's reservations younger than ``timeout``, so they come back
with the reservations after a restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from minifaktory.clock import NS
from minifaktory.errors import CommandError, ConfigError
from minifaktory.jobs import check_queue_name


@dataclass(frozen=True, slots=True)
class Throttle:
    """The limit of one queue: ``limit`` jobs in flight, per worker or server-wide."""

    queue: str
    limit: int
    per_worker: bool
    timeout_ns: int


@dataclass(slots=True)
class Slots:
    """Live slots of one throttled queue: jid → (wid, expiry)."""

    throttle: Throttle
    held: dict[str, tuple[str, int]] = field(default_factory=dict)

    def _live(self, now: int) -> None:
        stale = [jid for jid, (_, expires) in self.held.items() if expires <= now]
        for jid in stale:
            del self.held[jid]

    def full(self, wid: str, now: int) -> bool:
        """Whether a FETCH by ``wid`` must skip this queue now."""
        self._live(now)
        if self.throttle.per_worker:
            return (
                sum(1 for holder, _ in self.held.values() if holder == wid) >= self.throttle.limit
            )
        return len(self.held) >= self.throttle.limit

    def take(self, jid: str, wid: str, since: int) -> None:
        self.held[jid] = (wid, since + self.throttle.timeout_ns)

    def release(self, jid: str) -> bool:
        return self.held.pop(jid, None) is not None

    def in_use(self, now: int) -> int:
        self._live(now)
        return len(self.held)


def parse_throttles(document: Mapping[str, Any]) -> dict[str, Throttle]:
    """The ``[throttles]`` table of the merged conf.d document; ConfigError names the entry."""
    table = document.get("throttles", {})
    if not isinstance(table, dict):
        raise ConfigError("[throttles] must be a table of queue = { concurrency|worker, timeout }")
    out: dict[str, Throttle] = {}
    for queue, entry in table.items():
        where = f"[throttles] {queue}"
        try:
            check_queue_name(queue)
        except CommandError as exc:
            raise ConfigError(f"{where}: {exc.message}") from None
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected {{ concurrency = N, timeout = S }}")
        unknown = set(entry) - {"concurrency", "worker", "timeout"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        if ("concurrency" in entry) == ("worker" in entry):
            raise ConfigError(f"{where}: set exactly one of concurrency or worker")
        per_worker = "worker" in entry
        limit = entry["worker" if per_worker else "concurrency"]
        timeout = entry.get("timeout")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ConfigError(f"{where}: the limit must be a whole number of at least 1")
        if (
            not isinstance(timeout, int | float)
            or isinstance(timeout, bool)
            or not 0 < timeout <= MAX_TIMEOUT_SECONDS  # also refuses nan
        ):
            raise ConfigError(
                f"{where}: timeout (seconds, greater than 0, at most 10 years) is required"
            )
        out[queue] = Throttle(queue, limit, per_worker, int(timeout * NS))
    return out


#: The longest throttle timeout (longer ones would overflow the nanosecond clock).
MAX_TIMEOUT_SECONDS = 10 * 365 * 86_400


def slots_for(throttles: Iterable[Throttle]) -> dict[str, Slots]:
    """Empty slot tables for the configured throttles."""
    return {t.queue: Slots(t) for t in throttles}
