#!/usr/bin/env python3
"""Where does the GPU wait for the host? Reads a torch.profiler timeline (Chrome trace format, as written by
`bench_step_time.py --profile-trace-dir`, gzip or plain) and prints:

- the GPU's busy time (the union of its kernel, memcpy and memset intervals) against the span from the first
  GPU event to the last, so idle = span - busy;
- the idle time by what the GPU was waiting for: each gap ends when the next GPU event starts; that event was
  launched by a CUDA runtime call (matched by its correlation id), made inside some host operator (the
  innermost cpu_op or python_function around the launch). Gaps are summed by that operator's name, so a
  Python wrapper that launches late shows up by name.

Usage: python3 scripts/trace_gaps.py TRACE.json.gz [--min-gap-us 5] [--top 20]
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import heapq
import json
import sys
from pathlib import Path

GPU_CATEGORIES = {"kernel", "gpu_memcpy", "gpu_memset"}
HOST_CATEGORIES = {"cpu_op", "python_function", "user_annotation"}
RUNTIME_CATEGORIES = {"cuda_runtime", "cuda_driver"}


def load_events(path: Path) -> list[dict]:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    doc = json.loads(data)
    return doc["traceEvents"] if isinstance(doc, dict) else doc


def complete(events: list[dict], categories: set[str]) -> list[dict]:
    """Complete events ('X') of these categories, with float ts and dur (microseconds)."""
    out = []
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in categories and "ts" in e:
            out.append({**e, "ts": float(e["ts"]), "dur": float(e.get("dur", 0.0))})
    return out


def busy_intervals(gpu: list[dict]) -> list[tuple[float, float]]:
    """The union of the GPU events' [start, end) intervals, sorted."""
    merged: list[list[float]] = []
    for start, end in sorted((e["ts"], e["ts"] + e["dur"]) for e in gpu):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def innermost_host_ops(host: list[dict], times: list[float]) -> dict[float, str]:
    """For each time, the name of the shortest host event that contains it ('(no host op)' if none). One sweep:
    host events enter a heap (by duration) as the times pass their start, and leave once they have ended."""
    found, heap, i = {}, [], 0
    host = sorted(host, key=lambda e: e["ts"])
    for t in sorted(set(times)):
        while i < len(host) and host[i]["ts"] <= t:
            e = host[i]
            heapq.heappush(heap, (e["dur"], e["ts"] + e["dur"], i, e["name"]))
            i += 1
        while heap and heap[0][1] < t:  # ended before t, so before every later time too
            heapq.heappop(heap)
        found[t] = heap[0][3] if heap else "(no host op)"
    return found


def analyse(events: list[dict], min_gap_us: float) -> dict:
    gpu = complete(events, GPU_CATEGORIES)
    if not gpu:
        raise SystemExit("error: no GPU events (kernel, gpu_memcpy, gpu_memset) in the trace: was it recorded with "
                         "ProfilerActivity.CUDA on a GPU?")
    host = complete(events, HOST_CATEGORIES)
    launches = {e.get("args", {}).get("correlation"): e for e in complete(events, RUNTIME_CATEGORIES)}
    busy = busy_intervals(gpu)
    span = busy[-1][1] - busy[0][0]
    busy_us = sum(b - a for a, b in busy)
    first_after = sorted(gpu, key=lambda e: e["ts"])
    gpu_starts = [e["ts"] for e in first_after]
    gaps = []  # (idle microseconds, the launch time of the GPU event that ended the gap, or None)
    for (_, prev_end), (next_start, _) in zip(busy, busy[1:]):
        if next_start - prev_end >= min_gap_us:
            nxt = first_after[bisect.bisect_left(gpu_starts, next_start)]
            launch = launches.get(nxt.get("args", {}).get("correlation"))
            gaps.append((next_start - prev_end, None if launch is None else launch["ts"]))
    names = innermost_host_ops(host, [t for _, t in gaps if t is not None])
    by_waiter: dict[str, list[float]] = {}
    for gap, t in gaps:
        by_waiter.setdefault("(launch not in trace)" if t is None else names[t], []).append(gap)
    waiters = sorted(((name, sum(g), len(g)) for name, g in by_waiter.items()), key=lambda w: -w[1])
    return {"span_us": span, "busy_us": busy_us, "idle_us": span - busy_us,
            "counted_idle_us": sum(w[1] for w in waiters), "waiters": waiters}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace", type=Path)
    ap.add_argument("--min-gap-us", type=float, default=5.0, help="ignore gaps shorter than this (launch latency)")
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args(argv)
    if not args.trace.is_file():
        raise SystemExit(f"error: {args.trace}: no such trace file (write one with bench_step_time.py "
                         "--profile-steps N --profile-trace-dir DIR)")
    result = analyse(load_events(args.trace), args.min_gap_us)
    span, busy, idle = result["span_us"], result["busy_us"], result["idle_us"]
    print(f"{args.trace.name}: GPU span {span / 1000:.1f} ms, busy {busy / 1000:.1f} ms, idle {idle / 1000:.1f} ms "
          f"({100 * idle / span:.1f}%); gaps >= {args.min_gap_us:g} us: {result['counted_idle_us'] / 1000:.1f} ms")
    print(f"{'idle ms':>9}  {'gaps':>6}  the host operator that launched the GPU's next work")
    for name, total, count in result["waiters"][: args.top]:
        print(f"{total / 1000:9.2f}  {count:6d}  {name[:100]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
