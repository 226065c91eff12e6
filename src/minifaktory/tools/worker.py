"""``minifaktory worker module:attribute``: run a ``minifaktory.Worker`` from the shell.

The attribute is a ``Worker`` (or a function returning one). SIGTSTP quiets it,
SIGTERM and SIGINT terminate it with its grace period. ``FAKTORY_URL`` names
the server unless the worker was built with a URL.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from minifaktory.client import FaktoryError
from minifaktory.worker import Worker


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    parser = argparse.ArgumentParser(prog="minifaktory worker", description=__doc__.splitlines()[0])
    parser.add_argument("target", help="module:attribute of a Worker")
    parser.add_argument("--concurrency", type=int, help="override the worker's concurrency")
    parser.add_argument("-q", "--queue", action="append", help="queues, in order (repeatable)")
    parser.add_argument("-l", dest="log_level", default="info", help="error, warn, info, debug")
    args = parser.parse_args(argv)
    module_name, _, attribute = args.target.partition(":")
    try:
        if "." not in sys.path:
            sys.path.insert(0, ".")
        found = getattr(importlib.import_module(module_name), attribute or "worker")
        worker = found() if callable(found) and not isinstance(found, Worker) else found
    except (ImportError, AttributeError) as exc:
        print(f"minifaktory worker: cannot load {args.target}: {exc}")
        return 1
    if not isinstance(worker, Worker):
        print(f"minifaktory worker: {args.target} is not a minifaktory.Worker")
        return 1
    if args.concurrency:
        worker.concurrency = args.concurrency
    if args.queue:
        worker.queues = list(args.queue)
    level = {"warn": "WARNING"}.get(args.log_level, args.log_level.upper())
    logging.basicConfig(level=level, format="%(levelname).1s %(asctime)s %(message)s")
    try:
        worker.run(handle_signals=True)
    except FaktoryError as exc:
        print(f"minifaktory worker: {exc}")
        return 1
    if worker.abandoned:
        # Their jobs were FAILed for a retry; their threads cannot be stopped, and would
        # hold the interpreter open until they return.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0
