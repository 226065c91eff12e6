"""Web UI page times with a million jobs in a set, printed next to the 150 ms target.

    python benchmarks/bench_webui.py [--jobs N] [--requests K] [--retries R]
        [--connections C] [--quick] [--json PATH] [--profile DIR]

One ``python -m minifaktory`` process (durability full, Web UI on 127.0.0.1) on a fresh
database in a temporary directory, seeded over the wire protocol: N jobs in the
scheduled set (PUSHB batches over several connections, ``at`` one day ahead plus i ms,
so every score differs), R jobs in the retries set (PUSHB, then FETCH + FAIL; each
job arrives with ``failure.retry_count`` 10, so its next retry is hours away and the
set stays put while pages are timed) and 10,000 jobs in a queue. Then one plain
synchronous ``httpx.Client`` requests each page K times over a keep-alive connection
(after a short warm-up) and the median and p99 are printed next to the target, with
each page's ratio to ``/health``, the smallest route through the same stack, timed in
the same run. The text search reads the whole set, so it is shown without a target.
Every loop is bounded by a count and a deadline; nothing is asserted; the server is
stopped by the PID this script started.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import html
import json
import re
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).parent))

from bench_throughput import (
    HOST,
    QUEUE,
    environment,
    fill,
    free_port,
    percentile,
    profiled,
    run_async,
    server_process,
    summarize_profile,
)
from fwp_client import Client, FaktoryError, job_jid, new_wid

from minifaktory.clock import NS, format_ns

TARGET_MS = 150.0
PAGE_SIZE = 25  # rows per set page, as the Web UI shows them
SEED_BATCH = 2000  # jobs per PUSHB while seeding the scheduled set
SEED_CONNECTIONS = 4
QUEUE_JOBS = 10_000
RETRY_QUEUE = "flaky"
RETRY_CONNECTIONS = 10
NEEDLE = "needle"  # in the jobtype of the last few scheduled jobs only
NEEDLES = 10
WARMUP = 3
SEARCH_REQUESTS = 20  # the search reads every row: fewer requests
PAGE_DEADLINE_S = 60.0
SEED_DEADLINE_S = 300.0
MS = 1_000_000  # nanoseconds
MAX_ERRORS = 5  # failed requests after which a page's timing stops
MORE_PAGES = ("/cron", "/batches", "/locks", "/throttles")
NEXT_LINK = re.compile(r'<a href="(?P<href>\?after=[^"]*)">Next page')


# -- seeding ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The scheduled jobs: job ``i`` runs at ``base_ns + i`` ms, which is also its score."""

    base_ns: int
    jobs: int
    prefix: str

    def at_ns(self, i: int) -> int:
        return self.base_ns + i * MS

    def job(self, i: int) -> bytes:
        jobtype = b"bench_" + NEEDLE.encode() if i >= self.jobs - NEEDLES else b"bench"
        return b'{"jid":"%s%08d","jobtype":"%s","queue":"%s","args":[%d],"at":"%s"}' % (
            self.prefix.encode(),
            i,
            jobtype,
            QUEUE.encode(),
            i,
            format_ns(self.at_ns(i)).encode(),
        )

    def batch(self, start: int, count: int) -> bytes:
        return b"[" + b",".join(self.job(i) for i in range(start, start + count)) + b"]"


async def seed_scheduled(
    port: int, schedule: Schedule, connections: int, deadline_s: float
) -> dict[str, Any]:
    """PUSHB the scheduled jobs in batches of ``SEED_BATCH`` over ``connections``."""
    return await fill(port, schedule.jobs, deadline_s, schedule.batch, SEED_BATCH, connections)


