"""Interval kernels: native (CPU, CUDA when present) vs the torch reference, soundness by sampling, fused chain,
and the fused IBP fast path against node-by-node IBP."""
from __future__ import annotations

import pytest
import torch

from nncert.engine import kernels
from nncert.engine.kernels import interval as I

torch.set_num_threads(1)

HAS_NATIVE = kernels._C is not None and hasattr(kernels._C, "IntervalChain")
native_only = pytest.mark.skipif(not HAS_NATIVE, reason="nncert._C without interval kernels (not built)")
HAS_CUDA = torch.cuda.is_available() and kernels.cuda_built() and hasattr(kernels._C, "interval_linear_cuda")
cuda_only = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device (or _C built without CUDA): GPU parity skipped")

TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float64: dict(rtol=1e-10, atol=1e-10)}


def _box(shape, dtype, gen, device="cpu"):
    lo = torch.randn(shape, dtype=dtype, generator=gen)
    hi = lo + torch.rand(shape, dtype=dtype, generator=gen)
    return lo.to(device), hi.to(device)


@pytest.fixture(autouse=True)
def _native_mode(monkeypatch):
    monkeypatch.setenv("NNCERT_KERNELS", "auto")
    yield
    kernels.set_threads(None)


@native_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B,n_in,n_out", [(0, 4, 3), (1, 1, 1), (3, 1, 7), (5, 9, 1), (1, 5, 50), (17, 33, 40),
                                          (64, 70, 19), (200, 3, 130)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_parity(dtype, B, n_in, n_out, bias):
    g = torch.Generator().manual_seed(B * 1000 + n_in * 10 + n_out)
    lo, hi = _box((B, n_in), dtype, g)
    W = torch.randn(n_out, n_in, dtype=dtype, generator=g)
    b = torch.randn(n_out, dtype=dtype, generator=g) if bias else None
    got = I.interval_linear(lo, hi, W, b)
    ref = I.interval_linear_torch(lo, hi, W, b)
    for x, y in zip(got, ref):
        assert x.dtype == dtype and x.shape == (B, n_out)
        torch.testing.assert_close(x, y, **TOL[dtype])


