"""The ``minifaktory`` command's tools: ``minifaktory <tool> ...`` next to the server itself.

Each tool is a function ``(argv, environ) -> exit status`` in a module imported
only when it runs, so the server's start-up pays for none of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import cast

Tool = Callable[[Sequence[str], Mapping[str, str]], int]

#: Tool name → ("module:function", one-line summary for ``minifaktory --help``).
TOOLS: dict[str, tuple[str, str]] = {
    "worker": ("minifaktory.tools.worker:main", "run a minifaktory.Worker (module:attribute)"),
    "health": ("minifaktory.tools.health:main", "check a server over the protocol (exit 0/1)"),
    "info": ("minifaktory.tools.admin:info", "totals of a running server"),
    "queues": ("minifaktory.tools.admin:queues", "queues with size, latency, paused"),
    "queue": ("minifaktory.tools.admin:queue", "pause, resume or clear queues"),
    "jobs": ("minifaktory.tools.admin:jobs", "list, show, edit, delete, retry or kill jobs"),
    "workers": ("minifaktory.tools.admin:workers", "list workers; quiet or terminate them"),
    "backup": ("minifaktory.tools.backup:main", "copy the live database consistently"),
    "restore": ("minifaktory.tools.restore:main", "put a backup back (server stopped)"),
    "migrate": ("minifaktory.tools.migrate:main", "move the jobs to another Faktory server"),
}


def load(name: str) -> Tool:
    """The function that runs tool ``name``."""
    module, _, function = TOOLS[name][0].partition(":")
    return cast(Tool, getattr(importlib.import_module(module), function))


def summary() -> str:
    """The tools, a line each, for the usage text."""
    width = max(len(name) for name in TOOLS)
    return "\n".join(f"  {name.ljust(width)}  {text}" for name, (_, text) in TOOLS.items())