def failing_job(jid: str, i: int) -> bytes:
    # Arrives as if it had failed ten times already: FAIL makes that eleven, and the
    # next retry 11**4 s (about four hours) away.
    return (
        b'{"jid":"%s","jobtype":"bench_flaky","queue":"%s","args":[%d],"retry":25,'
        b'"failure":{"retry_count":10,"remaining":15,"failed_at":"2024-01-01T00:00:00Z",'
        b'"errtype":"RuntimeError","message":"earlier failure"}}'
        % (jid.encode(), RETRY_QUEUE.encode(), i)
    )


async def seed_retries(port: int, count: int, deadline_s: float) -> dict[str, Any]:
    """PUSHB ``count`` jobs to a queue, then FETCH + FAIL each over ``RETRY_CONNECTIONS``."""
    t0 = time.perf_counter()
    end = t0 + deadline_s
    prefix = secrets.token_hex(4)
    producer = await Client.connect(HOST, port)
    for start in range(0, count, SEED_BATCH):
        size = min(SEED_BATCH, count - start)
        jobs = (failing_job(f"{prefix}{i:08d}", i) for i in range(start, start + size))
        errors = await producer.pushb(b"[" + b",".join(jobs) + b"]")
        if errors:
            raise FaktoryError(f"retry seed rejected {len(errors)} jobs: {next(iter(errors))}")
    await producer.close()
    workers = await asyncio.gather(
        *(Client.connect(HOST, port, wid=new_wid()) for _ in range(RETRY_CONNECTIONS))
    )
    failed = 0
    nulls = 0

    async def worker(client: Client) -> None:
        nonlocal failed, nulls
        misses = 0
        while failed < count and misses < 2 and time.perf_counter() < end:
            job = await client.fetch(RETRY_QUEUE)
            if job is None:
                nulls += 1
                misses += 1
                continue
            report = {
                "jid": job_jid(job),
                "errtype": "RuntimeError",
                "message": "benchmark failure",
                "backtrace": ["bench_webui.py:1 in perform", "bench_webui.py:2 in run"],
            }
            reply = await client.call(b"FAIL " + json.dumps(report).encode())
            if reply != b"OK":
                raise FaktoryError(f"unexpected FAIL reply {reply!r}")
            failed += 1

    await asyncio.gather(*(worker(c) for c in workers))
    for c in workers:
        await c.close()
    elapsed = time.perf_counter() - t0
    return {"failed": failed, "empty_fetches": nulls, "elapsed_s": elapsed}


async def server_info(port: int) -> dict[str, Any]:
    client = await Client.connect(HOST, port)
    info = await client.info()
    await client.close()
    faktory: dict[str, Any] = info.get("faktory", {})
    return faktory


# -- timing ----------------------------------------------------------------------------


@dataclasses.dataclass
class Page:
    """One URL to time; ``target`` says whether the 150 ms target applies to it."""

    label: str
    path: str
    target: bool = True
    requests: int = 0  # 0: the run's default
    note: str = ""


def request(client: httpx.Client, path: str) -> tuple[str, int]:
    """GET ``path``: its status (or ``error`` when the request failed) and body size."""
    try:
        response = client.get(path)
    except httpx.HTTPError:
        return "error", 0
    return str(response.status_code), len(response.content)


def time_page(client: httpx.Client, page: Page, count: int, deadline_s: float) -> dict[str, Any]:
    """``WARMUP`` untimed requests, then up to ``count`` timed ones within ``deadline_s``
    (or until ``MAX_ERRORS`` requests failed)."""
    end = time.perf_counter() + deadline_s
    for _ in range(WARMUP):
        if time.perf_counter() >= end:
            break
        request(client, page.path)
    lat: list[float] = []
    statuses: Counter[str] = Counter()
    size = 0
    while len(lat) < count and statuses["error"] < MAX_ERRORS and time.perf_counter() < end:
        t = time.perf_counter()
        status, size = request(client, page.path)
        lat.append(time.perf_counter() - t)
        statuses[status] += 1
    return {
        "label": page.label,
        "path": page.path,
        "target": page.target,
        "note": page.note,
        "requests": len(lat),
        "median_ms": 1000 * statistics.median(lat) if lat else float("nan"),
        "p99_ms": 1000 * percentile(lat, 99),
        "max_ms": 1000 * max(lat) if lat else float("nan"),
        "bytes": size,
        "statuses": dict(sorted(statuses.items())),
    }


