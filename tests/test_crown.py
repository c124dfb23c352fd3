"""CROWN: tightness against auto_LiRPA's recorded CROWN bounds, soundness by sampling, native/torch parity."""
import json
import math

import pytest
import torch
from torch import nn

from nncert.engine import kernels
from nncert.engine.io.data import shared_dir
from nncert.engine.errors import BadInput
from nncert.engine.kernels import linear_bounds as lb
from nncert.engine.registry import get_registry
from nncert.engine.io.torch_import import Residual, from_torch
from nncert.plugins.crown.relax import leaky_relu_relax, sigmoid_relax, tanh_relax

from netgen import NETS, box_samples

torch.set_num_threads(1)
F64 = torch.float64


@pytest.fixture(scope="module")
def crown():
    return get_registry().domain("crown")


def _records(name):
    sd = shared_dir()
    if sd is None:
        pytest.skip("../shared is absent: no auto_LiRPA reference")
    path = sd / "reference" / "auto_lirpa" / f"{name}.json"
    if not path.exists():
        pytest.skip(f"../shared/reference/auto_lirpa/{name}.json is absent")
    return sd / "benchmarks" / name, json.loads(path.read_text())["records"]


def _load(bench_dir, rel, cache):
    if rel not in cache:
        from nncert.engine.io.onnx_import import load_onnx
        cache[rel] = load_onnx(bench_dir / rel)
    return cache[rel]


@pytest.mark.parametrize("name", ["acasxu", "mnist_fc"])
def test_at_least_as_tight_as_auto_lirpa(crown, name):
    bench, recs = _records(name)
    nets, worst_loose, best_tight = {}, -math.inf, -math.inf
    for r in recs:
        net = _load(bench, r["onnx"], nets)
        lo = torch.tensor([r["lower_in"]], dtype=F64)
        hi = torch.tensor([r["upper_in"]], dtype=F64)
        ours_lo, ours_hi = crown.bounds(net, lo, hi)
        ref_lo = torch.tensor(r["CROWN"]["lower"], dtype=F64)
        ref_hi = torch.tensor(r["CROWN"]["upper"], dtype=F64)
        tl, th = 1e-4 * (1 + ref_lo.abs()), 1e-4 * (1 + ref_hi.abs())
        assert (ours_lo[0] >= ref_lo - tl).all(), (r["onnx"], r["vnnlib"], (ref_lo - ours_lo[0]).max().item())
        assert (ours_hi[0] <= ref_hi + th).all(), (r["onnx"], r["vnnlib"], (ours_hi[0] - ref_hi).max().item())
        worst_loose = max(worst_loose, ((ref_lo - ours_lo[0]) / (1 + ref_lo.abs())).max().item(),
                          ((ours_hi[0] - ref_hi) / (1 + ref_hi.abs())).max().item())
        best_tight = max(best_tight, ((ours_lo[0] - ref_lo) / (1 + ref_lo.abs())).max().item(),
                         ((ref_hi - ours_hi[0]) / (1 + ref_hi.abs())).max().item())
    print(f"{name}: {len(recs)} records; max relative looseness {worst_loose:.2e}, "
          f"max relative tightness gain {best_tight:.2e} (reference rounded to float32)")
    # Same relaxations and intermediate-bound rule as auto_LiRPA: no record may be much tighter either.
    assert best_tight < 1e-4


@pytest.mark.parametrize("name", ["acasxu", "mnist_fc"])
def test_sound_by_sampling_on_reference_boxes(crown, name):
    bench, recs = _records(name)
    nets = {}
    for i, r in enumerate(recs[::15]):
        net = _load(bench, r["onnx"], nets).to(F64)
        lo = torch.tensor(r["lower_in"], dtype=F64)
        hi = torch.tensor(r["upper_in"], dtype=F64)
        blo, bhi = crown.bounds(net, lo[None], hi[None])
        x = box_samples(lo, hi, 2000, seed=i)
        y = net.forward_flat(x)
        assert (y >= blo).all() and (y <= bhi).all()


def _generic_and_fast_agree(crown, net, lo, hi, C=None):
    a = crown.bounds(net, lo, hi, C)
    b = crown.bounds(net, lo, hi, C, mlp_fast_path=False)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-9)


