"""Run minifaktory inside a Python program and work jobs with the PyPI ``faktory`` client.

    pip install -e . faktory        # or: make install
    python examples/quickstart.py

The same client code works unchanged against the real Faktory: only the URL differs.
"""

from __future__ import annotations

import logging
import threading
import time

import faktory

import minifaktory

results: list[int] = []


def add(x: int, y: int) -> None:
    results.append(x + y)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    with minifaktory.run() as server:
        print(f"minifaktory listening at {server.url}")
        with faktory.connection(server.url) as client:
            for i in range(5):
                client.queue("add", args=(i, 10 * i), queue="default")
        worker = faktory.Worker(faktory=server.url, queues=["default"], use_threads=True)
        worker.register("add", add)
        # Worker.run() blocks until told to stop, so it gets a thread of its own here.
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while server.info()["faktory"]["total_processed"] < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        worker.disconnect(wait=5)
        thread.join(10)
        print("results:", sorted(results))
        print("processed:", server.info()["faktory"]["total_processed"])


if __name__ == "__main__":
    main()
