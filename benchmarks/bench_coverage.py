"""Coverage of `nncert bounds` over the shared benchmarks (vnncomp2025/*, acasxu, mnist_fc).

Per network (with the first vnnlib using it) and domain: status, seconds and peak RSS of the CLI in a child process,
and `violations`: sampled points of each input box (uniform, centre, 64 corners) whose onnxruntime outputs leave the
bounds by more than float32 rounding (--tol), or whose float64 outputs (the imported network) leave them at all. Exit code 1 if any violation was found.

    python benchmarks/bench_coverage.py --per-benchmark 2
    python benchmarks/bench_coverage.py --benchmarks cersyve,acasxu_2023 --per-benchmark 1 --samples 200 \
        --out cov.jsonl --resume
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLI = [sys.executable, "-m", "nncert.engine.cli", "bounds"]
COLS = ["benchmark", "network", "ops", "domain", "status", "bound_s", "wall_s", "peak_mib", "samples",
        "violations", "violations_f64", "mean_width"]


def benchmark_dirs(shared: Path, names: set[str] | None) -> list[Path]:
    root = shared / "benchmarks"
    dirs = sorted(p for p in (root / "vnncomp2025").iterdir() if (p / "instances.csv").exists())
    dirs += [root / n for n in ("acasxu", "mnist_fc") if (root / n / "instances.csv").exists()]
    return [d for d in dirs if names is None or d.name in names]


def networks(bench: Path, limit: int) -> list[tuple[str, str]]:
    """Distinct (onnx, first vnnlib) pairs of instances.csv, in file order, at most `limit`."""
    seen: dict[str, str] = {}
    with open(bench / "instances.csv", newline="") as f:
        for k, row in enumerate(csv.reader(f)):
            row = [c.strip() for c in row]
            if not row or not row[0] or (k == 0 and row[0] == "onnx"):
                continue
            seen.setdefault(row[0], row[1])
    return list(seen.items())[:limit]


def onnx_ops(path: Path) -> str:
    try:
        import onnx
        return ",".join(sorted({n.op_type for n in onnx.load(str(path)).graph.node} - {"Constant"}))
    except Exception as e:
        return f"? ({type(e).__name__})"


# Peak RSS of the CLI and of every process it waited for (e.g. its worker): os.wait4 in this process would report at
# least our RSS (Linux carries the parent's high-water mark across fork + exec), so a small launcher spawns the CLI
# and reports the largest of its waited descendants (RUSAGE_CHILDREN).
_LAUNCH = ("import os, sys, resource; pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ); "
           "f = open(sys.argv[1], 'w'); f.write(f'{pid}\\n'); f.flush(); _, st, ru = os.wait4(pid, 0); "
           "f.write(f'{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss} {os.waitstatus_to_exitcode(st)}\\n')")


def _vmhwm_kib(pid: int) -> float | None:
    try:
        line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("VmHWM:"))
        return float(line.split()[1])
    except (OSError, StopIteration, ValueError):
        return None


def run_cli(cmd: list[str], timeout: float) -> dict:
    """Run a command in a child process: exit code (None when killed at `timeout`), wall seconds, peak RSS (MiB,
    the child's and its descendants'), stdout, stderr."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as info:
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-c", _LAUNCH, info.name] + cmd, stdout=out, stderr=err,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        timed_out, peak_kib = False, None
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            if p.poll() is None:  # timeout or interrupt: peak so far from /proc, then kill launcher and CLI together
                peak_kib = _vmhwm_kib(int((Path(info.name).read_text().split() or [0])[0]))
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        wall = time.perf_counter() - t0
        fields = Path(info.name).read_text().split()
        if len(fields) == 3:
            peak_kib, code = float(fields[1]), int(fields[2])
        else:
            code = p.returncode
        out.seek(0), err.seek(0)
        return {"code": None if timed_out else code, "wall_s": wall,
                "peak_mib": None if peak_kib is None else peak_kib / 1024,
                "stdout": out.read().decode(errors="replace"), "stderr": err.read().decode(errors="replace")}