def test_generic_path_equals_mlp_path_on_benchmarks(crown):
    for name in ("acasxu", "mnist_fc"):
        bench, recs = _records(name)
        nets = {}
        for r in recs[::40]:
            net = _load(bench, r["onnx"], nets)
            _generic_and_fast_agree(crown, net, torch.tensor([r["lower_in"]], dtype=F64),
                                    torch.tensor([r["upper_in"]], dtype=F64))


@pytest.mark.parametrize("sizes", [(8, 40, 40, 40, 5), (20, 64, 64, 64, 64, 10)])
@pytest.mark.parametrize("width", [0.05, 0.5, 3.0])
def test_mlp_path_equals_full_crown_on_random_mlps(crown, sizes, width):
    """The MLP path computes a neuron's CROWN lower bound only when its CROWN upper bound leaves it active or
    unstable; its bounds equal the generic path's, which computes both sides for every selected neuron."""
    torch.manual_seed(len(sizes))
    layers = []
    for i in range(len(sizes) - 1):
        layers += [nn.Linear(sizes[i], sizes[i + 1]), nn.ReLU()]
    net = from_torch(nn.Sequential(*layers[:-1]).eval(), (sizes[0],)).to(F64)
    g = torch.Generator().manual_seed(3)
    lo = torch.randn(4, sizes[0], generator=g, dtype=F64)
    hi = lo + width * torch.rand(4, sizes[0], generator=g, dtype=F64)
    _generic_and_fast_agree(crown, net, lo, hi)
    _generic_and_fast_agree(crown, net, lo, hi, torch.randn(3, sizes[-1], generator=g, dtype=F64))


@pytest.mark.parametrize("width", [0.05, 1.0])
def test_mlp_path_composes_linear_after_linear(crown, width):
    """Linear layers with no activation between them (TLL networks) take the MLP path as one composed map: its
    bounds equal the generic path's (which keeps both maps) up to rounding, and contain sampled outputs."""
    from nncert.plugins.crown.domain import MLPView
    torch.manual_seed(7)
    m = nn.Sequential(nn.Linear(2, 12), nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 12), nn.Linear(12, 16), nn.ReLU(),
                      nn.Linear(16, 4), nn.Linear(4, 1)).eval()
    net = from_torch(m, (2,)).to(F64)
    assert MLPView.of(net) is not None and len(MLPView.of(net).Ws) == 3
    g = torch.Generator().manual_seed(1)
    lo = torch.randn(6, 2, generator=g, dtype=F64)
    hi = lo + width * torch.rand(6, 2, generator=g, dtype=F64)
    _generic_and_fast_agree(crown, net, lo, hi)
    blo, bhi = crown.bounds(net, lo, hi)
    for b in range(6):
        y = net.forward_flat(box_samples(lo[b], hi[b], 500, seed=b))
        assert (y >= blo[b]).all() and (y <= bhi[b]).all()


def _extra_nets():
    torch.manual_seed(5)
    pool = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.LeakyReLU(0.2), nn.MaxPool2d(3, stride=2, padding=1),
                         nn.Flatten(), nn.Linear(3 * 4 * 4, 4)).eval()
    res = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), Residual(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))),
                        nn.Tanh(), Residual(nn.Sequential(nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 8))),
                        nn.Linear(8, 3)).eval()
    return {"maxpool_overlap": from_torch(pool, (2, 7, 7)), "residual_mlp": from_torch(res, (6,))}


ALL_NETS = {**{k: (lambda s, f=f: f(s)) for k, f in NETS.items()}, **{k: (lambda s, n=n: n) for k, n in _extra_nets().items()}}


@pytest.mark.parametrize("kind", sorted(ALL_NETS))
@pytest.mark.parametrize("seed", [0, 1])
def test_sound_by_sampling_random_networks(crown, kind, seed):
    net = ALL_NETS[kind](seed).to(F64)
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn(net.n_inputs, generator=g, dtype=F64)
    eps = 0.1 + 0.3 * seed
    C = torch.randn(3, net.n_outputs, generator=g, dtype=F64)
    lo, hi = crown.bounds(net, (centre - eps)[None], (centre + eps)[None])
    clo, chi = crown.bounds(net, (centre - eps)[None], (centre + eps)[None], C)
    x = box_samples(centre - eps, centre + eps, 3000, seed)
    y = net.forward_flat(x)
    assert (y >= lo).all() and (y <= hi).all()
    cy = y @ C.T
    assert (cy >= clo).all() and (cy <= chi).all()
    # CROWN is at least as tight as IBP on these small networks' raw outputs, on average
    ilo, ihi = get_registry().domain("ibp").bounds(net, (centre - eps)[None], (centre + eps)[None])
    assert (hi - lo).sum() <= (ihi - ilo).sum() * (1 + 1e-9)


