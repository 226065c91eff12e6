"""Clean-up that a cancellation cannot cut short.

anyio's cancel scopes cancel a task again at every step until it leaves the
scope, and a second SIGTERM cancels the server's task again: closing the
listeners, syncing the log and closing the file must still run to the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def to_the_end(work: Awaitable[T]) -> T:
    """Await ``work`` to its end even when this task is cancelled meanwhile.

    A cancellation that arrived in between is raised afterwards, so the caller
    still stops; an error of ``work`` itself is raised as usual.
    """
    task = asyncio.ensure_future(work)
    interrupted: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            if task.done():
                break
            interrupted = exc
    result = task.result()
    if interrupted is not None:
        raise interrupted
    return result