async def info_latencies(port: int, calls: int, deadline_s: float) -> list[float]:
    """Seconds per INFO round trip over the wire, up to ``calls`` within ``deadline_s``."""
    client = await Client.connect(HOST, port)
    lat: list[float] = []
    end = time.perf_counter() + deadline_s
    while len(lat) < calls and time.perf_counter() < end:
        t = time.perf_counter()
        await client.info_raw()
        lat.append(time.perf_counter() - t)
    await client.close()
    return lat


def info_during_searches(port: int, base_url: str, path: str, calls: int) -> dict[str, Any]:
    """INFO over the wire while idle, then while another thread runs ``path`` (a search
    that scans the whole set) back to back: the server must keep serving meanwhile."""
    idle = run_async(info_latencies(port, calls, 30.0), 60.0)
    window_s = 3.0
    stop = threading.Event()
    searches = [0]

    def search() -> None:
        with httpx.Client(base_url=base_url, timeout=60.0) as client:
            while not stop.is_set():
                request(client, path)
                searches[0] += 1

    thread = threading.Thread(target=search, daemon=True)
    thread.start()
    time.sleep(0.05)  # the first search is under way
    try:
        busy = run_async(info_latencies(port, 10**9, window_s), 60.0)
    finally:
        stop.set()
        thread.join(70.0)
    return {
        "idle_median_ms": 1000 * statistics.median(idle),
        "busy_median_ms": 1000 * statistics.median(busy),
        "busy_p99_ms": 1000 * percentile(busy, 99),
        "busy_max_ms": 1000 * max(busy),
        "searches": searches[0],
        "calls": len(busy),
    }


def wait_web(client: httpx.Client, deadline_s: float = 15.0) -> None:
    """Request ``/health`` until it answers 200 (the Web UI starts next to the listener)."""
    end = time.perf_counter() + deadline_s
    last = ""
    while time.perf_counter() < end:
        try:
            response = client.get("/health")
            if response.status_code == 200:
                return
            last = f"status {response.status_code}"
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.05)
    raise RuntimeError(f"Web UI not ready after {deadline_s:.0f}s: {last}")


def get_json(client: httpx.Client, path: str, notes: list[str]) -> dict[str, Any]:
    """The JSON object at ``path``, or ``{}`` (with a note) when the request fails."""
    try:
        response = client.get(path)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        notes.append(f"GET {path} failed: {type(exc).__name__}: {exc}")
        return {}
    return data


def next_link(client: httpx.Client, path: str, notes: list[str]) -> str:
    """The cursor in the "Next page" link of the HTML page at ``path``, or ``""``."""
    try:
        text = client.get(path).text
    except httpx.HTTPError as exc:
        notes.append(f"GET {path} failed: {type(exc).__name__}: {exc}")
        return ""
    link = NEXT_LINK.search(text)
    if link is None:
        notes.append(f"the HTML page {path} has no 'Next page' link")
        return ""
    after = parse_qs(urlsplit(html.unescape(link["href"])).query).get("after", [""])
    return after[0]


