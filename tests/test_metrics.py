"""Job metrics in memory and ``/metrics`` (Prometheus text exposition) over real HTTP."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import minifaktory
from minifaktory.app import RunningServer
from minifaktory.clock import FakeClock, format_ns
from minifaktory.metrics import DURATION_BUCKETS, Histogram, Metrics
from tests.conftest import TEST_FETCH_TIMEOUT, WireClient, job
from tests.test_webui import free_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(http: httpx.Client) -> Samples:
    """Every sample of /metrics, keyed by (name, labels)."""
    reply = http.get("/metrics")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(key)[label] for n, key in samples if n == name}


@pytest.fixture
def site(clock: FakeClock) -> Iterator[tuple[RunningServer, httpx.Client, WireClient]]:
    with minifaktory.run(clock=clock, fetch_timeout=TEST_FETCH_TIMEOUT,
                         web_binding=f"127.0.0.1:{free_port()}") as srv:  # fmt: skip
        c = WireClient(srv.host, srv.port)
        c.call("HELLO {}")
        with httpx.Client(base_url=f"http://127.0.0.1:{srv.server.web_port}", timeout=10) as http:
            yield srv, http, c
        c.close()


# ------------------------------------------------------------------------- in memory


def test_histogram_buckets_are_cumulative_with_le_inclusive() -> None:
    h = Histogram()
    for ns in (0, 5_000_000, 5_000_001, 2 * 10**9, 10**13):
        h.observe(ns)
    buckets = dict(h.cumulative())
    assert list(buckets)[-1] == "+Inf" and len(buckets) == len(DURATION_BUCKETS) + 1
    assert (buckets["0.005"], buckets["0.01"], buckets["2.5"], buckets["3600.0"]) == (2, 3, 4, 4)
    assert buckets["+Inf"] == 5 and h.sum_ns == 10_000_001 + 2 * 10**9 + 10**13


def test_labels_fold_into_other_past_the_limit(caplog: pytest.LogCaptureFixture) -> None:
    m = Metrics(max_labels=2)
    seen: list[tuple[str, str]] = []

    class Listener:
        def push(self, queue: str, jobtype: str) -> None:
            seen.append((queue, jobtype))

    m.subscribe(Listener())  # type: ignore[arg-type]  # only push is exercised
    with caplog.at_level(logging.WARNING, logger="minifaktory.metrics"):
        for i in range(5):
            m.push("q", f"T{i}")
        m.push(f"queue{1}", "T0")
        m.push(f"queue{2}", "T0")
    assert m.pushed == {("q", "T0"): 1, ("q", "T1"): 1, ("q", "other"): 3,
                        ("queue1", "T0"): 1, ("other", "T0"): 1}  # fmt: skip
    assert seen[-3:] == [("q", "other"), ("queue1", "T0"), ("other", "T0")]
    assert m.folded == {"queue": 1, "jobtype": 3}
    assert caplog.text.count("more than 2 distinct jobtypes") == 1
    assert caplog.text.count("more than 2 distinct queues") == 1


# ------------------------------------------------------------------------- /metrics


def test_metrics_page_counts_what_happened(
    site: tuple[RunningServer, httpx.Client, WireClient], clock: FakeClock
) -> None:
    srv, http, c = site
    unique = {"unique_for": 60}
    c.call("PUSH " + job(jid="metrics-ok-01", custom=unique))
    assert c.call("PUSH " + job(jid="metrics-ok-02", custom=unique)).startswith(b"-NOTUNIQUE")
    c.call("PUSH " + job(jid="metrics-fail-1", jobtype="Flaky", queue="low"))
    c.call("PUSH " + job(jid="metrics-dead-1", jobtype="Flaky", queue="low", retry=-1))
    c.call("PUSH " + job(jid="metrics-wait-1", queue="later"))
    expires = format_ns(clock.now_ns() + 10**9)
    c.call("PUSH " + job(jid="metrics-exp-01", queue="gone", custom={"expires_at": expires}))
    c.call("FETCH default")
    c.call("FETCH low")
    c.call("FETCH low")
    clock.advance(0.2)
    c.call('ACK {"jid":"metrics-ok-01"}')
    c.call('FAIL {"jid":"metrics-fail-1","errtype":"E","message":"m"}')
    clock.advance(2)
    c.call('FAIL {"jid":"metrics-dead-1","errtype":"E","message":"m"}')
    assert c.call("FETCH gone") == b"$-1\r\n"
    samples = scrape(http)
    thing = {"queue": "default", "jobtype": "Thing"}
    flaky = {"queue": "low", "jobtype": "Flaky"}
    assert value(samples, "faktory_jobs_pushed_total", **thing) == 1
    assert value(samples, "faktory_jobs_pushed_total", **flaky) == 2
    assert value(samples, "faktory_jobs_pushed_total", queue="gone", jobtype="Thing") == 1
    assert value(samples, "faktory_jobs_fetched_total", **flaky) == 2
    assert value(samples, "faktory_jobs_processed_total", **thing, status="success") == 1
    assert value(samples, "faktory_jobs_processed_total", **flaky, status="fail") == 2
    assert value(samples, "faktory_jobs_failed_total", **flaky, dead="false") == 1
    assert value(samples, "faktory_jobs_failed_total", **flaky, dead="true") == 1
    assert value(samples, "faktory_jobs_expired_total", queue="gone") == 1
    for event, count in (("locked", 1), ("denied", 1), ("unlocked", 1)):
        assert value(samples, "faktory_unique_locks_total", queue="default", event=event) == count
    ok = {**thing, "status": "success"}
    assert value(samples, "faktory_job_duration_seconds_sum", **ok) == pytest.approx(0.2)
    assert value(samples, "faktory_job_duration_seconds_bucket", **ok, le="0.1") == 0
    assert value(samples, "faktory_job_duration_seconds_bucket", **ok, le="0.25") == 1
    failed = {**flaky, "status": "fail"}
    assert value(samples, "faktory_job_duration_seconds_count", **failed) == 2
    assert value(samples, "faktory_job_duration_seconds_sum", **failed) == pytest.approx(2.4)
    assert value(samples, "faktory_connections") == 1
    assert value(samples, "faktory_jobs_working") == 0
    assert (value(samples, "faktory_jobs_retries"), value(samples, "faktory_jobs_dead")) == (1, 1)
    assert value(samples, "faktory_jobs_scheduled") == 0
    assert value(samples, "faktory_processed_total") == 3
    assert value(samples, "faktory_failures_total") == 2
    assert value(samples, "faktory_queue_size", queue="later") == 1
    assert value(samples, "faktory_queue_latency_seconds", queue="later") == pytest.approx(2.2)
    assert value(samples, "faktory_queue_size", queue="default") == 0
    assert value(samples, "faktory_queue_latency_seconds", queue="default") == 0
    assert value(samples, "faktory_unique_locks_held", queue="default") == 0
    assert value(samples, "faktory_metrics_folded_total", label="jobtype") == 0
    assert srv.info()["faktory"]["total_processed"] == 3


def test_cron_firings_are_counted(clock: FakeClock) -> None:
    toml: dict[str, Any] = {"cron": [{"schedule": "* * * * *", "job": {"type": "Tick"}}]}
    with minifaktory.run(clock=clock, toml=toml, web_binding=f"127.0.0.1:{free_port()}") as srv:
        srv.run_due_tasks()
        clock.advance(60)
        srv.run_due_tasks()
        with httpx.Client(base_url=f"http://127.0.0.1:{srv.server.web_port}") as http:
            samples = scrape(http)
    tick = {"queue": "default", "jobtype": "Tick"}
    assert value(samples, "faktory_cron_pushed_total", **tick) == 1
    assert value(samples, "faktory_jobs_pushed_total", **tick) == 1


def test_label_cardinality_is_bounded(site: tuple[RunningServer, httpx.Client, WireClient]) -> None:
    _, http, c = site
    batch = [json.loads(job(jid=f"jobtype-{i:04d}", jobtype=f"Type{i}")) for i in range(150)]
    assert c.call("PUSHB " + json.dumps(batch)) == b"$2\r\n{}\r\n"
    for i in range(150):
        c.call(f"PUSH {job(jid=f'queue-job-{i:04d}', queue=f'q{i}', jobtype='Type0')}")
    samples = scrape(http)
    jobtypes = label_values(samples, "faktory_jobs_pushed_total", "jobtype")
    assert len(jobtypes) == 101 and "other" in jobtypes
    assert value(samples, "faktory_jobs_pushed_total", queue="default", jobtype="other") == 50
    queues = label_values(samples, "faktory_jobs_pushed_total", "queue")
    assert len(queues) == 101 and "other" in queues  # default + q0..q98, then other
    assert value(samples, "faktory_jobs_pushed_total", queue="other", jobtype="Type0") == 51
    sizes = label_values(samples, "faktory_queue_size", "queue")
    assert sizes == queues
    assert value(samples, "faktory_queue_size", queue="other") == 51
    assert value(samples, "faktory_metrics_folded_total", label="jobtype") == 50
    assert value(samples, "faktory_metrics_folded_total", label="queue") >= 51


def test_metrics_asks_for_the_web_password() -> None:
    toml = {"web": {"password": "metrics-pw"}}
    with minifaktory.run(toml=toml, web_binding=f"127.0.0.1:{free_port()}") as srv:
        base = f"http://127.0.0.1:{srv.server.web_port}"
        with httpx.Client(base_url=base) as http:
            assert http.get("/metrics").status_code == 401
            assert http.get("/metrics", auth=("", "wrong")).status_code == 401
            assert http.get("/metrics", auth=("prometheus", "metrics-pw")).status_code == 200
