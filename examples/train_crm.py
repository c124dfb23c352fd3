"""CRM training (Fazlyab et al., NeurIPS 2023) of a small MNIST MLP with differentiable LipLT bounds, against a
standard-trained baseline of the same architecture; both certified with the `liplt` domain at l2 eps.

    python examples/train_crm.py OUT_DIR [--epochs 15] [--eps 1.58] [--cnn]

Trains on 9000 images of nncert.engine.io.data.mnist_split (seed 0), certifies the other 1000 with certified
(Gram-iteration) Lipschitz bounds, prints clean and certified accuracies and the liplt / naive global bounds,
and writes OUT_DIR/{standard,crm}[_cnn].onnx (or .pt state dicts when ONNX export is unavailable). CPU, one thread,
a few minutes.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from nncert.engine.io.data import mnist_split
from nncert.engine.io.torch_import import from_torch
from nncert.plugins.liplt import LipLT
from nncert.plugins.liplt.differentiable import crm_loss, mlp_pairwise_lipschitz, sequential_mlp_parts


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                         nn.Linear(128, 10))


def cnn():
    return nn.Sequential(nn.Conv2d(1, 8, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 4, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(16 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))


def cnn_pairwise_lipschitz(model, state, iters=2):
    """Differentiable LipLT estimate for the CNN: its conv layers are linear, so with H = 0, G = I the
    recursion only needs the layer maps; conv layers enter as dense matrices built from the conv (14x14 / 7x7
    maps are small), so the MLP routine applies unchanged."""
    mats, slopes = [], []
    shape = (1, 28, 28)
    for mod in model:
        if isinstance(mod, nn.Conv2d):
            n = shape[0] * shape[1] * shape[2]
            eye = torch.eye(n).reshape(n, *shape)
            out = nn.functional.conv2d(eye, mod.weight, None, mod.stride, mod.padding)
            shape = tuple(out.shape[1:])
            mats.append(out.reshape(n, -1).T)
        elif isinstance(mod, nn.Linear):
            mats.append(mod.weight)
        elif isinstance(mod, nn.ReLU):
            slopes.append((0.0, 1.0))
    return mlp_pairwise_lipschitz(mats, slopes, state, iters)


def train(model, x, y, epochs, crm, lam, r_max, pairwise_fn, seed=0, lr=1e-3, bs=128):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr)
    state: dict = {}
    for ep in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        tot = 0.0
        for i in range(0, len(x), bs):
            idx = perm[i:i + bs]
            logits = model(x[idx])
            if crm:
                Lp = pairwise_fn(model, state)
                loss = crm_loss(logits, y[idx], Lp, lam, r_max)
            else:
                loss = nn.functional.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(idx)
        print(f"  epoch {ep + 1}/{epochs} loss {tot / len(x):.4f}", flush=True)
    return model.eval()


def evaluate(model, x, y, eps):
    net = from_torch(model, (1, 28, 28))
    d = LipLT()
    t0 = time.perf_counter()
    res = d.certify(net, x, y, {"eps": eps})
    secs = time.perf_counter() - t0
    lip = d.lipschitz(net, "liplt")["global"]
    nai = d.lipschitz(net, "naive")["global"]
    clean = sum(r["correct"] for r in res) / len(res)
    cert = sum(r["certified"] for r in res) / len(res)
    return {"clean_acc": clean, "certified_acc": cert, "liplt": lip, "naive": nai, "certify_seconds": secs}, net


def save(net, model, path: Path):
    try:
        from nncert.engine.io.ort import export_onnx
        return str(export_onnx(net, None, path.with_suffix(".onnx")))
    except ImportError:
        torch.save(model.state_dict(), path.with_suffix(".pt"))
        return str(path.with_suffix(".pt"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder for the trained models")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--eps", type=float, default=1.58)
    ap.add_argument("--lam", type=float, default=2.0, help="weight of the certified-radius term")
    ap.add_argument("--r-max", type=float, default=2.5, help="target radius of g(r) = relu(r_max - r)")
    ap.add_argument("--cnn", action="store_true", help="also train the small CNN")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    (xtr, ytr), (xte, yte) = mnist_split(n_train=9000, seed=0)

    def mlp_fn(model, state):
        lins, slopes = sequential_mlp_parts(model)
        return mlp_pairwise_lipschitz([m.weight for m in lins], slopes, state, 2)

    archs = [("mlp", mlp, mlp_fn)] + ([("cnn", cnn, lambda m, s: cnn_pairwise_lipschitz(m, s))] if a.cnn else [])
    table = {}
    for arch, make, pfn in archs:
        for kind in ("standard", "crm"):
            torch.manual_seed(0)
            t0 = time.perf_counter()
            print(f"training {arch} {kind}", flush=True)
            model = train(make(), xtr, ytr, a.epochs, kind == "crm", a.lam, a.r_max, pfn)
            tt = time.perf_counter() - t0
            r, net = evaluate(model, xte, yte, a.eps)
            r["train_seconds"] = tt
            r["file"] = save(net, model, a.out / (kind if arch == "mlp" else f"{kind}_{arch}"))
            table[f"{arch}/{kind}"] = r
    print(f"\ncertified l2 eps = {a.eps} on {len(xte)} held-out MNIST images (liplt domain, certified bounds)")
    print(f"{'model':<14}{'clean':>8}{'certified':>11}{'L liplt':>11}{'L naive':>11}{'train s':>9}")
    for k, r in table.items():
        print(f"{k:<14}{r['clean_acc']:>8.3f}{r['certified_acc']:>11.3f}{r['liplt']:>11.3g}{r['naive']:>11.3g}"
              f"{r['train_seconds']:>9.1f}")
    (a.out / "results.json").write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
