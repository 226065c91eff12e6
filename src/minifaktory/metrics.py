"""Job metrics in memory: counters and duration histograms the broker bumps as jobs move.

The broker calls one method per event (a dict increment or two); ``/metrics``
reads the totals at scrape time and a statsd sender subscribes as a listener,
receiving each event with the same labels. Label values are bounded: past
``max_labels`` distinct queues (or jobtypes) the rest are folded into
``"other"``, counted in ``folded`` and logged once.

Also here, because it is pure: the ``[statsd]`` / ``[metrics]`` / ``DD_*``
configuration (``parse_statsd``).
"""

from __future__ import annotations

import logging
import os
import re
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from minifaktory.clock import NS
from minifaktory.errors import ConfigError

log = logging.getLogger(__name__)

#: Distinct queues and jobtypes tracked as label values before folding into ``OTHER``.
MAX_LABELS = 100
OTHER = "other"
#: Upper bounds (seconds) of the job duration histogram's buckets; ``+Inf`` follows.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0, 900.0, 3600.0)  # fmt: skip
_BOUNDS_NS = tuple(round(b * NS) for b in DURATION_BUCKETS)
#: The events of a uniqueness lock, as labels.
LOCKED, DENIED, UNLOCKED = "locked", "denied", "unlocked"


class Listener(Protocol):
    """Receives every event with its (folded) labels; durations in nanoseconds."""

    def push(self, queue: str, jobtype: str) -> None: ...
    def fetch(self, queue: str, jobtype: str) -> None: ...
    def finish(self, queue: str, jobtype: str, took_ns: int, failed: bool, dead: bool) -> None: ...
    def expire(self, queue: str) -> None: ...
    def unique(self, queue: str, jobtype: str, event: str) -> None: ...
    def cron_push(self, queue: str, jobtype: str) -> None: ...


@dataclass(slots=True)
class Histogram:
    """Per-bucket counts (not cumulative; the last is ``+Inf``) and the sum in ns."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(_BOUNDS_NS) + 1))
    sum_ns: int = 0

    def observe(self, ns: int) -> None:
        self.counts[bisect_left(_BOUNDS_NS, ns)] += 1
        self.sum_ns += ns

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs as Prometheus wants them, ending with ``+Inf``."""
        out: list[tuple[str, int]] = []
        total = 0
        for bound, count in zip((*map(repr, DURATION_BUCKETS), "+Inf"), self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


class Metrics:
    """Counters and histograms of job events since the server started."""

    def __init__(self, max_labels: int = MAX_LABELS) -> None:
        self.max_labels = max_labels
        self.pushed: dict[tuple[str, str], int] = {}
        self.fetched: dict[tuple[str, str], int] = {}
        #: (queue, jobtype, "success"|"fail") → run time (fetch → ACK/FAIL).
        self.durations: dict[tuple[str, str, str], Histogram] = {}
        #: (queue, jobtype, "true"|"false": the failure sent it to the dead set).
        self.failed: dict[tuple[str, str, str], int] = {}
        self.expired: dict[str, int] = {}
        #: (queue, locked|denied|unlocked).
        self.unique_events: dict[tuple[str, str], int] = {}
        self.cron_pushed: dict[tuple[str, str], int] = {}
        #: Events whose queue or jobtype was folded into ``other``.
        self.folded = {"queue": 0, "jobtype": 0}
        self.listeners: list[Listener] = []
        self._queues: set[str] = set()
        self._jobtypes: set[str] = set()

    def subscribe(self, listener: Listener) -> None:
        """Send every later event to ``listener`` too."""
        self.listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)

    # -- label bounds --------------------------------------------------------------

    def queue_label(self, name: str) -> str:
        """``name``, or ``other`` once ``max_labels`` other queues are tracked."""
        return self._label(self._queues, "queue", name)

    def jobtype_label(self, name: str) -> str:
        """``name``, or ``other`` once ``max_labels`` other jobtypes are tracked."""
        return self._label(self._jobtypes, "jobtype", name)

    def _label(self, seen: set[str], label: str, name: str) -> str:
        if name in seen:
            return name
        if len(seen) < self.max_labels:
            seen.add(name)
            return name
        return self._fold(label, name)

    def _fold(self, label: str, name: str) -> str:
        if not self.folded[label]:
            log.warning(
                "metrics: more than %d distinct %ss; %r and later ones are reported as %r",
                self.max_labels, label, name, OTHER,
            )  # fmt: skip
        self.folded[label] += 1
        return OTHER

    # -- events (called by the broker) -----------------------------------------------

    def push(self, queue: str, jobtype: str) -> None:
        key = (self.queue_label(queue), self.jobtype_label(jobtype))
        self.pushed[key] = self.pushed.get(key, 0) + 1
        for listener in self.listeners:
            listener.push(*key)

    def fetch(self, queue: str, jobtype: str) -> None:
        key = (self.queue_label(queue), self.jobtype_label(jobtype))
        self.fetched[key] = self.fetched.get(key, 0) + 1
        for listener in self.listeners:
            listener.fetch(*key)

    def finish(self, queue: str, jobtype: str, took_ns: int, failed: bool, dead: bool) -> None:
        """A reservation ended with ACK (``failed`` False) or FAIL / reservation expiry."""
        q, t = self.queue_label(queue), self.jobtype_label(jobtype)
        took_ns = max(took_ns, 0)
        key = (q, t, "fail" if failed else "success")
        histogram = self.durations.get(key)
        if histogram is None:
            histogram = self.durations[key] = Histogram()
        histogram.observe(took_ns)
        if failed:
            fkey = (q, t, "true" if dead else "false")
            self.failed[fkey] = self.failed.get(fkey, 0) + 1
        for listener in self.listeners:
            listener.finish(q, t, took_ns, failed, dead)

    def expire(self, queue: str) -> None:
        """A job was dropped because its ``expires_at`` passed."""
        q = self.queue_label(queue)
        self.expired[q] = self.expired.get(q, 0) + 1
        for listener in self.listeners:
            listener.expire(q)

    def unique(self, queue: str, jobtype: str, event: str) -> None:
        """A uniqueness lock was taken, refused (NOTUNIQUE) or released."""
        q = self.queue_label(queue)
        key = (q, event)
        self.unique_events[key] = self.unique_events.get(key, 0) + 1
        if self.listeners:
            t = self.jobtype_label(jobtype) if jobtype else ""
            for listener in self.listeners:
                listener.unique(q, t, event)

    def cron_push(self, queue: str, jobtype: str) -> None:
        """A cron firing pushed a job."""
        key = (self.queue_label(queue), self.jobtype_label(jobtype))
        self.cron_pushed[key] = self.cron_pushed.get(key, 0) + 1
        for listener in self.listeners:
            listener.cron_push(*key)


