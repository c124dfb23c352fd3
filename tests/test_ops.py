"""The op registry's tensor and nonlinear ops: exact semantics, traits that hold, sound (and, for data movement,
lossless) IBP / CROWN bounds, and ONNX import parity with onnxruntime for the ONNX ops that map onto them.

Every check is a property (a reference computed independently, sampling inside the box, agreement with
onnxruntime), never a recorded output.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from nncert.engine.errors import BadInput, UnsupportedOp
from nncert.engine.ir import Network, Node
from nncert.engine.numerics import widen
from nncert.engine.io.onnx_import import load_onnx_bytes
from nncert.engine.io.ort import run_onnx
from nncert.engine.registry import get_registry

torch.set_num_threads(1)
F64 = torch.float64
RADII = (0.01, 0.4, 3.0)  # one narrow, one medium and one wide box per batch
N_SAMPLES = 2000


# -- shared helpers ---------------------------------------------------------------------------------------------------
def _domain(name):
    return get_registry().domain(name)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g, dtype=F64) * scale


def _numel(shape) -> int:
    return int(math.prod(shape))


def _boxes(n: int, seed: int, radii=RADII, centre_lo=None):
    """Boxes [B, n] (B = len(radii)) around random centres: one per radius. With centre_lo, centres are uniform in
    [centre_lo, centre_lo + 1] instead of standard normal."""
    g = _gen(seed)
    B = len(radii)
    c = _randn(g, B, n) if centre_lo is None else centre_lo + torch.rand(B, n, generator=g, dtype=F64)
    r = torch.tensor(radii, dtype=F64)[:, None] * (0.5 + torch.rand(B, n, generator=g, dtype=F64))
    return c - r, c + r


def _samples(lower: torch.Tensor, upper: torch.Tensor, n: int = N_SAMPLES, seed: int = 0) -> torch.Tensor:
    """n uniform points of the box [lower, upper] (flat, one box), plus all 2^d corners when d <= 10."""
    g = _gen(seed)
    d = lower.numel()
    pts = [lower + torch.rand(n, d, generator=g, dtype=F64) * (upper - lower)]
    if d <= 10:
        bits = ((torch.arange(2 ** d)[:, None] >> torch.arange(d)) & 1).to(F64)
        pts.append(lower + bits * (upper - lower))
    return torch.cat(pts)


def _assert_within(y: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, tol: float, what: str):
    """Every row of y [N, m] lies in [lo, hi] ([m] each) up to tol * (1 + |y|)."""
    assert torch.isfinite(y).all(), f"{what}: non-finite outputs among the samples (the test's own inputs)"
    assert not torch.isnan(lo).any() and not torch.isnan(hi).any(), f"{what}: NaN bounds lo={lo} hi={hi}"
    assert (lo <= hi).all(), f"{what}: lo > hi: lo={lo} hi={hi}"
    slack = tol * (1 + y.abs())
    below = (y < lo - slack).any(dim=0)
    above = (y > hi + slack).any(dim=0)
    bad = (below | above).nonzero().flatten().tolist()
    if bad:
        k = bad[0]
        raise AssertionError(f"{what}: unsound at output {k}: bounds [{lo[k].item():.10g}, {hi[k].item():.10g}], "
                             f"samples in [{y[:, k].min().item():.10g}, {y[:, k].max().item():.10g}]"
                             f" ({len(bad)} of {y.shape[1]} outputs violated)")


# -- op cases ---------------------------------------------------------------------------------------------------------
# A case is one node of the op under test: the per-sample shapes of its inputs, its attrs and params, and `feed`, an
# elementwise map placed in front of each input so that it lies in the op's domain whatever the box:
#   "exp" (> 0), "relu" (>= 0), "pos" (relu + 0.25 >= 0.25), "neg" (-relu - 0.25 <= -0.25), None (any real).
# `share`: all the op's inputs are one and the same value (a product of a variable with itself).
@dataclass(frozen=True)
class Case:
    name: str
    op: str
    shapes: tuple
    attrs: dict = field(default_factory=dict)
    params: object = None  # fn(generator) -> dict of params, or None
    feed: str | None = None
    share: bool = False

    def __repr__(self):
        return self.name

    @property
    def n_args(self):
        return len(self.shapes)


def _convt(name, in_shape, cout_g, k, stride=(1, 1), pads=(0, 0, 0, 0), output_padding=(0, 0), dilation=(1, 1),
           groups=1, bias=True):
    """A conv_transpose2d case: W [Cin, Cout/groups, *k], b [Cout] when bias."""
    def params(g):
        p = {"W": _randn(g, in_shape[0], cout_g, *k, scale=0.5)}
        if bias:
            p["b"] = _randn(g, cout_g * groups, scale=0.5)
        return p
    return Case(name, "conv_transpose2d", (in_shape,),
                dict(stride=stride, pads=pads, output_padding=output_padding, dilation=dilation, groups=groups), params)


CASES = [
    # data movement
    Case("select_axis0", "select", ((3, 4),), dict(axis=0, index=(2, 0, 2))),
    Case("select_axis1_repeat", "select", ((2, 5),), dict(axis=1, index=(4, 4, 1, 3))),
    Case("select_range", "select", ((6,),), dict(axis=0, index=(1, 2, 3))),
    Case("select_all_reversed", "select", ((4,),), dict(axis=0, index=(3, 2, 1, 0))),
    Case("select_3d_last", "select", ((2, 3, 2),), dict(axis=2, index=(1,))),
    Case("concat_one", "concat", ((4,),), dict(axis=0)),
    Case("concat_axis0", "concat", ((2, 3), (1, 3)), dict(axis=0)),
    Case("concat_axis1_three", "concat", ((2, 3), (2, 1), (2, 2)), dict(axis=1)),
    Case("concat_self", "concat", ((2, 2), (2, 2)), dict(axis=1), share=True),
    Case("transpose_2d", "transpose", ((2, 3),), dict(perm=(1, 0))),
    Case("transpose_3d", "transpose", ((2, 3, 2),), dict(perm=(2, 0, 1))),
    Case("pad_2d", "pad", ((2, 3),), dict(pads=((1, 0), (2, 1)), value=0.5)),
    Case("pad_3d", "pad", ((1, 3, 3),), dict(pads=((0, 0), (1, 1), (0, 2)), value=-1.0)),
    Case("pad_none", "pad", ((3,),), dict(pads=((0, 0),), value=2.0)),
    # linear
    _convt("convT_stride2", (2, 3, 3), 3, (2, 2), stride=(2, 2)),
    _convt("convT_pads_outpad", (2, 3, 2), 2, (3, 3), stride=(2, 2), pads=(1, 0, 0, 1), output_padding=(1, 1),
           bias=False),
    _convt("convT_groups_dilation", (4, 2, 3), 1, (2, 2), stride=(1, 2), pads=(0, 1, 1, 0), output_padding=(0, 1),
           dilation=(2, 1), groups=2),
    Case("reduce_sum_02", "reduce_sum", ((2, 3, 2),), dict(axes=(0, 2), keepdims=False)),
    Case("reduce_sum_keep", "reduce_sum", ((3, 4),), dict(axes=(1,), keepdims=True)),
    Case("reduce_mean_1", "reduce_mean", ((2, 3, 2),), dict(axes=(1,), keepdims=False)),
    Case("reduce_mean_all_keep", "reduce_mean", ((3, 4),), dict(axes=(0, 1), keepdims=True)),
    # products of two variables
    Case("mul_same_shape", "mul", ((2, 3), (2, 3))),
    Case("mul_broadcast_rank", "mul", ((2, 3), (3,))),
    Case("mul_outer", "mul", ((2, 1), (1, 3))),
    Case("mul_square", "mul", ((4,), (4,)), share=True),
    Case("mul_positive", "mul", ((3,), (3,)), feed="pos"),
    Case("matmul_2d", "matmul", ((2, 3), (3, 2))),
    Case("matmul_vec", "matmul", ((2, 3), (3,))),
    Case("matmul_batched", "matmul", ((2, 2, 3), (2, 3, 2))),
    Case("matmul_broadcast", "matmul", ((2, 2, 3), (3, 2))),
    Case("matmul_square", "matmul", ((3, 3), (3, 3)), share=True),
    # elementwise
    Case("pow_2", "pow", ((5,),), dict(exponent=2.0)),
    Case("pow_3", "pow", ((5,),), dict(exponent=3.0)),
    Case("pow_half", "pow", ((5,),), dict(exponent=0.5), feed="relu"),
    Case("pow_1_5", "pow", ((5,),), dict(exponent=1.5), feed="relu"),
    Case("pow_neg1", "pow", ((5,),), dict(exponent=-1.0), feed="pos"),
    Case("pow_neg_half", "pow", ((5,),), dict(exponent=-0.5), feed="pos"),
    Case("pow_neg2", "pow", ((5,),), dict(exponent=-2.0), feed="pos"),
    Case("pow_3_negative", "pow", ((5,),), dict(exponent=3.0), feed="neg"),
    Case("pow_neg1_negative", "pow", ((5,),), dict(exponent=-1.0), feed="neg"),
    Case("pow_neg2_negative", "pow", ((5,),), dict(exponent=-2.0), feed="neg"),
    Case("exp", "exp", ((5,),)),
    Case("log_of_exp", "log", ((5,),), feed="exp"),
    Case("log_pos", "log", ((5,),), feed="pos"),
    Case("sin", "sin", ((5,),)),
    Case("cos", "cos", ((5,),)),
    Case("sign", "sign", ((5,),)),
    Case("sign_of_relu", "sign", ((5,),), feed="relu"),  # exact zeros
    Case("clip_both", "clip", ((5,),), dict(min=-0.5, max=0.7)),
    Case("clip_max", "clip", ((5,),), dict(min=None, max=0.3)),
    Case("clip_min", "clip", ((5,),), dict(min=-0.2, max=None)),
    # softmax
    Case("softmax_vec", "softmax", ((4,),), dict(axis=0)),
    Case("softmax_axis1", "softmax", ((2, 3),), dict(axis=1)),
    Case("softmax_axis0", "softmax", ((2, 3),), dict(axis=0)),
]
CASE_BY_NAME = {c.name: c for c in CASES}
LINEAR_OPS = {"select", "concat", "transpose", "pad", "reduce_sum", "reduce_mean", "conv_transpose2d"}
EXACT_OPS = {"select", "concat", "transpose", "pad"}


def _op_node(case: Case, inputs, g, name="op") -> Node:
    return Node(name, case.op, list(inputs), case.params(g) if case.params else {}, dict(case.attrs))


def _feed(nodes: list, src: str, shape, feed, tag: str) -> str:
    """Append the nodes of `feed` applied to value src; returns the name of the result."""
    if feed is None:
        return src
    if feed in ("exp", "relu"):
        nodes.append(Node(f"{tag}_{feed}", feed, [src]))
        return nodes[-1].name
    assert feed in ("pos", "neg")
    sgn = 1.0 if feed == "pos" else -1.0
    nodes.append(Node(f"{tag}_relu", "relu", [src]))
    nodes.append(Node(f"{tag}_shift", "affine", [nodes[-1].name], {"scale": torch.full(tuple(shape), sgn, dtype=F64),
                                                                    "shift": torch.full(tuple(shape), sgn * 0.25,
                                                                                        dtype=F64)}))
    return nodes[-1].name


def _lin(name, src, n_in, n_out, g) -> Node:
    return Node(name, "linear", [src], {"W": _randn(g, n_out, n_in, scale=1 / math.sqrt(n_in)),
                                        "b": _randn(g, n_out, scale=0.3)})


def _op_inputs(nodes, case, g, src, n_src):
    """Per op input: linear(src) -> reshape -> feed (share: one value used for every input). Returns names."""
    names = []
    shapes = case.shapes[:1] if case.share else case.shapes
    for k, s in enumerate(shapes):
        nodes.append(_lin(f"in{k}", src, n_src, _numel(s), g))
        nodes.append(Node(f"in{k}_shape", "reshape", [f"in{k}"], attrs={"shape": tuple(s)}))
        names.append(_feed(nodes, f"in{k}_shape", s, case.feed, f"in{k}"))
    return names * case.n_args if case.share else names


def build_direct(case: Case, seed: int = 0) -> Network:
    """The op (after its feed) on the network input itself; with several distinct inputs, each is a linear map of
    a 4-vector input. The op's output is the network's output."""
    g = _gen(seed)
    nodes: list = []
    if case.n_args == 1 or case.share:
        s = case.shapes[0]
        a = _feed(nodes, "x", s, case.feed, "in0")
        nodes.append(_op_node(case, [a] * case.n_args, g))
        return Network("x", s, nodes)
    names = _op_inputs(nodes, case, g, "x", 4)
    nodes.append(_op_node(case, names, g))
    return Network("x", (4,), nodes)


def build_deep(case: Case, seed: int = 0) -> Network:
    """x [4] -> linear -> relu -> linear -> reshape (-> feed) -> op -> flatten -> linear -> [3]."""
    g = _gen(seed + 1000)
    nodes = [_lin("l0", "x", 4, 8, g), Node("r0", "relu", ["l0"])]
    names = _op_inputs(nodes, case, g, "r0", 8)
    nodes.append(_op_node(case, names, g))
    probe = Network("x", (4,), nodes)
    n = probe.n_outputs
    nodes += [Node("flat", "reshape", ["op"], attrs={"shape": (n,)}), _lin("out", "flat", n, 3, g)]
    return Network("x", (4,), nodes)


BUILD = {"direct": build_direct, "deep": build_deep}


@functools.lru_cache(maxsize=None)
def _setup(case_name: str, arch: str):
    """(network in float64, boxes, per-box samples, per-box outputs) for one case and architecture."""
    case = CASE_BY_NAME[case_name]
    net = BUILD[arch](case).to(F64)
    lower, upper = _boxes(net.n_inputs, seed=CASES.index(case))
    xs = [_samples(lower[b], upper[b], seed=b) for b in range(lower.shape[0])]
    with torch.no_grad():
        ys = [net.forward_flat(x) for x in xs]
    return net, lower, upper, xs, ys


def _args_in_domain(case: Case, g, batch: int = 4):
    """Random op arguments [batch, *shape] that lie in the op's domain."""
    args = []
    for s in case.shapes[:1] if case.share else case.shapes:
        a = _randn(g, batch, *s, scale=1.5)
        if case.feed == "exp":
            a = a.exp()
        elif case.feed == "relu":
            a = a.relu()
        elif case.feed == "pos":
            a = a.relu() + 0.25
        elif case.feed == "neg":
            a = -a.relu() - 0.25
        args.append(a)
    return args * case.n_args if case.share else args


