"""Model IR: an ordered DAG of canonical ops with torch weights.

Every tensor flowing through the IR has a leading batch axis; shapes stored in the IR exclude it.
Canonical ops (node.op) and their semantics, with x the node's first input and B the batch size:

  linear      y = x @ W.T + b            params W [out, in], b [out] or absent; acts on the last axis
  conv2d      y = conv2d(x, W, b)        params W [Cout, Cin/groups, kh, kw], b [Cout] or absent;
                                         attrs stride (2), pads (top, left, bottom, right), dilation (2), groups
  affine      y = x * scale + shift      params scale / shift (each optional), broadcast against one sample
                                         (covers Add/Sub/Mul/Div by constants and inference BatchNorm)
  add, sub    y = a + b, y = a - b       two node inputs of the same shape (residual connections)
  relu, sigmoid, tanh                    elementwise
  leaky_relu  y = max(x, alpha * x)      attrs alpha in [0, 1]
  reshape     y = x.reshape(B, *shape)   attrs shape (without batch); Flatten is a reshape
  avgpool2d   attrs kernel (2), stride (2), pads (t, l, b, r); divisor counts padded cells (count_include_pad)
  maxpool2d   attrs kernel (2), stride (2), pads (t, l, b, r); pads are -inf

Domains dispatch on node.op; a node op a domain has no rule for raises UnsupportedOp.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .errors import BadInput

OPS = (
    "linear", "conv2d", "affine", "add", "sub", "relu", "sigmoid", "tanh", "leaky_relu",
    "reshape", "avgpool2d", "maxpool2d",
)
ELEMENTWISE_MONOTONE = ("relu", "sigmoid", "tanh", "leaky_relu")


@dataclass
class Node:
    """One op. `name` names its output value; `inputs` name earlier nodes or the network input."""

    name: str
    op: str
    inputs: list[str]
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    shape: tuple[int, ...] = ()  # output shape without batch axis, filled by Network

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}{list(v.shape)}" for k, v in self.params.items())
        return f"Node({self.name!r}, {self.op}, inputs={self.inputs}, {ps}, {self.attrs}, shape={self.shape})"


def _pad2d(x: torch.Tensor, pads, value: float = 0.0) -> torch.Tensor:
    t, l, b, r = pads
    if t == l == b == r == 0:
        return x
    return F.pad(x, (l, r, t, b), value=value)


def apply_op(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    """Concrete semantics of one canonical op (the oracle every domain is tested against)."""
    op, p, a = node.op, node.params, node.attrs
    x = args[0]
    if op == "linear":
        w = p["W"].to(x.dtype)
        b = p.get("b")
        return F.linear(x, w, None if b is None else b.to(x.dtype))
    if op == "conv2d":
        b = p.get("b")
        return F.conv2d(_pad2d(x, a["pads"]), p["W"].to(x.dtype), None if b is None else b.to(x.dtype),
                        stride=a["stride"], dilation=a["dilation"], groups=a["groups"])
    if op == "affine":
        if "scale" in p:
            x = x * p["scale"].to(x.dtype)
        if "shift" in p:
            x = x + p["shift"].to(x.dtype)
        return x
    if op == "add":
        return x + args[1]
    if op == "sub":
        return x - args[1]
    if op == "relu":
        return torch.relu(x)
    if op == "sigmoid":
        return torch.sigmoid(x)
    if op == "tanh":
        return torch.tanh(x)
    if op == "leaky_relu":
        return F.leaky_relu(x, a["alpha"])
    if op == "reshape":
        return x.reshape(x.shape[0], *a["shape"])
    if op == "avgpool2d":
        return F.avg_pool2d(_pad2d(x, a["pads"]), a["kernel"], a["stride"])
    if op == "maxpool2d":
        return F.max_pool2d(_pad2d(x, a["pads"], float("-inf")), a["kernel"], a["stride"])
    raise BadInput(f"unknown IR op {op!r} in node {node.name!r}")


class Network:
    """A feed-forward DAG. `nodes` are in topological order; the last node's output is the network output.

    Weights are torch tensors (float32 as imported, converted on use). `source` names the file it came from.
    """

    def __init__(self, input_name: str, input_shape: tuple[int, ...], nodes: list[Node], output: str | None = None,
                 source: str | None = None, onnx_bytes: bytes | None = None):
        self.input_name = input_name
        self.input_shape = tuple(int(s) for s in input_shape)
        self.nodes = list(nodes)
        self.output = output if output is not None else (self.nodes[-1].name if self.nodes else input_name)
        self.source = source
        self.onnx_bytes = onnx_bytes  # the original model, for re-checking counterexamples with onnxruntime
        for node in self.nodes:
            if node.op not in OPS:
                raise BadInput(f"node {node.name!r} has unknown IR op {node.op!r}", source)
            for k, v in node.params.items():
                if not torch.isfinite(v).all():
                    raise BadInput(f"node {node.name!r} parameter {k!r} contains NaN or Inf", source)
        self._infer_shapes()

    # -- structure -------------------------------------------------------------------------------------------
    def _infer_shapes(self) -> None:
        x = torch.zeros((1, *self.input_shape), dtype=torch.float64)
        shapes = {self.input_name: self.input_shape}
        vals = {self.input_name: x}
        for node in self.nodes:
            for i in node.inputs:
                if i not in vals:
                    raise BadInput(f"node {node.name!r} reads {i!r}, which no earlier node produces", self.source)
            try:
                y = apply_op(node, [vals[i] for i in node.inputs])
            except BadInput:
                raise
            except Exception as e:  # shape mismatch and the like
                raise BadInput(f"node {node.name!r} ({node.op}) cannot run on input shapes "
                               f"{[shapes[i] for i in node.inputs]}: {e}", self.source) from None
            node.shape = tuple(y.shape[1:])
            shapes[node.name] = node.shape
            vals[node.name] = y
        if self.output not in shapes:
            raise BadInput(f"network output {self.output!r} is not produced by any node", self.source)
        self.output_shape = shapes[self.output]

    @property
    def n_inputs(self) -> int:
        return int(torch.Size(self.input_shape).numel())

    @property
    def n_outputs(self) -> int:
        return int(torch.Size(self.output_shape).numel())

    def ops(self) -> set[str]:
        return {n.op for n in self.nodes}

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                out.setdefault(i, []).append(n)
        return out

    # -- semantics -------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluate on a batch x of shape [B, *input_shape]; returns [B, *output_shape] in x's dtype."""
        vals = {self.input_name: x}
        for node in self.nodes:
            vals[node.name] = apply_op(node, [vals[i] for i in node.inputs])
        return vals[self.output]

    __call__ = forward

    def forward_flat(self, x: torch.Tensor) -> torch.Tensor:
        """Flat inputs [B, n_inputs] to flat outputs [B, n_outputs]."""
        return self.forward(x.reshape(x.shape[0], *self.input_shape)).reshape(x.shape[0], -1)

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> "Network":
        """A copy whose parameters have the given dtype/device, memoised: weights are treated as immutable once a
        network is in use (mutate a fresh copy instead)."""
        key = (dtype, str(device) if device is not None else None)
        cache = self.__dict__.setdefault("_to_cache", {})
        if key in cache:
            return cache[key]
        nodes = [Node(n.name, n.op, list(n.inputs), {k: v.to(dtype=dtype, device=device) for k, v in n.params.items()},
                      dict(n.attrs), n.shape) for n in self.nodes]
        net = Network.__new__(Network)
        net.__dict__.update(self.__dict__)
        net.nodes = nodes
        net._to_cache = {}
        cache[key] = net
        return net

    def __repr__(self) -> str:
        body = "\n  ".join(repr(n) for n in self.nodes)
        return f"Network(input {self.input_name!r} {list(self.input_shape)} -> {list(self.output_shape)}\n  {body})"
