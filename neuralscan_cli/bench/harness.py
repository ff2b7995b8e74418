"""Timing harness: paths timed in alternation in one process, and variants that need a fresh interpreter.

`time_interleaved` runs every path's warm-ups first, then rounds of one call per path (A B A B ... or, with
`rotate`, A B / B A / ...), so slow drift of the machine (clock, other load, thermal) hits all paths alike.
`run_worker` runs `python -m MODULE ARGS` and reads the one JSON line the worker prints last.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Callable


def time_interleaved(callables: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                     rotate: bool = False) -> dict[str, list[float]]:
    """Seconds per call for each named callable, `repeats` calls each, interleaved after `warmup` untimed calls."""
    names = list(callables)
    for _ in range(max(0, int(warmup))):
        for name in names:
            callables[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(max(1, int(repeats))):
        order = names[r % len(names):] + names[:r % len(names)] if rotate else names
        for name in order:
            fn = callables[name]
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def rotated(items: list, k: int) -> list:
    """items rotated left by k (round k of an interleaved schedule starts with a different item)."""
    if not items:
        return []
    k %= len(items)
    return list(items[k:]) + list(items[:k])


def run_worker(module: str, args: list[str], *, timeout: float = 600.0, env: dict | None = None) -> dict:
    """Run `python -m module args` in a fresh interpreter; its last stdout line that parses as JSON is the result.

    Failures come back as {"available": False, "reason": ...} rather than raising: one broken variant must not
    stop a benchmark.
    """
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, env=full_env)
    except subprocess.TimeoutExpired:
        return {"available": False, "reason": f"worker timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    for line in reversed(proc.stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                continue
            result.setdefault("process_seconds", round(wall, 2))
            return result
    tail = [s for s in proc.stderr.strip().splitlines() if s.strip()][-1:] or [f"exit code {proc.returncode}"]
    return {"available": False, "reason": f"worker failed: {tail[0][:300]}", "returncode": proc.returncode}
