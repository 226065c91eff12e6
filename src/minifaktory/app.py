"""Composition: one task group owns the store, broker, listeners and periodic tasks.

* ``Server.run(task_status=...)`` for anyio's ``TaskGroup.start`` (readiness, no sleeps);
* ``serve(...)``: ``async with`` inside the caller's event loop;
* ``run(...)``: ``with`` from synchronous code, on a background thread;
* ``run_forever(config)``: the command line's blocking entry point.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future as ThreadFuture
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from minifaktory.broker import Broker
from minifaktory.clock import Clock, SystemClock
from minifaktory.commands import Services, Stats, current_state
from minifaktory.config import (
    DEFAULT_PORT,
    DEFAULT_WEB_PORT,
    Config,
    cron_sources,
    read_conf_d,
    split_binding,
)
from minifaktory.cron import parse_cron
from minifaktory.errors import ConfigError
from minifaktory.governance import Governor
from minifaktory.limits import parse_limits
from minifaktory.loops import TaskRunner, standard_tasks
from minifaktory.metrics import parse_statsd
from minifaktory.server import Listener
from minifaktory.shutdown import to_the_end
from minifaktory.statsd import Statsd
from minifaktory.store import Store
from minifaktory.throttles import parse_throttles
from minifaktory.tls import server_context
from minifaktory.workers import Registry

if TYPE_CHECKING:
    from minifaktory.webui.port import WebPort

log = logging.getLogger(__name__)

#: macOS refuses a soft open-file limit above this when the hard limit is "unlimited".
OPEN_MAX = 10240
#: Descriptors kept for things other than client connections (database, listeners, Web UI).
RESERVED_FILES = 64


def raise_open_file_limit() -> int | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit, as Go (and so Faktory) does since 1.19.

    Returns the soft limit in force afterwards (None where the platform has none);
    a failure keeps the old limit.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    unlimited = resource.RLIM_INFINITY
    targets = [hard]
    if hard == unlimited or hard > OPEN_MAX:
        targets.append(OPEN_MAX)
    for target in targets:
        if soft == unlimited or (target != unlimited and target <= soft):
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            continue
        return target
    return soft


def check_open_file_limit(config: Config, limit: int | None) -> None:
    """Warn when ``max_connections`` cannot be reached under the open-file limit."""
    if limit is None or limit < 0:  # unknown, or RLIM_INFINITY
        return
    if config.max_connections + RESERVED_FILES > limit:
        log.warning(
            "max_connections is %d but this process may open only %d files: connections "
            "past about %d will fail (raise the limit: ulimit -n, systemd LimitNOFILE=)",
            config.max_connections, limit, max(limit - RESERVED_FILES, 0),
        )  # fmt: skip


class TaskStatus(Protocol):
    """Where ``Server.run`` reports that it serves; anyio's ``TaskStatus`` is one."""

    def started(self, value: Server) -> None: ...


