"""A thread that runs one fsync at a time for the event loop.

Cheaper than an executor round trip: one lock hand-off to start, one
``call_soon_threadsafe`` to report, and nothing else crosses the threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

Done = Callable[[BaseException | None], None]


class Syncer:
    """Runs ``sync`` on its own thread when asked; reports on the loop through ``done``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sync: Callable[[], None]) -> None:
        self._loop = loop
        self._sync = sync
        self._go = threading.Lock()
        self._go.acquire()
        self._done: Done | None = None
        self._closing = False
        self._thread: threading.Thread | None = None

    def start(self, done: Done) -> None:
        """Begin a sync; ``done(error or None)`` runs on the loop when it ends.

        One at a time: call again only after ``done`` ran.
        """
        assert self._done is None, "a sync is already running"
        self._done = done
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="minifaktory-fsync", daemon=True)
            self._thread.start()
        self._go.release()

    def close(self) -> None:
        """Let the running sync finish, then end the thread (call off the loop)."""
        thread = self._thread
        if thread is None:
            return
        self._closing = True
        if self._done is None:
            self._go.release()
        thread.join()
        self._thread = None

    def _run(self) -> None:
        while True:
            self._go.acquire()
            done = self._done
            if done is None:  # woken to stop
                return
            error: BaseException | None = None
            try:
                self._sync()
            except Exception as exc:
                error = exc
            self._done = None
            try:
                self._loop.call_soon_threadsafe(done, error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return
            if self._closing:
                return
