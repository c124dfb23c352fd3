"""Model IR: an ordered DAG of ops with torch weights.

Every tensor flowing through the IR has a leading batch axis; shapes stored in the IR exclude it. A node names an
op of the op registry (engine/ops: the core ops are documented in engine/ops/core.py, the others beside them);
the registry holds each op's exact semantics, which `Network.forward` evaluates. Domains look up a rule per op;
a node whose op a domain has no rule for raises UnsupportedOp.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import BadInput
from .ops import apply_op, op_table

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


class Network:
    """A feed-forward DAG. `nodes` are in topological order; the last node's output is the network output.

    Weights are torch tensors (float32 as imported, converted on use). `source` names the file it came from.
    """

    def __init__(self, input_name: str, input_shape: tuple[int, ...], nodes: list[Node], output: str | None = None,
                 source: str | None = None, onnx_bytes: bytes | None = None, input_dtype: torch.dtype = torch.float32):
        self.input_name = input_name
        self.input_shape = tuple(int(s) for s in input_shape)
        self.nodes = list(nodes)
        self.output = output if output is not None else (self.nodes[-1].name if self.nodes else input_name)
        self.source = source
        self.onnx_bytes = onnx_bytes  # the original model, for re-checking counterexamples with onnxruntime
        self.input_dtype = input_dtype  # the precision the model consumes its input in
        ops = op_table()
        for node in self.nodes:
            if node.op not in ops:
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
        from .propagate import forward
        ops = op_table()
        return forward(self, x, lambda node: ops[node.op].forward, keep_all=False)[self.output]

    __call__ = forward

    def points_per_batch(self, itemsize: int = 8) -> int:
        """How many inputs one evaluation may take at once so that its values (every node's output, kept for
        autograd, twice for the ops' temporaries) fit engine.memory.budget()."""
        from .memory import budget
        values = self.n_inputs + sum(int(torch.Size(n.shape).numel()) for n in self.nodes)
        return max(1, budget() // (2 * itemsize * values))

    def forward_flat(self, x: torch.Tensor) -> torch.Tensor:
        """Flat inputs [B, n_inputs] to flat outputs [B, n_outputs], in batches of points_per_batch()."""
        step = self.points_per_batch(x.element_size())
        return torch.cat([self.forward(x[i:i + step].reshape(-1, *self.input_shape)).reshape(-1, self.n_outputs)
                          for i in range(0, max(1, x.shape[0]), step)])

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
