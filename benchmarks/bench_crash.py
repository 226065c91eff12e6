"""Crash benchmark: many SIGKILL-and-restart cycles of a server under mixed load.

Run: ``python benchmarks/bench_crash.py [--cycles N] [--seed S]
[--durability full|normal|both] [--load SECONDS] [--deadline SECONDS] [--json PATH]``

Each cycle starts ``python -m minifaktory`` on the same database file (127.0.0.1,
a free port), checks every invariant of tests/crash_harness.py against the file
(read-only, while the server runs) and INFO, puts it under mixed load (PUSH, scheduled
and unique jobs, PUSHB, batches, FETCH with ACK / FAIL / kept reservations) and
SIGKILLs it at a random moment, by the PID this script started. After the last cycle
the queues are drained, the server is stopped with SIGTERM, restarted and checked once
more. The run is bounded by the cycle count and by a deadline; it stops at the first
cycle that finds a violation and keeps the database for inspection. ``--seed`` replays
a run's choices (thread interleavings aside).
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: the harness lives in tests/
    sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_throughput import environment  # noqa: E402
from tests.crash_harness import HarnessConfig, run_harness  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cycles", type=int, default=200, help="kill-and-restart cycles (200)")
    p.add_argument("--seed", type=int, help="seed of every random choice (default: random)")
    p.add_argument(
        "--durability",
        choices=["full", "normal", "both"],
        default="both",
        help="server durability; both alternates per cycle, full first (default)",
    )
    p.add_argument(
        "--load", type=float, default=1.0, help="the kill comes within this many seconds (1.0)"
    )
    p.add_argument(
        "--deadline", type=float, default=1800.0, help="start no cycle after this many s (1800)"
    )
    p.add_argument("--json", type=Path, help="write the report to this JSON file")
    args = p.parse_args(argv)
    if args.cycles < 1 or args.load <= 0 or args.deadline <= 0:
        p.error("need --cycles >= 1, --load > 0, --deadline > 0")
    if args.seed is None:
        args.seed = secrets.randbelow(2**31 - 1) + 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = environment()
    print(
        f"minifaktory crash benchmark: cycles={args.cycles} seed={args.seed} "
        f"durability={args.durability} load={args.load}s | Python {env['python']}, "
        f"SQLite {env['sqlite']}, {env['cpus']} CPUs"
    )
    started = time.monotonic()

    def progress(line: str) -> None:
        cycle = int(line.split()[1].rstrip(":"))
        if (cycle + 1) % 10 == 0:
            print(f"  {line} ({time.monotonic() - started:.0f} s)", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="mf-crash-"))
    config = HarnessConfig(
        workdir / "crash.db",
        cycles=args.cycles,
        seed=args.seed,
        durability=args.durability,
        load_seconds=args.load,
        deadline=args.deadline,
        progress=progress,
    )
    try:
        report = run_harness(config)
    except BaseException:
        print(f"database kept in {workdir}")
        raise
    print()
    for line in report.summary():
        print(line)
    result = {"config": vars(args) | {"json": str(args.json or "")}, "environment": env}
    result["report"] = report.as_json()
    if report.violations:
        print(f"\ndatabase kept in {workdir}; server log tail:\n{report.log_tail}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
