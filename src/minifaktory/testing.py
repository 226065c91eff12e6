"""pytest plugin: a real Faktory-compatible server for an app's test suite.

Fixtures (registered through the ``pytest11`` entry point):

* ``faktory_server`` (session): one minifaktory on 127.0.0.1, port 0, temporary
  database, time-travel clock.
* ``faktory`` (function): the same server wiped clean for each test (FLUSH, clock
  back to real time), ``FAKTORY_URL`` set for the code under test, and helpers:
  ``jobs(where)``, ``assert_enqueued(jobtype, args, queue)``, ``drain(handlers)``
  and ``travel(seconds)``.
* ``faktory_url``: the session server's URL.
* ``faktory_server_factory``: ``factory(password=..., toml=..., durability=...)``
  for a server of a test's own.

``pytest --faktory-url tcp://host:7419`` runs the same tests against an external
server instead (real Faktory included); what only the embedded server can do
(listing jobs, time travel) skips there.
"""

from __future__ import annotations

import contextlib
import inspect
import traceback
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

import anyio
import msgspec
import pytest

from minifaktory.app import RunningServer, run
from minifaktory.client import AsyncClient, Client
from minifaktory.clock import TravelClock
from minifaktory.store import SetName
from minifaktory.store.reader import Reader
from minifaktory.worker import Job, Worker, running

SETS = {"scheduled": SetName.SCHEDULED, "retries": SetName.RETRIES, "dead": SetName.DEAD,
        "morgue": SetName.DEAD}  # fmt: skip


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("minifaktory")
    group.addoption(
        "--faktory-url",
        default=None,
        help="run the faktory fixtures against this server instead of an embedded one",
    )


class Faktory:
    """What the ``faktory`` fixture hands a test."""

    def __init__(self, url: str, server: RunningServer | None, clock: TravelClock | None) -> None:
        self.url = url
        self.server = server
        self.clock = clock
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        """A connection for the test (closed after it)."""
        if self._client is None:
            self._client = Client(self.url)
        return self._client

    def push(self, job: Mapping[str, Any]) -> str:
        """PUSH a job; its jid."""
        return self.client.push(job)

    def reset(self) -> None:
        """Everything gone, clock back to real time."""
        if self.server is not None:
            services = self.server.server.services
            assert services is not None
            self.server.call(services.broker.flush())
            if self.clock is not None:
                self.clock.reset()
        else:
            self.client.flush()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- looking ------------------------------------------------------------------------

    def jobs(self, where: str = "default") -> list[dict[str, Any]]:
        """The jobs of a queue (in fetch order) or of a set (``scheduled``, ``retries``,
        ``dead``), as dicts."""
        server = self._embedded("listing jobs")
        reader = Reader(server.db_path)
        try:
            rows = list(
                reader.whole_set(SETS[where]) if where in SETS else reader.whole_queue(where)
            )
        finally:
            reader.close()
        return [msgspec.json.decode(row.payload) for row in rows]

    def assert_enqueued(
        self, jobtype: str, args: Sequence[Any] | None = None, queue: str | None = None
    ) -> dict[str, Any]:
        """The one waiting job of ``jobtype`` (with these args, in this queue); fails the
        test, listing what is there, when there is not exactly one."""
        info = self.client.info()["faktory"]
        queues = [queue] if queue is not None else sorted(info["queues"])
        waiting = [job for name in queues for job in self.jobs(name)]
        found = [
            job for job in waiting
            if job.get("jobtype") == jobtype and (args is None or job.get("args") == list(args))
        ]  # fmt: skip
        if len(found) != 1:
            listed = ", ".join(f"{j.get('jobtype')}{tuple(j.get('args', []))}" for j in waiting)
            wanted = f"{jobtype}{tuple(args) if args is not None else ''}"
            pytest.fail(
                f"expected one {wanted} job in {queue or 'any queue'}, found {len(found)};"
                f" waiting: {listed or 'nothing'}"
            )
        return found[0]

    # -- running ------------------------------------------------------------------------

    def drain(
        self,
        handlers: Mapping[str, Callable[..., Any]] | Worker,
        queues: Sequence[str] | None = None,
        *,
        max_jobs: int = 10_000,
    ) -> int:
        """Run what is queued (and what those jobs push) through ``handlers`` right here,
        ACKing or FAILing each as a worker would; how many ran."""
        table = handlers.handlers if isinstance(handlers, Worker) else dict(handlers)
        ran = 0
        client = self.client
        while ran < max_jobs:
            sizes = client.info()["faktory"]["queues"]
            names = [q for q in (queues or sorted(sizes)) if sizes.get(q, 0) > 0]
            if not names:
                return ran
            job = client.fetch(*names)
            if job is None:
                return ran
            ran += 1
            handler = table.get(str(job.get("jobtype")))
            try:
                if handler is None:
                    raise LookupError(f"no handler for jobtype {job.get('jobtype')!r}")
                with running(Job(job, self._side)):
                    result = handler(*job.get("args", []))
                    if inspect.isawaitable(result):
                        anyio.run(_awaited, result)
            except Exception as exc:
                lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
                client.fail(job["jid"], type(exc).__name__, str(exc), "".join(lines).splitlines())
            else:
                client.ack(job["jid"])
        return ran

    async def _side(self, call: Callable[[AsyncClient], Awaitable[Any]]) -> Any:
        """A job's own commands (``checkin``) from a drained handler."""
        async with AsyncClient(self.url) as client:
            return await call(client)

    def travel(self, seconds: float) -> None:
        """Move the server's clock forward and run its periodic tasks: scheduled jobs,
        retries, expiring jobs, reservations and cron come due without sleeping."""
        server = self._embedded("time travel")
        assert self.clock is not None
        self.clock.advance(seconds)
        server.run_due_tasks()

    def _embedded(self, what: str) -> RunningServer:
        if self.server is None:
            pytest.skip(f"{what} needs the embedded server (not --faktory-url)")
        return self.server


