"""Conv adjoints in float32 with a rounding allowance (plugins/crown/adjoint.py): the allowance covers the float32
result's deviation from the float64 one, CROWN stays sound with them, and the float64 path is kept where the error
model does not hold."""
import pytest
import torch
from torch import nn

from nncert.engine.io.torch_import import from_torch
from nncert.engine.registry import get_registry
from nncert.plugins.crown import adjoint, propagate
from nncert.plugins.crown.rules import avgpool_weight

from netgen import assert_bounds_contain_samples
from test_crown_window import _cnn

F64 = torch.float64

LAYERS = [
    (nn.Conv2d(3, 5, 3, padding=1), (3, 11, 9)),
    (nn.Conv2d(4, 6, 4, stride=2, padding=1), (4, 12, 10)),
    (nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2), (4, 9, 9)),
    (nn.Conv2d(2, 8, 1), (2, 7, 7)),
    (nn.AvgPool2d(3, stride=2), (3, 9, 11)),
]


@pytest.fixture(autouse=True)
def _every_conv(monkeypatch):
    monkeypatch.setattr(adjoint, "MIN_ROW_WORK", 0)   # these layers are small: take the float32 path anyway


def _setup(layer, shape, seed, zscale):
    torch.manual_seed(seed)
    net = from_torch(nn.Sequential(layer).eval(), shape).to(F64)
    node = net.nodes[0]
    if "W" in node.params:   # weights that float32 cannot hold exactly, so their rounding counts too
        node.params["W"] = node.params["W"] + torch.randn_like(node.params["W"]) * 1e-9
    ctx = propagate.Ctx(net, 2, F64, "cpu", get_registry().domain("crown").ops)
    zmax = torch.rand(2, *shape, dtype=F64) * zscale
    ctx.bounds[net.input_name] = (-zmax, zmax)
    if node.op == "conv2d":
        a = node.attrs
        return node, ctx, zmax, ctx.param(node, "W"), a["dilation"], a["groups"]
    return node, ctx, zmax, avgpool_weight(node, shape[0], F64, "cpu"), (1, 1), shape[0]


@pytest.mark.parametrize("k", range(len(LAYERS)))
@pytest.mark.parametrize("seed", [0, 1])
def test_allowance_covers_float32_rounding(k, seed):
    layer, shape = LAYERS[k]
    node, ctx, zmax, weight, dilation, groups = _setup(layer, shape, seed, zscale=10.0)
    g = torch.Generator().manual_seed(seed)
    C, H, W = node.shape
    at = (1, 2) if H > 4 and W > 5 else (0, 0)
    h, w = H - at[0] - 1, W - at[1] - 1
    # rows of very different scales, with large entries of both signs that cancel in the adjoint
    scale = 10.0 ** torch.randint(-6, 7, (2, 6, 1, 1, 1), generator=g).to(F64)
    Lam = torch.randn(2, 6, C, h, w, generator=g, dtype=F64) * scale
    Lam[:, 3] = 1e4 * (1 + torch.rand(2, C, h, w, generator=g, dtype=F64)) * (-1) ** torch.arange(w)
    x32, start, allowance = adjoint.conv_back(node, Lam, ctx, weight, dilation, groups, at)
    assert allowance is not None, "the float32 path should be taken on the CPU"
    assert x32.dtype == F64
    x64, start64 = adjoint.conv_adjoint(Lam, weight, shape, node.attrs["stride"], node.attrs["pads"], dilation,
                                        groups, at)
    assert start == start64 and x32.shape == x64.shape
    r0, c0 = start
    zb = zmax[:, None, :, r0:r0 + x64.shape[-2], c0:c0 + x64.shape[-1]]
    err = ((x64 - x32).abs() * zb).sum((2, 3, 4))
    assert (err <= allowance).all()
    assert (err > 0).any()              # float32 really rounded, so the test could fail
    # not vacuous: a small fraction of sum |Lam| (|J| zmax), the worst case it bounds
    worst = ((x64.abs() + 1) * zb).sum((2, 3, 4))
    assert (allowance < 1e-2 * worst + 1e-30).all()


def test_float64_kept_where_float32_does_not_apply(monkeypatch):
    node, ctx, zmax, weight, dilation, groups = _setup(*LAYERS[0], seed=0, zscale=1.0)
    Lam = torch.randn(2, 3, *node.shape, dtype=F64)
    huge = Lam * 1e36     # float32 would overflow
    assert adjoint.conv_back(node, huge, ctx, weight, dilation, groups)[2] is None
    assert adjoint.conv_back(node, Lam.float(), ctx, weight.float(), dilation, groups)[2] is None   # not float64
    ctx.cache.clear()
    ctx.bounds[node.inputs[0]] = (-zmax, zmax * float("inf"))       # unbounded input: no allowance possible
    assert adjoint.conv_back(node, Lam, ctx, weight, dilation, groups)[2] is None
    ctx.cache.clear()
    ctx.bounds[node.inputs[0]] = (-zmax, zmax)
    prec = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")   # TF32/bf16 allowed: not the IEEE error model
        assert adjoint.conv_back(node, Lam, ctx, weight, dilation, groups)[2] is None
    finally:
        torch.set_float32_matmul_precision(prec)
    assert adjoint.conv_back(node, Lam, ctx, weight, dilation, groups)[2] is not None
    # sums too long for gamma(n) = n u / (1 - n u) to be small (here: a coarse unit roundoff stands in for n)
    monkeypatch.setattr(adjoint, "U32", 2.0 ** -8)
    assert adjoint.conv_back(node, Lam, ctx, weight, dilation, groups)[2] is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crown_with_float32_adjoints_sound_and_close(monkeypatch, seed):
    net = _cnn(seed)
    crown = get_registry().domain("crown")
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(2, net.n_inputs, generator=g, dtype=F64)
    lo, hi = centre - 0.05, centre + 0.05
    calls = []
    real = adjoint._allowance
    monkeypatch.setattr(adjoint, "_allowance", lambda *a: calls.append(1) or real(*a))
    fl, fh = crown.bounds(net, lo, hi)
    assert calls, "float32 adjoints were not used"
    monkeypatch.setattr(adjoint, "single_ok", lambda Lam: False)
    dl, dh = crown.bounds(net, lo, hi)
    torch.testing.assert_close(fl, dl, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fh, dh, rtol=1e-4, atol=1e-4)
    assert_bounds_contain_samples(net, lo, hi, fl, fh, seed=seed)
