"""Certified spectral-norm bounds vs the exact norm (torch.linalg.matrix_norm(ord=2)) and plain power iteration.

    python benchmarks/bench_spectral.py [--n 1000] [--dim 64] [--threads 1] [--skip-conv]

Part 1: a batch of random Gaussian dim x dim matrices (Gram iteration and the shifted-Cholesky bound, both
certified). Part 2: every conv layer of a CIFAR-sized CNN (input
3x32x32), exact norm from the dense matrix of the layer. Looseness = bound / exact - 1 (max and mean over the
batch; negative = under-estimate, which only power iteration does). One table, one run.
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from nncert.engine.kernels import spectral as S
from nncert.engine.kernels import native_available


def timed(fn, repeat=1):
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def row(name, secs, ref_secs, vals, exact, certified):
    r = (vals / exact - 1)
    return f"{name:<44}{secs:>9.4f}{ref_secs / secs:>9.2f}x{float(r.max()):>12.2e}{float(r.mean()):>12.2e}" \
           f"{float(r.min()):>12.2e}   {'yes' if certified else 'no'}"


HEAD = f"{'method':<44}{'time s':>9}{'vs exact':>10}{'loose max':>12}{'loose mean':>12}{'loose min':>12}   certified"


def dense_part(n, dim, repeat):
    A = torch.randn(n, dim, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact, te = timed(lambda: torch.linalg.matrix_norm(A, ord=2), repeat)
    lines = [row(f"exact matrix_norm(ord=2) f64", te, te, exact, exact, True)]
    A32 = A.float()
    e32, t32 = timed(lambda: torch.linalg.matrix_norm(A32, ord=2), repeat)
    lines.append(row("exact matrix_norm(ord=2) f32 (not certified)", t32, te, e32.double(), exact, False))
    for it in (10, 50):
        (s, _), tp = timed(lambda: S.power_iteration(A, it), repeat)
        lines.append(row(f"power iteration, {it} its", tp, te, s, exact, False))
    b, tc = timed(lambda: S.cholesky_bound_torch(A), repeat)
    lines.append(row("cholesky bound torch ref (eps 2e-3)", tc, te, b, exact, True))
    if native_available() and hasattr(S._C, "spectral_chol_bound_f64"):
        b, tc = timed(lambda: S._cholesky_bound_native(A, 20, 2e-3)[0], repeat)
        lines.append(row("cholesky bound native CPU (eps 2e-3)", tc, te, b, exact, True))
        b, tc = timed(lambda: S._cholesky_bound_native(A, 20, 2e-3, generic=True)[0], repeat)
        lines.append(row("cholesky bound native, no AVX2 (eps 2e-3)", tc, te, b, exact, True))
        b, tc = timed(lambda: S._cholesky_bound_native(A, 20, 1e-2)[0], repeat)
        lines.append(row("cholesky bound native CPU (eps 1e-2)", tc, te, b, exact, True))
    for T in (5, 6, 8):
        b, tg = timed(lambda: S.gram_bound_torch(A, T), repeat)
        lines.append(row(f"gram bound torch ref, T={T}", tg, te, b, exact, True))
        if native_available():
            import os
            os.environ["NNCERT_KERNELS"] = "native"
            b, tn = timed(lambda: S.gram_bound(A, T), repeat)
            os.environ.pop("NNCERT_KERNELS")
            lines.append(row(f"gram bound native CPU, T={T}", tn, te, b, exact, True))
    return lines


def cifar_convs():
    g = torch.Generator().manual_seed(1)
    # (Cout, Cin, k, stride, pad) on a CIFAR input 3x32x32
    spec = [(4, 3, 3, 2, 1), (8, 4, 3, 1, 1), (16, 8, 4, 2, 1), (16, 16, 3, 1, 1)]
    shape = (3, 32, 32)
    layers = []
    for co, ci, k, s, p in spec:
        W = torch.randn(co, ci, k, k, generator=g, dtype=torch.float64) / math.sqrt(ci * k * k)
        fwd, adj, out = S.conv2d_operator(W, shape, (s, s), (p, p, p, p))
        layers.append((W, shape, (s, s), (p, p, p, p), fwd, adj))
        shape = out
    return layers


def conv_part():
    lines = []
    for li, (W, shape, st, pd, fwd, adj) in enumerate(cifar_convs()):
        n = math.prod(shape)
        D, tm = timed(lambda: fwd(torch.eye(n, dtype=torch.float64).reshape(n, *shape)).reshape(n, -1).T.contiguous())
        ex, te = timed(lambda: torch.linalg.matrix_norm(D, ord=2))
        ex = ex.reshape(1)
        tag = f"conv{li + 1} {tuple(W.shape)} s{st[0]} on {shape} ({D.shape[0]}x{D.shape[1]})"
        lines.append(f"-- {tag}")
        lines.append(row("  exact: dense matrix + matrix_norm(ord=2)", te + tm, te + tm, ex, ex, True))
        (s, _), tp = timed(lambda: S.power_iteration_op(fwd, adj, torch.randn(1, *shape, dtype=torch.float64), 50))
        lines.append(row("  power iteration conv/conv_T, 50 its", tp, te + tm, s, ex, False))
        b, tc = timed(lambda: torch.tensor([S.conv2d_bound(W, shape, st, pd)], dtype=torch.float64))
        lines.append(row("  circulant+polyphase DFT, gram bound T=6", tc, te + tm, b, ex, True))
        b3, tch = timed(lambda: S.cholesky_bound(D).reshape(1))
        lines.append(row("  dense matrix + cholesky bound", tch + tm, te + tm, b3, ex, True))
        b2, tg = timed(lambda: S.gram_bound(D, 8).reshape(1))
        lines.append(row("  dense matrix + gram bound T=8", tg + tm, te + tm, b2, ex, True))
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-conv", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, threads {a.threads}; native kernels: {native_available()}")
    print(f"\n[dense] {a.n} random {a.dim}x{a.dim} Gaussian matrices (float64)")
    print(HEAD)
    for line in dense_part(a.n, a.dim, a.repeat):
        print(line)
    if not a.skip_conv:
        print("\n[conv] CIFAR-sized CNN (3x32x32 input), one layer at a time")
        print(HEAD)
        for line in conv_part():
            print(line)


if __name__ == "__main__":
    main()
