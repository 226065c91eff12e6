"""What unique jobs, throttled queues and statsd cost: end-to-end jobs/s against plain jobs.

    python benchmarks/bench_features.py [--jobs N] [--connections C] [--repeat R] [--quick]

Each mix runs on a fresh ``python -m minifaktory`` process (durability full) whose
conf.d declares a throttled queue, driven over real sockets by the same load
generator as ``bench_throughput.py``. The throttle's limit equals the number of
consumers, so it is checked on every FETCH but never makes a consumer wait: the
figure is the bookkeeping's cost, not the throttle doing its job. The statsd mix
runs plain jobs on a server whose ``[statsd]`` points at a UDP socket on 127.0.0.1
that this script holds open and never reads (every metric line is formatted and sent).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_throughput import JobMaker, end_to_end, run_async, server_process

PLAIN, UNIQUE, THROTTLED = "plain", "uniq", "thr"
STATSD = "plain jobs, statsd on"
#: The least ratio to plain jobs each mix should reach.
TARGETS = {STATSD: 0.9}


def plain(jid: str, i: int) -> bytes:
    return b'{"jid":"%s","jobtype":"bench","queue":"plain","args":[%d]}' % (jid.encode(), i)


def unique(jid: str, i: int) -> bytes:
    return (
        b'{"jid":"%s","jobtype":"bench","queue":"uniq","args":[%d],'
        b'"custom":{"unique_for":600}}' % (jid.encode(), i)
    )


def throttled(jid: str, i: int) -> bytes:
    return b'{"jid":"%s","jobtype":"bench","queue":"thr","args":[%d]}' % (jid.encode(), i)


def mixed(jid: str, i: int) -> bytes:
    return (plain, unique, throttled)[i % 3](jid, i)


MIXES: list[tuple[str, JobMaker, tuple[str, ...]]] = [
    ("plain jobs", plain, (PLAIN,)),
    ("unique jobs (unique_for)", unique, (UNIQUE,)),
    ("throttled queue (concurrency)", throttled, (THROTTLED,)),
    ("mix: 1/3 each", mixed, (PLAIN, UNIQUE, THROTTLED)),
    (STATSD, plain, (PLAIN,)),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=15_000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="3,000 jobs, one run each")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.repeat = 3_000, 1
    consumers = args.connections - args.connections // 2
    results: dict[str, list[float]] = {name: [] for name, _, _ in MIXES}
    with (
        tempfile.TemporaryDirectory(prefix="minifaktory-bench-") as tmp,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink,
    ):
        sink.bind(("127.0.0.1", 0))  # receives the metrics; nobody reads them
        workdir = Path(tmp)
        throttles = f"[throttles]\n{THROTTLED} = {{ concurrency = {consumers}, timeout = 60 }}\n"
        statsd = f'[statsd]\nlocation = "127.0.0.1:{sink.getsockname()[1]}"\n'
        for conf, text in (("conf", throttles), ("conf-statsd", throttles + statsd)):
            conf_d = workdir / conf / "conf.d"
            conf_d.mkdir(parents=True)
            (conf_d / "features.toml").write_text(text)
        for run in range(args.repeat):
            for index, (name, maker, queues) in enumerate(MIXES):
                extra = ("-c", str(workdir / ("conf-statsd" if name == STATSD else "conf")))
                with server_process(workdir, f"features-{run}-{index}", "full", extra) as proc:
                    part: dict[str, Any] = run_async(
                        end_to_end(proc.port, args.jobs, args.connections, maker, queues), 300
                    )
                for problem in part["problems"]:
                    print(f"  ! {name}: {problem}")
                results[name].append(part["jobs_per_s"])
    base = statistics.median(results[MIXES[0][0]])
    print(f"\n{'mix (durability full, ' + str(args.connections) + ' connections)':<45} "
          f"{'jobs/s (median)':>16} {'vs plain':>9}   target")  # fmt: skip
    for name, _, _ in MIXES:
        value = statistics.median(results[name])
        ratio = value / base
        least = TARGETS.get(name, 0.8)
        verdict = "meets" if ratio >= least else "MISSES"
        target = "" if name == MIXES[0][0] else f"within {1 - least:.0%}: {verdict}"
        runs = ", ".join(f"{v:,.0f}" for v in results[name])
        print(f"{name:<45} {value:>16,.0f} {ratio:>8.2f}x   {target}  [{runs}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
