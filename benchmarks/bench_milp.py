"""MILP (HiGHS) complete verification on mnist_fc, against truth.csv and against sound bounds alone.

    python benchmarks/bench_milp.py [--timeout S] [--limit N] [--net 256x2] [--bounds crown|ibp]

Per instance: the CROWN bounding pass alone (engine.verify.refutes: unsat or nothing), then engine.search.milp.milp_verify
with the csv's timeout (or --timeout). Prints one line per instance and a per-network table: solved (sat/unsat),
wrong (contradicting truth.csv), unsolved, bounds-only unsat count, and total MILP time.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=None, help="seconds per instance (default: the csv's)")
    ap.add_argument("--limit", type=int, default=None, help="first N instances (after --net filtering)")
    ap.add_argument("--net", default=None, help="only networks whose file name contains this, e.g. 256x2")
    ap.add_argument("--bounds", default="crown", choices=["crown", "ibp"])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from nncert.engine.io.data import shared_dir
    from nncert.engine.search.milp import milp_verify
    from nncert.engine.io.onnx_import import load_onnx
    from nncert.engine.registry import get_registry
    from nncert.engine.verify import refutes
    from nncert.engine.io.vnnlib import read_vnnlib

    root = shared_dir()
    if root is None:
        print("shared data not found; nothing to benchmark")
        return 0
    bench = root / "benchmarks" / "mnist_fc"
    truth = {(r["onnx"], r["vnnlib"]): r["answer"] for r in csv.DictReader(open(bench / "truth.csv"))}
    rows = list(csv.reader(open(bench / "instances.csv")))
    rows = [r for r in rows if args.net is None or args.net in r[0]]
    if args.limit:
        rows = rows[:args.limit]
    reg = get_registry()
    bound_dom = reg.domain("crown") if "crown" in reg.domains else reg.domain("ibp")
    nets, table = {}, {}
    for onnx, vnn, tmo in rows:
        if onnx not in nets:
            nets[onnx] = load_onnx(bench / onnx)
        net = nets[onnx]
        spec = read_vnnlib(bench / vnn, n_inputs=net.n_inputs, n_outputs=net.n_outputs).padded(net.n_outputs)
        timeout = args.timeout if args.timeout is not None else float(tmo)
        tb = time.perf_counter()
        bounds_unsat = all(refutes(bound_dom, net, case) for case in spec.cases)
        tb = time.perf_counter() - tb
        t0 = time.perf_counter()
        verdict, cex, st = milp_verify(net, spec, t0 + timeout, bounds_domain=args.bounds)
        secs = time.perf_counter() - t0
        ans = truth.get((onnx, vnn), "unknown")
        wrong = verdict in ("sat", "unsat") and ans in ("sat", "unsat") and verdict != ans
        t = table.setdefault(onnx, {"n": 0, "sat": 0, "unsat": 0, "wrong": 0, "unsolved": 0, "bounds": 0,
                                    "bounds_wrong": 0, "seconds": 0.0})
        t["n"] += 1
        t["seconds"] += secs
        t["bounds"] += bounds_unsat
        t["bounds_wrong"] += bounds_unsat and ans == "sat"
        if verdict in ("sat", "unsat"):
            t[verdict] += 1
        else:
            t["unsolved"] += 1
        t["wrong"] += wrong
        print(f"{onnx.split('/')[-1]:22s} {vnn.split('/')[-1]:24s} truth={ans:7s} milp={verdict:7s} {secs:7.2f}s "
              f"binaries={st.get('binaries', 0):4d} milps={st.get('milps', 0)} bounds={'unsat' if bounds_unsat else '-'}"
              f"{'  WRONG' if wrong else ''}", flush=True)
    print()
    print(f"{'network':22s} {'n':>3s} {'sat':>4s} {'unsat':>5s} {'wrong':>5s} {'unsolved':>8s} "
          f"{'bounds-only unsat':>17s} {'milp seconds':>12s}")
    for onnx, t in table.items():
        print(f"{onnx.split('/')[-1]:22s} {t['n']:3d} {t['sat']:4d} {t['unsat']:5d} {t['wrong']:5d} {t['unsolved']:8d} "
              f"{t['bounds']:17d} {t['seconds']:12.1f}")
    return 1 if any(t["wrong"] or t["bounds_wrong"] for t in table.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
