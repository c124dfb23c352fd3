"""Guaranteed rounding-error bound of a float64 forward pass (running error analysis, Higham ch. 3).

For each value v the float64 evaluation v̂ satisfies |v̂ - v| <= e_v entrywise, where v is the exact real
arithmetic value of the same network (float32 weights read exactly), propagated node by node with u = 2^-53:
  linear / conv2d (reduction length k):  e_out <= |W| e_in + gamma_{k+1} (|W| |x̂| + |b|)
  affine:   |s| e_in + gamma_2 (|s x̂| + |t|);  avgpool2d (k cells):  pool(e_in) + gamma_{k+1} pool(|x̂|)
  add:      e_a + e_b + u |â + b̂|;  reshape: e_in
  relu:     e_in (1-Lipschitz, exact);  leaky_relu: e_in + u |ŷ|;  tanh, sigmoid: beta e_in + 16 u |ŷ| + 1e-300
            (slope <= beta; libm tanh / exp are accurate to a few ulp)
The bound's own arithmetic is rounded too; the caller inflates it by (1 + 1e-6), far above that rounding.
"""
from __future__ import annotations

import torch

from nncert.engine.ir import Node, apply_op
from nncert.engine.kernels.spectral import U, gamma


def _abs_node(node: Node) -> Node:
    params = {k: v.abs() for k, v in node.params.items() if k not in ("b", "shift")}
    return Node(node.name, node.op, list(node.inputs), params, dict(node.attrs), node.shape)


def _k(node: Node) -> int:
    if node.op == "linear":
        return int(node.params["W"].shape[1])
    W = node.params["W"]
    return int(W.shape[1] * W.shape[2] * W.shape[3])


def forward_with_error(net64, x: torch.Tensor):
    """(logits [B, n_out] float64, error bound [B, n_out]) for x [B, *input_shape] on a float64 network."""
    vals = {net64.input_name: x.to(torch.float64)}
    errs = {net64.input_name: torch.zeros_like(vals[net64.input_name])}
    for node in net64.nodes:
        args = [vals[i] for i in node.inputs]
        y = apply_op(node, args)
        e_in = errs[node.inputs[0]]
        op = node.op
        if op in ("linear", "conv2d"):
            an = _abs_node(node)
            e = apply_op(an, [e_in])
            mag = apply_op(an, [args[0].abs()])
            if "b" in node.params:
                b = node.params["b"].abs()
                mag = mag + (b.reshape(-1, 1, 1) if op == "conv2d" else b)
            e = e + gamma(_k(node) + 1) * mag
        elif op == "affine":
            s = node.params.get("scale")
            t = node.params.get("shift")
            e = e_in * (s.abs() if s is not None else 1.0)
            mag = (args[0] * s).abs() if s is not None else args[0].abs()
            if t is not None:
                mag = mag + t.abs()
            e = e + gamma(2) * mag
        elif op == "avgpool2d":
            kh, kw = node.attrs["kernel"]
            e = apply_op(node, [e_in]) + gamma(kh * kw + 1) * apply_op(node, [args[0].abs()])
        elif op == "add":
            e = e_in + errs[node.inputs[1]] + U * y.abs()
        elif op == "reshape":
            e = apply_op(node, [e_in])
        elif op == "relu":
            e = e_in
        elif op == "leaky_relu":
            e = e_in * max(1.0, abs(float(node.attrs["alpha"]))) + U * y.abs()
        elif op in ("tanh", "sigmoid"):
            beta = 1.0 if op == "tanh" else 0.25
            e = beta * e_in + 16 * U * y.abs() + 1e-300
        else:
            raise ValueError(f"no rounding rule for op {op!r}")
        vals[node.name] = y
        errs[node.name] = e
    B = x.shape[0]
    return vals[net64.output].reshape(B, -1), errs[net64.output].reshape(B, -1) * (1 + 1e-6)