@pytest.mark.parametrize("kind", ["mlp_relu", "mlp_tanh", "cnn", "residual_mlp"])
def test_sound_by_sampling_l2_ball(crown, kind):
    net = ALL_NETS[kind](0).to(F64)
    g = torch.Generator().manual_seed(3)
    centre = torch.randn(2, net.n_inputs, generator=g, dtype=F64)
    eps = torch.tensor([0.2, 0.5], dtype=F64)
    lo, hi = crown.bounds_l2(net, centre, eps)
    for b in range(2):
        d = torch.randn(3000, net.n_inputs, generator=g, dtype=F64)
        d = d / d.norm(dim=1, keepdim=True) * eps[b] * torch.rand(3000, 1, generator=g, dtype=F64) ** (1 / net.n_inputs)
        d[:500] = d[:500] / d[:500].norm(dim=1, keepdim=True) * eps[b]          # points on the sphere
        y = net.forward_flat(centre[b] + d)
        assert (y >= lo[b]).all() and (y <= hi[b]).all()
    # an l2 ball lies inside its bounding box: its bounds are no looser than the box's
    blo, bhi = crown.bounds(net, centre - eps[:, None], centre + eps[:, None])
    assert ((hi - lo) <= (bhi - blo) + 1e-9).all()


def test_batched_equals_single_and_C_forms(crown):
    net = NETS["cnn"](2).to(F64)
    lo = torch.randn(4, net.n_inputs, dtype=F64)
    hi = lo + 0.2 * torch.rand(4, net.n_inputs, dtype=F64)
    C = torch.randn(4, 2, net.n_outputs, dtype=F64)
    blo, bhi = crown.bounds(net, lo, hi, C)
    for i in range(4):
        slo, shi = crown.bounds(net, lo[i:i + 1], hi[i:i + 1], C[i])
        torch.testing.assert_close(slo[0], blo[i], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(shi[0], bhi[i], rtol=1e-9, atol=1e-9)


def _grid(l, u, n=2001):
    t = torch.linspace(0, 1, n, dtype=F64)
    return l[:, None] + (u - l)[:, None] * t


@pytest.mark.parametrize("fn,relax", [(torch.sigmoid, sigmoid_relax), (torch.tanh, tanh_relax)])
def test_s_shaped_relaxations_sound(fn, relax):
    g = torch.Generator().manual_seed(0)
    c = torch.randn(300, generator=g, dtype=F64) * 4
    w = torch.rand(300, generator=g, dtype=F64) ** 3 * 20
    w[:20] = 0                                      # l = u
    w[20:40] = 1e4                                  # very wide ranges
    c[40:60] = 1e3                                  # far in the saturated tail
    l, u = c - w / 2, c + w / 2
    al, cl, au, cu = relax(l, u)
    z = _grid(l, u)
    y = fn(z)
    assert (al[:, None] * z + cl[:, None] <= y).all()
    assert (au[:, None] * z + cu[:, None] >= y).all()


@pytest.mark.parametrize("fn,relax", [(torch.tanh, tanh_relax), (torch.sigmoid, sigmoid_relax)])
def test_s_shaped_relaxations_sound_on_huge_ranges(fn, relax):
    """Ranges so wide that the tangent slopes underflow 1 - a: the saturation points must still be covered."""
    for w in (1e8, 1e12, 1e17, 1e300):
        l, u = torch.tensor([-w, -w / 3], dtype=F64), torch.tensor([w, w], dtype=F64)
        al, cl, au, cu = relax(l, u)
        z = torch.tensor([-50.0, -20.0, -3.0, -1.0, 0.0, 1.0, 3.0, 20.0, 50.0], dtype=F64)[None]
        z = torch.cat([z.expand(2, -1), l[:, None], u[:, None]], 1)
        y = fn(z)
        assert (al[:, None] * z + cl[:, None] <= y).all()
        assert (au[:, None] * z + cu[:, None] >= y).all()


def test_leaky_relu_slope_above_one_refused():
    from torch import nn
    from nncert.engine.errors import UnsupportedOp
    with pytest.raises(UnsupportedOp, match="negative_slope"):
        from_torch(nn.Sequential(nn.Linear(2, 1), nn.LeakyReLU(3.0)), (2,))
    with pytest.raises(ValueError):
        leaky_relu_relax(torch.zeros(1, dtype=F64), torch.ones(1, dtype=F64), 3.0)


def test_leaky_relu_relaxation_sound():
    l = torch.randn(500, dtype=F64) * 2
    u = l + torch.rand(500, dtype=F64) * 4
    for alpha in (0.0, 0.1, 1.0):
        al, cl, au, cu = leaky_relu_relax(l, u, alpha)
        z = _grid(l, u)
        y = torch.nn.functional.leaky_relu(z, alpha)
        assert (al[:, None] * z + cl[:, None] <= y + 1e-12).all()
        assert (au[:, None] * z + cu[:, None] >= y - 1e-12).all()


def test_bad_input(crown):
    net = NETS["mlp_relu"](0)
    lo = torch.zeros(1, net.n_inputs, dtype=F64)
    with pytest.raises(BadInput):
        crown.bounds(net, lo, lo + 1, torch.ones(2, net.n_outputs + 1, dtype=F64))
    with pytest.raises(BadInput, match="exceeds"):
        crown.bounds(net, lo + 1, lo)
    with pytest.raises(BadInput):
        crown.bounds_l2(net, lo, -1.0)
    for bad in (float("nan"), float("inf"), -float("inf")):
        for side in (0, 1):
            box = [lo.clone(), lo + 1]
            box[side][0, -1] = bad
            with pytest.raises(BadInput, match="finite"):
                crown.bounds(net, *box)
    huge = torch.full_like(lo, 1e308)  # finite bounds whose width overflows: bounds would be NaN
    with pytest.raises(BadInput, match="too wide"):
        crown.bounds(net, -huge, huge)
    lo_b, hi_b = crown.bounds(net, -huge / 1e10, huge / 1e10)  # wide but representable: finite, sound at 0
    y0 = net.forward_flat(torch.zeros_like(lo))
    assert torch.isfinite(lo_b).all() and (lo_b <= y0).all() and (y0 <= hi_b).all()


# ---------------------------------------------------------------------------------------------- parity

def _mlp(sizes, seed):
    g = torch.Generator().manual_seed(seed)
    Ws = [torch.randn(sizes[i + 1], sizes[i], generator=g, dtype=F64) / math.sqrt(sizes[i]) for i in range(len(sizes) - 1)]
    bs = [torch.randn(sizes[i + 1], generator=g, dtype=F64) * 0.1 for i in range(len(sizes) - 1)]
    return Ws, bs


def _native_or_skip():
    if not (kernels.native_available() and hasattr(kernels._C, "lb_crown_mlp")):
        pytest.skip("native extension without linear_bounds kernels")


ISAS = {0: "plain C++", 1: "AVX2", 2: "AVX-512"}


@pytest.fixture(params=sorted(ISAS), ids=ISAS.values())
def isa(request):
    """Each instruction-set copy of the native linear-bound kernels the CPU can run (lb_isa caps the choice)."""
    _native_or_skip()
    if not hasattr(kernels._C, "lb_isa"):
        pytest.skip("native extension without per-instruction-set linear_bounds kernels")
    got = kernels._C.lb_isa(request.param)
    try:
        if got != request.param:
            pytest.skip(f"this CPU cannot run the {ISAS[request.param]} kernels")
        yield got
    finally:
        kernels._C.lb_isa(max(ISAS))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("sizes", [(5, 50, 50, 50, 5), (30, 16, 5), (7, 3), (20, 40, 40, 40, 40, 10),
                                   (3, 12, 24, 13, 2),   # widths at and off the micro-kernel's panel sizes
                                   (40, 300, 300, 6)])  # widths > the native GEMM's KC = 256 reduction block
@pytest.mark.parametrize("B", [6, 71])
def test_native_crown_mlp_parity(monkeypatch, isa, dtype, sizes, B):
    Ws, bs = _mlp(sizes, len(sizes))
    lo = torch.randn(B, sizes[0], dtype=dtype)
    hi = lo + torch.rand(B, sizes[0], dtype=dtype) * torch.tensor([0.01, 0.1, 0.5, 1, 3, 10],
                                                                  dtype=dtype).repeat(B)[:B, None]
    C = torch.randn(B, 4, sizes[-1], dtype=dtype)
    ref = lb.crown_mlp_torch(lo, hi, [W.to(dtype) for W in Ws], [b.to(dtype) for b in bs], C)
    monkeypatch.setenv("NNCERT_KERNELS", "native")
    nat = lb.crown_mlp(lo, hi, Ws, bs, C)
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-3, atol=2e-3)
    for a, b in zip(ref, nat):
        torch.testing.assert_close(b, a, **tol)
    if len(sizes) == 5 and dtype == torch.float64:  # several native threads over the boxes: same bounds
        torch.set_num_threads(2)
        try:
            nat2 = lb.crown_mlp(lo, hi, Ws, bs, C)
        finally:
            torch.set_num_threads(1)
        for a, b in zip(nat, nat2):
            torch.testing.assert_close(b, a, rtol=0, atol=0)
    if len(sizes) > 2 and dtype == torch.float64 and lb.native_madds() is not None:  # products were counted
        lb.crown_mlp(lo, hi, Ws, bs, C)
        assert lb.native_madds() > 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_native_step_and_concretize_parity(monkeypatch, isa, dtype):
    g = torch.Generator().manual_seed(1)
    B, R, n, k = 3, 9, 13, 7
    Lam = torch.randn(B, R, n, generator=g, dtype=F64).to(dtype)
    W = torch.randn(n, k, generator=g, dtype=F64).to(dtype)
    b = torch.randn(n, generator=g, dtype=F64).to(dtype)
    l = torch.randn(B, n, generator=g, dtype=F64).to(dtype)
    u = l + torch.rand(B, n, generator=g, dtype=F64).to(dtype) * 2
    al, au, cu = lb.relu_relax(l, u)
    bias = torch.randn(B, R, generator=g, dtype=F64).to(dtype)
    ref = lb.backward_relu_linear_torch(Lam, W, b, al, au, cu, bias)
    lo = torch.randn(B, k, generator=g, dtype=F64).to(dtype)
    hi = lo + 1
    cref = lb.concretize_box_torch(ref[0], ref[1], lo, hi)
    monkeypatch.setenv("NNCERT_KERNELS", "native")
    nat = lb.backward_relu_linear(Lam, W, b, al, au, cu, bias)
    cnat = lb.concretize_box(nat[0], nat[1], lo, hi)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    for a, c in zip(ref + (cref,), nat + (cnat,)):
        torch.testing.assert_close(c, a, **tol)
    # one relaxation row [1, n], one bias [R], one box [1, k] or one set of rows [1, R, k] shared by every box
    # (broadcast as in the reference)
    one = [t[:1] for t in (al, au, cu)]
    ref = lb.backward_relu_linear_torch(Lam, W, b, *one, bias[0])
    for a, c in zip(ref, lb.backward_relu_linear(Lam, W, b, *one, bias[0])):
        torch.testing.assert_close(c, a, **tol)
    for args in [(ref[0], ref[1], lo[:1], hi[:1]), (ref[0][:1], ref[1], lo, hi)]:
        torch.testing.assert_close(lb.concretize_box(*args), lb.concretize_box_torch(*args), **tol)


