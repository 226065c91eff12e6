"""Wake-ups for blocking FETCH, per queue, without polling.

How this works: a FETCH that finds nothing registers one future under each of
its queues and waits on it. ``notify(queue)`` completes the oldest live waiter
of that queue (one job, one wake-up). Everything runs on the event loop thread,
so the check of the store and the registration happen with no gap between
them; a waiter that wakes and finds the job gone simply waits again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable


class Notifier:
    """Per-queue FIFO of parked fetchers."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiters: dict[str, deque[asyncio.Future[str | None]]] = {}

    async def wait(
        self, queues: Iterable[str], timeout: float, until: asyncio.Future[None] | None = None
    ) -> str | None:
        """Wait until a job arrives on one of ``queues``; its name, or None on timeout or
        once ``until`` is done."""
        fut: asyncio.Future[str | None] = self._loop.create_future()
        names = list(dict.fromkeys(queues))
        for name in names:
            self._waiters.setdefault(name, deque()).append(fut)

        def give_up(_: object) -> None:
            if not fut.done():
                fut.set_result(None)

        if until is not None:
            until.add_done_callback(give_up)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return None
        finally:
            if until is not None:
                until.remove_done_callback(give_up)
            for name in names:
                waiters = self._waiters.get(name)
                if waiters is not None:
                    with contextlib.suppress(ValueError):
                        waiters.remove(fut)
                    if not waiters:
                        del self._waiters[name]

    def notify(self, queue: str) -> None:
        """Wake the oldest fetcher waiting on ``queue``, if any."""
        waiters = self._waiters.get(queue)
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(queue)
                return
