"""benchmarks/bench_fuzz.py keeps working: a short run against a live server passes every
check and writes its JSON report (the long run is ``--frames 1000000``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fuzz.py"


def test_short_fuzzing_run_passes(tmp_path: Path) -> None:
    out = tmp_path / "fuzz.json"
    cmd = [sys.executable, str(BENCH), "--frames", "2000", "--connections", "4", "--seed", "7",
           "--overlong-every", "1000", "--deadline", "60", "--quiet",
           "--json", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["passed"] is True
    assert result["frames"] >= 2000
    assert {"valid", "mutated", "garbage", "overlong"} <= set(result["kinds"])
    assert result["replies"]["+OK"] > 0 and result["replies"]["-error"] > 0
    assert result["finding_counts"] == {}
    assert all(ok for ok, _ in result["checks"].values()), result["checks"]
    assert result["stop"]["returncode"] == 0
