"""Sampling throughput of semantic smoothing: nncert's count_classes + transform noise vs a plain torch loop.

Both count the votes of the same small CNN on n transformed copies of one MNIST-shaped input (same batch size,
same generator seeds, one thread). Prints a table of samples/second and the ratio ours/plain (target >= 0.95).
Run: python benchmarks/bench_semantic.py [--n 20000] [--batch 1000] [--repeats 3]
"""
import argparse
import time

import torch
import torch.nn as nn

from nncert.engine.registry import get_registry
from nncert.plugins.semantic.domain import noise_fn
from nncert.plugins.smoothing.sampling import count_classes

CASES = [("brightness", [0.3]), ("contrast", [0.3]), ("contrast-brightness", [0.2, 0.2]), ("gamma", [1.0]),
         ("blur", [1.0]), ("translation", [2.0, 2.0]), ("blur+translation", [1.0, 2.0, 2.0])]


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10)).eval()


@torch.inference_mode()
def plain(f, t, sigma, x, n, batch, g):
    """The reference: a hand-written loop doing the same draws and votes."""
    counts = torch.zeros(10, dtype=torch.int64)
    done = 0
    while done < n:
        b = min(batch, n - done)
        theta = t.sample(b, sigma, g)
        xb = t.apply(x.unsqueeze(0).expand(b, *x.shape), theta)
        counts += torch.bincount(f(xb).argmax(1), minlength=10)
        done += b
    return counts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    f = model()
    x = torch.rand(1, 28, 28)
    reg = get_registry()
    print(f"{'transform':22s} {'ours samples/s':>15s} {'plain samples/s':>16s} {'ratio':>7s}  same votes")
    for name, sigma in CASES:
        t = reg.transform(name)()
        nf = noise_fn(t, sigma, False)
        best_o = best_p = float("inf")
        for _ in range(a.repeats):   # interleaved, best of repeats (the machine is shared)
            t0 = time.perf_counter()
            co = count_classes(f, x, nf, a.n, a.batch, 10, torch.Generator().manual_seed(1))
            best_o = min(best_o, time.perf_counter() - t0)
            t0 = time.perf_counter()
            cp = plain(f, t, sigma, x, a.n, a.batch, torch.Generator().manual_seed(1))
            best_p = min(best_p, time.perf_counter() - t0)
        same = bool((torch.as_tensor(co) == cp).all())
        print(f"{name:22s} {a.n / best_o:15.0f} {a.n / best_p:16.0f} {best_p / best_o:7.3f}  {same}")


if __name__ == "__main__":
    main()
