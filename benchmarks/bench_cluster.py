"""Throughput of `nncert bench` per executor on the same ACAS Xu instances: instances per minute (whole process,
start to exit, Ray's start included) for the local executor with --jobs 1 and --jobs 2 and for --executor ray on a
local Ray runtime of 2 CPUs, with correct / wrong against truth.csv.

    python benchmarks/bench_cluster.py                  # 24 instances: every 8th row of acasxu/instances.csv
    python benchmarks/bench_cluster.py --every 4 --address auto   # a running Ray cluster instead of a local one
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(csv: Path, root: Path, out: Path, *extra: str) -> tuple[float, dict]:
    """(wall seconds, summary) of one `nncert bench` process."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "nncert.engine.cli", "bench", str(csv), "--root", str(root), "--truth",
                        str(root / "truth.csv"), "--out", str(out), "--json", *extra],
                       capture_output=True, text=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"bench {' '.join(extra)} failed: {r.stderr.strip().splitlines()[-1:]}")
    return wall, json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--every", type=int, default=8, help="take every k-th instance of the CSV (default 8: 24 of 186)")
    ap.add_argument("--address", help="Ray cluster for the ray run (default: a local runtime of 2 CPUs)")
    args = ap.parse_args()
    root = Path(args.shared) / "benchmarks" / "acasxu"
    if not root.is_dir():
        print(f"skipped: {root} not found (the instances live in ../shared)")
        return 0
    rows = (root / "instances.csv").read_text().splitlines()[::args.every]
    ray = ["--executor", "ray", "--jobs", "2"] + (["--address", args.address] if args.address else [])
    print(f"{len(rows)} ACAS Xu instances (every {args.every}th row), CSV timeouts")
    print(f"{'executor':<22}{'wall_s':>8}{'inst/min':>10}{'correct':>9}{'wrong':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "inst.csv"
        csv.write_text("\n".join(rows) + "\n")
        for name, extra in [("local --jobs 1", ["--jobs", "1"]), ("local --jobs 2", ["--jobs", "2"]),
                            ("ray, 2 CPUs" if not args.address else f"ray {args.address}", ray)]:
            wall, s = run(csv, root, Path(tmp) / f"{name.split()[0]}{len(extra)}.jsonl", *extra)
            print(f"{name:<22}{wall:>8.1f}{60 * len(rows) / wall:>10.1f}{s.get('correct', 0):>9}{s.get('wrong', 0):>7}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
