"""scripts/trace_gaps.py on hand-made timelines: the CPU records no kernel events, so a real trace comes
only from a GPU (bench_step_time.py --profile-trace-dir); its format is checked in test_bench."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import trace_gaps as tg  # scripts/ is on sys.path (conftest)

REPO = Path(__file__).resolve().parents[1]


def event(cat: str, name: str, ts: float, dur: float, correlation: int | None = None) -> dict:
    e = {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur}
    if correlation is not None:
        e["args"] = {"correlation": correlation}
    return e


# Host: A spans everything, B and C sit inside it. Kernels k1..k3 were launched from B, C and A (correlation
# ids); k0 has no launch in the trace. GPU busy 0-5, 30-40, 70-75 and 90-100 (k3 overlaps k4): idle 70 us.
TIMELINE = [
    event("cpu_op", "A", 0, 100), event("cpu_op", "B", 10, 10), event("python_function", "C", 50, 10),
    event("cuda_runtime", "cudaLaunchKernel", 15, 1, 1), event("cuda_runtime", "cudaLaunchKernel", 55, 1, 2),
    event("cuda_runtime", "cudaLaunchKernel", 80, 1, 3), event("cuda_runtime", "cudaLaunchKernel", 81, 1, 4),
    event("kernel", "k0", 0, 5, 0), event("kernel", "k1", 30, 10, 1), event("gpu_memcpy", "k2", 70, 5, 2),
    event("kernel", "k3", 90, 10, 3), event("kernel", "k4", 92, 3, 4),
]


def test_idle_time_by_the_operator_that_launched_next():
    result = tg.analyse(TIMELINE, min_gap_us=5.0)
    assert (result["span_us"], result["busy_us"], result["idle_us"]) == (100.0, 30.0, 70.0)
    # 40->70 waits for C's launch, 5->30 for B's (innermost, not A), 75->90 for A's
    assert result["waiters"] == [("C", 30.0, 1), ("B", 25.0, 1), ("A", 15.0, 1)]
    assert result["counted_idle_us"] == 70.0


def test_short_gaps_and_unmatched_launches():
    shifted = [dict(e) for e in TIMELINE]
    shifted[7]["ts"] = 24.0  # k0 now ends at 29: the 1 us gap before k1 is launch latency, not counted
    result = tg.analyse(shifted, min_gap_us=5.0)
    assert result["idle_us"] == 46.0 and result["counted_idle_us"] == 45.0
    unmatched = [e for e in TIMELINE if e.get("args", {}).get("correlation") != 2 or e["cat"] != "cuda_runtime"]
    assert ("(launch not in trace)", 30.0, 1) in tg.analyse(unmatched, min_gap_us=5.0)["waiters"]


def test_cli_reads_gzip_and_refuses_a_cpu_only_trace(tmp_path):
    path = tmp_path / "t.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"traceEvents": TIMELINE}).encode()))
    ok = subprocess.run([sys.executable, str(REPO / "scripts" / "trace_gaps.py"), str(path)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "busy 0.0 ms, idle 0.1 ms (70.0%)" in ok.stdout and ok.stdout.splitlines()[2].split()[-1] == "C"
    cpu_only = tmp_path / "cpu.json"
    cpu_only.write_text(json.dumps({"traceEvents": TIMELINE[:3]}))
    bad = subprocess.run([sys.executable, str(REPO / "scripts" / "trace_gaps.py"), str(cpu_only)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "no GPU events" in bad.stderr
    missing = subprocess.run([sys.executable, str(REPO / "scripts" / "trace_gaps.py"), str(tmp_path / "none.gz")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "no such trace file" in missing.stderr


def test_busy_intervals_union():
    assert tg.busy_intervals([{"ts": 5.0, "dur": 5.0}, {"ts": 0.0, "dur": 6.0}, {"ts": 20.0, "dur": 1.0}]) == [
        (0.0, 10.0), (20.0, 21.0)]
