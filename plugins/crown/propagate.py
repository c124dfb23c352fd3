"""CROWN on an IR DAG: backward linear bound propagation with CROWN intermediate bounds.

`crown_bounds(...)` walks the nodes in topological order keeping an interval for every node (IBP rules of
plugins.ibp, from the tightest bounds known so far). At the input of every op whose rule needs bounds (ReLU,
sigmoid, ...), it refines that interval by CROWN: a backward pass from the node to the network input with one
bound row per neuron, concretised over the input set. For ReLU/LeakyReLU inputs the rows are chosen by
engine.kernels.linear_bounds.crown_rows (auto_LiRPA's sparse rule: interval-unstable neurons, or all when
more than 90% are) and CROWN replaces the interval there; for other ops every neuron gets a row and the CROWN
bound is intersected with the interval.
The backward pass visits nodes in reverse topological order and sums coefficients over a node's consumers
(residual DAGs). Lower bounds only are propagated: upper = -lower of the negated rows.
"""
from __future__ import annotations

import math

import torch

from nncert.engine.kernels import linear_bounds as lb

SIGN_ONLY = ("relu", "leaky_relu")  # ops whose relaxation of a stable neuron does not depend on its bounds


class Ctx:
    """Per-call state: node bounds, relaxation cache, parameters in the working dtype."""

    def __init__(self, network, dtype, device):
        self.network, self.dtype, self.device = network, dtype, device
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


def backward_lower(network, target: str, A: torch.Tensor, ctx: Ctx, rules, concretize) -> torch.Tensor:
    """Lower bound [B, m] of sum(A * value(target)) over the input set; A [B, m, *shape(target)]."""
    B, m = A.shape[:2]
    lam = {target: A}
    bias = torch.zeros(B, m, dtype=ctx.dtype, device=ctx.device)
    for node in reversed(network.nodes):
        L = lam.pop(node.name, None)
        if L is None:
            continue
        ins, b = rules[node.op](node, L, ctx)
        if b is not None:
            bias = bias + b
        for name, Li in zip(node.inputs, ins):
            if Li is not None:
                lam[name] = lam[name] + Li if name in lam else Li
    L = lam.get(network.input_name)
    if L is None:  # the target does not depend on the input
        return bias
    return concretize(L.reshape(B, m, -1), bias)


def _needs_bounds(network, rules) -> dict[str, list[str]]:
    """{node name: ops of its consumers that need its bounds}."""
    out: dict[str, list[str]] = {}
    for node in network.nodes:
        if getattr(rules[node.op], "needs_bounds", False):
            out.setdefault(node.inputs[0], []).append(node.op)
    return out


def crown_bounds(network, rules, ibp_rules, box_lo, box_hi, concretize, C, row_chunk: int = 4096):
    """Lower and upper bounds [B, m] of C @ flat(f(x)), unwidened.

    box_lo/box_hi [B, n_in]: a box containing the input set (the set itself for box inputs);
    concretize(Lam [B, R, n_in], bias [B, R]) -> min over the input set; C [B, m, n_out].
    """
    B, dt, dev = box_lo.shape[0], box_lo.dtype, box_lo.device
    ctx = Ctx(network, dt, dev)
    needs = _needs_bounds(network, rules)
    inf = float("inf")
    ctx.bounds[network.input_name] = (box_lo.reshape(B, *network.input_shape), box_hi.reshape(B, *network.input_shape))
    for node in network.nodes:
        rule = ibp_rules.get(node.op)
        if rule is not None:
            il, iu = rule(node, [ctx.bounds[i] for i in node.inputs])
        else:
            il = torch.full((B, *node.shape), -inf, dtype=dt, device=dev)
            iu = torch.full((B, *node.shape), inf, dtype=dt, device=dev)
        if node.name in needs:
            il, iu = _refine(network, node, il, iu, needs[node.name], ctx, rules, concretize, row_chunk)
        ctx.bounds[node.name] = (il, iu)
    m = C.shape[1]
    A = C.reshape(B, m, *network.output_shape)
    res = backward_lower(network, network.output, torch.cat([A, -A], 1), ctx, rules, concretize)
    return res[:, :m], -res[:, m:]


def _refine(network, node, il, iu, consumer_ops, ctx, rules, concretize, row_chunk):
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
    for s in range(0, idx.numel(), row_chunk):
        ids = idx[s:s + row_chunk]
        k = ids.numel()
        E = torch.zeros(k, n, dtype=ctx.dtype, device=ctx.device)
        E[torch.arange(k), ids] = 1
        A = torch.cat([E, -E]).reshape(1, 2 * k, *shape).expand(B, -1, *shape)
        res = backward_lower(network, node.name, A, ctx, rules, concretize)
        cl, cu = res[:, :k], -res[:, k:]
        if not sign_only:
            cl, cu = torch.maximum(fl[:, ids], cl), torch.minimum(fu[:, ids], cu)
        use = want[:, ids]
        fl[:, ids] = torch.where(use, cl, fl[:, ids])
        fu[:, ids] = torch.where(use, cu, fu[:, ids])
    return fl.reshape(il.shape), fu.reshape(iu.shape)
