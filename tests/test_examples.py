"""The examples run as documented."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_quickstart() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "results: [0, 11, 22, 33, 44]" in out.stdout
    assert "processed: 5" in out.stdout


ROOT = EXAMPLES.parent


def test_the_shop_tests_pass_with_the_plugin() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "examples/shop"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


@pytest.mark.compat
def test_a_node_producer_feeds_the_python_worker() -> None:
    import minifaktory

    node_modules = ROOT / "tests" / "compat" / "node" / "node_modules"
    with minifaktory.run() as srv:
        env = {**os.environ, "FAKTORY_URL": srv.url, "NODE_PATH": str(node_modules)}
        worker = subprocess.Popen(
            [sys.executable, "-m", "minifaktory", "worker", "examples.shop.worker:worker"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            pushed = subprocess.run(
                ["node", str(EXAMPLES / "shop" / "producer.js"), "42"],
                env=env, capture_output=True, text=True, timeout=60, check=True,
            )  # fmt: skip
            assert pushed.stdout.strip() == "pushed ChargeCard 42"
            deadline = time.monotonic() + 30
            while srv.info()["faktory"]["total_processed"] < 2:  # ChargeCard, SendReceipt
                assert time.monotonic() < deadline, "the worker did not run the jobs"
                time.sleep(0.05)
            assert srv.info()["faktory"]["total_failures"] == 0
        finally:
            worker.send_signal(signal.SIGTERM)
            out, _ = worker.communicate(timeout=30)
        assert worker.returncode == 0, out
