"""IBP throughput: native fused interval kernels vs the torch reference, same run, same thread count.

Prints boxes per second at batch 1 and batch 4096 on ACAS Xu (run2a_1_1) and mnist-net_256x6, for
  - domain:  get_registry().domain('ibp').bounds(net, lower, upper) with NNCERT_KERNELS=auto (native fused path)
             vs NNCERT_KERNELS=torch (node-by-node torch rules), float64 as on verdict paths;
  - kernel:  IntervalChain (one native call) vs interval_chain_torch (layer by layer torch), float32 and float64.
Usage: python benchmarks/bench_ibp.py [--threads N] [--seconds S] [--batches 1 4096]
Target (issue 2): native >= 5x torch at batch 1 on ACAS Xu, not slower at batch 4096.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from nncert.engine import kernels
from nncert.engine.io.data import shared_dir
from nncert.engine.kernels.interval import interval_chain_torch
from nncert.engine.io.onnx_import import load_onnx
from nncert.engine.registry import get_registry
from nncert.plugins.ibp.fused import network_chain

MODELS = {"acasxu_1_1": "benchmarks/acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx",
          "mnist_256x6": "benchmarks/mnist_fc/onnx/mnist-net_256x6.onnx"}


def rate(fn, batch: int, seconds: float) -> float:
    """Boxes per second: best of 3 timed rounds of about seconds/3 each, after one warm-up call."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    reps = max(1, int(seconds / 3 / one))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t0) / reps)
    return batch / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=kernels.threads(), help="threads for torch and native")
    ap.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4096])
    args = ap.parse_args()
    root = shared_dir()
    if root is None:
        raise SystemExit("shared data directory not found (nncert.engine.io.data.shared_dir)")
    torch.set_num_threads(args.threads)
    kernels.set_threads(args.threads)
    info = kernels.info()
    print(f"threads={args.threads} native={info['native']} simd={info.get('cpu_simd')} cuda_built={info['cuda']}")
    ibp = get_registry().domain("ibp")
    rows = []
    for name, rel in MODELS.items():
        net = load_onnx(os.path.join(str(root), rel))
        chain = network_chain(net)
        if chain is None:
            raise SystemExit(f"{name}: not an MLP chain")
        for B in args.batches:
            g = torch.Generator().manual_seed(B)
            lo64 = torch.rand((B, net.n_inputs), dtype=torch.float64, generator=g)
            hi64 = lo64 + 0.01
            cases = []

            def domain_call(lo=lo64, hi=hi64):
                return ibp.bounds(net, lo, hi)

            cases.append(("domain f64", domain_call, domain_call))
            for dt in (torch.float32, torch.float64):
                lo, hi = lo64.to(dt), hi64.to(dt)
                layers = chain._converted(dt, lo.device)
                cases.append((f"kernel {str(dt)[6:]}", lambda lo=lo, hi=hi: chain(lo, hi),
                              lambda lo=lo, hi=hi, layers=layers: interval_chain_torch(lo, hi, layers)))
            for label, nat, ref in cases:
                os.environ["NNCERT_KERNELS"] = "auto"
                a = nat()
                r_nat = rate(nat, B, args.seconds)
                os.environ["NNCERT_KERNELS"] = "torch"
                b = ref()
                r_ref = rate(ref, B, args.seconds)
                os.environ["NNCERT_KERNELS"] = "auto"
                err = max((x - y).abs().max().item() for x, y in zip(a, b))
                rows.append((name, B, label, r_nat, r_ref, err))
    print(f"{'model':<12} {'batch':>6} {'path':<15} {'native box/s':>14} {'torch box/s':>14} {'speedup':>8} "
          f"{'max|diff|':>10}")
    for name, B, label, rn, rt, err in rows:
        print(f"{name:<12} {B:>6} {label:<15} {rn:>14,.0f} {rt:>14,.0f} {rn / rt:>7.1f}x {err:>10.1e}")


if __name__ == "__main__":
    main()