class Server:
    """A minifaktory server; start it with ``run`` inside a task group.

    It runs on plain asyncio (the command needs nothing more, and anyio would
    cost its memory); anyio's task groups on the asyncio backend can host it.
    """

    def __init__(self, config: Config | None = None, *, clock: Clock | None = None) -> None:
        self.config = config or Config()
        self.clock: Clock = clock or SystemClock()
        self.host = ""
        self.port = 0
        self.services: Services | None = None
        self.runner: TaskRunner | None = None
        self.listener: Listener | None = None
        self.statsd: Statsd | None = None
        self.web_port = 0
        #: The TLS context when ``config_dir`` holds a key pair (read once, at start).
        self.tls: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        """A ``FAKTORY_URL`` for clients, with the password when one is set."""
        auth = f":{self.config.password}@" if self.config.password else ""
        scheme, _, rest = self.url_without_password.partition("://")
        return f"{scheme}://{auth}{rest}"

    @property
    def db_path(self) -> Path | str:
        return self.config.resolved_db_path()

    async def run(self, *, task_status: TaskStatus | None = None) -> None:
        """Open the database, listen, report readiness, and serve until cancelled."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise ConfigError("minifaktory runs on asyncio (anyio: its asyncio backend)") from None
        # Environment variables count only through load_config (the command line):
        # servers started in-process by run()/serve() read conf.d alone.
        statsd_config = self.config.statsd or parse_statsd(self.config.toml, environ={})
        self.tls = server_context(self.config.config_dir)
        store = Store(self.db_path, self.config.durability, serve=True)
        listener: Listener | None = None
        try:
            throttles = parse_throttles(self.config.toml).values()
            broker = Broker(store, self.clock, self.config.fetch_timeout, throttles)
            registry = Registry()
            cron = parse_cron(self.config.toml, self.config.cron_sources)
            stats = Stats(self.clock.now_ns())
            governor = Governor(registry, broker, parse_limits(self.config.toml))
            services = Services(broker, registry, self.clock, stats, cron=cron, governor=governor)
            tasks = standard_tasks(broker, registry, lambda: services.cron, governor)
            if statsd_config is not None:
                self.statsd = Statsd(statsd_config, services)
                await self.statsd.start()
                tasks.append(self.statsd.task())
            runner = TaskRunner(tasks, self.clock)
            services.task_stats = runner.stats
            self.services, self.runner = services, runner
            listener = self.listener = Listener(services, self.config, self.tls)
            host, port = split_binding(self.config.binding, DEFAULT_PORT)
            self.host, self.port = await listener.listen_tcp(host, port)
            if self.config.unix_socket is not None:
                await listener.listen_unix(Path(self.config.unix_socket))
            log.info(
                "minifaktory listening at %s, database %s", self.url_without_password, self.db_path
            )
            async with asyncio.TaskGroup() as tg:
                web = self._web_server(services)
                if web is not None:
                    tg.create_task(web.serve())
                if task_status is not None:
                    task_status.started(self)
                tg.create_task(broker.probe(self.clock.now_ns()))  # prove the file takes writes
                try:
                    await runner.run()
                finally:
                    if web is not None:
                        web.stop()
        finally:
            await to_the_end(self._close(listener, store))

    async def _close(self, listener: Listener | None, store: Store) -> None:
        if listener is not None:
            await listener.close()
        await asyncio.sleep(0)  # let the last group commit run
        if self.statsd is not None:
            self.statsd.close()
        if self.services is not None:
            await asyncio.to_thread(self.services.broker.close)
        store.close()

    def _web_server(self, services: Services) -> WebPort | None:
        """The Web UI on ``-w``'s binding; None when its port is 0 (disabled, as in Faktory)."""
        host, port = split_binding(self.config.web_binding, DEFAULT_WEB_PORT)
        if port == 0 or str(self.db_path) == ":memory:":
            return None
        from minifaktory.webui.port import WebPort  # the web stack loads at its first connection

        try:
            web = WebPort(services, self.config, self.db_path, host, port, tls=self.tls)
        except OSError as exc:
            # The jobs matter more than their pages: keep serving the protocol.
            log.error(
                "Web UI not started: cannot listen on %s (%s); jobs are still served at %s",
                self.config.web_binding, exc.strerror or exc, self.url_without_password,
            )  # fmt: skip
            return None
        self.web_port = web.port
        return web

    def reload(self) -> None:
        """Re-read ``conf.d`` (SIGHUP): cron entries and throttles change; errors keep the old.

        The TLS key pair is read at start only: replacing it needs a restart.
        """
        if self.services is None or self.config.config_dir is None:
            return
        try:
            document = read_conf_d(self.config.config_dir)
            cron = parse_cron(document, cron_sources(self.config.config_dir))
            throttles = parse_throttles(document)
            limits = parse_limits(document)
        except ConfigError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            return
        self.services.cron = cron
        self.services.broker.set_throttles(throttles.values())
        if self.services.governor is not None:
            self.services.governor.limits = limits
        log.info("reloaded %d cron entries and %d throttles", len(cron), len(throttles))

    @property
    def url_without_password(self) -> str:
        """The listening address as a URL, safe to log."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "tcp+tls" if self.tls is not None else "tcp"
        return f"{scheme}://{host}:{self.port}"

    async def run_due_tasks(self) -> None:
        """Run every periodic task once at the clock's current time."""
        assert self.runner is not None, "server is not running"
        await self.runner.run_all()

    def info(self) -> dict[str, Any]:
        """INFO's document (call from the server's event loop)."""
        assert self.services is not None, "server is not running"
        return current_state(self.services)


def _config(config: Config | None, **overrides: Any) -> Config:
    # In-process servers (tests, embedding) get a free port and no Web UI unless asked.
    base = config or Config(binding="127.0.0.1:0", web_binding="127.0.0.1:0")
    fields = {f.name for f in dataclasses.fields(Config)}
    unknown = set(overrides) - fields
    if unknown:
        raise TypeError(f"unknown server option(s): {', '.join(sorted(unknown))}")
    return dataclasses.replace(base, **overrides)


