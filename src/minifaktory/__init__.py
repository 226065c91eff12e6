"""minifaktory: a Faktory-compatible job server in one Python process on SQLite."""

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
