"""Build the example the README runs: a small MLP trained on scikit-learn's digits, exported to ONNX, and
VNN-LIB local-robustness properties around held-out test images.

    python examples/digits/make_example.py [--out examples/digits]

Writes mlp.onnx and prop_<index>_<eps>.vnnlib (unsafe set: some other class scores >= the true class within the
l_inf ball of radius eps, intersected with the pixel range [0, 1]). Deterministic for a given seed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn


def robustness_vnnlib(x: np.ndarray, label: int, eps: float, n_classes: int) -> str:
    lo, hi = np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)
    lines = [f"; digits local robustness: label {label}, l_inf eps {eps}", ""]
    lines += [f"(declare-const X_{i} Real)" for i in range(len(x))] + [""]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_classes)] + [""]
    for i in range(len(x)):
        lines.append(f"(assert (<= X_{i} {float(hi[i])!r}))")
        lines.append(f"(assert (>= X_{i} {float(lo[i])!r}))")
    lines += ["", "(assert (or"]
    lines += [f"    (and (>= Y_{j} Y_{label}))" for j in range(n_classes) if j != label]
    lines += ["))", ""]
    return "\n".join(lines)


def main() -> None:
    from sklearn.datasets import load_digits

    from nncert.engine.io.ort import export_onnx

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).parent))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    torch.manual_seed(args.seed)
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(args.seed).permutation(len(x))
    tr, te = perm[:1500], perm[1500:]
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x[tr]), torch.from_numpy(y[tr])
    for _ in range(200):
        for i in range(0, len(xt), 100):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[i:i + 100]), yt[i:i + 100]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(torch.from_numpy(x[te])).argmax(1).numpy() == y[te]).mean()
    print(f"test accuracy on {len(te)} held-out digits: {acc:.3f}")
    export_onnx(model, (64,), out / "mlp.onnx")
    for k in range(3):
        i = te[k]
        for eps in (0.01, 0.1):
            (out / f"prop_{k}_{eps}.vnnlib").write_text(robustness_vnnlib(x[i], int(y[i]), eps, 10))
    print(f"wrote {out / 'mlp.onnx'} and properties")


if __name__ == "__main__":
    main()
