"""CROWN speed (boxes per second) vs auto_LiRPA's recorded per-box time, and what CROWN alone proves.

    python benchmarks/bench_crown.py [--threads N] [--big 1024] [--no-unsat] [--device cpu|cuda]
    python benchmarks/bench_crown.py --device cuda --big 16384 --no-unsat     # the GPU table

Part 1, speed, on the boxes recorded in shared/reference/auto_lirpa/{acasxu,mnist_fc}.json (float64, C = I):
  batch 1: mean per-box time of our native kernel and of our torch path (NNCERT_KERNELS=torch), beside the mean of
  auto_LiRPA's recorded CROWN "seconds" over the same records, the same statistic (recorded elsewhere, earlier; the
  ratio is indicative). Batch >= 1024: the recorded boxes tiled to a large batch, native (the torch path on
  --torch-big boxes, it is slow); plus two matrix-product floors at this machine's measured torch float64 matmul rate:
  A = dense CROWN (two rows for every hidden neuron back to the input, every neuron active), and B = the products this
  implementation requests (CROWN rows only for the neurons the intermediate-bound rule selects, and a lower-bound row
  only when the upper-bound row leaves the neuron active or unstable; neurons with zero ReLU slope skipped, as
  reduction index and as output column; counted by the native CPU kernel, unpadded, so CPU only). On a CPU with
  AVX-512 the torch rate is AVX-512's; the header says which SIMD copy of our kernels runs. With --device cuda the
  boxes, the network and the matmul-rate probe live on the GPU, every timing ends with a device synchronise, the
  torch path runs the full large batch, and the device's bounds on the recorded boxes are compared with the CPU's.
Part 2, verdicts: for every instance of shared/benchmarks/*/instances.csv, the disjuncts whose rows CROWN refutes
  (upper bound of C y + d < 0 for some row), counted as unsat only when all disjuncts of all regions are refuted;
  compared with truth.csv (an unsat where truth says sat would be a soundness bug).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import time

import torch

from nncert.engine import kernels
from nncert.engine.io.data import shared_dir
from nncert.engine.kernels import linear_bounds as lb
from nncert.engine.io.onnx_import import load_onnx
from nncert.engine.registry import get_registry
from nncert.plugins.crown.domain import MLPView


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, reps=None, runs=1, dev=torch.device("cpu"), min_run_s=0.2):
    """(best, worst) over `runs` runs of the mean time of `reps` calls (one warm-up call first; reps=None: enough
    calls for a run to last about min_run_s, so that short calls are not timed one by one); GPU work is
    synchronised before each clock read."""
    t = time.perf_counter()
    fn()
    sync(dev)
    if reps is None:
        reps = max(1, round(min_run_s / max(time.perf_counter() - t, 1e-6)))
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        sync(dev)
        ts.append((time.perf_counter() - t) / reps)
    return min(ts), max(ts)


def with_kernels(mode, fn):
    old = os.environ.get("NNCERT_KERNELS")
    os.environ["NNCERT_KERNELS"] = mode
    try:
        return fn()
    finally:
        if old is None:
            del os.environ["NNCERT_KERNELS"]
        else:
            os.environ["NNCERT_KERNELS"] = old


def dense_flops(view, m):
    """Multiply-adds of dense CROWN on one box: every neuron's two rows back to the input, then 2m output rows."""
    dims = [int(view.Ws[0].shape[1])] + [int(W.shape[0]) for W in view.Ws]
    L = len(view.Ws)

    def back(top):  # one row from h_top back to the input
        return sum(dims[j + 1] * dims[j] for j in range(top + 1))
    total = sum(2 * dims[k + 1] * back(k - 1) for k in range(1, L - 1))
    return total + 2 * m * back(L - 2)


