"""Preprocessing throughput on the real datasets, all cores: `python benchmarks/preprocess_speed.py`.

Builds a fresh cache of ../shared/datasets/figshare and ../shared/datasets/br35h (each on its own, then
both), reports files/s end to end (reading, preprocessing, duplicate search, splitting, writing), and
saves the figures with the machine description to benchmarks/results/preprocess-<date>.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from neuralscan_cli.bench import describe_machine
from neuralscan_cli.data import SplitConfig, build_cache

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"


def run(sources: list[Path], workers: int, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        out = Path(tempfile.mkdtemp(prefix="ns-bench-"))
        try:
            t = time.perf_counter()
            report = build_cache(sources, out / "cache", workers=workers, split=SplitConfig())
            times.append(time.perf_counter() - t)
        finally:
            shutil.rmtree(out, ignore_errors=True)
    best = min(times)
    return {"sources": [str(s) for s in sources], "files": report.n_files, "errors": len(report.errors),
            "seconds": [round(t, 2) for t in times], "files_per_second_best": round(report.n_files / best, 1),
            "files_per_second_median": round(report.n_files / sorted(times)[len(times) // 2], 1),
            "duplicate_pairs": report.duplicates["pairs"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    fig, br = args.data / "figshare" / "labels.csv", args.data / "br35h" / "labels.csv"
    results = {"benchmark": "preprocess", "date": dt.datetime.now().isoformat(timespec="seconds"),
               "workers": args.workers, "machine": describe_machine(),
               "runs": {"figshare": run([fig], args.workers, args.repeats),
                        "br35h": run([br], args.workers, args.repeats),
                        "both": run([fig, br], args.workers, args.repeats)}}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"preprocess-{dt.date.today().isoformat()}.json"
    path.write_text(json.dumps(results, indent=2))
    for name, r in results["runs"].items():
        print(f"{name:9s} {r['files']:5d} files  best {r['files_per_second_best']:6.1f} files/s  "
              f"median {r['files_per_second_median']:6.1f} files/s  ({r['duplicate_pairs']} duplicate pairs)")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
