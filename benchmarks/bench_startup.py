"""Process start to verdict on the shipped digits example: median (and min/max) wall seconds of N runs each of
`nncert verify`, the VNN-COMP entry (`python -m nncert.engine.vnncomp`) without the resident worker, and the same
with it (engine/server.py, started once beforehand and not timed, as prepare_instance.sh does).

    python benchmarks/bench_startup.py [--runs 10]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EX = Path(__file__).resolve().parents[1] / "examples" / "digits"


def timed(cmd, env) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    onnx, spec = str(EX / "mlp.onnx"), str(EX / "prop_0_0.01.vnnlib")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "NNCERT_SERVER": os.path.join(tmp, "s.sock")}
        out = os.path.join(tmp, "result.txt")
        entry = [sys.executable, "-m", "nncert.engine.vnncomp", onnx, spec, out, "30"]
        rows = [("nncert verify", [sys.executable, "-m", "nncert.engine.cli", "verify", onnx, spec, "--timeout", "30"],
                 False), ("vnncomp entry, no worker", entry, False), ("vnncomp entry, resident worker", entry, True)]
        print(f"{'path':<34}{'median_s':>9}{'min_s':>8}{'max_s':>8}  verdict")
        for name, cmd, server in rows:
            if server:
                subprocess.run([sys.executable, "-m", "nncert.engine.server", "restart"], env=env, check=True)
            try:
                walls = [timed(cmd, env) for _ in range(args.runs)]
            finally:
                if server:
                    subprocess.run([sys.executable, "-m", "nncert.engine.server", "stop"], env=env)
            verdict = Path(out).read_text().split()[0] if "vnncomp" in cmd[2] else "-"
            print(f"{name:<34}{statistics.median(walls):>9.3f}{min(walls):>8.3f}{max(walls):>8.3f}  {verdict}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
