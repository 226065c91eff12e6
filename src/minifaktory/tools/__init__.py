"""The ``minifaktory`` command's tools: ``minifaktory <tool> ...`` next to the server itself.

Each tool is a module with ``main(argv, environ) -> exit status``, imported only
when it runs, so the server's start-up pays for none of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import cast

Tool = Callable[[Sequence[str], Mapping[str, str]], int]

#: Tool name → (module, one-line summary for ``minifaktory --help``).
TOOLS: dict[str, tuple[str, str]] = {
    "health": ("minifaktory.tools.health", "check a running server over the protocol (exit 0/1)"),
    "backup": ("minifaktory.tools.backup", "copy the live database consistently"),
    "restore": ("minifaktory.tools.restore", "put a backup back (server stopped)"),
}


def load(name: str) -> Tool:
    """The ``main`` function of tool ``name``."""
    module = importlib.import_module(TOOLS[name][0])
    return cast(Tool, module.main)


def summary() -> str:
    """The tools, a line each, for the usage text."""
    width = max(len(name) for name in TOOLS)
    return "\n".join(f"  {name.ljust(width)}  {text}" for name, (_, text) in TOOLS.items())