def test_gpu_chunks_equal_one_pass(monkeypatch):
    """The GPU driver's split into chunks (run here on CPU tensors, chunk size forced) gives the bounds, hidden
    bounds and prior handling of one crown_mlp_torch pass, also with a per-box C."""
    Ws, bs = _mlp((6, 20, 30, 20, 4), 5)
    lo, hi, clo = _parent_and_children(6, 5)
    C = torch.randn(lo.shape[0], 3, 4, dtype=F64)
    parent = lb.crown_mlp_torch(lo, hi, Ws, bs, C, keep_inter=True)
    ref = lb.crown_mlp_torch(clo, hi, Ws, bs, C, prior=parent[2], keep_inter=True)
    monkeypatch.setattr(lb, "gpu_chunk", lambda *a: 3)
    got = lb._crown_mlp_gpu(clo, hi, Ws, bs, C, parent[2], True)
    for a, b in zip(ref, got):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lb._crown_mlp_gpu(lo, hi, Ws, bs, None, None, False),
                               lb.crown_mlp_torch(lo, hi, Ws, bs), rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_crown_mlp_parity(monkeypatch, dtype):
    """On a GPU, crown_mlp (native relaxation and concretisation kernels, cuBLAS products, split into chunks) equals
    the torch reference on the CPU: bounds, hidden bounds with a prior, per-box C; and so does one step."""
    if not kernels.cuda_built():
        pytest.skip("extension built without CUDA")
    monkeypatch.setenv("NNCERT_KERNELS", "native")
    dev = torch.device("cuda")
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-3, atol=2e-3)
    for sizes in [(5, 50, 50, 50, 5), (40, 300, 300, 6), (7, 3)]:
        Ws, bs = _mlp(sizes, 0)
        Ws, bs = [W.to(dtype) for W in Ws], [b.to(dtype) for b in bs]
        lo, hi, clo = (t.to(dtype) for t in _parent_and_children(sizes[0], 16, B=24))
        C = torch.randn(lo.shape[0], 3, sizes[-1], dtype=dtype)
        parent = lb.crown_mlp_torch(lo, hi, Ws, bs, C, keep_inter=True)
        ref = lb.crown_mlp_torch(clo, hi, Ws, bs, C, prior=parent[2], keep_inter=True)
        on = lambda *ts: [t.to(dev) for t in ts]
        got = lb.crown_mlp(*on(clo, hi), on(*Ws), on(*bs), C.to(dev), prior=parent[2].to(dev), keep_inter=True)
        for a, b in zip(ref, got):
            torch.testing.assert_close(b.cpu(), a, **tol)
        with monkeypatch.context() as mp:   # several chunks
            mp.setattr(lb, "gpu_chunk", lambda *a: 5)
            got = lb.crown_mlp(*on(lo, hi), on(*Ws), on(*bs))
        for a, b in zip(lb.crown_mlp_torch(lo, hi, Ws, bs), got):
            torch.testing.assert_close(b.cpu(), a, **tol)
    # single fused step, with rows shared by all boxes (stride 0) and with rows of their own; concretisation
    g = torch.Generator().manual_seed(2)
    B, R, n, k = 37, 6, 50, 33
    l = torch.randn(B, n, generator=g, dtype=F64).to(dtype)
    al, au, cu = lb.relu_relax(l, l + 1)
    W, b = (torch.randn(*s, generator=g, dtype=F64).to(dtype) for s in ((n, k), (n,)))
    lo = torch.randn(B, k, dtype=dtype)
    hi = lo + 1
    for Lam, bias in [(torch.randn(R, n, dtype=dtype).expand(B, R, n), torch.randn(R, dtype=dtype).expand(B, R)),
                      (torch.randn(B, R, n, dtype=dtype), torch.randn(B, R, dtype=dtype))]:
        for bb in (b, None):
            r1 = lb.backward_relu_linear_torch(Lam, W, bb, al, au, cu, bias)
            g1 = lb.backward_relu_linear(*on(Lam, W), None if bb is None else bb.to(dev), *on(al, au, cu, bias))
            c1 = lb.concretize_box(g1[0], g1[1], *on(lo, hi))
            for a, c in zip(r1 + (lb.concretize_box_torch(*r1, lo, hi),), g1 + (c1,)):
                torch.testing.assert_close(c.cpu(), a, **tol)


