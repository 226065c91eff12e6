"""DogStatsD over UDP: job events within 100 ms, server gauges every 10 seconds.

Nothing here may slow down or fail a job. Counters are summed in memory and sent
as one line per name and tag set; timings go out one line per job. Lines are
buffered and sent ``buffer_size`` at a time (at most ``MAX_PACKET`` bytes per
datagram), and whatever is buffered goes out within ``FLUSH_INTERVAL``. The
socket is non-blocking: a send that fails (nobody listening, no route, full
buffer) is counted and its lines dropped. The host name is resolved once at start
(off the event loop); if that fails, a warning is logged, lines are dropped and
the name is tried again every ``RETRY_RESOLVE`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from minifaktory.commands import Services
from minifaktory.loops import Task
from minifaktory.metrics import OTHER, StatsdConfig
from minifaktory.store import SetName

log = logging.getLogger(__name__)

#: Largest datagram: fits a 1500-byte Ethernet MTU after IP and UDP headers, as DogStatsD advises.
MAX_PACKET = 1432
#: Buffered lines are sent at least this often (seconds).
FLUSH_INTERVAL = 0.1
#: The gauges' period (seconds), as in the fossas plugin.
GAUGE_PERIOD = 10
#: A failed name resolution is retried this long afterwards (seconds).
RETRY_RESOLVE = 30.0
RESOLVE_TIMEOUT = 5.0
#: Send errors are logged at most this often (seconds).
ERROR_LOG_INTERVAL = 60.0
#: Characters that would break a DogStatsD line inside a tag value.
_UNSAFE = str.maketrans({",": "_", "|": "_", "\n": "_", "\r": "_", "#": "_"})


def number(value: float) -> str:
    """``1500``, ``0.25``, ``0``: no exponent, at most 6 decimals."""
    if isinstance(value, int):
        return str(value)
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"


class StatsdLines:
    """A metrics listener that turns job events into DogStatsD lines for ``emit``.

    Counters are summed in memory (as datadog-go's client-side aggregation does) and
    go out as one line per name and tag set when ``drain`` runs, at the latest
    ``FLUSH_INTERVAL`` after the first event (``wake`` arranges it); timings and
    histograms are sent one line per job.
    """

    def __init__(
        self,
        emit: Callable[[str], None],
        namespace: str,
        tags: Sequence[str],
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.emit = emit
        self.wake = wake
        self.ns = namespace
        self.suffix = "".join("," + t for t in tags)
        self.global_tags = "|#" + ",".join(tags) if tags else ""
        #: (name, tags without the global ones) → count since the last drain.
        self.counts: dict[tuple[str, str], int] = {}
        self._pair: dict[tuple[str, str], str] = {}
        self._queue: dict[str, str] = {}

    def pair(self, queue: str, jobtype: str) -> str:
        """``|#queue:q,jobtype:t`` (no global tags), built once per pair."""
        tags = self._pair.get((queue, jobtype))
        if tags is None:
            tags = f"|#queue:{queue.translate(_UNSAFE)},jobtype:{jobtype.translate(_UNSAFE)}"
            self._pair[(queue, jobtype)] = tags
        return tags

    def queue(self, queue: str) -> str:
        """``|#queue:q`` (no global tags)."""
        tags = self._queue.get(queue)
        if tags is None:
            tags = self._queue[queue] = f"|#queue:{queue.translate(_UNSAFE)}"
        return tags

    def count(self, name: str, tags: str) -> None:
        """Add one to the counter ``name`` with ``tags``."""
        counts = self.counts
        if not counts:
            self.wake()
        key = (name, tags)
        counts[key] = counts.get(key, 0) + 1

    def drain(self) -> None:
        """Emit the summed counters and start again from zero."""
        counts, self.counts = self.counts, {}
        ns, suffix, emit = self.ns, self.suffix, self.emit
        for (name, tags), n in counts.items():
            emit(f"{ns}{name}:{n}|c{tags}{suffix}")

    def push(self, queue: str, jobtype: str) -> None:
        self.count("jobs.pushed", self.pair(queue, jobtype))

    def fetch(self, queue: str, jobtype: str) -> None:
        self.count("jobs.fetched", self.pair(queue, jobtype))

    def finish(self, queue: str, jobtype: str, took_ns: int, failed: bool, dead: bool) -> None:
        tags = self.pair(queue, jobtype)
        self.count("jobs.count", tags)
        if failed:
            self.count("jobs.failed", tags)
            status = ",status:fail,dead:true" if dead else ",status:fail,dead:false"
        else:
            status = ",status:success"
        ns, suffix, ms = self.ns, self.suffix, number(took_ns / 1e6)
        self.emit(f"{ns}jobs.perform:{ms}|ms{tags}{suffix}")
        self.emit(f"{ns}jobs.processed:{ms}|h{tags}{status}{suffix}")

    def expire(self, queue: str) -> None:
        self.count("jobs.expired", self.queue(queue))

    def unique(self, queue: str, jobtype: str, event: str) -> None:
        name = {"locked": "uniq.lock", "denied": "uniq.denied", "unlocked": "uniq.unlock"}[event]
        self.count(name, self.pair(queue, jobtype) if jobtype else self.queue(queue))

    def cron_push(self, queue: str, jobtype: str) -> None:
        self.count("cron.push", self.pair(queue, jobtype))

    def gauge(self, name: str, value: float, queue: str | None = None, kind: str = "g") -> str:
        """One line of the periodic task (global tags, and a queue tag if given)."""
        if queue is None:
            return f"{self.ns}{name}:{number(value)}|{kind}{self.global_tags}"
        return f"{self.ns}{name}:{number(value)}|{kind}{self.queue(queue)}{self.suffix}"


class UdpSender:
    """Batches lines into datagrams and sends them without ever blocking or raising."""

    def __init__(
        self, host: str, port: int, buffer_size: int, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.host, self.port, self.buffer_size, self.loop = host, port, buffer_size, loop
        #: Called before each timed flush, to add lines kept elsewhere (summed counters).
        self.before_flush: Callable[[], None] = lambda: None
        self.sock: socket.socket | None = None
        self.address: Any = None
        self._lines: list[str] = []
        self._bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._resolving: asyncio.Task[bool] | None = None
        self._retry_at = 0.0
        self._error_logged_at = -ERROR_LOG_INTERVAL
        self.closed = False
        #: Datagrams sent, lines sent, lines dropped, and failed sends.
        self.packets = 0
        self.sent = 0
        self.dropped = 0
        self.errors = 0
        self.last_error = ""

    async def resolve(self) -> bool:
        """Look the host up (off the event loop) and open the socket; False on failure."""
        try:
            infos = await asyncio.wait_for(
                self.loop.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM),
                RESOLVE_TIMEOUT,
            )
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
        except (OSError, TimeoutError, IndexError) as exc:
            self._retry_at = time.monotonic() + RETRY_RESOLVE
            self.last_error = f"cannot resolve {self.host}: {str(exc) or 'timed out'}"
            log.warning("statsd: %s; metrics are dropped until it resolves", self.last_error)
            return False
        sock.setblocking(False)
        if self.closed:
            sock.close()
            return False
        if self.sock is not None:
            self.sock.close()
        self.sock, self.address = sock, address
        return True

    def add(self, line: str) -> None:
        """Buffer one line; send when the packet is full, else within ``FLUSH_INTERVAL``."""
        size = len(line) + 1  # characters: bytes for the ASCII that metric lines are
        if self._bytes + size > MAX_PACKET and self._lines:
            self.flush()
        self._lines.append(line)
        self._bytes += size
        if len(self._lines) >= self.buffer_size:
            self.flush()
        else:
            self.wake()

    def wake(self) -> None:
        """Make sure a flush happens within ``FLUSH_INTERVAL``."""
        if self._timer is None and not self.closed:
            self._timer = self.loop.call_later(FLUSH_INTERVAL, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.before_flush()
        self.flush()

    def flush(self) -> None:
        """Send what is buffered as one datagram (dropped, and counted, if that fails)."""
        lines = self._lines
        if not lines:
            return
        self._lines, self._bytes = [], 0
        if self.sock is None:
            self.dropped += len(lines)
            self._retry_resolve()
            return
        try:
            self.sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:  # unreachable, refused (ICMP), EAGAIN: never the job's problem
            self.errors += 1
            self.dropped += len(lines)
            self.last_error = str(exc)
            now = time.monotonic()
            if now - self._error_logged_at >= ERROR_LOG_INTERVAL:
                self._error_logged_at = now
                log.warning("statsd: sending to %s:%d failed (%d so far): %s",
                            self.host, self.port, self.errors, exc)  # fmt: skip
        else:
            self.packets += 1
            self.sent += len(lines)

    def _retry_resolve(self) -> None:
        if self.closed or self._resolving is not None or time.monotonic() < self._retry_at:
            return
        self._resolving = self.loop.create_task(self.resolve())
        self._resolving.add_done_callback(self._resolved)

    def _resolved(self, task: asyncio.Task[bool]) -> None:
        self._resolving = None
        if not task.cancelled() and self.sock is not None:
            log.info("statsd: %s resolved, sending metrics to %s", self.host, self.address)

    def close(self) -> None:
        """Send what is left and close the socket."""
        self.closed = True
        self.flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._resolving is not None:
            self._resolving.cancel()
            self._resolving = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    @property
    def buffered(self) -> int:
        return len(self._lines)


class Statsd:
    """The statsd feature as the server runs it: sender, event lines and the gauge task."""

    def __init__(self, config: StatsdConfig, services: Services) -> None:
        self.config = config
        self.services = services
        broker = services.broker
        self.sender = UdpSender(config.host, config.port, config.buffer_size, broker.loop)
        self.lines = StatsdLines(
            self.sender.add, config.namespace, config.tags, wake=self.sender.wake
        )
        self.sender.before_flush = self.lines.drain

    async def start(self) -> None:
        """Resolve the target (a failure is a warning) and start listening to job events."""
        if await self.sender.resolve():
            log.info("statsd: sending metrics to %s:%d (%s, namespace %r)", self.config.host,
                     self.config.port, self.config.source, self.config.namespace)  # fmt: skip
        self.services.broker.metrics.subscribe(self.lines)

    def close(self) -> None:
        self.services.broker.metrics.unsubscribe(self.lines)
        self.lines.drain()
        self.sender.close()

    def task(self) -> Task:
        """The periodic gauges, as a task of the server's runner."""
        return Task("Statsd", GAUGE_PERIOD, self.send_gauges, lambda: self.sender.buffered)

    async def send_gauges(self, now: int) -> int:
        """Connections, working, set sizes, queue sizes and latencies; how many lines."""
        lines = self.gauge_lines()
        self.lines.drain()
        for line in lines:
            self.sender.add(line)
        self.sender.flush()
        return len(lines)

    def gauge_lines(self) -> list[str]:
        """The periodic lines, from in-memory figures (one head lookup per queue for latency)."""
        broker = self.services.broker
        metrics = broker.metrics
        gauge = self.lines.gauge
        out = [
            gauge("ops.connections", self.services.stats.connections),
            gauge("jobs.working", len(broker.working)),
            gauge("jobs.scheduled", broker.sets[SetName.SCHEDULED]),
            gauge("jobs.retries", broker.sets[SetName.RETRIES]),
            gauge("jobs.dead", broker.sets[SetName.DEAD]),
        ]
        sizes: dict[str, int] = {}
        for name in sorted(broker.queues):
            label = metrics.queue_label(name)
            sizes[label] = sizes.get(label, 0) + broker.queues[name].size
        wanted = self.config.queue_latency
        names = sorted(broker.queues)
        if wanted is not None:
            names = [q for q in wanted if q in broker.queues]
        latencies: dict[str, float] = {}
        for name, seconds in broker.latency(names).items():
            label = metrics.queue_label(name)
            latencies[label] = max(latencies.get(label, 0.0), seconds)
        for label, size in sorted(sizes.items(), key=_other_last):
            out.append(gauge("jobs.enqueued", size, label))
        for label, seconds in sorted(latencies.items(), key=_other_last):
            out.append(gauge("jobs.current_latency", round(seconds, 6), label))
            out.append(gauge("jobs.latency", round(seconds, 6), label, "h"))
        return out


def _other_last(item: tuple[str, Any]) -> tuple[bool, str]:
    return item[0] == OTHER, item[0]
