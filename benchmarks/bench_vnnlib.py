"""Time the VNN-LIB 1.0 reader on every shared spec file: per file and in total.

Usage: python benchmarks/bench_vnnlib.py [--repeat 5]
Prints, per file, the best-of-N time to read it into a Spec next to the time of the regex tokenizer alone
(the floor for any reader that looks at every token), then the totals. The target is well under 1 s for all
files together. There is no third-party reader of VNN-LIB 1.0 to compare with (the `vnnlib` package on PyPI
reads 2.0 only), so the tokenizer is the reference line.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from nncert.engine.io.data import shared_dir
from nncert.engine.io.vnnlib import _tokenize, read_vnnlib


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = shared_dir()
    if root is None:
        raise SystemExit("shared benchmarks not found (set NNCERT_SHARED)")
    files = sorted(root.glob("benchmarks/*/vnnlib/*.vnnlib"))
    t0, c0 = time.perf_counter(), time.process_time()
    for f in files:  # cold: first read of each file, as a CLI run sees it
        read_vnnlib(f)
    cold, cold_cpu = time.perf_counter() - t0, time.process_time() - c0
    c0 = time.process_time()
    for f in files:  # CPU time of one pass: less sensitive than wall time to other processes on the machine
        read_vnnlib(f)
    warm_cpu = time.process_time() - c0
    print(f"{'file':34s} {'inputs':>6s} {'cases':>5s} {'disj':>5s} {'read ms':>8s} {'tokenize ms':>11s}")
    tot_read = tot_tok = 0.0
    for f in files:
        spec = read_vnnlib(f)
        text = Path(f).read_text()
        t_read = best(lambda: read_vnnlib(f), args.repeat)
        t_tok = best(lambda: _tokenize(text), args.repeat)
        tot_read += t_read
        tot_tok += t_tok
        n_dj = sum(len(c.disjuncts) for c in spec.cases)
        name = f"{f.parts[-3]}/{f.name}"
        print(f"{name:34s} {spec.n_inputs:6d} {len(spec.cases):5d} {n_dj:5d} {1e3 * t_read:8.2f} {1e3 * t_tok:11.2f}")
    print(f"\n{len(files)} files: read {tot_read:.3f} s total (best of {args.repeat} per file), "
          f"tokenizer alone {tot_tok:.3f} s; first (cold) pass {cold:.3f} s wall, {cold_cpu:.3f} s CPU; "
          f"second pass {warm_cpu:.3f} s CPU; target < 1 s")


if __name__ == "__main__":
    main()