# ---------------------------------------------------------------------------------- nested boxes (branch and bound)

def _forward(Ws, bs, x):
    h = x
    for i, (W, b) in enumerate(zip(Ws, bs)):
        h = h @ W.T + b
        if i < len(Ws) - 1:
            h = h.clamp(min=0)
    return h


def _parent_and_children(n0, seed, B=8):
    g = torch.Generator().manual_seed(seed)
    lo = torch.randn(B, n0, generator=g, dtype=F64)
    hi = lo + torch.rand(B, n0, generator=g, dtype=F64) * 2
    dim = torch.randint(0, n0, (B,), generator=g)
    mid = ((lo + hi) / 2)[torch.arange(B), dim]
    clo = lo.clone()
    clo[torch.arange(B), dim] = mid                       # the upper half along one input
    return lo, hi, clo


def test_native_dead_layers_parity_and_soundness(monkeypatch, isa):
    """A hidden layer whose neurons are all stable inactive (the native kernel keeps no backward row columns for
    them: empty products) and one whose neurons are all stable active: native equals torch, bounds are sound."""
    sizes = (4, 10, 9, 12, 3)
    Ws, bs = _mlp(sizes, 5)
    bs[1] = bs[1] - 100.0     # layer 2: relu(z) = 0 on every box below
    bs[2] = bs[2] + 100.0     # layer 3: relu(z) = z
    lo = torch.randn(5, sizes[0], dtype=F64)
    hi = lo + torch.rand(5, sizes[0], dtype=F64)
    C = torch.randn(2, sizes[-1], dtype=F64)
    ref = lb.crown_mlp_torch(lo, hi, Ws, bs, C)
    monkeypatch.setenv("NNCERT_KERNELS", "native")
    nat = lb.crown_mlp(lo, hi, Ws, bs, C)
    for a, b in zip(ref, nat):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)
    for b in range(lo.shape[0]):
        y = _forward(Ws, bs, box_samples(lo[b], hi[b], 500, seed=b)) @ C.T
        assert (y >= nat[0][b] - 1e-9).all() and (y <= nat[1][b] + 1e-9).all()


