"""DogStatsD: configuration, line formats, batching, and the datagrams a real server sends
to a UDP socket on 127.0.0.1 while jobs move over the wire."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

import minifaktory
from minifaktory.app import RunningServer
from minifaktory.clock import FakeClock, format_ns, parse_ns
from minifaktory.errors import ConfigError
from minifaktory.metrics import Metrics, StatsdConfig, parse_statsd
from minifaktory.statsd import MAX_PACKET, StatsdLines, UdpSender, number
from tests.conftest import TEST_FETCH_TIMEOUT, WireClient, job

#: Lines of the periodic task, which may arrive at any time during a test.
GAUGES = ("ops.connections", "jobs.working", "jobs.scheduled", "jobs.retries", "jobs.dead",
          "jobs.enqueued", "jobs.current_latency", "jobs.latency")  # fmt: skip
TAGS = ["env:test", "region:eu-west/1"]
T = "|#queue:default,jobtype:Thing"  # the tags of a default job, before the global ones
G = ",env:test,region:eu-west/1"
T0 = parse_ns("2026-07-01T10:00:10Z")


class Receiver:
    """A UDP socket on 127.0.0.1 that collects the lines of every datagram it gets."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.packets: list[bytes] = []

    def _read(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            self.packets.append(self.sock.recv(65536))
        except TimeoutError:
            return False
        return True

    def lines(self, count: int, *, gauges: bool = False, timeout: float = 5.0) -> list[str]:
        """The next ``count`` lines (gauge lines left out unless asked for), then whatever
        else arrives before a quiet moment."""
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            if self._read(max(deadline - time.monotonic(), 0.01)):
                out += [line for line in self._take() if gauges or not _is_gauge(line)]
        while self._read(0.25):  # past FLUSH_INTERVAL: anything still buffered has arrived
            out += [line for line in self._take() if gauges or not _is_gauge(line)]
        return out

    def events(self, counted: int, samples: int) -> tuple[dict[str, int], list[str]]:
        """Job events until ``counted`` counter increments and ``samples`` other lines
        have arrived: counters summed by name and tags, the other lines in order."""
        counters: dict[str, int] = {}
        others: list[str] = []
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and (
            sum(counters.values()) < counted or len(others) < samples
        ):
            add(counters, others, self.lines(1, timeout=max(deadline - time.monotonic(), 0.01)))
        return counters, others

    def _take(self) -> list[str]:
        packets, self.packets = self.packets, []
        return [line for p in packets for line in p.decode().split("\n")]

    def close(self) -> None:
        self.sock.close()


def add(counters: dict[str, int], others: list[str], lines: list[str]) -> None:
    """Sum counter lines (``name:N|c|#tags``) under ``name|c|#tags``; keep the rest."""
    for line in lines:
        name, _, rest = line.partition(":")
        value, _, kind_and_tags = rest.partition("|")
        if kind_and_tags.startswith("c"):
            key = f"{name}|{kind_and_tags}"
            counters[key] = counters.get(key, 0) + int(value)
        else:
            others.append(line)


def _is_gauge(line: str) -> bool:
    return line.split(":", 1)[0].removeprefix("faktory.") in GAUGES


@pytest.fixture
def clock() -> FakeClock:
    """Ten seconds past a minute: the tests' small steps never cross a cron firing."""
    return FakeClock(T0)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def statsd_server(
    receiver: Receiver, clock: FakeClock
) -> Iterator[tuple[RunningServer, WireClient]]:
    toml: dict[str, Any] = {
        "statsd": {"location": f"127.0.0.1:{receiver.port}", "tags": TAGS},
        "cron": [{"schedule": "* * * * *", "job": {"type": "Minutely", "queue": "cron"}}],
    }
    with minifaktory.run(toml=toml, clock=clock, fetch_timeout=TEST_FETCH_TIMEOUT) as srv:
        c = WireClient(srv.host, srv.port)
        assert c.call("HELLO {}") == b"+OK\r\n"
        yield srv, c
        c.close()


# -------------------------------------------------------------------------- configuration


def test_statsd_table_as_in_faktory_enterprise() -> None:
    toml = {"statsd": {"location": "metrics.local:9125", "namespace": "fk.", "tags": TAGS,
                       "bufferSize": 5, "queueLatency": ["critical"]}}  # fmt: skip
    assert parse_statsd(toml, {}) == StatsdConfig(
        "metrics.local", 9125, "fk.", tuple(TAGS), 5, ("critical",)
    )
    assert parse_statsd({"statsd": {"location": "[::1]:8125"}}, {}) == StatsdConfig("::1", 8125)
    plain = parse_statsd({"statsd": {"location": "localhost:8125"}}, {"DD_TAGS": "a:b"})
    assert plain is not None
    assert (plain.namespace, plain.tags, plain.buffer_size) == ("faktory.", (), 15)


def test_nothing_configured_means_no_statsd() -> None:
    assert parse_statsd({}, {}) is None
    assert parse_statsd({"metrics": {"enabled": False}}, {"DD_AGENT_HOST": "dd"}) is None
    assert parse_statsd({}, {"DD_AGENT_HOST": "dd", "DD_TAGS": "a:b"}) is None


def test_dd_dogstatsd_url_alone() -> None:
    env = {"DD_DOGSTATSD_URL": "udp://dd-host:8126", "DD_TAGS": "env:prod, team:jobs"}
    config = parse_statsd({}, env)
    assert config == StatsdConfig(
        "dd-host", 8126, tags=("env:prod", "team:jobs"), source="DD_DOGSTATSD_URL"
    )
    assert parse_statsd({}, {"DD_DOGSTATSD_URL": "udp://10.0.0.7"}) == StatsdConfig(
        "10.0.0.7", 8125, source="DD_DOGSTATSD_URL"
    )
    table = parse_statsd({"statsd": {"location": "other:1"}}, env)  # the table wins
    assert table is not None and (table.host, table.tags) == ("other", ())


def test_metrics_table_as_in_the_fossas_plugins() -> None:
    toml = {"metrics": {"enabled": True, "tags": ["app:faktory"]}}
    env = {"DD_AGENT_HOST": "10.1.2.3", "DD_DOGSTATSD_PORT": "18125", "DD_TAGS": "a:b,c:d"}
    assert parse_statsd(toml, env) == StatsdConfig(
        "10.1.2.3", 18125, tags=("app:faktory", "a:b", "c:d"), source="[metrics]"
    )
    assert parse_statsd(toml, {"DD_AGENT_HOST": "dd"}) == StatsdConfig(
        "dd", 8125, tags=("app:faktory",), source="[metrics]"
    )
    assert parse_statsd({"metrics": {"enabled": True}}, {}) == StatsdConfig(
        "localhost", 8125, source="[metrics]"
    )
    jobs = parse_statsd({"metrics": {"enabled": True, "namespace": "jobs"}}, {})
    assert jobs is not None and jobs.namespace == "jobs."


@pytest.mark.parametrize(
    ("toml", "env", "problem"),
    [
        ({"statsd": {"tags": ["a:b"]}}, {}, 'needs location = "host:port"'),
        ({"statsd": {"location": "localhost"}}, {}, 'must be "host:port"'),
        ({"statsd": {"location": ":8125"}}, {}, 'must be "host:port"'),
        ({"statsd": {"location": "h:99999"}}, {}, "invalid port '99999'"),
        ({"statsd": {"location": "h:1", "tags": ["1abc:x"]}}, {}, "invalid tag '1abc:x'"),
        ({"statsd": {"location": "h:1", "tags": ["a b"]}}, {}, "invalid tag 'a b'"),
        ({"statsd": {"location": "h:1", "tags": "env:x"}}, {}, "must be a list"),
        ({"statsd": {"location": "h:1", "tags": ["host:web1"]}}, {}, "reserved name 'host'"),
        ({"statsd": {"location": "h:1", "tags": ["device:x"]}}, {}, "reserved name 'device'"),
        ({"statsd": {"location": "h:1", "tags": ["source"]}}, {}, "reserved name 'source'"),
        ({"statsd": {"location": "h:1", "tags": ["service:a"]}}, {}, "reserved name 'service'"),
        ({"statsd": {"location": "h:1", "bufferSize": 0}}, {}, "bufferSize must be"),
        ({"statsd": {"location": "h:1", "bufferSize": True}}, {}, "bufferSize must be"),
        ({"statsd": {"location": "h:1", "namespace": 3}}, {}, "namespace must be a string"),
        ({"statsd": {"location": "h:1", "queueLatency": "q"}}, {}, "queueLatency must be"),
        ({"statsd": "h:1"}, {}, "[statsd] must be a table"),
        ({}, {"DD_DOGSTATSD_URL": "unix:///var/run/dsd.socket"}, "udp://host:8125"),
        ({}, {"DD_DOGSTATSD_URL": "udp://h:port"}, "invalid port"),
        ({}, {"DD_DOGSTATSD_URL": "udp://h:1", "DD_TAGS": "bad tag!"}, "in DD_TAGS"),
        ({"metrics": {"enabled": "yes"}}, {}, "enabled must be true or false"),
        ({"metrics": {"enabled": True}}, {"DD_AGENT_HOST": "h", "DD_DOGSTATSD_PORT": "x"}, "port"),
    ],
)
def test_bad_configuration_is_refused(
    toml: dict[str, Any], env: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_statsd(toml, env)
    assert problem in str(caught.value)
    assert str(caught.value).startswith("statsd: ")


def test_server_refuses_to_start_with_bad_statsd_config() -> None:
    with (
        pytest.raises(ConfigError, match="reserved name 'host'"),
        minifaktory.run(toml={"statsd": {"location": "127.0.0.1:9", "tags": ["host:x"]}}),
    ):
        pass  # pragma: no cover


# -------------------------------------------------------------------------- line formats


def test_lines_of_each_event() -> None:
    lines: list[str] = []
    woken: list[bool] = []
    metrics = Metrics()
    statsd = StatsdLines(lines.append, "faktory.", TAGS, wake=lambda: woken.append(True))
    metrics.subscribe(statsd)
    metrics.push("q", "A")
    metrics.push("q", "A")
    metrics.fetch("q", "A")
    metrics.finish("q", "A", 1_234_567_000, failed=False, dead=False)
    metrics.finish("q", "A", 250_000, failed=True, dead=True)
    metrics.expire("q")
    metrics.unique("q", "A", "locked")
    metrics.unique("q", "A", "denied")
    metrics.unique("q", "", "unlocked")
    metrics.cron_push("q", "A")
    t = "|#queue:q,jobtype:A"
    assert woken == [True]  # once, for the first counter since the last drain
    assert lines == [  # timings and histograms go out as they happen
        f"faktory.jobs.perform:1234.567|ms{t}{G}",
        f"faktory.jobs.processed:1234.567|h{t},status:success{G}",
        f"faktory.jobs.perform:0.25|ms{t}{G}",
        f"faktory.jobs.processed:0.25|h{t},status:fail,dead:true{G}",
    ]
    lines.clear()
    statsd.drain()  # counters are summed until the next flush
    assert lines == [
        f"faktory.jobs.pushed:2|c{t}{G}",
        f"faktory.jobs.fetched:1|c{t}{G}",
        f"faktory.jobs.count:2|c{t}{G}",
        f"faktory.jobs.failed:1|c{t}{G}",
        f"faktory.jobs.expired:1|c|#queue:q{G}",
        f"faktory.uniq.lock:1|c{t}{G}",
        f"faktory.uniq.denied:1|c{t}{G}",
        f"faktory.uniq.unlock:1|c|#queue:q{G}",
        f"faktory.cron.push:1|c{t}{G}",
    ]
    lines.clear()
    statsd.drain()
    assert lines == []
    metrics.push("q", "A")
    assert woken == [True, True]


def test_tag_values_cannot_break_a_line() -> None:
    lines: list[str] = []
    statsd = StatsdLines(lines.append, "", [])
    statsd.push("q", "Bad,Type|x#y\nz")
    statsd.drain()
    assert lines == ["jobs.pushed:1|c|#queue:q,jobtype:Bad_Type_x_y_z"]


def test_numbers() -> None:
    assert [number(0), number(0.0), number(1500.0), number(0.25), number(1e-9), number(12)] == [
        "0", "0", "1500", "0.25", "0", "12",
    ]  # fmt: skip


# -------------------------------------------------------------------------- the sender


def test_batches_by_count_by_size_and_by_time(receiver: Receiver) -> None:
    async def main() -> UdpSender:
        sender = UdpSender("127.0.0.1", receiver.port, 3, asyncio.get_running_loop())
        assert await sender.resolve()
        for i in range(7):
            sender.add(f"m:{i}|c")
        assert sender.packets == 2 and sender.buffered == 1  # two full packets of 3
        await asyncio.sleep(0.2)  # the 100 ms timer sends the last one
        assert sender.packets == 3 and sender.buffered == 0
        big = "x" * 600 + ":1|c"
        sender.buffer_size = 100
        for _ in range(5):
            sender.add(big)
        sender.close()
        return sender

    sender = asyncio.run(main())
    assert sender.sent == 12 and sender.dropped == 0
    received = [receiver.sock.recv(65536) for _ in range(sender.packets)]
    assert received[:3] == [b"m:0|c\nm:1|c\nm:2|c", b"m:3|c\nm:4|c\nm:5|c", b"m:6|c"]
    assert [p.count(b"\n") + 1 for p in received[3:]] == [2, 2, 1]
    assert all(len(p) <= MAX_PACKET for p in received)


def test_send_errors_are_counted_never_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> UdpSender:
        sender = UdpSender("127.0.0.1", 9, 2, asyncio.get_running_loop())
        assert await sender.resolve()
        assert sender.sock is not None

        def refuse(data: bytes, address: Any) -> int:
            raise BlockingIOError(11, "Resource temporarily unavailable")

        monkeypatch.setattr(sender, "sock", _FailingSocket(sender.sock, refuse))
        for i in range(4):
            sender.add(f"m:{i}|c")
        sender.close()
        return sender

    sender = asyncio.run(main())
    assert (sender.errors, sender.dropped, sender.sent) == (2, 4, 0)
    assert "temporarily unavailable" in sender.last_error


class _FailingSocket:
    def __init__(self, sock: socket.socket, sendto: Any) -> None:
        self._sock = sock
        self.sendto = sendto

    def close(self) -> None:
        self._sock.close()


def test_unresolvable_host_is_a_warning_and_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> UdpSender:
        sender = UdpSender("no-such-host.invalid", 8125, 1, asyncio.get_running_loop())
        assert not await sender.resolve()
        sender.add("m:1|c")  # dropped; the next try is not due yet
        assert sender._resolving is None
        sender._retry_at = 0.0
        sender.host = "127.0.0.1"  # as if the name resolved now
        sender.add("m:2|c")
        assert sender._resolving is not None
        await sender._resolving
        sender.add("m:3|c")
        sender.close()
        return sender

    with caplog.at_level(logging.WARNING, logger="minifaktory.statsd"):
        sender = asyncio.run(main())
    assert (sender.dropped, sender.sent) == (2, 1)
    assert "cannot resolve no-such-host.invalid" in caplog.text


# -------------------------------------------------------------------------- over the wire


def test_job_lifecycle_lines(
    statsd_server: tuple[RunningServer, WireClient], receiver: Receiver, clock: FakeClock
) -> None:
    srv, c = statsd_server
    assert c.call("PUSH " + job(jid="ok-job-0001")) == b"+OK\r\n"
    assert c.call("FETCH default").startswith(b"$")
    clock.advance(1.5)
    assert c.call('ACK {"jid":"ok-job-0001"}') == b"+OK\r\n"
    assert receiver.events(3, 2) == (
        {
            f"faktory.jobs.pushed|c{T}{G}": 1,
            f"faktory.jobs.fetched|c{T}{G}": 1,
            f"faktory.jobs.count|c{T}{G}": 1,
        },
        [
            f"faktory.jobs.perform:1500|ms{T}{G}",
            f"faktory.jobs.processed:1500|h{T},status:success{G}",
        ],
    )
    c.call("PUSH " + job(jid="retry-job-01"))
    c.call("PUSH " + job(jid="dead-job-001", queue="low", jobtype="Doomed", retry=-1))
    c.call("FETCH default")
    c.call("FETCH low")
    clock.advance(0.25)
    assert c.call('FAIL {"jid":"retry-job-01","errtype":"E","message":"m"}') == b"+OK\r\n"
    assert c.call('FAIL {"jid":"dead-job-001","errtype":"E","message":"m"}') == b"+OK\r\n"
    low = "|#queue:low,jobtype:Doomed"
    names = ("pushed", "fetched", "count", "failed")
    counters = {f"faktory.jobs.{name}|c{tags}{G}": 1 for name in names for tags in (T, low)}
    assert receiver.events(8, 4) == (
        counters,
        [
            f"faktory.jobs.perform:250|ms{T}{G}",
            f"faktory.jobs.processed:250|h{T},status:fail,dead:false{G}",
            f"faktory.jobs.perform:250|ms{low}{G}",
            f"faktory.jobs.processed:250|h{low},status:fail,dead:true{G}",
        ],
    )
    assert srv.info()["faktory"]["sets"]["dead"] == 1


def test_counters_are_summed_between_flushes(
    statsd_server: tuple[RunningServer, WireClient], receiver: Receiver
) -> None:
    _, c = statsd_server
    batch = [json.loads(job(jid=f"burst-job-{i:04d}")) for i in range(500)]
    assert c.call("PUSHB " + json.dumps(batch)) == b"$2\r\n{}\r\n"
    assert receiver.lines(1) == [f"faktory.jobs.pushed:500|c{T}{G}"]


def test_unique_expiring_and_cron_lines(
    statsd_server: tuple[RunningServer, WireClient], receiver: Receiver, clock: FakeClock
) -> None:
    srv, c = statsd_server
    unique = {"unique_for": 60}
    assert c.call("PUSH " + job(jid="unique-0001", queue="u", custom=unique)) == b"+OK\r\n"
    assert c.call("PUSH " + job(jid="unique-0002", queue="u", custom=unique)).startswith(
        b"-NOTUNIQUE"
    )
    c.call("FETCH u")
    c.call('ACK {"jid":"unique-0001"}')
    u = "|#queue:u,jobtype:Thing"
    assert receiver.events(6, 2) == (
        {
            f"faktory.uniq.lock|c{u}{G}": 1,
            f"faktory.jobs.pushed|c{u}{G}": 1,  # the refused push is not counted as pushed
            f"faktory.uniq.denied|c{u}{G}": 1,
            f"faktory.jobs.fetched|c{u}{G}": 1,
            f"faktory.uniq.unlock|c|#queue:u{G}": 1,
            f"faktory.jobs.count|c{u}{G}": 1,
        },
        [f"faktory.jobs.perform:0|ms{u}{G}", f"faktory.jobs.processed:0|h{u},status:success{G}"],
    )
    expires = format_ns(clock.now_ns() + 2 * 10**9)
    for jid, queue in (("expiring-01", "x"), ("expiring-02", "x"), ("expiring-03", "y")):
        c.call("PUSH " + job(jid=jid, queue=queue, custom={"expires_at": expires}))
    clock.advance(3)
    assert c.call("FETCH x") == b"$-1\r\n"  # both expired while waiting: dropped by FETCH
    srv.run_due_tasks()  # Expired sweeps queue y; Cron registers its entry
    clock.advance(60)
    srv.run_due_tasks()  # Cron fires
    cron = "|#queue:cron,jobtype:Minutely"
    assert receiver.events(8, 0) == (
        {
            f"faktory.jobs.pushed|c|#queue:x,jobtype:Thing{G}": 2,
            f"faktory.jobs.pushed|c|#queue:y,jobtype:Thing{G}": 1,
            f"faktory.jobs.expired|c|#queue:x{G}": 2,
            f"faktory.jobs.expired|c|#queue:y{G}": 1,
            f"faktory.jobs.pushed|c{cron}{G}": 1,
            f"faktory.cron.push|c{cron}{G}": 1,
        },
        [],
    )
    assert srv.info()["faktory"]["total_expired"] == 3


def test_gauges(
    statsd_server: tuple[RunningServer, WireClient], receiver: Receiver, clock: FakeClock
) -> None:
    srv, c = statsd_server
    for i in range(3):
        c.call("PUSH " + job(jid=f"gauge-job-{i}"))
    c.call("PUSH " + job(jid="gauge-job-q", queue="q2", at=format_ns(clock.now_ns() + 10**12)))
    c.call("FETCH default")
    clock.advance(2)
    statsd = srv.server.statsd
    assert statsd is not None

    async def lines() -> list[str]:
        return statsd.gauge_lines()

    expected = [
        f"faktory.ops.connections:1|g|#{G[1:]}",
        f"faktory.jobs.working:1|g|#{G[1:]}",
        f"faktory.jobs.scheduled:1|g|#{G[1:]}",
        f"faktory.jobs.retries:0|g|#{G[1:]}",
        f"faktory.jobs.dead:0|g|#{G[1:]}",
        f"faktory.jobs.enqueued:2|g|#queue:default{G}",
        f"faktory.jobs.current_latency:2|g|#queue:default{G}",
        f"faktory.jobs.latency:2|h|#queue:default{G}",
    ]
    assert srv.call(lines()) == expected
    receiver.events(5, 0)  # the job events so far
    srv.run_due_tasks()
    got = [line for line in receiver.lines(len(expected), gauges=True) if _is_gauge(line)]
    starts = [i for i, line in enumerate(got) if line.startswith("faktory.ops.connections:")]
    batches = [got[i : i + len(expected)] for i in starts]  # the runner may send some too
    assert expected in batches
    assert srv.info()["faktory"]["tasks"]["Statsd"]["cycles"] >= 1


def test_queue_latency_list_and_folded_queues(receiver: Receiver) -> None:
    toml = {"statsd": {"location": f"127.0.0.1:{receiver.port}", "queueLatency": ["b", "nope"]}}
    with minifaktory.run(toml=toml) as srv:
        c = WireClient(srv.host, srv.port)
        c.call("HELLO {}")
        statsd = srv.server.statsd
        assert statsd is not None
        statsd.services.broker.metrics.max_labels = 1  # only "a" keeps its own label
        for queue in ("a", "b"):
            c.call("PUSH " + job(jid=f"latency-{queue}", queue=queue))

        async def lines() -> list[str]:
            return statsd.gauge_lines()

        names = [line.split("|#")[0].split(":")[0] + " " + line.split("|#")[-1]
                 for line in srv.call(lines())[5:]]  # fmt: skip
        c.close()
    assert names == [
        "faktory.jobs.enqueued queue:a",
        "faktory.jobs.enqueued queue:other",
        "faktory.jobs.current_latency queue:other",  # b, folded; "nope" does not exist
        "faktory.jobs.latency queue:other",
    ]


def test_unreachable_statsd_never_slows_or_fails_jobs() -> None:
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nobody listens there: the kernel answers with ICMP port unreachable
    with minifaktory.run(toml={"statsd": {"location": f"127.0.0.1:{port}"}}) as srv:
        c = WireClient(srv.host, srv.port)
        c.call("HELLO {}")
        for i in range(200):
            assert c.call("PUSH " + job(jid=f"unreachable-{i:04d}")) == b"+OK\r\n"
            reply = c.call("FETCH default")
            jid = json.loads(reply.split(b"\r\n")[1])["jid"]
            assert c.call(json.dumps({"jid": jid}).join(["ACK ", ""])) == b"+OK\r\n"
        srv.run_due_tasks()
        c.close()
        assert srv.info()["faktory"]["total_processed"] == 200
        sender = srv.server.statsd.sender  # type: ignore[union-attr]
    assert sender.closed and sender.sent + sender.dropped >= 200 * 2  # 2 samples per job


def test_unresolvable_host_at_start_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    toml = {"statsd": {"location": "no-such-host.invalid:8125"}}
    with (
        caplog.at_level(logging.WARNING, logger="minifaktory.statsd"),
        minifaktory.run(toml=toml) as srv,
    ):
        c = WireClient(srv.host, srv.port)
        c.call("HELLO {}")
        assert c.call("PUSH " + job()) == b"+OK\r\n"
        assert c.call("FETCH default").startswith(b"$")
        c.close()
        sender = srv.server.statsd.sender  # type: ignore[union-attr]
    assert "statsd: cannot resolve no-such-host.invalid" in caplog.text
    assert sender.sock is None and sender.dropped >= 2


def test_dd_tags_may_carry_datadogs_own_names_and_the_command_line_reads_them(
    tmp_path: Any,
) -> None:
    from minifaktory.config import load_config

    env = {"DD_DOGSTATSD_URL": "udp://dd-host:8126", "DD_TAGS": "service:api,env:prod",
           "HOME": str(tmp_path)}  # fmt: skip
    config = load_config(["--db", str(tmp_path / "x.db")], env)
    assert config.statsd is not None
    assert (config.statsd.host, config.statsd.port) == ("dd-host", 8126)
    assert config.statsd.tags == ("service:api", "env:prod")
    assert load_config(["--db", str(tmp_path / "x.db")], {"HOME": str(tmp_path)}).statsd is None
