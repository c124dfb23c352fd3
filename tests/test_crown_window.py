"""Windowed CROWN rows (plugins/crown/window.py) give exactly the dense rows' bounds, and stay sound."""
import pytest
import torch
from torch import nn

from nncert.engine.registry import get_registry
from nncert.engine.io.torch_import import Residual, from_torch
from nncert.plugins.crown import adjoint, propagate, window

from netgen import assert_bounds_contain_samples

F64 = torch.float64


def _cnn(seed):
    """Maps larger than a tile; strides, asymmetric reach, dilation, groups, BatchNorm, residual adds, pooling,
    S-shaped and ReLU-like activations."""
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(4)
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    m = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), bn, nn.ReLU(),
        Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=2, dilation=2), nn.LeakyReLU(0.1),
                               nn.Conv2d(4, 4, 3, padding=1, groups=2))),
        nn.Sigmoid(),
        nn.Conv2d(4, 6, 4, stride=2, padding=1), nn.ReLU(),
        nn.AvgPool2d(2), nn.Conv2d(6, 5, 3, padding=1), nn.Tanh(), nn.Conv2d(5, 4, 1), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 5 * 5, 3),
    ).eval()
    return from_torch(m, (2, 21, 20)).to(F64)


def _dense_rows(*args):
    return window.dense(window.unit_rows(*args))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("tile", [3, 8])
def test_windowed_rows_equal_dense_rows(monkeypatch, seed, tile):
    net = _cnn(seed)
    crown = get_registry().domain("crown")
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(2, net.n_inputs, generator=g, dtype=F64)
    lo, hi = centre - 0.05, centre + 0.05
    monkeypatch.setattr(propagate, "TILE", tile)
    monkeypatch.setattr(adjoint, "single_ok", lambda Lam: False)  # float64 throughout: equal up to its rounding
    wl, wh = crown.bounds(net, lo, hi)
    monkeypatch.setattr(propagate, "unit_rows", _dense_rows)
    dl, dh = crown.bounds(net, lo, hi)
    torch.testing.assert_close(wl, dl, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(wh, dh, rtol=1e-10, atol=1e-10)
    assert_bounds_contain_samples(net, lo, hi, wl, wh, seed=seed)


def test_window_sums_and_crops():
    g = torch.Generator().manual_seed(0)
    full = (3, 9, 7)
    a = window.Win(torch.randn(1, 2, 3, 2, 3, generator=g, dtype=F64), (1, 4), full)
    b = window.Win(torch.randn(1, 2, 3, 4, 2, generator=g, dtype=F64), (5, 0), full)
    torch.testing.assert_close(window.dense(a + b), a.dense() + b.dense())
    torch.testing.assert_close(window.dense(a + b.dense()), a.dense() + b.dense())
    torch.testing.assert_close(window.dense(b.dense() + a), a.dense() + b.dense())
    v = torch.randn(3, 9, 7, generator=g, dtype=F64)
    assert (a.dense() * v).sum() == pytest.approx(float((a.t * a.crop(v)).sum()))
    ids = torch.tensor([5, 30, 62, 100, 150])
    rows = window.dense(window.unit_rows(full, ids, 2, F64, "cpu"))
    assert rows.shape == (2, 10, *full)
    flat = rows.reshape(2, 10, -1)
    assert (flat[:, torch.arange(5), ids] == 1).all() and (flat[:, 5 + torch.arange(5), ids] == -1).all()
    assert flat.abs().sum() == 20
    groups = window.by_tile(full, torch.arange(63 * 3), 4)
    assert sorted(torch.cat(groups).tolist()) == list(range(63 * 3))
    assert len(groups) == 3 * 2