@pytest.mark.parametrize("sizes", [(5, 50, 50, 50, 5), (6, 20, 30, 20, 4), (7, 3)])
def test_hidden_bounds_state_parity_and_soundness(monkeypatch, isa, sizes):
    """crown_mlp with a parent's hidden bounds as prior: native equals torch, child bounds are sound by
    sampling, and its hidden bounds lie inside the parent's."""
    Ws, bs = _mlp(sizes, 3)
    lo, hi, clo = _parent_and_children(sizes[0], 4)
    C = torch.randn(3, sizes[-1], dtype=F64)
    parent = lb.crown_mlp_torch(lo, hi, Ws, bs, C, keep_inter=True)
    ref = lb.crown_mlp_torch(clo, hi, Ws, bs, C, prior=parent[2], keep_inter=True)
    if kernels.native_available() and hasattr(kernels._C, "lb_crown_mlp"):
        monkeypatch.setenv("NNCERT_KERNELS", "native")
        nat_parent = lb.crown_mlp(lo, hi, Ws, bs, C, keep_inter=True)
        nat = lb.crown_mlp(clo, hi, Ws, bs, C, prior=nat_parent[2], keep_inter=True)
        for a, b in zip(parent + ref, nat_parent + nat):
            torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)
    H = lb.hidden_sizes([sizes[0], *sizes[1:]])
    assert ref[2].shape == (lo.shape[0], H)
    off = 0
    for n in sizes[1:-1]:   # the child's hidden bounds are inside the parent's (intersection)
        assert (ref[2][:, off:off + n] >= parent[2][:, off:off + n]).all()
        assert (ref[2][:, off + n:off + 2 * n] <= parent[2][:, off + n:off + 2 * n]).all()
        off += 2 * n
    for b in range(lo.shape[0]):
        x = box_samples(clo[b], hi[b], 2000, seed=b)
        y = _forward(Ws, bs, x) @ C.T
        assert (y >= ref[0][b] - 1e-9).all() and (y <= ref[1][b] + 1e-9).all()