# -- independent reference semantics (numpy) --------------------------------------------------------------------------
def _per_sample_broadcast(arrays):
    """Align per-sample ranks (numpy rules apply to the per-sample shapes, the batch axis stays in front)."""
    r = max(a.ndim for a in arrays)
    return [a.reshape(a.shape[0], *([1] * (r - a.ndim)), *a.shape[1:]) for a in arrays]


def _conv_transpose_ref(x, W, b, a):
    """ONNX ConvTranspose by scattering: full output, then the pads cropped; output_padding extends the end."""
    B, cin, H, Wd = x.shape
    _, cout_g, kh, kw = W.shape
    groups = a["groups"]
    cin_g = cin // groups
    (sh, sw), (dh, dw), (oph, opw) = a["stride"], a["dilation"], a["output_padding"]
    t, l, bt, r = a["pads"]
    Hf, Wf = (H - 1) * sh + dh * (kh - 1) + 1 + oph, (Wd - 1) * sw + dw * (kw - 1) + 1 + opw
    y = np.zeros((B, cout_g * groups, Hf, Wf))
    for ci in range(cin):
        gi = ci // cin_g
        for co in range(cout_g):
            for ki in range(kh):
                for kj in range(kw):
                    for i in range(H):
                        for j in range(Wd):
                            y[:, gi * cout_g + co, i * sh + ki * dh, j * sw + kj * dw] += x[:, ci, i, j] * W[ci, co, ki, kj]
    y = y[:, :, t:Hf - bt, l:Wf - r]
    return y if b is None else y + b[None, :, None, None]