def pages_to_time(
    client: httpx.Client, schedule: Schedule, retries: int, notes: list[str]
) -> list[Page]:
    """The pages, with cursors and keys read from the API and the HTML "Next page" links."""
    jobs = schedule.jobs
    first = get_json(client, "/api/sets/scheduled", notes)
    key = str(first["jobs"][0]["key"]) if first.get("jobs") else "1"
    # A page starts at job i with ``after=<score of i>.0``: scores are the jobs' ``at`` in
    # nanoseconds, and every row id is above 0.
    middle = jobs // 2
    mid_start = f"{schedule.at_ns(middle)}.0"
    api_mid = get_json(client, f"/api/sets/scheduled?after={mid_start}", notes)
    rows = api_mid.get("jobs") or [{}]
    if rows[0].get("at") != format_ns(schedule.at_ns(middle)):
        notes.append(f"the page after={mid_start} does not start with job {middle}")
    mid_cursor = str(api_mid.get("next_after", ""))
    html_cursor = next_link(client, f"/scheduled?after={mid_start}", notes)
    if html_cursor != mid_cursor:
        notes.append(f"'Next page' link cursor {html_cursor!r} != API next_after {mid_cursor!r}")
    if not mid_cursor:
        notes.append("no cursor past the middle page; the deep page is the middle page itself")
        mid_cursor = mid_start
    last_start = max(0, jobs - PAGE_SIZE)
    last_after = f"{schedule.at_ns(last_start)}.0"
    api_last = get_json(client, f"/api/sets/scheduled?after={last_after}", notes)
    last_rows = len(api_last.get("jobs", []))
    if api_last.get("next_after") or last_rows != min(PAGE_SIZE, jobs):
        notes.append(
            f"the last page has {last_rows} rows and cursor {api_last.get('next_after')!r};"
            f" expected {min(PAGE_SIZE, jobs)} rows and none"
        )
    found = get_json(client, f"/api/sets/scheduled?q={NEEDLE}", notes)
    notes.append(
        f"search ?q={NEEDLE} matches {len(found.get('jobs', []))} jobs (the last {NEEDLES} of"
        f" {jobs:,}): SQLite reads every row of the set to find them"
    )
    pages = [
        Page("/ (dashboard)", "/"),
        Page("/queues", "/queues"),
        Page(f"/queues/{QUEUE} ({QUEUE_JOBS:,} queued)", f"/queues/{QUEUE}"),
        Page("/scheduled (first page)", "/scheduled"),
        Page(
            f"/scheduled?after= (middle, job {middle + PAGE_SIZE:,})",
            f"/scheduled?after={mid_cursor}&q=",  # as the "Next page" link has it
        ),
        Page("/scheduled?after= (last page)", f"/scheduled?after={last_after}"),
        Page("/api/sets/scheduled (first page)", "/api/sets/scheduled"),
        Page("/api/sets/scheduled?after= (middle)", f"/api/sets/scheduled?after={mid_cursor}"),
        Page("/scheduled/<key> (job page)", f"/scheduled/{key}"),
        Page(f"/retries ({retries:,} jobs)", "/retries"),
        Page("/morgue (empty)", "/morgue"),
        Page("/busy", "/busy"),
        Page("/debug", "/debug"),
        *(Page(path, path) for path in MORE_PAGES),
    ]
    pages.append(
        Page(
            f"/scheduled?q={NEEDLE} search (scans)",
            f"/scheduled?q={NEEDLE}",
            target=False,
            requests=SEARCH_REQUESTS,
            note=f"scans all {jobs:,} rows: no target",
        )
    )
    return pages


# -- report ----------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def report(results: dict[str, Any]) -> list[str]:
    base = results["baseline"]["health"]["median_ms"]
    header = ("page", "median ms", "p99 ms", "x /health", "KB", "n", "target (<= 150 ms)")
    rows: list[tuple[str, ...]] = []
    for part, entries in (("baseline", results["baseline"].values()), ("page", results["pages"])):
        for entry in entries:
            target = ""
            if part == "page" and entry["target"]:
                target = (
                    f"median {verdict(entry['median_ms'] <= TARGET_MS)},"
                    f" p99 {verdict(entry['p99_ms'] <= TARGET_MS)}"
                )
            elif part == "page":
                target = entry["note"]
            else:
                target = "baseline"
            bad = {k: v for k, v in entry["statuses"].items() if k != "200"}
            if bad:
                target += f"  ! statuses {bad}"
            rows.append(
                (
                    entry["label"],
                    f"{entry['median_ms']:.2f}",
                    f"{entry['p99_ms']:.2f}",
                    f"{entry['median_ms'] / base:.1f}",
                    f"{entry['bytes'] / 1024:.1f}",
                    str(entry["requests"]),
                    target,
                )
            )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    right = {1, 2, 3, 4, 5}

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return out