def test_bounds_refine_state_on_acasxu(crown):
    """The domain's bounds_refine on sub-boxes with the parent's state: sound by sampling on a real network."""
    bench_dir, recs = _records("acasxu")
    rec = recs[0]
    net = _load(bench_dir, rec["onnx"], {}).to(F64)
    lo = torch.tensor(rec["lower_in"], dtype=F64)[None]
    hi = torch.tensor(rec["upper_in"], dtype=F64)[None]
    _, _, state = crown.bounds_refine(net, lo, hi)
    assert state is not None
    mid = (lo + hi) / 2
    for dim in range(lo.shape[1]):
        for half in (0, 1):
            clo, chi = lo.clone(), hi.clone()
            (chi if half == 0 else clo)[0, dim] = mid[0, dim]
            l, u, _ = crown.bounds_refine(net, clo, chi, state=state)
            x = box_samples(clo[0], chi[0], 1000, seed=dim)
            y = net.forward_flat(x)
            assert (y >= l - 1e-9).all() and (y <= u + 1e-9).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_conjunction_optimiser_sound_and_not_looser(crown, seed):
    """refute_conjunctions: its bound of sum_r lam_r (C_r y + d_r) is >= that sum at every sampled point (sound),
    never above the best single-row CROWN bound of the disjunct, and `refuted` only when sampling agrees."""
    from nncert.engine.numerics import refuted
    from netgen import random_mlp
    net = random_mlp((5, 30, 30, 30, 4), seed=seed).to(F64)
    g = torch.Generator().manual_seed(seed)
    B = 16
    lo = torch.rand(B, 5, generator=g, dtype=F64) - 0.5
    hi = lo + torch.rand(B, 5, generator=g, dtype=F64) * 0.3
    # two disjuncts: "y0 is the largest" (3 rows) and "y1 >= y2 + t" (1 row)
    C = torch.tensor([[1, -1, 0, 0], [1, 0, -1, 0], [1, 0, 0, -1], [0, 1, -1, 0]], dtype=F64)
    y_mid = net.forward_flat((lo + hi) / 2)
    d = torch.tensor([0.0, 0.0, 0.0, float((y_mid[:, 2] - y_mid[:, 1]).median())], dtype=F64)
    owner = torch.tensor([0, 0, 0, 1])
    _, ub, state = crown.bounds_refine(net, lo, hi, C)
    ref, value = crown.refute_conjunctions(net, lo, hi, C, d, owner, state)
    plain = torch.stack([(ub + d)[:, owner == k].amin(1) for k in range(2)], 1)
    assert (value <= plain + 1e-9 * (1 + plain.abs())).all()
    row_refuted = torch.stack([refuted(ub, d)[:, owner == k].any(1) for k in range(2)], 1)
    assert (ref | ~row_refuted).all()        # whatever a single row refutes, the optimiser refutes too
    for b in range(B):
        x = box_samples(lo[b], hi[b], 3000, seed=b)
        s = net.forward_flat(x) @ C.T + d                                 # [N, m]
        for k in range(2):
            rows = s[:, owner == k]
            if bool(ref[b, k]):                                           # refuted: no sample meets every row
                assert not bool((rows >= 0).all(1).any())
            assert float(rows.min(1).values.max()) <= float(value[b, k]) + 1e-9


