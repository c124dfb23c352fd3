"""CROWN on a CNN with float32 convolution adjoints (plugins/crown/adjoint.py) vs float64 throughout, same process.

    python benchmarks/bench_cnn_crown.py                      # TinyYOLO of shared/benchmarks/vnncomp2025/yolo_2023
    python benchmarks/bench_cnn_crown.py --instance 2 --threads 2

Prints, for each mode: seconds of one CROWN pass over the instance's input box (hidden bounds and the spec's rows),
the best (lowest) upper bound of C y + d over the rows (< 0 proves the instance), and the largest change of any
row's bound between the modes (what the rounding allowance costs in tightness). Both modes are sound; the float64
one is the reference. The process imports nncert before torch, so large tensors use transparent huge pages
(engine/package_init.py) in both modes.
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import nncert  # noqa: F401  (before torch: its allocator reads THP_MEM_ALLOC_ENABLE at its first allocation)
import torch

from nncert.engine.io.data import shared_dir
from nncert.engine.registry import get_registry
from nncert.plugins.crown import adjoint


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", default="yolo_2023", help="a folder of shared/benchmarks/vnncomp2025")
    ap.add_argument("--instance", type=int, default=0, help="row of its instances.csv")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shared = shared_dir()
    root = shared / "benchmarks" / "vnncomp2025" / args.benchmark if shared else None
    if root is None or not root.is_dir():
        raise SystemExit(f"vnncomp2025/{args.benchmark}: not found (needs ../shared beside the checkout)")
    onnx, vnnlib, _ = list(csv.reader(open(root / "instances.csv")))[args.instance]
    net = nncert.load(str(root / onnx))
    spec = nncert.read_vnnlib(str(root / vnnlib), net)
    crown = get_registry().domain("crown")
    print(f"{args.benchmark} {Path(vnnlib).name}: {net.n_inputs} inputs, {len(net.nodes)} nodes, "
          f"{torch.get_num_threads()} threads")
    real = adjoint.single_ok
    rows = {}
    for mode, ok in (("float32 adjoints", real), ("float64", lambda Lam: False)):
        adjoint.single_ok = ok
        t = time.perf_counter()
        his = []
        for case in spec.cases:
            box = case.input_set.bounding_box()
            C = torch.cat([dj.C for dj in case.disjuncts])
            d = torch.cat([dj.d for dj in case.disjuncts])
            _, hi = crown.bounds(net, box.lower[None], box.upper[None], C)
            his.append(hi[0] + d)
        rows[mode] = torch.cat(his)
        print(f"  {mode:17s} {time.perf_counter() - t:8.1f} s   best upper bound of C y + d: "
              f"{float(rows[mode].min()):+.6f}")
    adjoint.single_ok = real
    diff = (rows["float32 adjoints"] - rows["float64"]).abs().max()
    print(f"  largest change of a row's bound: {float(diff):.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
