"""A Faktory worker for Python: handlers by jobtype, on anyio, with the whole contract.

    worker = Worker(concurrency=10, queues=["critical", "default"])

    @worker.register("SendEmail")
    async def send_email(to: str) -> None: ...      # async: on the event loop

    @worker.register("Resize")
    def resize(path: str, width: int) -> None: ...   # sync: in a thread

    worker.run()     # or: await worker.serve(); or: minifaktory worker app:worker

How it keeps Faktory's worker contract: one connection says HELLO with the
worker's wid, hostname, pid and labels and BEATs every 15 s with its RSS until
the process exits; ``concurrency`` processors each FETCH on their own
connection, run the handler and ACK it, or FAIL it with the exception's class,
message and backtrace. ``quiet`` (from a BEAT reply, or SIGTSTP) stops fetching;
``terminate`` (from a BEAT reply, SIGTERM or SIGINT) also stops fetching, waits
up to ``shutdown_timeout`` seconds (default 25, or ``MINIFAKTORY_SHUTDOWN_TIMEOUT``)
for jobs in flight, and FAILs the ones still running so they are retried.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import os
import random
import signal
import threading
import traceback
import uuid
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel

from minifaktory.client import AsyncClient, ConnectionFailed, FaktoryError, url_from_env

log = logging.getLogger(__name__)

BEAT_SECONDS = 15.0
DEFAULT_SHUTDOWN_TIMEOUT = 25.0

Handler = Callable[..., Any]
H = TypeVar("H", bound=Handler)
#: ``middleware(job, call_next)``: wraps every job; ``await call_next()`` runs the rest.
Middleware = Callable[["Job", Callable[[], Awaitable[Any]]], Awaitable[Any]]

_current: contextvars.ContextVar[Job] = contextvars.ContextVar("minifaktory_job")


def current_job() -> Job:
    """The job the calling handler is running (sync handlers too)."""
    return _current.get()


@contextlib.contextmanager
def running(job: Job) -> Iterator[Job]:
    """Make ``job`` what ``current_job()`` returns inside the block."""
    token = _current.set(job)
    try:
        yield job
    finally:
        _current.reset(token)


@dataclass
class Job:
    """A fetched job and what a handler may do about it."""

    payload: dict[str, Any]
    #: Runs a command on a connection of the worker's (``Worker._side_call``).
    side: Callable[[Callable[[AsyncClient], Awaitable[Any]]], Awaitable[Any]]
    logger: logging.LoggerAdapter[logging.Logger] = field(init=False)

    def __post_init__(self) -> None:
        self.logger = logging.LoggerAdapter(log, {"jid": self.jid, "jobtype": self.jobtype})

    @property
    def jid(self) -> str:
        return str(self.payload["jid"])

    @property
    def jobtype(self) -> str:
        return str(self.payload.get("jobtype", ""))

    @property
    def args(self) -> list[Any]:
        return list(self.payload.get("args") or [])

    @property
    def queue(self) -> str:
        return str(self.payload.get("queue") or "default")

    @property
    def retry_count(self) -> int:
        """How many times the job failed before (0 on the first run)."""
        failure = self.payload.get("failure") or {}
        return int(failure.get("retry_count", -1)) + 1 if failure else 0

    @property
    def retries_remaining(self) -> int:
        retry = self.payload.get("retry")
        total = 25 if retry is None else int(retry)
        return max(total - self.retry_count, 0)

    async def checkin(self, desc: str | None = None, percent: int | None = None) -> None:
        """Report progress (TRACK SET; shown on the Busy page for tracked jobs)."""
        await self.side(lambda c: c.track_set(self.jid, percent, desc))

    async def extend_reservation(self, until: str) -> None:
        """Keep the reservation until ``until`` (RFC 3339), for a job that runs long."""
        await self.side(lambda c: c.track_set(self.jid, reserve_until=until))

    def checkin_sync(self, desc: str | None = None, percent: int | None = None) -> None:
        """``checkin`` for sync handlers (which run in a worker thread)."""
        _from_thread(self.checkin, desc, percent)

    def extend_reservation_sync(self, until: str) -> None:
        """``extend_reservation`` for sync handlers."""
        _from_thread(self.extend_reservation, until)


def _from_thread(call: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
    try:
        anyio.from_thread.run(call, *args)
    except RuntimeError:  # not in a worker thread of an event loop (drain in a test)
        anyio.run(call, *args)


class Worker:
    """Runs registered handlers for the jobs of some queues."""

    def __init__(
        self,
        url: str | None = None,
        *,
        concurrency: int = 10,
        queues: Sequence[str] = ("default",),
        weights: Mapping[str, int] | None = None,
        labels: Iterable[str] = ("python",),
        shutdown_timeout: float | None = None,
        middleware: Iterable[Middleware] = (),
        environ: Mapping[str, str] | None = None,
        beat_interval: float = BEAT_SECONDS,
    ) -> None:
        env = os.environ if environ is None else environ
        self.url = url if url is not None else url_from_env(env)
        self.concurrency = max(1, concurrency)
        self.queues = list(queues)
        #: Weighted order: each FETCH lists the queues shuffled by weight (else strict order).
        self.weights = dict(weights) if weights else None
        self.labels = list(labels)
        self.shutdown_timeout = (
            shutdown_timeout
            if shutdown_timeout is not None
            else float(env.get("MINIFAKTORY_SHUTDOWN_TIMEOUT") or DEFAULT_SHUTDOWN_TIMEOUT)
        )
        self.middleware = list(middleware)
        self.beat_interval = beat_interval
        self.wid = uuid.uuid4().hex[:16]
        self.handlers: dict[str, Handler] = {}
        self.state = "running"  # running → quiet → terminate
        self.in_flight: dict[str, Job] = {}
        self.processed = self.failed = 0
        #: Sync handlers still running in their threads after the shutdown deadline.
        self.abandoned = 0
        # Made by serve(), on the event loop that runs the worker.
        self._stopping: anyio.Event | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._loop_thread = 0
        self._side: AsyncClient | None = None
        self._side_lock: anyio.Lock | None = None

    # -- set-up ----------------------------------------------------------------------

    @overload
    def register(self, jobtype: str) -> Callable[[H], H]: ...

    @overload
    def register(self, jobtype: str, handler: H) -> H: ...

    def register(self, jobtype: str, handler: H | None = None) -> H | Callable[[H], H]:
        """``worker.register("T", fn)`` or ``@worker.register("T")``."""
        if handler is not None:
            self.handlers[jobtype] = handler
            return handler

        def decorate(fn: H) -> H:
            self.handlers[jobtype] = fn
            return fn

        return decorate

    # -- life cycle --------------------------------------------------------------------

    def run(self, *, handle_signals: bool = True) -> None:
        """Work until terminated (blocking)."""
        anyio.run(lambda: self.serve(handle_signals=handle_signals))

    def quiet(self) -> None:
        """Stop fetching; keep beating and finish what runs."""
        if self.state == "running":
            self.state = "quiet"
            log.info("worker %s: quiet, no new jobs", self.wid)

    def terminate(self) -> None:
        """Stop fetching, finish or FAIL what runs within the grace period, and exit.
        Safe to call from any thread."""
        if self.state != "terminate":
            self.state = "terminate"
            log.info("worker %s: terminating", self.wid)
        stopping, token = self._stopping, self._token
        if stopping is None or token is None:
            return  # serve() will see the state
        if threading.get_ident() == self._loop_thread:
            stopping.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop has already finished
                anyio.from_thread.run_sync(stopping.set, token=token)

    async def serve(self, *, handle_signals: bool = False) -> None:
        """Work until ``terminate()``, a BEAT reply or a signal says to stop."""
        self._stopping, self._side_lock = anyio.Event(), anyio.Lock()
        self._token = anyio.lowlevel.current_token()
        self._loop_thread = threading.get_ident()
        if self.state == "terminate":
            self._stopping.set()
        beat = AsyncClient(self.url, wid=self.wid, labels=self.labels)
        await beat.connect()
        self._side = beat
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._beat_forever)
                if handle_signals:
                    outer.start_soon(self._watch_signals)
                await self._process_until_stopped()
                outer.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if self._side is not None:
                    await self._side.close()
            self._side = None
            self._stopping = self._token = None

    async def _process_until_stopped(self) -> None:
        async with anyio.create_task_group() as processors:
            for _ in range(self.concurrency):
                processors.start_soon(self._processor)
            assert self._stopping is not None
            await self._stopping.wait()
            with anyio.move_on_after(self.shutdown_timeout):
                while self.in_flight:
                    await anyio.sleep(0.05)
            unfinished = list(self.in_flight.values())
            processors.cancel_scope.cancel()
        if unfinished:
            sync = [j for j in unfinished if not _is_async(self.handlers.get(j.jobtype))]
            self.abandoned = len(sync)
            await self._fail_unfinished(unfinished)

    async def _fail_unfinished(self, unfinished: list[Job]) -> None:
        """Jobs still running at the deadline are FAILed, so the server retries them."""
        with anyio.CancelScope(shield=True):
            for job in unfinished:
                log.warning(
                    "worker %s: job %s still running at shutdown: failed", self.wid, job.jid
                )
                try:
                    await self._side_call(functools.partial(_fail_shutdown, jid=job.jid))
                except FaktoryError as exc:
                    log.error("could not FAIL %s: %s", job.jid, exc)
                self.in_flight.pop(job.jid, None)

    async def _side_call(self, call: Callable[[AsyncClient], Awaitable[Any]]) -> Any:
        """A command on the heartbeat connection (TRACK SET, FAIL at shutdown)."""
        if self._side is None:
            raise FaktoryError("the worker is not running")
        if self._side_lock is None:
            raise FaktoryError("the worker is not running")
        async with self._side_lock:
            try:
                return await call(self._side)
            except ConnectionFailed:
                # The server went away (restart, network): reconnect for the next call.
                fresh = AsyncClient(self.url, wid=self.wid, labels=self.labels)
                with anyio.move_on_after(5):
                    await fresh.connect()
                    old, self._side = self._side, fresh
                    await old.close()
                raise

    async def _beat_forever(self) -> None:
        """BEAT every 15 s until the process exits; obey quiet and terminate."""
        while True:
            await anyio.sleep(self.beat_interval)
            try:
                told = "" if self.state == "running" else self.state
                state = await self._side_call(functools.partial(_beat, state=told))
            except FaktoryError as exc:
                log.warning("worker %s: heartbeat failed: %s", self.wid, exc)
                continue
            if state == "quiet":
                self.quiet()
            elif state == "terminate":
                self.terminate()

    async def _watch_signals(self) -> None:
        wanted = [signal.SIGTERM, signal.SIGINT]
        if hasattr(signal, "SIGTSTP"):
            wanted.append(signal.SIGTSTP)
        with anyio.open_signal_receiver(*wanted) as signals:
            async for signum in signals:
                if signum == getattr(signal, "SIGTSTP", None):
                    self.quiet()
                else:
                    self.terminate()

    # -- processing --------------------------------------------------------------------

    def _fetch_order(self) -> list[str]:
        if not self.weights:
            return self.queues
        pool = list(self.queues)
        order: list[str] = []
        while pool:
            pick = random.choices(pool, [max(self.weights.get(q, 1), 1) for q in pool])[0]
            order.append(pick)
            pool.remove(pick)
        return order

    async def _processor(self) -> None:
        async with AsyncClient(self.url, wid=self.wid, labels=self.labels) as client:
            while self.state == "running":
                try:
                    payload = await client.fetch(*self._fetch_order())
                except FaktoryError as exc:
                    log.warning("worker %s: fetch failed: %s", self.wid, exc)
                    await anyio.sleep(1.0)
                    continue
                if payload is None:
                    continue
                job = Job(payload, self._side_call)
                self.in_flight[job.jid] = job
                try:
                    await self._perform(client, job)
                finally:
                    self.in_flight.pop(job.jid, None)

    async def _perform(self, client: AsyncClient, job: Job) -> None:
        token = _current.set(job)
        try:
            await self._call_chain(job)
        except anyio.get_cancelled_exc_class():
            raise  # shutdown: FAILed by _fail_unfinished
        except Exception as exc:
            self.failed += 1
            lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
            backtrace = [line.rstrip() for line in "".join(lines).splitlines()][-30:]
            job.logger.warning("%s failed: %s: %s", job.jobtype, type(exc).__name__, exc)
            with anyio.CancelScope(shield=True):
                await client.fail(job.jid, type(exc).__name__, str(exc), backtrace)
        else:
            self.processed += 1
            with anyio.CancelScope(shield=True):
                await client.ack(job.jid)
        finally:
            _current.reset(token)

    async def _call_chain(self, job: Job) -> Any:
        handler = self.handlers.get(job.jobtype)

        async def innermost() -> Any:
            if handler is None:
                raise LookupError(f"no handler registered for jobtype {job.jobtype!r}")
            if _is_async(handler):
                return await handler(*job.args)
            context = contextvars.copy_context()
            # Abandoned (left to finish on its own) if the shutdown deadline passes: the
            # job is FAILed for a retry and the process can exit.
            return await anyio.to_thread.run_sync(
                lambda: context.run(handler, *job.args), abandon_on_cancel=True
            )

        call: Callable[[], Awaitable[Any]] = innermost
        for mw in reversed(self.middleware):
            call = _wrap(mw, job, call)
        return await call()


def _wrap(
    mw: Middleware, job: Job, call_next: Callable[[], Awaitable[Any]]
) -> Callable[[], Awaitable[Any]]:
    async def step() -> Any:
        return await mw(job, call_next)

    return step


async def _fail_shutdown(client: AsyncClient, jid: str) -> None:
    await client.fail(jid, "Shutdown", "the worker shut down before the job finished")


async def _beat(client: AsyncClient, state: str) -> str:
    return await client.beat(state, rss_kb())


def _is_async(handler: Handler | None) -> bool:
    return inspect.iscoroutinefunction(handler)


def rss_kb() -> int:
    """This process's resident memory in KiB (0 where it cannot be read)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return 0


__all__ = ["Job", "Worker", "current_job", "rss_kb", "running"]