def matmul_rate(dtype, dev):
    """torch's single-call dense matmul rate (multiply-adds per second, best of 3): a 2048x256 @ 256x256 product
    on the CPU, 16384x1024 @ 1024x1024 on a GPU (large enough to fill it)."""
    m, k = (2048, 256) if dev.type == "cpu" else (16384, 1024)
    a = torch.randn(m, k, dtype=dtype, device=dev)
    b = torch.randn(k, k, dtype=dtype, device=dev)
    return m * k * k / timed(lambda: a @ b, 20, runs=3, dev=dev)[0]


def speed(crown, sd, big, torch_big, runs, name, pick, dev):
    data = json.loads((sd / "reference" / "auto_lirpa" / f"{name}.json").read_text())["records"]
    recs = [r for r in data if pick(r["onnx"])]
    net = load_onnx(sd / "benchmarks" / name / recs[0]["onnx"]).to(device=dev)
    recs = [r for r in recs if r["onnx"] == recs[0]["onnx"]]
    lo = torch.tensor([r["lower_in"] for r in recs], dtype=torch.float64, device=dev)
    hi = torch.tensor([r["upper_in"] for r in recs], dtype=torch.float64, device=dev)
    ref = statistics.mean(r["CROWN"]["seconds"] for r in recs)
    rows, work = [], None
    for mode in ("native", "torch"):
        def one():
            for i in range(len(recs)):
                crown.bounds(net, lo[i:i + 1], hi[i:i + 1])
        t1 = with_kernels(mode, lambda: timed(one, None, runs, dev))
        t1 = (t1[0] / len(recs), t1[1] / len(recs))
        nb = big if mode == "native" else min(big, torch_big)
        reps = nb // len(recs) + 1
        L, H = lo.repeat(reps, 1)[:nb], hi.repeat(reps, 1)[:nb]
        if mode == "native" and dev.type == "cpu" and lb.native_madds() is not None:
            with_kernels(mode, lambda: crown.bounds(net, L, H))
            work = lb.native_madds() / nb
        tb = with_kernels(mode, lambda: timed(lambda: crown.bounds(net, L, H), 1, runs if mode == "native" else 1,
                                              dev))
        rows.append((mode, t1, nb, (tb[0] / nb, tb[1] / nb)))
    if dev.type == "cuda":  # the device's bounds on the recorded boxes against the CPU kernel's
        got = torch.cat(crown.bounds(net, lo, hi)).cpu()
        cpu = torch.cat(crown.bounds(load_onnx(sd / "benchmarks" / name / recs[0]["onnx"]), lo.cpu(), hi.cpu()))
        print(f"\n{name}: {dev} bounds vs CPU bounds on the recorded boxes: max |diff| / (1 + |cpu|) = "
              f"{float(((got - cpu).abs() / (1 + cpu.abs())).max()):.2e}")
    view = MLPView.of(net)
    rate = matmul_rate(torch.float64, dev)
    dense = dense_flops(view, net.n_outputs)
    print(f"\n{name} ({recs[0]['onnx']}, {len(recs)} recorded boxes, {dev}; best of {runs} runs [worst])")
    print(f"{'path':<10}{'batch1 ms/box':>22}{'x vs auto_LiRPA':>17}{'batch':>7}{'large-batch ms/box':>24}")
    for mode, t1, nb, tb in rows:
        print(f"{mode:<10}{t1[0] * 1e3:>11.3f} [{t1[1] * 1e3:>8.3f}]{ref / t1[0]:>17.1f}{nb:>7}"
              f"{tb[0] * 1e3:>12.4f} [{tb[1] * 1e3:>9.4f}]")
    print(f"{'auto_LiRPA':<10}{ref * 1e3:>11.3f}{'':>11}{1.0:>17.1f}{'':>7}{'(recorded, float32)':>24}")
    print(f"measured torch float64 matmul rate on {dev}: {rate / 1e9:.2f} G multiply-adds/s")
    print(f"floor A, dense CROWN (two rows for every hidden neuron, every neuron active): {dense / 1e6:.1f} M "
          f"multiply-adds -> {dense / rate * 1e3:.4f} ms/box; native large batch = {rows[0][3][0] * rate / dense:.2f}x")
    if work is not None:
        print(f"floor B, products this implementation does (rows of unstable/dense layers only, no lower row for "
              f"a neuron its upper row proves inactive, inactive neurons "
              f"skipped as rows and columns): {work / 1e6:.1f} M multiply-adds -> {work / rate * 1e3:.4f} ms/box; "
              f"native large batch = {rows[0][3][0] * rate / work:.2f}x (its products at "
              f"{work / rows[0][3][0] / 1e9:.2f} G multiply-adds/s, all its other work included)")


