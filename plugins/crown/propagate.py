"""CROWN on an IR DAG: backward linear bound propagation with CROWN intermediate bounds.

`crown_bounds(...)` runs the engine's forward traversal (engine/propagate.py) with interval rules taken from the
registry's "ibp" domain (its own rules, plugins' rules and trait-derived ones), keeping an interval for every node.
At the input of every op whose rule needs bounds (ReLU, sigmoid, products, ...), it refines that interval by
CROWN: the engine's backward traversal from the node to the network input with one bound row per neuron,
concretised over the input set. For ReLU/LeakyReLU inputs the rows are chosen by
engine.kernels.linear_bounds.crown_rows (auto_LiRPA's sparse rule: interval-unstable neurons, or all when more
than 90% are) and CROWN replaces the interval there; for other ops every neuron gets a row and the CROWN bound is
intersected with the interval. Lower bounds only are propagated: upper = -lower of the negated rows. Rows are
processed in chunks sized to the memory budget (engine/memory.py); C = None bounds every output without ever
forming an identity matrix. The unit rows of a [C, H, W] map are grouped by spatial tile and carried as windows
(plugins/crown/window.py), so their cost follows their receptive field.
"""
from __future__ import annotations

import math

import torch

from nncert.engine import deadline, memory
from nncert.engine.kernels import linear_bounds as lb
from nncert.engine.propagate import backward, forward

from .window import TILE, by_tile, dense, unit_rows, windowed

SIGN_ONLY = ("relu", "leaky_relu")  # ops whose relaxation of a stable neuron does not depend on its bounds


class Ctx:
    """Per-call state: node bounds, relaxation cache, parameters in the working dtype, the op table."""

    def __init__(self, network, batch, dtype, device, ops):
        self.network, self.batch, self.dtype, self.device, self.ops = network, batch, dtype, device, ops
        self.bounds: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.cache: dict = {}
        self._shapes = {network.input_name: network.input_shape} | {n.name: n.shape for n in network.nodes}
        self._params: dict = {}

    def shape(self, name):
        return self._shapes[name]

    def param(self, node, key):
        k = (node.name, key)
        if k not in self._params:
            self._params[k] = node.params[key].to(dtype=self.dtype, device=self.device)
        return self._params[k]


def concretize_box(lo, hi):
    def f(Lam, bias):
        return lb.concretize_box(Lam, bias, lo, hi)
    return f


def concretize_l2(center, eps):
    """min over ||x - center||_2 <= eps of Lam @ x + bias = Lam @ center - eps ||Lam||_2 + bias."""
    def f(Lam, bias):
        return (Lam @ center[:, :, None])[..., 0] - eps[:, None] * torch.linalg.vector_norm(Lam, dim=-1) + bias
    return f


def backward_lower(network, target: str, A: torch.Tensor, ctx: Ctx, rule_for, concretize) -> torch.Tensor:
    """Lower bound [B, m] of sum(A * value(target)) over the input set; A [B, m, *shape(target)]."""
    B, m = A.shape[:2]
    deadline.check()  # each chunk of rows is one unit of work (engine/deadline.py)
    L, bias = backward(network, target, A, rule_for, ctx)
    if L is None:  # the target does not depend on the input
        return bias
    return concretize(dense(L).reshape(B, m, -1), bias)


def _needs_bounds(network, rule_for) -> dict[str, list[str]]:
    """{value name: ops of its consumers whose relaxation needs its bounds}.

    A ReLU-like node whose own output needs bounds beyond their sign (e.g. it feeds a product) is not refined
    itself: its input gets CROWN bounds for every neuron instead (marker "<op>-image"), and the image of those
    under the monotone op is then at least as tight as CROWN's bound of the output (see hidden_bounds)."""
    out: dict[str, list[str]] = {}
    for node in network.nodes:
        if getattr(rule_for(node), "needs_bounds", False):
            for i in node.inputs:
                out.setdefault(i, []).append(node.op)
    for node in network.nodes:
        if node.op in SIGN_ONLY and any(op not in SIGN_ONLY for op in out.get(node.name, ())):
            out.setdefault(node.inputs[0], []).append(node.op + "-image")
    return out


