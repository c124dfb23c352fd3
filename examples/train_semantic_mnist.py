"""Train a small MNIST CNN with semantic-smoothing augmentation, then certify it against six transforms.

Data: nncert.engine.io.data.mnist_split(n_train=9000, seed=0) (the shared MNIST test set, split into 9000 training
and 1000 held-out images). Training draws, for every image, one of the six smoothing laws below (or none) and
applies it, so the base classifier matches the smoothing it is certified with. CPU, one thread, a few minutes.

Certification: the first --count held-out images, CERTIFY with n0=100, n=--n, alpha=0.001. A sample counts as
certified when its prediction is correct and provably constant (w.p. >= 1 - alpha) over the whole attack range.
Run: python examples/train_semantic_mnist.py [--epochs 4] [--count 100] [--n 2000]
"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from nncert.engine.io.data import mnist_split
from nncert.engine.registry import get_registry
from nncert.engine.report import summary

# (transform, attack ranges, smoothing sigma): ranges are per parameter, in the transform's order
SETTINGS = [
    ("brightness", [(-0.4, 0.4)], [0.3]),
    ("contrast", [(0.6, 1.4)], [0.4]),
    ("contrast-brightness", [(0.8, 1.25), (-0.2, 0.2)], [0.3, 0.3]),
    ("gamma", [(0.5, 2.0)], [1.0]),
    ("blur", [(0.0, 2.0)], [1.0]),
    ("translation", [(-1, 1), (-1, 1)], [1.5, 1.5]),
]


def make_model():
    return nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, 1, 1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))


def augment(x, transforms, g):
    """Each image gets one smoothing law (or none), drawn uniformly."""
    choice = torch.randint(0, len(transforms) + 1, (len(x),), generator=g)
    out = x.clone()
    for j, (t, sigma) in enumerate(transforms):
        idx = (choice == j).nonzero().flatten()
        if len(idx):
            out[idx] = t.apply(x[idx], t.sample(len(idx), sigma, g)).to(x.dtype)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--save", default=None, help="write the trained state_dict here")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    (xtr, ytr), (xte, yte) = mnist_split(n_train=9000, seed=0)
    reg = get_registry()
    transforms = [(reg.transform(name)(), sigma) for name, _, sigma in SETTINGS]
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    t0 = time.time()
    for epoch in range(a.epochs):
        perm = torch.randperm(len(xtr), generator=g)
        model.train()
        total = 0.0
        for i in range(0, len(xtr), 128):
            b = perm[i:i + 128]
            loss = F.cross_entropy(model(augment(xtr[b], transforms, g)), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        model.eval()
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item()
        print(f"epoch {epoch + 1}: loss {total / len(xtr):.4f}, clean held-out accuracy {acc:.4f} "
              f"({time.time() - t0:.0f} s)")
    if a.save:
        torch.save(model.state_dict(), a.save)
    dom = reg.domain("semantic-smoothing")
    x, y = xte[:a.count], yte[:a.count]
    print(f"\ncertified accuracy on the first {a.count} held-out images (n0=100, n={a.n}, alpha=0.001)")
    print(f"{'transform':20s} {'ranges':28s} {'sigma':12s} {'smoothed acc':>12s} {'certified':>10s} {'s/img':>6s}")
    for name, ranges, sigma in SETTINGS:
        recs = dom.certify(model, x, y, {"transform": name, "ranges": ranges, "sigma": sigma, "n": a.n, "n0": 100,
                                         "alpha": 0.001, "batch": 1000, "seed": 0})
        s = summary(recs)
        print(f"{name:20s} {str(ranges):28s} {str(sigma):12s} {s['accuracy']:12.3f} {s['certified']:10.3f} "
              f"{s['mean_time']:6.2f}")


if __name__ == "__main__":
    main()
