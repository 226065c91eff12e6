"""What the pytest plugin adds to an app's test suite: N tests using the ``faktory``
fixture against the same N tests without it, and the reset each test pays.

    python benchmarks/bench_testing.py [--tests N] [--repeat R]

Both suites run in a fresh ``pytest`` subprocess on the same machine in the same
run; the figure is the difference in wall time (target: 1,000 tests add <= 5 s).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WITH_FIXTURE = """
import pytest

@pytest.mark.parametrize("i", range({n}))
def test_job(faktory, i):
    faktory.push({{"jobtype": "T", "args": [i]}})
    assert faktory.client.info()["faktory"]["queues"] == {{"default": 1}}
"""

WITHOUT = """
import pytest

@pytest.mark.parametrize("i", range({n}))
def test_job(i):
    assert {{"default": 1}} == {{"default": 1}}
"""


def suite_seconds(directory: Path, source: str, n: int) -> float:
    path = directory / "test_suite.py"
    path.write_text(source.format(n=n))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path)],
        cwd=directory, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-2000:])
        raise SystemExit("the suite failed")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tests", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with_runs: list[float] = []
    without_runs: list[float] = []
    with tempfile.TemporaryDirectory(prefix="mf-bench-testing-") as tmp:
        for _ in range(args.repeat):
            without_runs.append(suite_seconds(Path(tmp), WITHOUT, args.tests))
            with_runs.append(suite_seconds(Path(tmp), WITH_FIXTURE, args.tests))
    base, fixture = statistics.median(without_runs), statistics.median(with_runs)
    added = fixture - base
    print(f"{args.tests:,} tests without the fixture: {base:.2f} s (median of {args.repeat})")
    print(f"{args.tests:,} tests with `faktory` (reset + PUSH + INFO each): {fixture:.2f} s")
    verdict = "meets" if added * 1000 / args.tests <= 5 else "MISSES"
    print(
        f"added: {added:.2f} s, {added * 1000 / args.tests:.2f} ms per test, server start"
        f" included (target <= 5 ms per test: {verdict})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
