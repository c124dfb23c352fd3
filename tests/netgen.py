"""Random networks over the IR's op set, for soundness tests of every domain."""
from __future__ import annotations

import torch
from torch import nn

from nncert.engine.io.torch_import import Residual, from_torch


def random_mlp(sizes=(4, 8, 8, 3), act=nn.ReLU, seed=0):
    torch.manual_seed(seed)
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    return from_torch(nn.Sequential(*layers).eval(), (sizes[0],))


def random_cnn(seed=0, act=nn.ReLU):
    """conv + batchnorm + residual + avg/max pool + sigmoid/tanh on 1x8x8 inputs."""
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(4)
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    m = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), bn, act(),
        Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Tanh())),
        nn.AvgPool2d(2), nn.Conv2d(4, 4, 3, stride=1, padding=1, groups=2), nn.Sigmoid(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16, 8), nn.LeakyReLU(0.1), nn.Linear(8, 3),
    ).eval()
    return from_torch(m, (1, 8, 8))


NETS = {
    "mlp_relu": lambda s: random_mlp(seed=s),
    "mlp_sigmoid": lambda s: random_mlp((5, 16, 16, 4), nn.Sigmoid, seed=s),
    "mlp_tanh": lambda s: random_mlp((5, 16, 16, 4), nn.Tanh, seed=s),
    "cnn": lambda s: random_cnn(seed=s),
}


def box_samples(lower: torch.Tensor, upper: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """n points in the box [lower, upper] (flat, one box): corners (random ones past 2^10) and uniform points."""
    g = torch.Generator().manual_seed(seed)
    d = lower.numel()
    k = min(2 ** d, n // 4) if d <= 10 else n // 4
    if d <= 10 and 2 ** d <= n // 4:
        bits = ((torch.arange(2 ** d)[:, None] >> torch.arange(d)) & 1).to(lower.dtype)
    else:
        bits = torch.randint(0, 2, (k, d), generator=g).to(lower.dtype)
    corners = lower + bits * (upper - lower)
    uni = lower + torch.rand(n - len(corners), d, generator=g, dtype=lower.dtype) * (upper - lower)
    return torch.cat([corners, uni])


def assert_bounds_contain_samples(net, lo, hi, out_lo, out_hi, n=2000, seed=0):
    """Every sampled input of each box [lo[b], hi[b]] maps into [out_lo[b], out_hi[b]] (soundness by sampling)."""
    for b in range(lo.shape[0]):
        y = net.forward_flat(box_samples(lo[b], hi[b], n, seed))
        assert (y >= out_lo[b]).all() and (y <= out_hi[b]).all()
