"""Peak memory and throughput of `neuralscan classify` for 2,400 files and for 24,000 (the same files ten times).

`python benchmarks/classify_memory.py` links ../shared/datasets/figshare/images into a temporary tree (once,
and ten times over in ten sub-folders), scores each tree with the bundled INT8 classifier in a fresh process,
and records the child's peak resident memory (ru_maxrss) and images/s with the machine description in
benchmarks/results/classify-memory-<date>.json. A streaming pipeline keeps the peak the same for both.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from neuralscan_cli.bench import describe_machine

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "datasets" / "figshare" / "images"


def link_tree(dst: Path, copies: int) -> int:
    files = sorted(IMAGES.glob("*.png"))
    for k in range(copies):
        sub = dst / f"copy{k:02d}"
        sub.mkdir(parents=True)
        for f in files:
            os.symlink(f, sub / f.name)
    return len(files) * copies


def score(tree: Path, out: Path, model: str) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "neuralscan_cli", "classify", str(tree), "--out", str(out),
                           "--model", model], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"classify failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr else proc.returncode}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    rows = sum(1 for _ in open(out)) - 1
    # ru_maxrss of children is the largest child so far: runs go smallest first, so each reading is its own
    return {"files": rows, "seconds_with_startup": round(seconds, 1), "images_per_second_with_startup":
            round(rows / seconds, 1), "peak_rss_mib": round(max(peak_kib, before) / 1024, 1),
            "pipeline_images_per_second": _reported_rate(proc.stdout)}


def _reported_rate(stdout: str) -> float | None:
    """The images/s classify prints in its summary (scoring only, model loading excluded)."""
    found = re.findall(r"([\d.]+) images/s", stdout)
    return float(found[-1]) if found else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ns-mem-"))
    try:
        results = {"benchmark": "classify-memory", "date": dt.datetime.now().isoformat(timespec="seconds"),
                   "model": args.model, "machine": describe_machine(), "runs": {}}
        for copies in (1, 10):
            tree = work / f"x{copies}"
            n = link_tree(tree, copies)
            results["runs"][str(n)] = score(tree, work / f"x{copies}.csv", args.model)
            print(f"{n:6d} files: {results['runs'][str(n)]['peak_rss_mib']:7.1f} MiB peak, "
                  f"{results['runs'][str(n)]['images_per_second_with_startup']:6.1f} images/s incl. start-up")
        a, b = (results["runs"][k]["peak_rss_mib"] for k in results["runs"])
        results["peak_ratio_24000_vs_2400"] = round(b / a, 3)
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"classify-memory-{dt.date.today().isoformat()}.json"
        path.write_text(json.dumps(results, indent=2))
        print(f"peak memory ratio 24,000 vs 2,400 files: {results['peak_ratio_24000_vs_2400']}; saved {path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
