"""Do `nncert verify --timeout B` runs keep their promises? Per instance and budget: requested budget, wall time of
the whole process (start to exit, measured here), peak RSS of the process and its worker, the verdict, and whether
wall <= budget + 1 s and peak <= the memory cap (--memory, default 4G here).

Instances (../shared): hard mnist_fc, a cersyve finetune network, yolo_2023 (CROWN of a large CNN), and one
ACAS Xu instance; names of other benchmark instances may be given as ONNX:VNNLIB pairs under --shared.

    python benchmarks/bench_budgets.py                      # budgets 5, 10, 30 s
    python benchmarks/bench_budgets.py --budgets 5 --memory 2G
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_coverage import run_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = [
    "benchmarks/mnist_fc/onnx/mnist-net_256x6.onnx:benchmarks/mnist_fc/vnnlib/prop_0_0.05.vnnlib",
    "benchmarks/mnist_fc/onnx/mnist-net_256x4.onnx:benchmarks/mnist_fc/vnnlib/prop_2_0.05.vnnlib",
    "benchmarks/vnncomp2025/cersyve/onnx/lane_keep_finetune_con.onnx:"
    "benchmarks/vnncomp2025/cersyve/vnnlib/prop_lane_keep.vnnlib",
    "benchmarks/vnncomp2025/yolo_2023/onnx/TinyYOLO.onnx:"
    "benchmarks/vnncomp2025/yolo_2023/vnnlib/TinyYOLO_prop_000161_eps_1_255.vnnlib",
    "benchmarks/acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx:benchmarks/acasxu/vnnlib/prop_1.vnnlib",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--budgets", default="5,10,30")
    ap.add_argument("--memory", default="4G")
    ap.add_argument("--instances", nargs="*", default=DEFAULT, metavar="ONNX:VNNLIB")
    args = ap.parse_args()
    from nncert.engine.memory import parse_size
    cap_mib = parse_size(args.memory, "--memory") / 2 ** 20
    shared = Path(args.shared)
    if not shared.is_dir():
        print(f"skipped: {shared} not found (the instances live in ../shared)")
        return 0
    print(f"{'instance':<58}{'budget':>7}{'wall_s':>8}{'peak_MiB':>10}  {'verdict':<9}{'ended':<10}ok")
    bad = 0
    for inst in args.instances:
        onnx, vnnlib = (shared / p for p in inst.split(":"))
        if not onnx.exists() or not vnnlib.exists():
            print(f"{onnx.name}: missing, skipped")
            continue
        for budget in (float(b) for b in args.budgets.split(",")):
            r = run_cli([sys.executable, "-m", "nncert.engine.cli", "verify", str(onnx), str(vnnlib), "--timeout",
                         str(budget), "--memory", args.memory, "--json"], budget + 60)
            try:
                out = json.loads(r["stdout"])
                verdict, ended = out["verdict"], out["evidence"].get("ended", "finished")
            except (ValueError, KeyError, TypeError):
                verdict, ended = "error", (r["stderr"].strip().splitlines() or ["?"])[-1][:40]
            ok = r["wall_s"] <= budget + 1 and (r["peak_mib"] or 0) <= cap_mib
            bad += not ok
            name = f"{onnx.parent.parent.name}/{onnx.stem}:{vnnlib.stem}"[-56:]
            print(f"{name:<58}{budget:>7.0f}{r['wall_s']:>8.2f}{r['peak_mib'] or float('nan'):>10.0f}  "
                  f"{verdict:<9}{ended:<10}{'yes' if ok else 'NO'}", flush=True)
    print(f"promises broken: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
