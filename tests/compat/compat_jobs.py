"""Job functions for pyfaktory's Consumer, which runs them in child processes.

They live in their own small module so that a spawned child can import them
by name quickly; each one appends its arguments to the file named by the first
argument, which is how a test sees what ran and in which order.
"""

from __future__ import annotations

import json
from typing import Any


def record(path: str, *args: Any) -> None:
    """Append ``args`` to ``path`` as one JSON line."""
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(list(args)) + "\n")


def explode(path: str, *args: Any) -> None:
    """Record, then fail with ``ValueError``."""
    record(path, *args)
    raise ValueError("kaboom " + json.dumps(list(args)))


def recorded(path: str) -> list[list[Any]]:
    """Everything ``record`` wrote to ``path`` so far, in order."""
    try:
        with open(path, encoding="utf-8") as lines:
            return [json.loads(line) for line in lines]
    except FileNotFoundError:
        return []