def reference(case: Case, params: dict, args: list) -> np.ndarray:
    a, at = [np.asarray(t.detach().numpy(), dtype=np.float64) for t in args], case.attrs
    x = a[0]
    B = x.shape[0]
    op = case.op
    if op == "select":
        return np.take(x, list(at["index"]), axis=at["axis"] + 1)
    if op == "concat":
        return np.concatenate(a, axis=at["axis"] + 1)
    if op == "transpose":
        return np.transpose(x, (0, *(p + 1 for p in at["perm"])))
    if op == "pad":
        return np.pad(x, ((0, 0), *at["pads"]), constant_values=at["value"])
    if op == "conv_transpose2d":
        b = params.get("b")
        return _conv_transpose_ref(x, params["W"].numpy(), None if b is None else b.numpy(), at)
    if op in ("reduce_sum", "reduce_mean"):
        f = np.sum if op == "reduce_sum" else np.mean
        return f(x, axis=tuple(k + 1 for k in at["axes"]), keepdims=at["keepdims"])
    if op == "mul":
        p, q = _per_sample_broadcast(a)
        return p * q
    if op == "matmul":
        return np.stack([np.matmul(a[0][i], a[1][i]) for i in range(B)])
    if op == "pow":
        return x ** at["exponent"]
    if op in ("exp", "log", "sin", "cos", "sign"):
        return getattr(np, op)(x)
    if op == "clip":
        return np.clip(x, -np.inf if at["min"] is None else at["min"], np.inf if at["max"] is None else at["max"])
    if op == "softmax":
        e = np.exp(x - x.max(axis=at["axis"] + 1, keepdims=True))
        return e / e.sum(axis=at["axis"] + 1, keepdims=True)
    raise AssertionError(f"no reference for {op}")


# -- 0. registry and semantics ----------------------------------------------------------------------------------------
NEW_OPS = sorted({c.op for c in CASES})


@pytest.mark.parametrize("op", NEW_OPS)
def test_op_registered_with_known_traits(op):
    ops = get_registry().ops
    assert op in ops, f"op {op!r} is not in the registry"
    assert ops[op].traits <= {"elementwise", "monotone", "linear"}, ops[op].traits
    for d in ("ibp", "crown"):
        assert op in _domain(d).supported_ops(), f"domain {d} has no rule for {op}"