def crown_bounds(network, rule_for, interval_rule_for, ops, box_lo, box_hi, concretize, C=None):
    """Lower and upper bounds [B, m] of C @ flat(f(x)) (C [B, m, n_out]; None: every output), unwidened.

    box_lo/box_hi [B, n_in]: a box containing the input set (the set itself for box inputs);
    concretize(Lam [B, R, n_in], bias [B, R]) -> min over the input set."""
    ctx = hidden_bounds(network, rule_for, interval_rule_for, ops, box_lo, box_hi, concretize)
    return output_bounds(network, ctx, windowed(rule_for), concretize, C)


def _chunk(network, B, itemsize):
    width = max([network.n_inputs] + [math.prod(n.shape) for n in network.nodes])
    return memory.rows_per_chunk(B, width, itemsize)


def hidden_bounds(network, rule_for, interval_rule_for, ops, box_lo, box_hi, concretize, prior=None) -> Ctx:
    """The Ctx of a CROWN pass with ctx.bounds[name] = (lo, hi) [B, *shape] for every value: intervals, refined
    by CROWN at the inputs of the ops whose relaxation needs bounds. prior: {name: (lo, hi) [B, *shape]} bounds
    known to hold over each box (e.g. a parent box's: kept_names, unpack_bounds), intersected with every value's bounds as
    it is computed, so later layers start from the tighter of the two (neurons stable by the intersection need no
    CROWN row)."""
    B, dt, dev = box_lo.shape[0], box_lo.dtype, box_lo.device
    ctx = Ctx(network, B, dt, dev, ops)
    needs = _needs_bounds(network, rule_for)
    rule_for = windowed(rule_for)
    chunk = _chunk(network, B, box_lo.element_size())
    inf = float("inf")

    def interval(node, boxes):
        rule = interval_rule_for(node)
        if rule is not None:
            return rule(node, boxes)
        return (torch.full((B, *node.shape), -inf, dtype=dt, device=dev),
                torch.full((B, *node.shape), inf, dtype=dt, device=dev))

    def refine(node, box):
        if prior is not None and node.name in prior:
            box = (torch.fmax(box[0], prior[node.name][0]), torch.fmin(box[1], prior[node.name][1]))
        if node.name not in needs or exact_interval(node):
            return box
        ctx.bounds[node.name] = box  # the interval, for rules that read a node's own bounds while it is refined
        lo, hi = _refine(network, node, *box, needs[node.name], ctx, rule_for, concretize, chunk)
        if prior is not None and node.name in prior:
            lo, hi = torch.fmax(lo, prior[node.name][0]), torch.fmin(hi, prior[node.name][1])
        return lo, hi

    def exact_interval(node):
        """ReLU(x) with CROWN bounds [l, u] of every neuron of x (_needs_bounds asks for them when relu(x) needs
        bounds): [relu(l), relu(u)] is their exact image, and CROWN's own bound of relu(x) (the relaxation over
        [l, u] applied to the same linear bounds of x) is never tighter."""
        return node.op in SIGN_ONLY and node.inputs[0] in needs

    box = (box_lo.reshape(B, *network.input_shape), box_hi.reshape(B, *network.input_shape))
    forward(network, box, lambda node: interval, on_node=refine, vals=ctx.bounds)
    return ctx


def kept_names(network, rule_for) -> list[str]:
    """The values whose bounds a backward pass reads (the inputs and outputs of ops whose rule needs bounds), in
    graph order: what a box's CROWN state keeps for its sub-boxes (pack_bounds)."""
    keep = set()
    for node in network.nodes:
        if getattr(rule_for(node), "needs_bounds", False):
            keep.update(i for i in node.inputs if i != network.input_name)
            keep.add(node.name)
    return [n.name for n in network.nodes if n.name in keep]


def pack_bounds(bounds, names) -> torch.Tensor:
    """[B, s]: the lower then upper bounds of the named values, flattened."""
    B = bounds[names[0]][0].shape[0]
    return torch.cat([bounds[n][k].reshape(B, -1) for k in (0, 1) for n in names], 1)