@pytest.mark.parametrize("name", ["acasxu", "mnist_fc"])
def test_alpha_crown_sound_and_never_looser(name):
    """alpha-crown on reference boxes: sound by sampling and inside plain CROWN's bounds; report the gain."""
    reg = get_registry()
    crown, alpha = reg.domain("crown"), reg.domain("alpha-crown")
    bench, recs = _records(name)
    nets, gain = {}, []
    for i, r in enumerate(recs[::30]):
        net = _load(bench, r["onnx"], nets).to(F64)
        lo = torch.tensor(r["lower_in"], dtype=F64)[None]
        hi = torch.tensor(r["upper_in"], dtype=F64)[None]
        cl, cu = crown.bounds(net, lo, hi)
        al, au = alpha.bounds(net, lo, hi)
        assert (al >= cl).all() and (au <= cu).all()
        y = net.forward_flat(box_samples(lo[0], hi[0], 2000, seed=i))
        assert (y >= al).all() and (y <= au).all()
        gain.append(float(((cu - cl) - (au - al)).sum() / (cu - cl).sum()))
    print(f"{name}: alpha-crown narrows CROWN's total width by {100 * sum(gain) / len(gain):.1f}% on average")


def test_crown_pass_past_its_deadline_gives_no_verdict(monkeypatch):
    """A CROWN pass that runs past the verify deadline stops (engine/deadline.py) and verify answers timeout, never
    unsat, even for a property CROWN proves when given the time."""
    import time
    from nncert.engine import deadline
    from nncert.engine.deadline import OutOfTime, within
    from nncert.engine.spec import Box, Case, Disjunct, Spec
    from nncert.engine.verify import verify
    from netgen import random_cnn
    net = random_cnn(seed=0).to(torch.float64)
    crown = get_registry().domain("crown")
    lo, hi = -0.01 * torch.ones(1, 64, dtype=torch.float64), 0.01 * torch.ones(1, 64, dtype=torch.float64)
    with pytest.raises(OutOfTime), within(time.perf_counter() - 1.0):
        crown.bounds(net, lo, hi)
    _, up = crown.bounds(net, lo, hi)
    spec = Spec([Case(Box(lo[0], hi[0]), [Disjunct(torch.eye(3)[:1], -(up[0, :1] + 1.0))])], 64, 3)
    assert verify(net, spec, domain="crown", timeout=60).verdict == "unsat"
    calls = []

    def slow_check():  # the clock runs out after the first chunk of bound rows
        calls.append(1)
        if len(calls) > 1:
            raise OutOfTime("deadline passed")
    monkeypatch.setattr(deadline, "check", slow_check)
    assert verify(net, spec, domain="crown", timeout=60).verdict == "timeout"
