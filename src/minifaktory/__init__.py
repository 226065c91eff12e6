"""minifaktory: a Faktory-compatible job server in one Python process on SQLite."""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from minifaktory.app import RunningServer, Server, run, run_forever, serve
    from minifaktory.client import (
        AsyncClient,
        AsyncPool,
        Client,
        FaktoryError,
        NotUnique,
        Pool,
        ServerError,
    )
    from minifaktory.clock import FakeClock, SystemClock
    from minifaktory.config import Config
    from minifaktory.worker import Job, Worker, current_job

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncPool",
    "Client",
    "Config",
    "FakeClock",
    "FaktoryError",
    "Job",
    "NotUnique",
    "Pool",
    "RunningServer",
    "Server",
    "ServerError",
    "SystemClock",
    "Worker",
    "__version__",
    "current_job",
    "run",
    "run_forever",
    "serve",
]

#: Where each public name lives. They load on first use, so a server process
#: never imports the client and worker, nor a client the server.
_HOMES = {
    "AsyncClient": "client",
    "AsyncPool": "client",
    "Client": "client",
    "Config": "config",
    "FakeClock": "clock",
    "FaktoryError": "client",
    "Job": "worker",
    "NotUnique": "client",
    "Pool": "client",
    "RunningServer": "app",
    "Server": "app",
    "ServerError": "client",
    "SystemClock": "clock",
    "Worker": "worker",
    "current_job": "worker",
    "run": "app",
    "run_forever": "app",
    "serve": "app",
}


if not TYPE_CHECKING:  # type checkers see the imports above, and no catch-all

    def __getattr__(name: str) -> Any:
        home = _HOMES.get(name)
        if home is None:
            raise AttributeError(f"module 'minifaktory' has no attribute {name!r}")
        value = getattr(importlib.import_module(f"minifaktory.{home}"), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