def unpack_bounds(state, network, names) -> dict:
    """pack_bounds' inverse: {name: (lo, hi) [B, *shape]}."""
    B = state.shape[0]
    shapes = {n.name: n.shape for n in network.nodes}
    sizes = [math.prod(shapes[n]) for n in names]
    lo, hi = state.split([sum(sizes)] * 2, 1)
    lo, hi = lo.split(sizes, 1), hi.split(sizes, 1)
    return {n: (lo[i].reshape(B, *shapes[n]), hi[i].reshape(B, *shapes[n])) for i, n in enumerate(names)}


def output_bounds(network, ctx, rule_for, concretize, C=None):
    """Bounds [B, m] of C @ flat(f(x)) given ctx's hidden bounds (see crown_bounds); rule_for windowed."""
    B, dt, dev = ctx.batch, ctx.dtype, ctx.device
    chunk = _chunk(network, B, torch.empty((), dtype=dt).element_size())
    if C is None:  # every output: unit rows, windowed like those of hidden neurons
        n_out = network.n_outputs
        lo = torch.empty(B, n_out, dtype=dt, device=dev)
        hi = torch.empty_like(lo)
        idx = torch.arange(n_out, device=dev)
        for ids, cl, cu in _rows_bounds(network, network.output, network.output_shape, idx, B, ctx, rule_for,
                                        concretize, chunk):
            lo[:, ids], hi[:, ids] = cl, cu
        return lo, hi
    lo, hi = [], []
    m = C.shape[1]
    for s in range(0, m, chunk):
        A = C[:, s:s + chunk].reshape(B, -1, *network.output_shape)
        k = A.shape[1]
        res = backward_lower(network, network.output, torch.cat([A, -A], 1), ctx, rule_for, concretize)
        lo.append(res[:, :k])
        hi.append(-res[:, k:])
    return torch.cat(lo, 1), torch.cat(hi, 1)


def _refine(network, node, il, iu, consumer_ops, ctx, rule_for, concretize, row_chunk):
    """CROWN bounds of node's neurons (see the module docstring), in place of / intersected with its interval."""
    B = il.shape[0]
    shape = node.shape
    n = math.prod(shape)
    fl, fu = il.reshape(B, n), iu.reshape(B, n)
    sign_only = all(op in SIGN_ONLY for op in consumer_ops)
    if sign_only:  # ReLU-like consumers: auto_LiRPA's sparse rule, CROWN bounds replace the interval
        want = lb.crown_rows(fl, fu)
    else:          # bounds matter everywhere: CROWN for all neurons, intersected with the interval
        want = torch.ones_like(fl, dtype=torch.bool)
    idx = want.any(0).nonzero().flatten()
    if idx.numel() == 0:
        return il, iu
    fl, fu = fl.clone(), fu.clone()
    for ids, cl, cu in _rows_bounds(network, node.name, shape, idx, B, ctx, rule_for, concretize, row_chunk):
        if not sign_only:
            cl, cu = torch.maximum(fl[:, ids], cl), torch.minimum(fu[:, ids], cu)
        use = want[:, ids]
        fl[:, ids] = torch.where(use, cl, fl[:, ids])
        fu[:, ids] = torch.where(use, cu, fu[:, ids])
    return fl.reshape(il.shape), fu.reshape(iu.shape)


def _rows_bounds(network, name, shape, idx, B, ctx, rule_for, concretize, row_chunk):
    """(ids, lower [B, k], upper [B, k]) for chunks of the neurons idx of value `name` (of shape `shape`); the
    rows of nearby neurons are bounded together (their coefficients share a window: plugins/crown/window.py)."""
    for tile in by_tile(shape, idx, TILE):
        for s in range(0, tile.numel(), row_chunk):
            ids = tile[s:s + row_chunk]
            k = ids.numel()
            A = unit_rows(shape, ids, B, ctx.dtype, ctx.device)
            res = backward_lower(network, name, A, ctx, rule_for, concretize)
            yield ids, res[:, :k], -res[:, k:]