def count_unsat(crown, sd):
    from nncert.engine.io.vnnlib import read_vnnlib
    for name in ("acasxu", "mnist_fc"):
        bench = sd / "benchmarks" / name
        truth = {(r["onnx"], r["vnnlib"]): r["answer"] for r in csv.DictReader(open(bench / "truth.csv"))}
        nets, n, proved, wrong, t0 = {}, 0, 0, [], time.perf_counter()
        by_truth = {}
        for row in csv.reader(open(bench / "instances.csv")):
            if not row:
                continue
            onnx_rel, vnn_rel = row[0].strip(), row[1].strip()
            if onnx_rel not in nets:
                nets[onnx_rel] = load_onnx(bench / onnx_rel)
            net = nets[onnx_rel]
            spec = read_vnnlib(bench / vnn_rel, net.n_inputs, net.n_outputs)
            ok = True
            for case in spec.cases:
                box = case.input_set.bounding_box()
                Cs = torch.cat([d.C for d in case.disjuncts])
                ds = torch.cat([d.d for d in case.disjuncts])
                _, hi = crown.bounds(net, box.lower[None], box.upper[None], Cs)
                up = hi[0] + ds
                s = 0
                for d in case.disjuncts:
                    k = d.C.shape[0]
                    if not bool((up[s:s + k] < 0).any()):
                        ok = False
                    s += k
                if not ok:
                    break
            n += 1
            t = truth.get((onnx_rel, vnn_rel), "?")
            by_truth[t] = by_truth.get(t, 0) + 1
            if ok:
                proved += 1
                if t == "sat":
                    wrong.append((onnx_rel, vnn_rel))
        print(f"\n{name}: CROWN alone proves {proved} / {n} instances unsat "
              f"(truth: {by_truth}); proved-unsat where truth says sat: {len(wrong)} {wrong[:3]} "
              f"[{time.perf_counter() - t0:.1f} s]")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--big", type=int, default=1024)
    ap.add_argument("--torch-big", type=int, default=None,
                    help="large batch for the torch path (default: 128 on the CPU, where it is slow; --big on a GPU)")
    ap.add_argument("--runs", type=int, default=3, help="repeat each native timing; best and worst are printed")
    ap.add_argument("--no-unsat", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (boxes and network on that device)")
    a = ap.parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {a.device}: torch sees no CUDA device")
    torch_big = a.torch_big if a.torch_big is not None else (128 if dev.type == "cpu" else a.big)
    torch.set_num_threads(a.threads)
    sd = shared_dir()
    if sd is None:
        raise SystemExit("shared data directory not found")
    crown = get_registry().domain("crown")
    print(f"device: {dev}; threads: {a.threads} (torch and native CPU); float64; auto_LiRPA times are its recorded "
          f"per-box seconds; native CPU SIMD: {kernels.info().get('crown_simd', '?')}")
    if dev.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(dev)}; CUDA kernels built: {kernels.cuda_built()}")
    speed(crown, sd, a.big, torch_big, a.runs, "acasxu", lambda p: "1_1" in p, dev)
    speed(crown, sd, a.big, torch_big, a.runs, "mnist_fc", lambda p: "256x6" in p, dev)
    if not a.no_unsat:
        count_unsat(crown, sd)


if __name__ == "__main__":
    main()