@contextlib.asynccontextmanager
async def serve(
    config: Config | None = None, *, clock: Clock | None = None, **options: Any
) -> AsyncIterator[Server]:
    """Run a server inside the caller's event loop for the ``async with`` block.

    Options are ``Config`` fields (``binding="127.0.0.1:0"`` by default, so a free port).
    """
    import tempfile

    import anyio

    tmp: tempfile.TemporaryDirectory[str] | None = None
    if config is None and "db_path" not in options:
        tmp = tempfile.TemporaryDirectory(prefix="minifaktory-")
        options["db_path"] = Path(tmp.name) / "minifaktory.db"
        options.setdefault("durability", "normal")
    try:
        server = Server(_config(config, **options), clock=clock)
        async with anyio.create_task_group() as tg:
            await tg.start(server.run)
            try:
                yield server
            finally:
                tg.cancel_scope.cancel()
    finally:
        if tmp is not None:
            tmp.cleanup()


class RunningServer:
    """Handle to a server running on a background thread (see ``run``)."""

    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self._loop = loop

    host = property(lambda self: self.server.host)
    port = property(lambda self: self.server.port)
    url = property(lambda self: self.server.url)
    db_path = property(lambda self: self.server.db_path)
    config = property(lambda self: self.server.config)

    def call(self, coro: Any) -> Any:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def run_due_tasks(self) -> None:
        """Run the periodic scanners now, at the server clock's time; blocks until done."""
        self.call(self.server.run_due_tasks())

    def info(self) -> dict[str, Any]:
        """INFO's document as a dict."""

        async def get() -> dict[str, Any]:
            return self.server.info()

        result: dict[str, Any] = self.call(get())
        return result


class _Reloads:
    """Once serving, SIGHUP re-reads ``conf.d``."""

    def __init__(self, server: Server) -> None:
        self._server = server

    def started(self, value: Server) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._server.reload)


def _cancelling(task: asyncio.Task[Any] | None) -> bool:
    """Whether someone cancelled ``task`` itself (not only what it awaited)."""
    return task is not None and task.cancelling() > 0


def _unwrap(exc: BaseException) -> BaseException:
    """The single error inside (nested) exception groups, else the group itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop, or asyncio's own with ``MINIFAKTORY_LOOP=asyncio``."""
    if os.environ.get("MINIFAKTORY_LOOP") == "asyncio":
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


@contextlib.contextmanager
def run(
    config: Config | None = None, *, clock: Clock | None = None, **options: Any
) -> Iterator[RunningServer]:
    """Run a server on a background thread for the ``with`` block.

    With no ``db_path`` the database lives in a temporary directory that is
    removed afterwards. ``server.url`` is ready to use as ``FAKTORY_URL``.
    """
    loop = _new_loop()
    started: ThreadFuture[RunningServer] = ThreadFuture()
    stop = threading.Event()
    stopper: list[asyncio.Event] = []

    async def main() -> None:
        stop_event = asyncio.Event()
        stopper.append(stop_event)
        try:
            async with serve(config, clock=clock, **options) as server:
                started.set_result(RunningServer(server, loop))
                await stop_event.wait()
        except BaseException as exc:
            if not started.done():
                started.set_exception(_unwrap(exc))
            raise

    def thread_main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # reported through ``started`` when start-up fails
            if started.done() and started.exception() is None and not stop.is_set():
                log.error("server thread stopped: %s", exc)
        finally:
            loop.close()

    thread = threading.Thread(target=thread_main, name="minifaktory", daemon=True)
    thread.start()
    handle = started.result()
    try:
        yield handle
    finally:
        stop.set()
        loop.call_soon_threadsafe(stopper[0].set)
        thread.join()


def run_forever(config: Config) -> None:
    """Serve until SIGINT or SIGTERM (the ``minifaktory`` command).

    The command owns its process, so it raises the open-file limit for its
    connections; ``run()`` and ``serve()`` run inside someone else's process
    and leave its limits alone.
    """
    check_open_file_limit(config, raise_open_file_limit())

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = Server(config)
        serving = asyncio.ensure_future(server.run(task_status=_Reloads(server)))
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, serving.cancel)
        try:
            await serving
        except asyncio.CancelledError:
            if not serving.cancelled() or _cancelling(asyncio.current_task()):
                raise
        except BaseExceptionGroup as group:  # a task failed while serving
            raise _unwrap(group) from None
        log.info("minifaktory stopped")

    with asyncio.Runner(loop_factory=_new_loop) as runner:
        runner.run(main())