def run_bounds(onnx_path: Path, vnnlib: Path, domain: str, timeout: float) -> dict:
    """Run the CLI in a child process: status, wall seconds, peak RSS, and the regions it bounded."""
    run = run_cli(CLI + [str(onnx_path), str(vnnlib), "--domain", domain, "--json"], timeout)
    code, wall, peak_mib, stdout, stderr = run["code"], run["wall_s"], run["peak_mib"], run["stdout"], run["stderr"]
    timed_out = code is None
    r = {"wall_s": wall, "peak_mib": peak_mib, "bound_s": None, "regions": None}
    if timed_out:
        r["status"] = "timeout"
    elif code != 0:
        lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        reason = lines[-1] if lines else (f"killed by signal {-code}" if code < 0 else f"exit code {code}")
        reason = reason.removeprefix("nncert: error: ").replace(str(onnx_path.parent) + "/", "")
        r["status"] = f"error: {reason}"
    else:
        try:
            d = json.loads(stdout)
            r.update(status="ok", bound_s=d["seconds"], regions=d["regions"])
        except (ValueError, KeyError, TypeError) as e:
            r["status"] = f"error: unreadable output ({type(e).__name__}: {e})"
    return r


@functools.lru_cache(maxsize=2)
def _ort_session(path: str):
    import onnxruntime as ort
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def ort_outputs(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    """Flat outputs [N, m] of the original model; x flat [N, n] (cast to the model's input type)."""
    from nncert.engine.io.ort import run_onnx
    try:
        return run_onnx(onnx_path, x)
    except Exception:
        pass  # e.g. no batch axis (nn4sys pensieve [12, 8]): feed the declared shape ourselves
    sess = _ort_session(str(onnx_path))
    inp = sess.get_inputs()[0]
    dims, dtype = list(inp.shape), (np.float64 if inp.type == "tensor(double)" else np.float32)

    def run(a):
        return np.asarray(sess.run(None, {inp.name: a.astype(dtype)})[0], dtype=np.float64)

    if dims and not (isinstance(dims[0], int) and dims[0] > 0) and math.prod(dims[1:]) == x.shape[1]:
        return np.concatenate([run(x[s:s + 1024].reshape(-1, *dims[1:])).reshape(len(x[s:s + 1024]), -1)
                               for s in range(0, len(x), 1024)])
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in dims]  # fixed batch 1, or no batch axis
    return np.stack([run(p.reshape(shape)).ravel() for p in x])


def sample_points(lo: np.ndarray, hi: np.ndarray, k: int, rng) -> np.ndarray:
    """k uniform points, the centre and 64 corners of [lo, hi] (float64, inside the box; onnxruntime gets them
    rounded to the model's input type, which the --tol slack covers)."""
    corners = np.where(rng.integers(0, 2, (64, lo.size)).astype(bool), hi, lo)
    return np.concatenate([lo + (hi - lo) * rng.random((k, lo.size)), ((lo + hi) / 2)[None], corners])


@functools.lru_cache(maxsize=2)
def _ir_network(path: str):
    import torch
    from nncert.engine.io.onnx_import import load_onnx
    return load_onnx(path).to(torch.float64)


def check(onnx_path: Path, vnnlib: Path, regions: list, k: int, rtol: float) -> tuple[int, int, int]:
    """(samples, samples whose onnxruntime outputs leave the bounds by > rtol * max(1, |y|), samples whose float64
    outputs (the imported network run in float64) leave them by > 1e-9 * max(1, |y|))."""
    import torch
    from nncert.engine.io.vnnlib import read_vnnlib
    cases = read_vnnlib(vnnlib).cases
    if len(cases) != len(regions):
        raise ValueError(f"{len(regions)} regions for {len(cases)} input boxes")
    rng = np.random.default_rng(0)
    n = bad_ort = bad_f64 = 0
    net = _ir_network(str(onnx_path))
    for case, reg in zip(cases, regions):
        box = case.input_set.bounding_box()
        x = sample_points(box.lower.numpy(), box.upper.numpy(), k, rng)
        lo, hi = np.asarray(reg["lower"], dtype=np.float64), np.asarray(reg["upper"], dtype=np.float64)
        for y, tol, what in ((ort_outputs(onnx_path, x), rtol, "onnxruntime"), (None, 1e-9, "float64")):
            if y is None:
                with torch.no_grad():
                    y = np.concatenate([net.forward_flat(torch.from_numpy(x[s:s + 256]).double()).numpy()
                                        for s in range(0, len(x), 256)])
            if y.shape[1] != lo.size:
                raise ValueError(f"{what} gives {y.shape[1]} outputs, bounds have {lo.size}")
            out = int(np.any((y < lo - tol * np.maximum(1.0, np.abs(y))) | (y > hi + tol * np.maximum(1.0, np.abs(y))),
                             axis=1).sum())
            if what == "float64":
                bad_f64 += out
            else:
                bad_ort += out
        n += len(x)
    return n, bad_ort, bad_f64


