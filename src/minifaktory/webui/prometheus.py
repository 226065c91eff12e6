"""``/metrics``: the Prometheus text exposition, built at scrape time from memory.

A custom collector turns the broker's job-event aggregate (``metrics.Metrics``)
and its in-memory figures into metric families; a scrape reads no table beyond
one indexed head lookup per non-empty queue for its latency (as INFO and QUEUE
LATENCY do). The only module that imports ``prometheus_client``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from minifaktory.clock import NS
from minifaktory.commands import Services
from minifaktory.metrics import OTHER
from minifaktory.store import SetName

#: ``text/plain; version=0.0.4; charset=utf-8``.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class FaktoryCollector(Collector):
    """Yields every minifaktory metric family when scraped."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        broker = self.services.broker
        m = broker.metrics
        qt = ("queue", "jobtype")
        processed = {k: sum(h.counts) for k, h in m.durations.items()}
        counters: list[tuple[str, str, tuple[str, ...], Mapping[Any, int]]] = [
            ("jobs_pushed", "Jobs pushed (PUSH, PUSHB, cron, batch callbacks)", qt, m.pushed),
            ("jobs_fetched", "Jobs handed to workers by FETCH", qt, m.fetched),
            ("jobs_processed", "Jobs finished by ACK (success) or FAIL (fail)",
             (*qt, "status"), processed),
            ("jobs_failed", "Failed jobs (FAIL or reservation expiry); dead: the failure "
             "moved the job to the dead set", (*qt, "dead"), m.failed),
            ("jobs_expired", "Jobs dropped because their expires_at passed", ("queue",),
             {(q,): n for q, n in m.expired.items()}),
            ("unique_locks", "Uniqueness locks taken (locked), pushes refused with NOTUNIQUE "
             "(denied) and locks released (unlocked)", ("queue", "event"), m.unique_events),
            ("cron_pushed", "Jobs pushed by cron firings", qt, m.cron_pushed),
            ("metrics_folded", f"Events whose queue or jobtype label was folded into {OTHER!r} "
             f"(past {m.max_labels} distinct values)", ("label",),
             {(k,): n for k, n in m.folded.items()}),
        ]  # fmt: skip
        for name, doc, labels, data in counters:
            family = CounterMetricFamily(f"faktory_{name}", doc, labels=labels)
            for key, value in sorted(data.items()):
                family.add_metric(key, value)
            yield family

        duration = HistogramMetricFamily(
            "faktory_job_duration_seconds",
            "Run time of finished jobs, FETCH to ACK or FAIL",
            labels=(*qt, "status"),
        )
        for key, histogram in sorted(m.durations.items()):
            duration.add_metric(key, histogram.cumulative(), histogram.sum_ns / NS)
        yield duration

        gauges = [
            ("connections", "Open client connections", self.services.stats.connections),
            ("jobs_working", "Jobs reserved by workers", len(broker.working)),
            ("jobs_scheduled", "Jobs in the scheduled set", broker.sets[SetName.SCHEDULED]),
            ("jobs_retries", "Jobs in the retry set", broker.sets[SetName.RETRIES]),
            ("jobs_dead", "Jobs in the dead set", broker.sets[SetName.DEAD]),
        ]
        for name, doc, value in gauges:
            yield GaugeMetricFamily(f"faktory_{name}", doc, value=value)
        since = "since the database was created or flushed"
        yield CounterMetricFamily(
            "faktory_processed", f"Jobs processed {since} (INFO total_processed)",
            value=broker.processed,
        )  # fmt: skip
        yield CounterMetricFamily(
            "faktory_failures", f"Jobs failed {since} (INFO total_failures)", value=broker.failures
        )

        sizes: dict[str, int] = {}
        latencies: dict[str, float] = {}
        held: dict[str, int] = {}
        for name, seconds in broker.latency(sorted(broker.queues)).items():
            label = m.queue_label(name)
            sizes[label] = sizes.get(label, 0) + broker.queues[name].size
            latencies[label] = max(latencies.get(label, 0.0), seconds)
            held[label] = held.get(label, 0) + broker.locks.get(name, 0)
        size = GaugeMetricFamily("faktory_queue_size", "Jobs waiting in a queue", labels=["queue"])
        latency = GaugeMetricFamily(
            "faktory_queue_latency_seconds", "Age of the next job of a queue", labels=["queue"]
        )
        locks = GaugeMetricFamily(
            "faktory_unique_locks_held", "Uniqueness locks held per queue", labels=["queue"]
        )
        for label in sorted(sizes):
            size.add_metric([label], sizes[label])
            latency.add_metric([label], latencies[label])
            locks.add_metric([label], held[label])
        yield size
        yield latency
        yield locks


def registry(services: Services) -> CollectorRegistry:
    """A registry of its own holding only the minifaktory collector."""
    out = CollectorRegistry(auto_describe=False)
    out.register(FaktoryCollector(services))
    return out


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition (version 0.0.4) of ``registry``."""
    return generate_latest(registry)
