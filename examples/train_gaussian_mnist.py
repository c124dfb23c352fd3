"""Train small MNIST CNNs with Gaussian noise augmentation, export them to ONNX, and certify them with Gaussian
randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019).

    python examples/train_gaussian_mnist.py [--sigmas 0.25 0.5] [--epochs 10] [--count 100] [--n 10000]
                                            [--alpha 0.001] [--out gaussian_mnist_out] [--threads 1]

Data: nncert.engine.io.data.mnist_split(n_train=9000, seed=0) (the 10k MNIST test images split into 9000 training
and 1000 held-out images). For each sigma: train on CPU (noise N(0, sigma^2) added to the [0, 1] pixels, i.e. in
the model's input space, before the model's own normalisation layer), export <out>/cnn_sigma<sigma>.onnx (IR 8,
opset 13), load it back through nncert's ONNX importer, and CERTIFY the first `count` held-out images with n0=100,
n estimation samples and level alpha. Prints certified accuracy at l2 radii 0, 0.25, 0.5, 0.75, 1.0 and writes a TSV
and a certified-accuracy plot per sigma. Each certificate holds with probability >= 1 - alpha.
Note: with n samples, the largest certifiable radius is sigma * Phi^-1(alpha^(1/n)) (all votes for one class).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn
from scipy.stats import norm


def make_cnn() -> nn.Sequential:
    """A small CNN on [1, 28, 28] inputs in [0, 1]; the first layer normalises with fixed MNIST statistics."""
    norm_layer = nn.BatchNorm2d(1, affine=False, eps=0.0)
    norm_layer.running_mean.fill_(0.1307)
    norm_layer.running_var.fill_(0.3081 ** 2)
    return nn.Sequential(
        norm_layer,
        nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))


def train(sigma: float, x, y, epochs: int, seed: int = 0, batch: int = 64, lr: float = 1e-3) -> nn.Sequential:
    torch.manual_seed(seed)
    model = make_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for ep in range(epochs):
        model.train()
        model[0].eval()  # the normalisation layer keeps its fixed statistics
        perm = torch.randperm(len(x), generator=g)
        tot, t0 = 0.0, time.perf_counter()
        for s in range(0, len(x), batch):
            i = perm[s:s + batch]
            xb = x[i] + sigma * torch.randn(x[i].shape, generator=g)
            loss = nn.functional.cross_entropy(model(xb), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += loss.item() * len(i)
        print(f"  sigma={sigma} epoch {ep + 1}/{epochs}: loss {tot / len(x):.4f} ({time.perf_counter() - t0:.1f} s)")
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.25, 0.5])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--count", type=int, default=100, help="held-out images to certify (of 1000)")
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--alpha", type=float, default=0.001)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="gaussian_mnist_out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from nncert.engine.io.data import mnist_split
    from nncert.engine.io.onnx_import import load_onnx
    from nncert.engine.io.ort import export_onnx
    from nncert.engine.registry import get_registry
    from nncert.engine.report import certified_accuracy, plot_curve, summary, write_tsv

    (xtr, ytr), (xte, yte) = mnist_split(n_train=9000, seed=0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    domain = get_registry().domain("gaussian-smoothing")
    radii = (0.0, 0.25, 0.5, 0.75, 1.0)
    table = []
    for sigma in args.sigmas:
        t0 = time.perf_counter()
        model = train(sigma, xtr, ytr, args.epochs, seed=args.seed)
        train_s = time.perf_counter() - t0
        path = export_onnx(model, (1, 28, 28), out / f"cnn_sigma{sigma}.onnx")
        net = load_onnx(path)
        with torch.no_grad():
            clean = (net(xte).argmax(1) == yte).float().mean().item()
            parity = (net(xte).argmax(1) == model(xte).argmax(1)).float().mean().item()
        x, y = xte[: args.count], yte[: args.count]
        t0 = time.perf_counter()
        recs = domain.certify(net, x, y, {"sigma": sigma, "n0": args.n0, "n": args.n, "alpha": args.alpha,
                                          "batch": args.batch, "seed": args.seed, "device": args.device})
        cert_s = time.perf_counter() - t0
        write_tsv(recs, out / f"certify_sigma{sigma}.tsv")
        plot_curve(recs, out / f"certify_sigma{sigma}.png", title=f"MNIST CNN, sigma={sigma}, n={args.n}")
        acc = certified_accuracy(recs, radii)
        summ = summary(recs)
        max_r = sigma * norm.ppf(args.alpha ** (1.0 / args.n))
        print(f"sigma={sigma}: base clean accuracy {clean:.4f} on 1000 held-out (ONNX/torch argmax parity "
              f"{parity:.4f}); trained in {train_s:.0f} s; certified {len(recs)} images in {cert_s:.0f} s; "
              f"smoothed accuracy {summ['accuracy']:.3f}, abstain {summ['abstain']:.3f}; "
              f"max certifiable radius at this n: {max_r:.3f}")
        table.append((sigma, acc))
    print(f"\ncertified accuracy (first {args.count} held-out images, n0={args.n0}, n={args.n}, alpha={args.alpha}; "
          f"each certificate holds with probability >= {1 - args.alpha})")
    print("sigma  " + "  ".join(f"r={r:<5}" for r in radii))
    for sigma, acc in table:
        print(f"{sigma:<5}  " + "  ".join(f"{acc[float(r)]:.3f}  " for r in radii))


if __name__ == "__main__":
    main()
