"""minifaktory: a Faktory-compatible job server in one Python process on SQLite."""

from minifaktory.app import RunningServer, Server, run, run_forever, serve
from minifaktory.client import AsyncClient, Client, FaktoryError, NotUnique, ServerError
from minifaktory.clock import FakeClock, SystemClock
from minifaktory.config import Config

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "Config",
    "FakeClock",
    "FaktoryError",
    "NotUnique",
    "RunningServer",
    "Server",
    "ServerError",
    "SystemClock",
    "__version__",
    "run",
    "run_forever",
    "serve",
]