# ------------------------------------------------------------------------- statsd config

DEFAULT_NAMESPACE = "faktory."
DEFAULT_BUFFER_SIZE = 15
DEFAULT_STATSD_PORT = 8125
#: Datadog's tag rule (Faktory Enterprise checks the same), ASCII as in Go.
TAG = re.compile(r"\A[a-zA-Z][\w\-:./]*\Z", re.ASCII)
#: Tag names Datadog sets itself on every metric; Faktory Enterprise refuses them.
RESERVED_TAGS = ("host", "device", "source", "service")


@dataclass(frozen=True, slots=True)
class StatsdConfig:
    """Where and how to send DogStatsD metrics."""

    host: str
    port: int
    namespace: str = DEFAULT_NAMESPACE
    tags: tuple[str, ...] = ()
    #: Metrics per UDP packet (Faktory Enterprise's ``bufferSize``).
    buffer_size: int = DEFAULT_BUFFER_SIZE
    #: Queues whose latency is reported (``queueLatency``); None: every queue.
    queue_latency: tuple[str, ...] | None = None
    #: Where the settings came from, for log lines and errors.
    source: str = "[statsd]"


def parse_statsd(
    document: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> StatsdConfig | None:
    """The statsd target from ``conf.d`` and the environment; None when not configured.

    In order: a ``[statsd]`` table (Faktory Enterprise; ``location`` required),
    ``[metrics] enabled = true`` (fossas plugins; ``DD_AGENT_HOST``,
    ``DD_DOGSTATSD_PORT``, ``DD_TAGS``), then ``DD_DOGSTATSD_URL`` alone.
    """
    env = os.environ if environ is None else environ
    table = document.get("statsd")
    if table is not None:
        if not isinstance(table, dict):
            raise ConfigError("statsd: [statsd] must be a table")
        return _from_statsd_table(table)
    plugin = document.get("metrics")
    if plugin is not None:
        if not isinstance(plugin, dict):
            raise ConfigError("statsd: [metrics] must be a table")
        enabled = plugin.get("enabled", False)
        if not isinstance(enabled, bool):
            raise ConfigError(f"statsd: [metrics] enabled must be true or false, not {enabled!r}")
        if enabled:
            return _from_metrics_table(plugin, env)
    url = env.get("DD_DOGSTATSD_URL", "")
    if url:
        host, port = _udp_url(url)
        tags = _env_tags(env)
        return StatsdConfig(host, port, tags=tags, source="DD_DOGSTATSD_URL")
    return None


def _from_statsd_table(table: Mapping[str, Any]) -> StatsdConfig:
    location = table.get("location")
    if not isinstance(location, str) or not location:
        raise ConfigError('statsd: [statsd] needs location = "host:port" to send metrics')
    host, port = _host_port(location, "[statsd] location")
    namespace = table.get("namespace", DEFAULT_NAMESPACE)
    if not isinstance(namespace, str):
        raise ConfigError(f"statsd: [statsd] namespace must be a string, not {namespace!r}")
    tags = _tags(table.get("tags", []), "[statsd] tags")
    size = table.get("bufferSize", DEFAULT_BUFFER_SIZE)
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 1000:
        raise ConfigError(f"statsd: [statsd] bufferSize must be an integer 1-1000, not {size!r}")
    latency = table.get("queueLatency")
    queues: tuple[str, ...] | None = None
    if latency is not None:
        if not isinstance(latency, list) or not all(isinstance(q, str) for q in latency):
            raise ConfigError("statsd: [statsd] queueLatency must be a list of queue names")
        queues = tuple(latency)
    return StatsdConfig(host, port, namespace, tags, size, queues)


def _from_metrics_table(table: Mapping[str, Any], env: Mapping[str, str]) -> StatsdConfig:
    if env.get("DD_AGENT_HOST"):
        port_text = env.get("DD_DOGSTATSD_PORT") or str(DEFAULT_STATSD_PORT)
        host, port = env["DD_AGENT_HOST"], _port(port_text, "DD_DOGSTATSD_PORT")
    elif env.get("DD_DOGSTATSD_URL"):
        host, port = _udp_url(env["DD_DOGSTATSD_URL"])
    else:
        host, port = "localhost", DEFAULT_STATSD_PORT
    namespace = table.get("namespace", DEFAULT_NAMESPACE)
    if not isinstance(namespace, str):
        raise ConfigError(f"statsd: [metrics] namespace must be a string, not {namespace!r}")
    if namespace and not namespace.endswith("."):
        namespace += "."  # the plugin's "jobs" means the prefix "jobs."
    tags = _tags(table.get("tags", []), "[metrics] tags") + _env_tags(env)
    return StatsdConfig(host, port, namespace, tags, source="[metrics]")


def _host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port:
        raise ConfigError(f'statsd: {what} must be "host:port", not {text!r}')
    return host, _port(port, what)


def _port(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise ConfigError(f"statsd: {what}: invalid port {text!r}")
    return int(text)


def _udp_url(url: str) -> tuple[str, int]:
    """``udp://host:8125`` (port optional); the only scheme a UDP sender can use."""
    parts = urlsplit(url)
    if parts.scheme != "udp" or not parts.hostname:
        raise ConfigError(f"statsd: DD_DOGSTATSD_URL must look like udp://host:8125, not {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"statsd: DD_DOGSTATSD_URL: invalid port in {url!r}") from None
    return parts.hostname, port or DEFAULT_STATSD_PORT


def _env_tags(env: Mapping[str, str]) -> tuple[str, ...]:
    """``DD_TAGS="a:b,c:d"`` (commas or spaces between tags)."""
    text = env.get("DD_TAGS", "")
    return _tags([t for t in re.split(r"[,\s]+", text) if t], "DD_TAGS", reserved=())


def _tags(value: object, what: str, reserved: tuple[str, ...] = RESERVED_TAGS) -> tuple[str, ...]:
    """Checked tags; ``reserved`` names are refused (Faktory Enterprise's rule for
    ``[statsd] tags``; ``DD_TAGS`` is Datadog's own variable and passes them through)."""
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ConfigError(f'statsd: {what} must be a list of "name:value" strings')
    for tag in value:
        if not TAG.match(tag):
            raise ConfigError(
                f"statsd: invalid tag {tag!r} in {what}: a tag starts with a letter and holds "
                "only letters, digits, _ - : . /"
            )
        name = tag.partition(":")[0]
        if name in reserved:
            raise ConfigError(
                f"statsd: tag {tag!r} in {what} uses the reserved name {name!r} "
                f"({', '.join(RESERVED_TAGS)} are set by Datadog itself)"
            )
    return tuple(value)