@pytest.mark.parametrize("batch", [1, 2, 4])
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_forward_matches_reference(case, batch):
    """OpDef.forward (and Network.forward) compute the documented semantics, checked against numpy, whatever the
    batch size (a batch of 2 equals some per-sample sizes: a misaligned broadcast would go unnoticed by shapes)."""
    g = _gen(7)
    node = _op_node(case, [f"a{k}" for k in range(case.n_args)], g)
    args = _args_in_domain(case, g, batch)
    ref = reference(case, node.params, args)
    y = get_registry().ops[case.op].forward(node, args)
    assert y.dtype == F64
    assert tuple(y.shape) == ref.shape, (tuple(y.shape), ref.shape)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12, atol=1e-12)
    if case.n_args == 1:  # the same through a network (shape inference, forward, forward_flat)
        net = Network("x", case.shapes[0], [Node("op", case.op, ["x"], node.params, dict(case.attrs))])
        assert net.output_shape == ref.shape[1:]
        np.testing.assert_allclose(net.forward_flat(args[0].reshape(args[0].shape[0], -1)).numpy(),
                                   ref.reshape(ref.shape[0], -1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_traits_hold(case):
    """Each trait an op declares is true of its forward: domains rely on them for generic rules."""
    op = get_registry().ops[case.op]
    g = _gen(11)
    node = _op_node(case, [f"a{k}" for k in range(case.n_args)], g)
    f = functools.partial(op.forward, node)
    a, b = _args_in_domain(case, g), _args_in_domain(case, g)
    if case.share:  # traits are about independent inputs
        b = [b[0]] * case.n_args
    if "linear" in op.traits:
        lam = 0.3
        mix = [lam * p + (1 - lam) * q for p, q in zip(a, b)]
        np.testing.assert_allclose(f(mix).numpy(), (lam * f(a) + (1 - lam) * f(b)).numpy(), rtol=1e-10, atol=1e-10)
        # twice the step from a to b: an affine map extrapolates too
        ext = [2 * q - p for p, q in zip(a, b)]
        if case.feed is None:
            np.testing.assert_allclose(f(ext).numpy(), (2 * f(b) - f(a)).numpy(), rtol=1e-10, atol=1e-10)
    if "monotone" in op.traits:
        up = [p + _randn(g, *p.shape).abs() for p in a]
        assert (f(up) >= f(a) - 1e-12).all(), "declared monotone but decreases"
    if "elementwise" in op.traits:
        assert case.n_args == 1
        x = a[0]
        y = f([x])
        assert y.shape == x.shape
        perm = torch.randperm(x[0].numel(), generator=g)
        xf = x.reshape(x.shape[0], -1)
        yp = f([xf[:, perm].reshape(x.shape)]).reshape(x.shape[0], -1)
        np.testing.assert_allclose(yp.numpy(), y.reshape(x.shape[0], -1)[:, perm].numpy(), rtol=0, atol=0)


# -- 1. soundness of IBP and CROWN ------------------------------------------------------------------------------------
@pytest.mark.parametrize("domain", ["ibp", "crown"])
@pytest.mark.parametrize("arch", ["direct", "deep"])
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_bounds_sound(case, arch, domain):
    net, lower, upper, xs, ys = _setup(case.name, arch)
    lo, hi = _domain(domain).bounds(net, lower, upper)
    assert lo.shape == hi.shape == (lower.shape[0], net.n_outputs)
    assert torch.isfinite(lo).all() and torch.isfinite(hi).all(), f"non-finite bounds {lo} {hi}"
    for b in range(lower.shape[0]):
        _assert_within(ys[b], lo[b], hi[b], 1e-9, f"{domain} box {b} (radius {RADII[b]})")
    # not vacuous: on the narrow box the bounds are within a (generous) factor of the range the samples span
    spread = ys[0].max(dim=0).values - ys[0].min(dim=0).values
    assert ((hi[0] - lo[0]) <= 100 * spread + 1e-6).all(), f"narrow box: widths {hi[0] - lo[0]} vs spread {spread}"


@pytest.mark.parametrize("domain", ["ibp", "crown"])
@pytest.mark.parametrize("arch", ["direct", "deep"])
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_bounds_with_C_sound(case, arch, domain):
    """Bounds of C @ f(x) for a random C with 3 rows."""
    net, lower, upper, xs, ys = _setup(case.name, arch)
    C = _randn(_gen(3), 3, net.n_outputs)
    lo, hi = _domain(domain).bounds(net, lower, upper, C)
    assert lo.shape == hi.shape == (lower.shape[0], 3)
    for b in range(lower.shape[0]):
        _assert_within(ys[b] @ C.T, lo[b], hi[b], 1e-9, f"{domain} with C, box {b} (radius {RADII[b]})")


# Small DAGs mixing the new ops, with values read by several nodes (CROWN sums the backward terms of every consumer).
def _attention(seed=0) -> Network:
    """One head of self-attention on 3 tokens of width 4, mean-pooled, then a linear head."""
    g = _gen(seed)
    x = "x"
    nodes = [_lin("q", x, 4, 4, g), _lin("k", x, 4, 4, g), _lin("v", x, 4, 4, g),
             Node("kt", "transpose", ["k"], attrs={"perm": (1, 0)}),
             Node("s", "matmul", ["q", "kt"]),
             Node("s2", "affine", ["s"], {"scale": torch.full((3, 3), 0.5, dtype=F64)}),
             Node("a", "softmax", ["s2"], attrs={"axis": 1}),
             Node("av", "matmul", ["a", "v"]),
             Node("res", "add", ["av", x]),
             Node("pool", "reduce_mean", ["res"], attrs={"axes": (0,), "keepdims": False}),
             _lin("out", "pool", 4, 2, g)]
    return Network(x, (3, 4), nodes)


def _layer_norm(seed=0) -> Network:
    """Layer normalisation over the last axis written with the new ops, then a linear head."""
    g = _gen(seed)
    nodes = [Node("m", "reduce_mean", ["x"], attrs={"axes": (1,), "keepdims": True}),
             Node("d", "sub", ["x", "m"]),
             Node("d2", "mul", ["d", "d"]),
             Node("var", "reduce_mean", ["d2"], attrs={"axes": (1,), "keepdims": True}),
             Node("ve", "affine", ["var"], {"shift": torch.full((2, 1), 1e-2, dtype=F64)}),
             Node("inv", "pow", ["ve"], attrs={"exponent": -0.5}),
             Node("n", "mul", ["d", "inv"]),
             Node("flat", "reshape", ["n"], attrs={"shape": (6,)}),
             _lin("out", "flat", 6, 3, g)]
    return Network("x", (2, 3), nodes)


def _decoder(seed=0) -> Network:
    """conv2d -> relu -> conv_transpose2d -> pad -> select -> concat with the input -> sigmoid -> reduce_sum."""
    g = _gen(seed)
    nodes = [Node("c", "conv2d", ["x"], {"W": _randn(g, 2, 1, 2, 2, scale=0.5), "b": _randn(g, 2, scale=0.3)},
                  dict(stride=(2, 2), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1)),
             Node("r", "relu", ["c"]),
             Node("u", "conv_transpose2d", ["r"], {"W": _randn(g, 2, 1, 2, 2, scale=0.5), "b": _randn(g, 1)},
                  dict(stride=(2, 2), pads=(0, 0, 0, 0), output_padding=(0, 0), dilation=(1, 1), groups=1)),
             Node("p", "pad", ["u"], attrs={"pads": ((0, 0), (1, 0), (0, 1)), "value": 0.1}),
             Node("s", "select", ["p"], attrs={"axis": 1, "index": (0, 1, 2, 3)}),
             Node("sl", "select", ["s"], attrs={"axis": 2, "index": (1, 2, 3, 4)}),
             Node("cat", "concat", ["sl", "x"], attrs={"axis": 0}),
             Node("sg", "sigmoid", ["cat"]),
             Node("out", "reduce_sum", ["sg"], attrs={"axes": (1,), "keepdims": False})]
    return Network("x", (1, 4, 4), nodes)


def _elementwise_mix(seed=0) -> Network:
    """exp, log, sin, cos, clip and sign on one hidden layer, recombined by products and sums."""
    g = _gen(seed)
    nodes = [_lin("h", "x", 3, 4, g), Node("e", "exp", ["h"]), Node("l", "log", ["e"]),
             Node("sn", "sin", ["h"]), Node("cs", "cos", ["l"]), Node("p", "mul", ["sn", "cs"]),
             Node("c", "clip", ["p"], attrs={"min": -0.3, "max": None}), Node("sg", "sign", ["h"]),
             Node("q", "mul", ["c", "sg"]), Node("a", "add", ["q", "sn"]), _lin("out", "a", 4, 2, g)]
    return Network("x", (3,), nodes)


COMPOSITES = {"attention": _attention, "layer_norm": _layer_norm, "decoder": _decoder,
              "elementwise_mix": _elementwise_mix}


@functools.lru_cache(maxsize=None)
def _composite_setup(name: str):
    net = COMPOSITES[name]().to(F64)
    lower, upper = _boxes(net.n_inputs, seed=len(name), radii=(0.01, 0.1, 0.5))
    ys = [net.forward_flat(_samples(lower[b], upper[b], seed=b)) for b in range(lower.shape[0])]
    return net, lower, upper, ys


@pytest.mark.parametrize("with_C", [False, True], ids=["plain", "C"])
@pytest.mark.parametrize("domain", ["ibp", "crown"])
@pytest.mark.parametrize("name", sorted(COMPOSITES))
def test_composite_bounds_sound(name, domain, with_C):
    net, lower, upper, ys = _composite_setup(name)
    C = _randn(_gen(4), 3, net.n_outputs) if with_C else None
    lo, hi = _domain(domain).bounds(net, lower, upper, C)
    # the wider boxes may give infinite bounds (layer_norm: a variance bound reaching 0), never NaN ones
    assert torch.isfinite(lo[0]).all() and torch.isfinite(hi[0]).all(), f"non-finite bounds {lo} {hi}"
    for b in range(lower.shape[0]):
        y = ys[b] if C is None else ys[b] @ C.T
        _assert_within(y, lo[b], hi[b], 1e-9, f"{domain} box {b}")


@pytest.mark.parametrize("domain", ["ibp", "crown"])
@pytest.mark.parametrize("op,attrs,box", [
    ("pow", {"exponent": -1.0}, ([-1.0, 0.5], [1.0, 2.0])),
    ("pow", {"exponent": -0.5}, ([0.0, 0.5], [1.0, 2.0])),
    ("log", {}, ([0.0, 0.5], [1.0, 2.0])),
], ids=["pow_neg1_across_0", "pow_neg_half_from_0", "log_from_0"])
def test_infinite_intermediate_bounds_stay_sound(op, attrs, box, domain):
    """Where a box reaches a pole of the op, its bounds may be infinite; the layers after it must keep them
    infinite (a linear layer must not turn inf - inf into NaN) and keep the finite ones sound."""
    net = Network("x", (2,), [Node("p", op, ["x"], attrs=attrs),
                              Node("o", "linear", ["p"], {"W": torch.tensor([[1.0, -1.0], [0.0, 2.0]], dtype=F64),
                                                          "b": torch.zeros(2, dtype=F64)})])
    lower, upper = torch.tensor([box[0]], dtype=F64), torch.tensor([box[1]], dtype=F64)
    lo, hi = _domain(domain).bounds(net, lower, upper)
    assert not torch.isnan(lo).any() and not torch.isnan(hi).any(), f"NaN bounds {lo} {hi}"
    x = _samples(lower[0], upper[0])
    x = x[(x[:, 0] != 0)]  # the pole itself is outside the op's domain
    _assert_within(net.forward_flat(x), lo[0], hi[0], 1e-9, domain)
    assert torch.isfinite(lo[0, 1]) and torch.isfinite(hi[0, 1]), "output 1 reads only the finite element"


# -- 2. data movement is lossless in IBP ------------------------------------------------------------------------------
def _exact_nets():
    """Data-movement ops applied directly to the input (concat: the input with itself and with a copy)."""
    nets = {}
    for c in CASES:
        if c.op in EXACT_OPS and c.n_args == 1:
            nets[c.name] = Network("x", c.shapes[0], [_op_node(c, ["x"], _gen(0))])
    nets["concat_x_x_axis0"] = Network("x", (2, 3), [Node("op", "concat", ["x", "x"], attrs={"axis": 0})])
    nets["concat_x_x_axis1"] = Network("x", (2, 3), [Node("op", "concat", ["x", "x", "x"], attrs={"axis": 1})])
    nets["reshape"] = Network("x", (2, 6), [Node("op", "reshape", ["x"], attrs={"shape": (3, 2, 2)})])
    nets["chain"] = Network("x", (2, 3, 2), [
        Node("t", "transpose", ["x"], attrs={"perm": (1, 2, 0)}),
        Node("p", "pad", ["t"], attrs={"pads": ((1, 0), (0, 0), (0, 2)), "value": -3.0}),
        Node("s", "select", ["p"], attrs={"axis": 0, "index": (3, 0, 1, 1)}),
        Node("op", "reshape", ["s"], attrs={"shape": (4, 8)})])
    return nets


EXACT_NETS = _exact_nets()


@pytest.mark.parametrize("name", sorted(EXACT_NETS))
def test_ibp_exact_on_data_movement(name):
    net = EXACT_NETS[name].to(F64)
    lower, upper = _boxes(net.n_inputs, seed=5)
    B = lower.shape[0]
    want_lo = net.forward_flat(lower)
    want_hi = net.forward_flat(upper)
    ibp = _domain("ibp")
    lo, hi = ibp.node_bounds(net, lower, upper, keep_all=False)[net.output]  # before the final widening
    assert torch.equal(lo.reshape(B, -1), want_lo) and torch.equal(hi.reshape(B, -1), want_hi)
    lo, hi = ibp.bounds(net, lower, upper)  # widened only by the documented floating-point margin
    w_lo, w_hi = widen(want_lo, want_hi)
    assert torch.equal(lo, w_lo) and torch.equal(hi, w_hi)
    # CROWN relaxes nothing here either: its bounds contain the exact ones and are tight up to rounding
    lo, hi = _domain("crown").bounds(net, lower, upper)
    assert (lo <= want_lo).all() and (hi >= want_hi).all()
    slack = 1e-9 * (1 + want_lo.abs() + want_hi.abs())
    assert (lo >= want_lo - slack).all() and (hi <= want_hi + slack).all(), (lo - want_lo, hi - want_hi)


# -- 3. CROWN is no looser than IBP behind linear ops -----------------------------------------------------------------
@pytest.mark.parametrize("case", [c for c in CASES if c.op in LINEAR_OPS], ids=repr)
def test_crown_not_looser_than_ibp_through_linear_ops(case):
    net, lower, upper, _, _ = _setup(case.name, "deep")
    ilo, ihi = _domain("ibp").bounds(net, lower, upper)
    clo, chi = _domain("crown").bounds(net, lower, upper)
    iw, cw = (ihi - ilo).mean(dim=1), (chi - clo).mean(dim=1)
    assert (cw <= iw + 1e-9).all(), f"CROWN mean width {cw.tolist()} > IBP mean width {iw.tolist()}"


# -- 4. ONNX import --------------------------------------------------------------------------------------------------
FL = TensorProto.FLOAT
R = np.random.default_rng(3)


def _c(name, a, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(a, dtype=dtype), name)


def _i64(name, a):
    return _c(name, a, np.int64)


def _model(nodes, in_shape, inits=(), opset=17, batch="N", check=True, out_shape=None) -> bytes:
    """A model with input x [batch, *in_shape] (no batch axis when batch is None) and output y, whose shape is
    inferred when check (else out_shape, which must then be given)."""
    dims = list(in_shape) if batch is None else [batch, *in_shape]
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", FL, dims)],
                          [helper.make_tensor_value_info("y", FL, out_shape)], initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    if check:  # fills in the output's shape
        m = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
        onnx.checker.check_model(m)
    return m.SerializeToString()


N = helper.make_node
BIG = np.iinfo(np.int64).max
# name -> (model bytes, positive: inputs must be > 0)
ONNX_CASES = {
    "Slice_step2": (_model([N("Slice", ["x", "s", "e", "a", "st"], ["y"])], [4, 6],
                           [_i64("s", [1]), _i64("e", [5]), _i64("a", [2]), _i64("st", [2])]), False),
    "Slice_negative_step": (_model([N("Slice", ["x", "s", "e", "a", "st"], ["y"])], [4, 6],
                                   [_i64("s", [-1]), _i64("e", [-BIG]), _i64("a", [-1]), _i64("st", [-2])]), False),
    "Slice_two_axes_no_steps": (_model([N("Slice", ["x", "s", "e", "a"], ["y"])], [4, 6],
                                       [_i64("s", [1, -4]), _i64("e", [BIG, -1]), _i64("a", [1, 2])]), False),
    "Slice_reverse_axis": (_model([N("Slice", ["x", "s", "e", "a", "st"], ["y"])], [3, 5],
                                  [_i64("s", [2, 4]), _i64("e", [-BIG, 0]), _i64("a", [1, 2]),
                                   _i64("st", [-1, -3])]), False),
    "Slice_clamped": (_model([N("Slice", ["x", "s", "e", "a"], ["y"])], [4, 6],
                             [_i64("s", [-10]), _i64("e", [10]), _i64("a", [1])]), False),
    "Split_sizes": (_model([N("Split", ["x", "sp"], ["y0", "y"], axis=1)], [4, 3], [_i64("sp", [1, 3])]), False),
    "Split_equal": (_model([N("Split", ["x"], ["y0", "y1", "y2"], axis=-1), N("Sub", ["y2", "y0"], ["y"])],
                           [2, 6]), False),
    "Gather_scalar": (_model([N("Gather", ["x", "i"], ["y"], axis=1)], [4, 3], [_i64("i", 2)]), False),
    "Gather_1d_negative": (_model([N("Gather", ["x", "i"], ["y"], axis=2)], [2, 5], [_i64("i", [3, 0, 3, -1])]),
                           False),
    "Concat": (_model([N("Relu", ["x"], ["r"]), N("Concat", ["x", "r", "x"], ["y"], axis=-1)], [2, 3]), False),
    "Transpose": (_model([N("Transpose", ["x"], ["y"], perm=[0, 3, 1, 2])], [2, 3, 4]), False),
    "Pad_value": (_model([N("Pad", ["x", "p", "v"], ["y"], mode="constant")], [2, 3],
                         [_i64("p", [0, 1, 2, 0, 0, 1]), _c("v", 0.5)]), False),
    "Pad_default_zero": (_model([N("Pad", ["x", "p"], ["y"])], [2, 3, 3], [_i64("p", [0, 0, 1, 0, 0, 1, 0, 2])]),
                         False),
    "ConvTranspose": (_model([N("ConvTranspose", ["x", "W", "B"], ["y"], strides=[2, 2], pads=[1, 0, 0, 1],
                                output_padding=[1, 1])], [2, 3, 3],
                             [_c("W", R.standard_normal((2, 3, 3, 3))), _c("B", R.standard_normal(3))]), False),
    "ConvTranspose_groups_dilation": (_model([N("ConvTranspose", ["x", "W"], ["y"], group=2, dilations=[2, 1],
                                                strides=[1, 2])], [4, 2, 3],
                                             [_c("W", R.standard_normal((4, 1, 2, 2)))]), False),
    "ReduceSum_axes_input": (_model([N("ReduceSum", ["x", "ax"], ["y"], keepdims=0)], [2, 3, 4],
                                    [_i64("ax", [1, -1])]), False),
    "ReduceSum_keepdims": (_model([N("ReduceSum", ["x", "ax"], ["y"])], [2, 3], [_i64("ax", [2])]), False),
    "ReduceMean_attr": (_model([N("ReduceMean", ["x"], ["y"], axes=[2], keepdims=1)], [2, 3, 4]), False),
    "ReduceMean_keepdims0": (_model([N("ReduceMean", ["x"], ["y"], axes=[1, 2], keepdims=0)], [2, 3]), False),
    "ReduceMean_opset18_axes_input": (_model([N("ReduceMean", ["x", "ax"], ["y"], keepdims=0)], [2, 3],
                                             [_i64("ax", [-1])], opset=18), False),
    "Mul_two_vars_broadcast": (_model([N("ReduceMean", ["x"], ["m"], axes=[2], keepdims=1),
                                       N("Mul", ["x", "m"], ["y"])], [2, 3]), False),
    "Mul_square": (_model([N("Mul", ["x", "x"], ["y"])], [5]), False),
    "Div_two_vars": (_model([N("Exp", ["x"], ["e"]), N("Div", ["x", "e"], ["y"])], [2, 3]), False),
    "Div_broadcast": (_model([N("ReduceSum", ["x", "ax"], ["s"], keepdims=1), N("Div", ["x", "s"], ["y"])], [2, 3],
                             [_i64("ax", [1])]), True),
    "MatMul_two_vars": (_model([N("Transpose", ["x"], ["t"], perm=[0, 2, 1]), N("MatMul", ["x", "t"], ["y"])],
                               [2, 3]), False),
    "Pow_square": (_model([N("Pow", ["x", "p"], ["y"])], [5], [_c("p", 2.0)]), False),
    "Pow_int_exponent": (_model([N("Pow", ["x", "p"], ["y"])], [5], [_i64("p", 3)]), False),
    "Pow_exponent_shape1": (_model([N("Pow", ["x", "p"], ["y"])], [5], [_c("p", [0.5])]), True),
    "Pow_fractional": (_model([N("Pow", ["x", "p"], ["y"])], [5], [_c("p", -1.5)]), True),
    "Sqrt": (_model([N("Sqrt", ["x"], ["y"])], [5]), True),
    "Reciprocal": (_model([N("Reciprocal", ["x"], ["y"])], [5]), True),
    "Exp": (_model([N("Exp", ["x"], ["y"])], [5]), False),
    "Log": (_model([N("Log", ["x"], ["y"])], [5]), True),
    "Sin": (_model([N("Sin", ["x"], ["y"])], [5]), False),
    "Cos": (_model([N("Cos", ["x"], ["y"])], [5]), False),
    "Sign": (_model([N("Sign", ["x"], ["y"])], [5]), False),
    "Clip_min_max": (_model([N("Clip", ["x", "lo", "hi"], ["y"])], [5], [_c("lo", -0.3), _c("hi", 0.4)]), False),
    "Clip_max_only": (_model([N("Clip", ["x", "", "hi"], ["y"])], [5], [_c("hi", 0.2)]), False),
    "Clip_min_only": (_model([N("Clip", ["x", "lo"], ["y"])], [5], [_c("lo", -0.1)]), False),
    "Softmax_default_axis": (_model([N("Softmax", ["x"], ["y"])], [2, 4]), False),
    "Softmax_axis1": (_model([N("Softmax", ["x"], ["y"], axis=1)], [3, 2]), False),
    "Resize_scales": (_model([N("Resize", ["x", "", "sc"], ["y"], mode="nearest")], [2, 3, 3],
                             [_c("sc", [1, 1, 2, 2])]), False),
    "Resize_scales_asymmetric_floor": (_model([N("Resize", ["x", "", "sc"], ["y"], mode="nearest",
                                                 coordinate_transformation_mode="asymmetric", nearest_mode="floor")],
                                              [1, 2, 3], [_c("sc", [1, 1, 3, 2])]), False),
    "Resize_downsample": (_model([N("Resize", ["x", "", "sc"], ["y"], mode="nearest")], [2, 4, 4],
                                 [_c("sc", [1, 1, 0.5, 0.5])]), False),
    "Resize_sizes_batch1": (_model([N("Resize", ["x", "", "", "sz"], ["y"], mode="nearest")], [2, 3, 3],
                                   [_i64("sz", [1, 2, 5, 4])], batch=1), False),
    "LayerNormalization": (_model([N("LayerNormalization", ["x", "g", "b"], ["y"], epsilon=1e-5)], [3, 4],
                                  [_c("g", R.standard_normal(4)), _c("b", R.standard_normal(4))]), False),
    "LayerNormalization_axis1": (_model([N("LayerNormalization", ["x", "g"], ["y"], axis=1)], [2, 3],
                                        [_c("g", R.standard_normal((2, 3)))]), False),
    "Conv1d": (_model([N("Conv", ["x", "W", "B"], ["y"], pads=[1, 0], strides=[2])], [2, 7],
                      [_c("W", R.standard_normal((3, 2, 3))), _c("B", R.standard_normal(3))]), False),
    "Conv1d_dilation_group": (_model([N("Conv", ["x", "W"], ["y"], dilations=[2], group=2)], [2, 6],
                                     [_c("W", R.standard_normal((4, 1, 2)))]), False),
    "rank1_input": (_model([N("MatMul", ["x", "W"], ["h"]), N("Relu", ["h"], ["y"])], [6],
                           [_c("W", R.standard_normal((6, 4)))], batch=None), False),
    "fixed_first_dim": (_model([N("Reshape", ["x", "shp"], ["r"]), N("Slice", ["r", "s", "e", "a"], ["sl"]),
                                N("Relu", ["sl"], ["y"])], [3, 4],
                               [_i64("shp", [-1, 3, 4]), _i64("s", [1]), _i64("e", [3]), _i64("a", [2])],
                               batch=None), False),
    "fixed_first_dim_reduce": (_model([N("ReduceSum", ["x", "ax"], ["y"], keepdims=0)], [3, 4],
                                      [_i64("ax", [0])], batch=None), False),
    "fixed_first_dim_mul_broadcast": (_model([N("ReduceSum", ["x", "ax"], ["s"], keepdims=0), N("Mul", ["x", "s"], ["y"])],
                                             [3, 4], [_i64("ax", [0])], batch=None), False),
    "fixed_first_dim_transpose_matmul": (_model([N("Transpose", ["x"], ["t"], perm=[1, 0]),
                                                 N("MatMul", ["x", "t"], ["y"])], [3, 4], batch=None), False),
    "fixed_first_dim_gather_axis0": (_model([N("Gather", ["x", "i"], ["y"], axis=0)], [3, 4], [_i64("i", [2, 0, 2])],
                                            batch=None), False),
    "batch1_transpose_first_axis": (_model([N("Transpose", ["x"], ["t"], perm=[1, 0, 2]), N("Relu", ["t"], ["y"])],
                                           [4, 3], batch=1), False),
}


def _onnx_inputs(net, n, positive, seed):
    rng = np.random.default_rng(seed)
    if positive:
        return rng.uniform(0.5, 2.0, (n, *net.input_shape))
    return rng.standard_normal((n, *net.input_shape))


@functools.lru_cache(maxsize=None)
def _onnx_net(name):
    data, positive = ONNX_CASES[name]
    return load_onnx_bytes(data, f"{name}.onnx"), positive


@pytest.mark.parametrize("name", sorted(ONNX_CASES))
def test_onnx_forward_matches_onnxruntime(name):
    net, positive = _onnx_net(name)
    x = _onnx_inputs(net, 5, positive, seed=0).astype(np.float32)  # what onnxruntime sees
    ref = run_onnx(net, x)
    out = net.to(F64).forward_flat(torch.from_numpy(x.astype(np.float64)).reshape(5, -1)).numpy()
    assert out.shape == ref.shape, (out.shape, ref.shape)
    err = np.abs(out - ref) / np.maximum(1.0, np.abs(ref))
    assert err.max() <= 1e-5, f"max relative error {err.max():.3g}\nIR {out}\nonnxruntime {ref}"


@pytest.mark.parametrize("domain", ["ibp", "crown"])
@pytest.mark.parametrize("name", sorted(ONNX_CASES))
def test_onnx_bounds_sound_under_onnxruntime(name, domain):
    net, positive = _onnx_net(name)
    n = net.n_inputs
    centre = torch.from_numpy(_onnx_inputs(net, 1, positive, seed=1).reshape(1, n)).repeat(2, 1)
    r = torch.tensor([[0.02], [0.2]], dtype=F64)
    lower, upper = centre - r, centre + r
    lo, hi = _domain(domain).bounds(net, lower, upper)
    for b in range(2):
        x = _samples(lower[b], upper[b], n=500, seed=b)
        y = torch.from_numpy(run_onnx(net, x.numpy().reshape(-1, *net.input_shape)))
        _assert_within(y, lo[b], hi[b], 1e-5, f"{domain} on box {b} (radius {r[b].item()})")


def _ort_per_sample(data: bytes, x: np.ndarray) -> np.ndarray:
    """The model under onnxruntime itself (not run_onnx), one sample x[i] (the graph's full input) at a time."""
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return np.stack([np.asarray(sess.run(None, {"x": xi.astype(np.float32)})[0], dtype=np.float64).ravel()
                     for xi in x])


UNBATCHED = sorted(k for k in ONNX_CASES if k.startswith(("rank1", "fixed_first_dim")))


@pytest.mark.parametrize("name", UNBATCHED)
def test_onnx_unbatched_import_matches_onnxruntime_session(name):
    """The import of graphs without a batch axis, checked against a plain onnxruntime session (so that a fault of
    run_onnx on such graphs does not hide the import's)."""
    net, positive = _onnx_net(name)
    x = _onnx_inputs(net, 5, positive, seed=0).astype(np.float32)
    ref = _ort_per_sample(ONNX_CASES[name][0], x)
    out = net.to(F64).forward_flat(torch.from_numpy(x.astype(np.float64)).reshape(5, -1)).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_onnx_unbatched_shapes():
    """Rank-1 inputs and fixed first dimensions > 1 are one sample: the IR input shape is the full ONNX shape."""
    assert _onnx_net("rank1_input")[0].input_shape == (6,)
    assert _onnx_net("rank1_input")[0].n_outputs == 4
    assert _onnx_net("fixed_first_dim")[0].input_shape == (3, 4)
    assert _onnx_net("fixed_first_dim")[0].n_outputs == 6
    assert _onnx_net("fixed_first_dim_reduce")[0].n_outputs == 4


# -- 5. errors -------------------------------------------------------------------------------------------------------
def test_unknown_op_raises_bad_input_naming_node_and_op():
    """An op type ONNX itself does not define fails ONNX's own model check (the importer runs it first): a
    BadInput that still names the node and the op type."""
    data = _model([N("Relu", ["x"], ["r"]), N("Frobnicate", ["r"], ["y"], name="weird_node")], [4], check=False,
                  out_shape=["N", 4])
    with pytest.raises(BadInput) as e:
        load_onnx_bytes(data, "frob.onnx")
    assert "weird_node" in str(e.value) and "Frobnicate" in str(e.value), str(e.value)


def test_unsupported_real_op_raises_unsupported_op():
    data = _model([N("Relu", ["x"], ["r"]), N("NonZero", ["r"], ["y"], name="nz_node")], [4], check=False,
                  out_shape=[1, "K"])
    with pytest.raises(UnsupportedOp) as e:
        load_onnx_bytes(data, "nonzero.onnx")
    assert "nz_node" in str(e.value) and "NonZero" in str(e.value), str(e.value)


@pytest.mark.parametrize("nodes,inits", [
    ([N("ReduceSum", ["x", "ax"], ["y"], keepdims=0)], [_i64("ax", [0])]),
    ([N("Transpose", ["x"], ["y"], perm=[1, 0, 2])], []),
    ([N("Pad", ["x", "p"], ["y"])], [_i64("p", [1, 0, 0, 0, 0, 0])]),
    ([N("Softmax", ["x"], ["y"], axis=0)], []),
    ([N("Slice", ["x", "s", "e", "a"], ["y"])], [_i64("s", [1]), _i64("e", [2]), _i64("a", [0])]),
], ids=["ReduceSum_batch", "Transpose_batch", "Pad_batch", "Softmax_batch", "Slice_batch"])
def test_ops_across_a_dynamic_batch_axis_are_refused(nodes, inits):
    """An op that mixes samples cannot be expressed per sample: a clear BadInput, never a wrong network."""
    data = _model(nodes, [2, 3], inits)
    with pytest.raises(BadInput):
        load_onnx_bytes(data, "batch.onnx")