def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "root"


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--jobs", type=int, help="scheduled jobs (default 1000000; --quick 100000)")
    p.add_argument("--requests", type=int, help="timed requests per page (default 200; --quick 50)")
    p.add_argument("--retries", type=int, default=2000, help="jobs in the retries set")
    p.add_argument("--connections", type=int, default=SEED_CONNECTIONS, help="seeding connections")
    p.add_argument("--quick", action="store_true", help="smaller sizes for a fast check")
    p.add_argument("--json", type=Path, help="write every result to this JSON file")
    p.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the server with py-spy during extra requests to each page that misses"
        " (and the search); collapsed stacks are left in DIR",
    )
    args = p.parse_args(argv)
    if args.jobs is None:
        args.jobs = 100_000 if args.quick else 1_000_000
    if args.requests is None:
        args.requests = 50 if args.quick else 200
    if args.jobs < 2 * PAGE_SIZE + NEEDLES or args.requests < 1 or args.retries < 0:
        p.error(f"need --jobs >= {2 * PAGE_SIZE + NEEDLES}, --requests >= 1, --retries >= 0")
    if args.connections < 1:
        p.error("need --connections >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {
        "config": {
            "jobs": args.jobs,
            "requests": args.requests,
            "retries": args.retries,
            "queue_jobs": QUEUE_JOBS,
            "connections": args.connections,
            "quick": args.quick,
            "target_ms": TARGET_MS,
        },
        "environment": environment(),
    }
    env = results["environment"]
    print(
        f"minifaktory Web UI benchmark: {args.jobs:,} scheduled, {args.retries:,} retries,"
        f" {QUEUE_JOBS:,} queued, {args.requests} requests per page"
        f" | Python {env['python']}, SQLite {env['sqlite']}, {env['cpus']} CPUs"
    )
    notes: list[str] = []
    total_start = time.perf_counter()
    now_ns = time.time_ns()
    schedule = Schedule(
        base_ns=(now_ns // MS) * MS + 86_400 * NS, jobs=args.jobs, prefix=secrets.token_hex(4)
    )
    profile_dir: Path | None = args.profile
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mf-bench-webui-") as tmp:
        workdir = Path(tmp)
        web_port = free_port()
        extra = ("-w", f"{HOST}:{web_port}")
        with server_process(workdir, "webui", "full", extra) as proc:
            seed_start = time.perf_counter()
            queued = run_async(fill(proc.port, QUEUE_JOBS, 60.0), 120.0)
            print(f"  queue {QUEUE}: {queued['pushed']:,} jobs in {queued['elapsed_s']:.1f}s")
            retries = run_async(seed_retries(proc.port, args.retries, 120.0), 180.0)
            print(
                f"  retries: {retries['failed']:,} jobs (PUSHB, FETCH + FAIL)"
                f" in {retries['elapsed_s']:.1f}s"
            )
            scheduled = run_async(
                seed_scheduled(proc.port, schedule, args.connections, SEED_DEADLINE_S),
                SEED_DEADLINE_S + 60.0,
            )
            print(
                f"  scheduled: {scheduled['pushed']:,} jobs in {scheduled['elapsed_s']:.1f}s"
                f" ({scheduled['jobs_per_s']:,.0f} jobs/s, PUSHB of {SEED_BATCH:,}"
                f" over {args.connections} connections, {scheduled['rejected']} rejected)"
            )
            seed_s = time.perf_counter() - seed_start
            info = run_async(server_info(proc.port), 30.0)
            sets = info.get("sets", {})
            results["seeding"] = {
                "queue": queued,
                "retries": retries,
                "scheduled": scheduled,
                "elapsed_s": seed_s,
                "info_sets": sets,
                "info_queue": info.get("queues", {}).get(QUEUE),
            }
            print(
                f"  seeding took {seed_s:.1f}s; INFO: scheduled {sets.get('scheduled')},"
                f" retries {sets.get('retries')}, dead {sets.get('dead')},"
                f" {QUEUE} {info.get('queues', {}).get(QUEUE)}"
            )
            if scheduled["pushed"] < args.jobs:
                notes.append(
                    f"seeding stopped at its deadline: {scheduled['pushed']:,} of"
                    f" {args.jobs:,} scheduled jobs; cursors past them point at nothing"
                )
            with httpx.Client(
                base_url=f"http://{HOST}:{web_port}", timeout=60.0, follow_redirects=False
            ) as client:
                wait_web(client)
                pages = pages_to_time(client, schedule, retries["failed"], notes)
                timing_start = time.perf_counter()
                baseline = {
                    "health": time_page(
                        client, Page("/health (baseline)", "/health"), args.requests,
                        PAGE_DEADLINE_S,
                    ),
                    "static": time_page(
                        client, Page("/static/app.css (baseline)", "/static/app.css"),
                        args.requests, PAGE_DEADLINE_S,
                    ),
                }  # fmt: skip
                results["baseline"] = baseline
                measured: list[dict[str, Any]] = []
                for page in pages:
                    entry = time_page(client, page, page.requests or args.requests, PAGE_DEADLINE_S)
                    measured.append(entry)
                    print(
                        f"  {page.label}: median {entry['median_ms']:.2f} ms,"
                        f" p99 {entry['p99_ms']:.2f} ms ({entry['requests']} requests)"
                    )
                results["pages"] = measured
                searching = next(p for p in pages if not p.target)
                results["info_during_search"] = info_during_searches(
                    proc.port, f"http://{HOST}:{web_port}", searching.path, args.requests * 5
                )
                results["timing_elapsed_s"] = time.perf_counter() - timing_start
                if profile_dir is not None:
                    profiles: dict[str, list[str]] = {}
                    for page, entry in zip(pages, measured, strict=True):
                        slow = entry["median_ms"] > TARGET_MS or entry["p99_ms"] > TARGET_MS
                        if page.target and not slow:
                            continue
                        out = profile_dir / f"{slug(page.label)}.txt"
                        with profiled(proc.pid, out):
                            time_page(client, page, page.requests or args.requests, PAGE_DEADLINE_S)
                        profiles[page.label] = summarize_profile(out, top=10)
                    results["profiles"] = profiles
    results["notes"] = notes
    results["total_elapsed_s"] = time.perf_counter() - total_start
    print()
    print(
        f"Web UI pages with {results['seeding']['scheduled']['pushed']:,} scheduled jobs"
        f" (one keep-alive httpx connection; x /health = median / the /health median)"
    )
    for row in report(results):
        print(row)
    print()
    for page in results["pages"]:
        if "?" in page["path"]:
            print(f"  {page['label']}: {page['path']}")
    during = results["info_during_search"]
    print(
        f"\nINFO over the wire: median {during['idle_median_ms']:.2f} ms idle;"
        f" {during['busy_median_ms']:.2f} ms median, {during['busy_p99_ms']:.2f} ms p99,"
        f" {during['busy_max_ms']:.2f} ms max while {during['searches']} searches ran"
        " back to back (they run on a thread of their own)"
    )
    for note in notes:
        print(f"  note: {note}")
    for label, lines in results.get("profiles", {}).items():
        print(f"\nserver profile while requesting {label} (py-spy):")
        for line in lines:
            print("  " + line)
    print(
        f"\nseeding {results['seeding']['elapsed_s']:.0f}s, timing"
        f" {results['timing_elapsed_s']:.0f}s, total {results['total_elapsed_s']:.0f}s"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