def measure(bench: Path, onnx_rel: str, vnnlib_rel: str, domain: str, ops: str, args) -> dict:
    onnx_path, vnnlib = bench / onnx_rel, bench / vnnlib_rel
    r = run_bounds(onnx_path, vnnlib, domain, args.timeout)
    rec = {"benchmark": bench.name, "network": onnx_rel.removeprefix("onnx/"), "vnnlib": vnnlib_rel, "ops": ops,
           "domain": domain, "status": r["status"], "bound_s": r["bound_s"], "wall_s": r["wall_s"],
           "peak_mib": r["peak_mib"], "samples": 0, "violations": None, "violations_f64": None, "mean_width": None}
    if r["regions"] is not None:
        w = [h - l for reg in r["regions"] for l, h in zip(reg["lower"], reg["upper"])]
        rec["mean_width"] = float(np.mean(w)) if w else None
        try:
            rec["samples"], rec["violations"], rec["violations_f64"] = check(onnx_path, vnnlib, r["regions"], args.samples, args.tol)
        except Exception as e:
            rec["status"] = f"ok, check failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return rec


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v).replace("|", "/")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_shared = os.environ.get("NNCERT_SHARED") or Path(__file__).resolve().parents[1].parent / "shared"
    ap.add_argument("--shared", type=Path, default=Path(default_shared))
    ap.add_argument("--benchmarks", help="comma-separated folder names (default: all)")
    ap.add_argument("--per-benchmark", type=int, default=3, help="distinct networks per benchmark")
    ap.add_argument("--domains", default="ibp,crown")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per CLI call")
    ap.add_argument("--samples", type=int, default=2000, help="uniform samples per input box")
    ap.add_argument("--tol", type=float, default=1e-4,
                    help="onnxruntime (float32) violation if outside the bounds by > tol * max(1, |y|)")
    ap.add_argument("--out", type=Path, help="JSON lines, appended as results come")
    ap.add_argument("--resume", action="store_true", help="skip (network, domain) pairs already in --out")
    args = ap.parse_args(argv)
    names = set(args.benchmarks.split(",")) if args.benchmarks else None
    domains = [d for d in args.domains.split(",") if d]
    done: dict[tuple, dict] = {}
    if args.resume and args.out and args.out.exists():
        for line in args.out.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                done[(rec["benchmark"], rec["network"], rec["domain"])] = rec
    rows = []
    for bench in benchmark_dirs(args.shared, names):
        for onnx_rel, vnnlib_rel in networks(bench, args.per_benchmark):
            ops = None
            for domain in domains:
                key = (bench.name, onnx_rel.removeprefix("onnx/"), domain)
                if key in done:
                    rows.append(done[key])
                    continue
                ops = ops or onnx_ops(bench / onnx_rel)
                rec = measure(bench, onnx_rel, vnnlib_rel, domain, ops, args)
                rows.append(rec)
                print(f"{key[0]}/{key[1]} {domain}: {rec['status']} ({rec['wall_s']:.1f} s)", file=sys.stderr,
                      flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(rec) + "\n")
    heads = ["benchmark", "network", "ops", "domain", "status", "bound s", "wall s", "peak MiB", "samples",
             "violations (ort)", "violations (f64)", "mean width"]
    print("| " + " | ".join(heads) + " |\n|" + "---|" * len(heads))
    for r in rows:
        print("| " + " | ".join(fmt(r.get(c)) for c in COLS) + " |")
    return 1 if any(r.get("violations") or r.get("violations_f64") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