@native_only
def test_linear_threads_and_layout():
    """Multithreaded result equals single-threaded; non-contiguous inputs and leading dims are handled."""
    g = torch.Generator().manual_seed(1)
    lo, hi = _box((300, 40), torch.float64, g)
    W, b = torch.randn(64, 40, dtype=torch.float64, generator=g), torch.randn(64, dtype=torch.float64, generator=g)
    kernels.set_threads(1)
    one = I.interval_linear(lo, hi, W, b)
    kernels.set_threads(3)
    three = I.interval_linear(lo, hi, W, b)
    for x, y in zip(one, three):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    lt, ht = lo.T.contiguous().T, hi.T.contiguous().T  # same values, column-major
    assert not lt.is_contiguous()
    for x, y in zip(I.interval_linear(lt, ht, W.T.contiguous().T, b), one):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
    l3, h3 = I.interval_linear(lo.reshape(3, 100, 40), hi.reshape(3, 100, 40), W, b)
    torch.testing.assert_close(l3.reshape(300, 64), one[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_box_contains_samples(dtype):
    """Soundness by sampling: W x + b lies in the output box for x sampled in the input box (corners included)."""
    g = torch.Generator().manual_seed(7)
    lo, hi = _box((4, 6), dtype, g)
    W, b = torch.randn(5, 6, dtype=dtype, generator=g), torch.randn(5, dtype=dtype, generator=g)
    olo, ohi = I.interval_linear(lo, hi, W, b)
    u = torch.rand((4, 2000, 6), dtype=dtype, generator=g)
    u[:, :64] = torch.randint(0, 2, (4, 64, 6), generator=g).to(dtype)  # corners
    x = lo[:, None] + u * (hi - lo)[:, None]
    y = x @ W.T + b
    slack = 1e-4 if dtype == torch.float32 else 1e-10
    assert (y >= olo[:, None] - slack).all() and (y <= ohi[:, None] + slack).all()
    # IBP is exact for a single affine layer: the box is attained (tight to rounding) by the right corner
    corner = torch.where(W[None] > 0, lo[:, None], hi[:, None])  # argmin corner per output
    ymin = (corner * W[None]).sum(-1) + b
    torch.testing.assert_close(ymin, olo, **TOL[dtype])


CONV_CASES = [
    # B, C, H, W, Cout, k, stride, pads(t,l,b,r), dilation, groups
    (2, 3, 8, 8, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (1, 4, 7, 9, 6, (3, 2), (2, 1), (0, 2, 1, 0), (1, 2), 2),
    (3, 2, 6, 5, 2, (1, 1), (1, 2), (0, 0, 0, 0), (1, 1), 2),
    (0, 3, 5, 5, 3, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (2, 6, 10, 10, 3, (3, 3), (3, 3), (2, 0, 0, 2), (2, 2), 3),
    (1, 1, 1, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
]


@native_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_parity(dtype, case):
    B, C, H, Wd, Cout, k, stride, pads, dil, groups = case
    g = torch.Generator().manual_seed(sum(case[:5]))
    lo, hi = _box((B, C, H, Wd), dtype, g)
    W = torch.randn(Cout, C // groups, *k, dtype=dtype, generator=g)
    b = torch.randn(Cout, dtype=dtype, generator=g)
    for bias in (b, None):
        got = I.interval_conv2d(lo, hi, W, bias, stride, pads, dil, groups)
        ref = I.interval_conv2d_torch(lo, hi, W, bias, stride, pads, dil, groups)
        for x, y in zip(got, ref):
            assert x.shape == y.shape and x.dtype == dtype
            torch.testing.assert_close(x, y, **TOL[dtype])


def _random_layers(widths, acts, dtype, gen):
    layers = []
    for k, act in enumerate(acts):
        W = torch.randn(widths[k + 1], widths[k], dtype=dtype, generator=gen) / widths[k] ** 0.5
        b = torch.randn(widths[k + 1], dtype=dtype, generator=gen) if k % 2 == 0 else None
        layers.append((W, b, act, 0.1 if act == "leaky_relu" else 0.0))
    return layers


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B", [0, 1, 5, 130])
@pytest.mark.parametrize("widths,acts", [
    ([5, 50, 50, 5], ["relu", "relu", "none"]),
    ([1, 1], ["none"]),
    ([3, 17, 1], ["leaky_relu", "tanh"]),
    ([40, 33, 20, 9, 2], ["sigmoid", "tanh", "leaky_relu", "relu"]),
])
def test_chain_parity(dtype, B, widths, acts):
    g = torch.Generator().manual_seed(B + sum(widths))
    layers = _random_layers(widths, acts, dtype, g)
    lo, hi = _box((B, widths[0]), dtype, g)
    chain = I.IntervalChain(layers)
    got = chain(lo, hi)
    ref = I.interval_chain_torch(lo, hi, layers)
    for x, y in zip(got, ref):
        assert x.shape == (B, widths[-1]) and x.dtype == dtype
        torch.testing.assert_close(x, y, **TOL[dtype])
    # layer by layer with the single-layer dispatcher gives the same boxes
    l, h = lo, hi
    for W, b, act, alpha in layers:
        l, h = I.interval_act_torch(*I.interval_linear(l, h, W, b), act, alpha)
    torch.testing.assert_close(got[0], l, **TOL[dtype])
    torch.testing.assert_close(got[1], h, **TOL[dtype])


def test_chain_soundness_sampling():
    g = torch.Generator().manual_seed(3)
    layers = _random_layers([4, 16, 16, 3], ["relu", "tanh", "none"], torch.float64, g)
    lo, hi = _box((3, 4), torch.float64, g)
    olo, ohi = I.IntervalChain(layers)(lo, hi)
    x = lo[:, None] + torch.rand((3, 3000, 4), dtype=torch.float64, generator=g) * (hi - lo)[:, None]
    for W, b, act, alpha in layers:
        x = x @ W.T + (0 if b is None else b)
        x = I.interval_act_torch(x, x, act, alpha)[0]
    assert (x >= olo[:, None] - 1e-12).all() and (x <= ohi[:, None] + 1e-12).all()


def test_chain_rejects_bad_layers():
    W = torch.randn(3, 2)
    with pytest.raises(ValueError, match="not monotone"):
        I.IntervalChain([(W, None, "leaky_relu", -0.5)])
    with pytest.raises(ValueError, match="takes 4 inputs"):
        I.IntervalChain([(W, None, "relu", 0), (torch.randn(2, 4), None, "none", 0)])
    with pytest.raises(ValueError, match="unknown activation"):
        I.IntervalChain([(W, None, "gelu", 0)])


def test_torch_mode_forces_reference(monkeypatch):
    monkeypatch.setenv("NNCERT_KERNELS", "torch")
    assert not kernels.use_native(torch.zeros(1))
    g = torch.Generator().manual_seed(5)
    lo, hi = _box((2, 3), torch.float64, g)
    W = torch.randn(4, 3, dtype=torch.float64, generator=g)
    for x, y in zip(I.interval_linear(lo, hi, W, None), I.interval_linear_torch(lo, hi, W, None)):
        assert torch.equal(x, y)


def test_info_keys():
    d = kernels.info()
    for key in ("native", "cuda_built", "version", "threads"):
        assert key in d
    assert isinstance(d["native"], bool) and isinstance(d["cuda_built"], bool) and d["threads"] >= 1


@native_only
def test_fused_ibp_matches_node_by_node(monkeypatch):
    """The fused IBP path (affines folded, one native call) equals node-by-node IBP up to rounding."""
    from nncert.engine.ir import Network, Node
    from nncert.engine.registry import get_registry
    from nncert.plugins.ibp.fused import network_chain

    g = torch.Generator().manual_seed(11)
    nodes = [
        Node("a0", "affine", ["x"], {"scale": torch.tensor([[1.5, -2.0, 0.5]]), "shift": torch.randn(1, 3, generator=g)}),
        Node("f", "reshape", ["a0"], attrs={"shape": (3,)}),
        Node("l1", "linear", ["f"], {"W": torch.randn(8, 3, generator=g), "b": torch.randn(8, generator=g)}),
        Node("a1", "affine", ["l1"], {"scale": torch.randn(8, generator=g)}),
        Node("r1", "relu", ["a1"]),
        Node("a2", "affine", ["r1"], {"shift": torch.randn(8, generator=g)}),
        Node("l2", "linear", ["a2"], {"W": torch.randn(6, 8, generator=g)}),
        Node("s", "leaky_relu", ["l2"], attrs={"alpha": 0.2}),
        Node("l3", "linear", ["s"], {"W": torch.randn(2, 6, generator=g), "b": torch.randn(2, generator=g)}),
    ]
    net = Network("x", (1, 3), nodes)
    assert network_chain(net) is not None
    ibp = get_registry().domain("ibp")
    lo, hi = _box((9, 3), torch.float64, g)
    fused = ibp.bounds(net, lo, hi)
    monkeypatch.setenv("NNCERT_KERNELS", "torch")
    plain = ibp.bounds(net, lo, hi)
    for x, y in zip(fused, plain):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
    # not a chain: a residual add
    res = Network("x", (3,), [Node("l", "linear", ["x"], {"W": torch.randn(3, 3)}), Node("s", "add", ["l", "x"])])
    assert network_chain(res) is None


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_linear_and_chain_parity(dtype):
    g = torch.Generator().manual_seed(21)
    for B, n_in, n_out in [(1, 5, 50), (0, 3, 2), (77, 33, 130), (1, 1, 1)]:
        lo, hi = _box((B, n_in), dtype, g)
        W, b = torch.randn(n_out, n_in, dtype=dtype, generator=g), torch.randn(n_out, dtype=dtype, generator=g)
        got = I.interval_linear(lo.cuda(), hi.cuda(), W.cuda(), b.cuda())
        ref = I.interval_linear_torch(lo, hi, W, b)
        for x, y in zip(got, ref):
            assert x.is_cuda
            torch.testing.assert_close(x.cpu(), y, **TOL[dtype])
    layers = _random_layers([40, 33, 20, 9, 2], ["sigmoid", "tanh", "leaky_relu", "relu"], dtype, g)
    lo, hi = _box((300, 40), dtype, g)
    chain = I.IntervalChain(layers)
    got = chain(lo.cuda(), hi.cuda())
    ref = I.interval_chain_torch(lo, hi, layers)
    for x, y in zip(got, ref):
        torch.testing.assert_close(x.cpu(), y, **TOL[dtype])


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CONV_CASES)
def test_cuda_conv2d_parity(dtype, case):
    B, C, H, Wd, Cout, k, stride, pads, dil, groups = case
    g = torch.Generator().manual_seed(sum(case[:5]))
    lo, hi = _box((B, C, H, Wd), dtype, g)
    W = torch.randn(Cout, C // groups, *k, dtype=dtype, generator=g)
    b = torch.randn(Cout, dtype=dtype, generator=g)
    got = I.interval_conv2d(lo.cuda(), hi.cuda(), W.cuda(), b.cuda(), stride, pads, dil, groups)
    ref = I.interval_conv2d_torch(lo, hi, W, b, stride, pads, dil, groups)
    for x, y in zip(got, ref):
        torch.testing.assert_close(x.cpu(), y, **TOL[dtype])


# -- first-use check of the CUDA kernels ----------------------------------------------------------------------------
@native_only
def test_kernel_check_passes_on_cpu_and_names_a_broken_kernel(monkeypatch):
    """cuda_check.check runs on any device: on the CPU it checks the CPU kernels (they match), and a kernel that
    returns a wrong bound is named."""
    from nncert.engine.kernels import cuda_check
    from nncert.engine.kernels import linear_bounds as lb

    assert cuda_check.check(torch.device("cpu")) is None
    good = lb.concretize_box
    monkeypatch.setattr(lb, "concretize_box", lambda *a: good(*a) + 1e-6)
    assert "concretize_box" in cuda_check.check(torch.device("cpu"))
    monkeypatch.setattr(lb, "concretize_box", lambda *a: good(*a).fill_(float("nan")))
    assert "non-finite" in cuda_check.check(torch.device("cpu"))


def test_cuda_kernels_run_only_after_their_check(monkeypatch):
    """use_native's gate for GPUs: the check runs once; a failure warns and keeps the torch path, or raises under
    NNCERT_KERNELS=native; while it runs, native kernels are allowed (it calls them)."""
    from nncert.engine.kernels import cuda_check

    calls = []

    def fake(result):
        def check(device):
            calls.append(kernels._cuda_state)
            return result
        return check

    monkeypatch.setattr(kernels, "_cuda_state", None)
    monkeypatch.setattr(cuda_check, "check", fake("interval_linear differs"))
    with pytest.warns(UserWarning, match="interval_linear differs"):
        assert not kernels.cuda_checked("auto")
    assert not kernels.cuda_checked("auto") and calls == ["checking"]
    with pytest.raises(RuntimeError, match="failed their check"):
        kernels.cuda_checked("native")
    assert kernels.info()["cuda_check"] == "interval_linear differs"
    monkeypatch.setattr(kernels, "_cuda_state", None)
    monkeypatch.setattr(cuda_check, "check", fake(None))
    assert kernels.cuda_checked("native") and kernels.cuda_checked("auto") and len(calls) == 2


@cuda_only
def test_cuda_kernels_pass_their_check():
    from nncert.engine.kernels import cuda_check

    assert cuda_check.check(torch.device("cuda", 0)) is None
