"""The compose example's worker: the PyPI ``faktory`` client working ``add`` jobs.

    python worker.py            # work the default queue until stopped
    python worker.py push 2 3   # enqueue add(2, 3) and exit

The server's address comes from ``FAKTORY_HOST`` (default ``faktory:7419``) and its
password from the file named by ``FAKTORY_PASSWORD`` (a Docker secret), exactly the
file the server reads.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import faktory

log = logging.getLogger("worker")


def faktory_url(environ: Mapping[str, str]) -> str:
    """``tcp://:password@host:port``; a password starting with ``/`` is a file to read."""
    password = environ.get("FAKTORY_PASSWORD", "")
    if password.startswith("/"):
        password = Path(password).read_text().strip()
    auth = f":{password}@" if password else ""
    return f"tcp://{auth}{environ.get('FAKTORY_HOST', 'faktory:7419')}"


def add(x: int, y: int) -> int:
    log.info("add(%d, %d) = %d", x, y, x + y)
    return x + y


def make_worker(url: str, **options: Any) -> Any:
    """A ``faktory.Worker`` on the default queue with ``add`` registered."""
    worker = faktory.Worker(faktory=url, queues=["default"], use_threads=True, **options)
    worker.register("add", add)
    return worker


def push(url: str, x: int, y: int) -> str:
    jid = uuid.uuid4().hex
    with faktory.connection(url) as client:
        client.queue("add", args=(x, y), jid=jid)
    return jid


def main(argv: Sequence[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    url = faktory_url(os.environ)
    if argv[:1] == ["push"]:
        x, y = (int(arg) for arg in argv[1:3])
        print(push(url, x, y))
        return 0
    make_worker(url, concurrency=2).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