async def _awaited(result: Any) -> None:
    await result


@pytest.fixture(scope="session")
def _faktory_session(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[RunningServer | None, TravelClock | None, str]]:
    external = request.config.getoption("--faktory-url")
    if external:
        yield None, None, str(external)
        return
    clock = TravelClock()
    with run(clock=clock) as server:
        yield server, clock, str(server.url)


@pytest.fixture(scope="session")
def faktory_server(
    _faktory_session: tuple[RunningServer | None, TravelClock | None, str],
) -> RunningServer:
    """The session's minifaktory server (skipped under ``--faktory-url``)."""
    server = _faktory_session[0]
    if server is None:
        pytest.skip("an external server was given with --faktory-url")
    return server


@pytest.fixture(scope="session")
def faktory_url(_faktory_session: tuple[RunningServer | None, TravelClock | None, str]) -> str:
    """``FAKTORY_URL`` of the session's server."""
    return _faktory_session[2]


@pytest.fixture
def faktory(
    _faktory_session: tuple[RunningServer | None, TravelClock | None, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Faktory]:
    """A clean server for this test, ``FAKTORY_URL`` pointing at it, and helpers."""
    server, clock, url = _faktory_session
    helper = Faktory(url, server, clock)
    helper.reset()
    monkeypatch.setenv("FAKTORY_URL", url)
    monkeypatch.delenv("FAKTORY_PROVIDER", raising=False)
    try:
        yield helper
    finally:
        helper.close()


@pytest.fixture
def faktory_server_factory() -> Iterator[Callable[..., RunningServer]]:
    """``factory(**options)``: a server of the test's own (password, toml, durability …),
    stopped after the test."""
    with contextlib.ExitStack() as stack:

        def factory(**options: Any) -> RunningServer:
            server: RunningServer = stack.enter_context(run(**options))
            return server

        yield factory
