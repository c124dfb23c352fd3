"""Throughput of Gaussian-smoothing CERTIFY vs a plain torch loop over the same base model, and memory vs n.

    python benchmarks/bench_smoothing.py [--device cpu|cuda] [--n 20000] [--images 5] [--batch 1000] [--reps 3]
                                         [--model cnn|mlp] [--form torch|ir] [--threads 1] [--mem-n 10000 100000]

Throughput: noisy samples per second (n0 + n per image) of `GaussianSmoothing.certify` and of a reference loop
(randn noise, forward, argmax, bincount) with the same batch size and base model, interleaved `reps` times; the
table reports medians, their ratio ours / reference (target >= 0.95) and the median of the ratios of the
back-to-back pairs (less sensitive to load on a shared machine).
Memory: peak RSS (resource.getrusage, in a fresh subprocess per n) and the tracemalloc peak of Python objects
while certifying one image at each n in --mem-n; flat in n means the rows differ by far less than the noise of
the larger n would take if it were held at once (n * input size * 4 bytes, printed for comparison).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from torch import nn


def base_model(kind: str, form: str = "torch"):
    """The base classifier as a torch module, or (form "ir") as the nncert IR Network imported from it."""
    torch.manual_seed(0)
    if kind == "mlp":
        m = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)).eval()
    else:
        m = nn.Sequential(nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10)).eval()
    if form == "ir":
        from nncert.engine.io.torch_import import from_torch
        return from_torch(m, (1, 28, 28))
    return m


@torch.inference_mode()
def reference_loop(model, xs, sigma, n0, n, batch, device, seed=0):
    """The plain loop: per image, n0 + n noisy copies in batches; argmax counts (no statistics)."""
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    for x in xs:
        for num in (n0, n):
            counts = torch.zeros(10, dtype=torch.int64, device=device)
            done = 0
            while done < num:
                b = min(batch, num - done)
                noisy = x + sigma * torch.randn((b, *x.shape), generator=g, device=device)
                counts += torch.bincount(model(noisy).argmax(1), minlength=10)
                done += b
            out.append(counts.cpu())
    return out


def throughput(args):
    from nncert.plugins.smoothing import GaussianSmoothing
    device = torch.device(args.device)
    model = base_model(args.model, args.form).to(device=device)
    xs = torch.rand(args.images, 1, 28, 28, device=device)
    y = torch.zeros(args.images, dtype=torch.long)
    dom = GaussianSmoothing()
    opts = {"sigma": 0.25, "n0": 100, "n": args.n, "alpha": 0.001, "batch": args.batch, "device": args.device}
    samples = args.images * (100 + args.n)
    ours, ref = [], []
    dom.certify(model, xs[:1], y[:1], {**opts, "n": args.batch})  # warm-up
    reference_loop(model, xs[:1], 0.25, 100, args.batch, args.batch, device)
    for _ in range(args.reps):
        t0 = time.perf_counter()
        reference_loop(model, xs, 0.25, 100, args.n, args.batch, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        ref.append(samples / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        dom.certify(model, xs, y, opts)
        ours.append(samples / (time.perf_counter() - t0))
    return statistics.median(ours), statistics.median(ref), ours, ref


def child(n: int, device: str, model_kind: str, batch: int, form: str) -> None:
    """Certify one image with n samples in this (fresh) process and print peak RSS and tracemalloc peak."""
    import resource
    import tracemalloc

    from nncert.plugins.smoothing import GaussianSmoothing
    torch.set_num_threads(1)
    model = base_model(model_kind, form).to(device=device)
    x = torch.rand(1, 1, 28, 28)
    dom = GaussianSmoothing()
    dom.certify(model, x, torch.zeros(1, dtype=torch.long), {"sigma": 0.25, "n0": 100, "n": batch,
                                                             "batch": batch, "device": device})  # warm-up
    tracemalloc.start()
    dom.certify(model, x, torch.zeros(1, dtype=torch.long), {"sigma": 0.25, "n0": 100, "n": n, "batch": batch,
                                                             "device": device})
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cuda_peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else 0
    print(json.dumps({"n": n, "rss_mib": rss_kib / 1024, "py_peak_kib": py_peak / 1024,
                      "cuda_peak_mib": cuda_peak / 2 ** 20}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="cnn", choices=["cnn", "mlp"])
    ap.add_argument("--form", default="torch", choices=["torch", "ir"],
                    help="base model as a torch module or as the nncert IR Network (what the CLI certifies)")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mem-n", type=int, nargs="*", default=[10_000, 100_000])
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child is not None:
        child(args.child, args.device, args.model, args.batch, args.form)
        return

    mo, mr, ours, ref = throughput(args)
    print(f"Gaussian smoothing throughput ({args.model} as {args.form}, device {args.device}, {args.images} images x "
          f"(100 + {args.n}) samples, batch {args.batch}, {args.threads} thread(s), median of {args.reps})")
    print(f"{'':28}{'samples/s':>12}")
    print(f"{'nncert certify':28}{mo:12.0f}   runs {[round(v) for v in ours]}")
    print(f"{'plain torch loop':28}{mr:12.0f}   runs {[round(v) for v in ref]}")
    pairs = [o / r for o, r in zip(ours, ref)]
    print(f"{'ratio of medians':28}{mo / mr:12.3f}   (target >= 0.95)")
    print(f"{'median of paired ratios':28}{statistics.median(pairs):12.3f}   pairs {[round(p, 3) for p in pairs]}")

    if args.mem_n:
        print(f"\nmemory while certifying one image (fresh process per n, batch {args.batch})")
        print(f"{'n':>10}{'peak RSS MiB':>14}{'py peak KiB':>13}{'cuda peak MiB':>15}{'all noise at once MiB':>23}")
        for n in args.mem_n:
            res = subprocess.run([sys.executable, __file__, "--child", str(n), "--device", args.device,
                                  "--model", args.model, "--batch", str(args.batch), "--form", args.form],
                                 capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"{n:>10}{r['rss_mib']:14.1f}{r['py_peak_kib']:13.1f}{r['cuda_peak_mib']:15.1f}"
                  f"{n * 784 * 4 / 2 ** 20:23.1f}")


if __name__ == "__main__":
    main()
