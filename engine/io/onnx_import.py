"""Import an ONNX model into the IR (`engine/ir.py`).

`load_onnx(path)` maps ONNX nodes onto the canonical IR ops; every op or op variant it cannot map exactly raises
`UnsupportedOp` naming the op, the node and the file, and every malformed model raises `BadInput` (one line,
naming the file). Nothing is approximated: the IR computes the same function as the ONNX graph in exact
arithmetic (weights are kept as stored; derived constants such as 1/c, BatchNorm's scale/sqrt(var+eps) or
merged biases are computed in float64 and kept in float64 unless float32 holds them exactly, so that float64
bounds are bounds of the stored model).

Conventions
- Batch axis: when the (single) graph input has rank >= 2 and a first dimension that is symbolic or 1, that
  dimension is taken as the batch axis and ops may not mix it with others. Otherwise (rank-1 inputs, a fixed first
  dimension > 1, or a graph that reshapes or slices across its first axis) the graph is read as one sample: the IR
  shapes are the full ONNX shapes and the IR's batch axis is an extra one in front (`OnnxContext.boff` = 1).
  Every dimension but the batch axis must be a fixed size. Graph inputs that also have an initializer are constants.
- Which ONNX op types import, and to which IR ops, is the op registry's business (`engine/ops`): each op declares
  its importers `fn(ctx, onnx_node)`, where ctx is the `OnnxContext` below. Any node whose inputs are all constant
  is folded with `onnx.reference` (Shape of a variable folds to its full shape). Nodes the output does not depend
  on are dropped before import.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from ..errors import BadInput, UnsupportedOp
from ..ir import Network, Node
from ..ops import apply_op

_FLOAT_TYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.DOUBLE: "float64",
                onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.BFLOAT16: "bfloat16"}
_INPUT_DTYPES = {onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.DOUBLE: torch.float64,
                 onnx.TensorProto.FLOAT16: torch.float16, onnx.TensorProto.BFLOAT16: torch.bfloat16}


def exact_param(v) -> torch.Tensor:
    """A parameter tensor: float32 when float32 holds the value exactly, else float64 (never rounded)."""
    a = np.asarray(v, dtype=np.float64)
    f = a.astype(np.float32)
    return torch.from_numpy(f.copy()) if np.array_equal(f.astype(np.float64), a) else torch.from_numpy(a.copy())


def _one_line(e: BaseException | str) -> str:
    """An exception's message on one line (whitespace collapsed), at most 300 characters."""
    s = " ".join(str(e).split()) or type(e).__name__
    return s if len(s) <= 300 else s[:297] + "..."


def _type_name(elem_type: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return str(elem_type)


class _BatchAxis(UnsupportedOp):
    """An op would mix the batch axis with others: the graph is then read as one unbatched sample."""


class OnnxContext:
    """Import state and the helpers op importers use: values (`var`, `const`, `set`), shapes (`shape`: IR
    per-sample shape; `full`: the ONNX shape; `axis`: ONNX axis -> IR per-sample axis), `emit` (append an IR node)
    and errors (`bad`, `unsupported`), all naming the file and the node."""

    def __init__(self, model: onnx.ModelProto, path: str, data: bytes, unbatched: bool = False):
        self.model, self.path, self.data = model, path, data
        self.boff = 1 if unbatched else 0  # 1: the ONNX graph has no batch axis (the IR adds one in front)
        self.graph = model.graph
        self.consts: dict[str, np.ndarray] = {}
        self.vals: dict[str, str] = {}  # ONNX value name -> IR value name (variables only)
        self.shapes: dict[str, tuple[int, ...]] = {}  # IR value -> shape without batch
        self.nodes: list[Node] = []
        self.producer: dict[str, Node] = {}
        self.origin: dict[str, str] = {}  # IR node -> the ONNX value it was emitted for
        self.names: set[str] = set()
        self.uses: Counter = Counter()  # ONNX value -> number of live consumers (graph output counts)

    # -- errors ------------------------------------------------------------------------------------------------
    def bad(self, msg: str) -> BadInput:
        return BadInput(msg, self.path)

    @staticmethod
    def _where(n: onnx.NodeProto) -> str:
        return f"(node {n.name!r})" if n.name else f"(node producing {n.output[0]!r})" if n.output else "(unnamed node)"

    where = _where

    def unsupported(self, n: onnx.NodeProto, detail: str = "is not supported") -> UnsupportedOp:
        return UnsupportedOp(f"op {n.op_type!r} {self._where(n)} {detail}", self.path)

    def batch_axis(self, n: onnx.NodeProto, detail: str) -> UnsupportedOp:
        """An op that would touch the batch axis (the import then retries the graph as one unbatched sample)."""
        return _BatchAxis(f"op {n.op_type!r} {self._where(n)} {detail}", self.path)

    # -- shapes ------------------------------------------------------------------------------------------------
    def shape(self, x: str) -> tuple[int, ...]:
        """IR per-sample shape of value x."""
        return self.shapes[x]

    def full(self, x: str) -> list[int]:
        """ONNX shape of value x (batch axis as 1 when symbolic)."""
        return list(self.shapes[x]) if self.boff else [self.batch or 1, *self.shapes[x]]

    def describe(self, x: str) -> str:
        return str(list(self.shapes[x])) if self.boff else f"[batch, {', '.join(map(str, self.shapes[x]))}]"

    def axis(self, n: onnx.NodeProto, axis: int, rank: int) -> int:
        """The IR per-sample axis of ONNX axis `axis` of a rank-`rank` value (negative axes count from the end)."""
        a = axis + rank if axis < 0 else axis
        if not 0 <= a < rank:
            raise self.bad(f"{n.op_type} {self._where(n)}: axis {axis} is out of range for rank {rank}")
        if not self.boff and a == 0:
            raise self.batch_axis(n, "on the batch axis is not supported")
        return a - 1 + self.boff

    def reshape_full(self, n: onnx.NodeProto, x: str, target, base: str | None = None) -> str:
        """x reshaped to the ONNX shape `target` (its batch axis kept in place)."""
        target = [int(t) for t in target]
        if not self.boff:
            if not target or target[0] != self.full(x)[0]:
                raise self.batch_axis(n, f"to {target} does not keep the leading batch axis, which is not supported")
            target = target[1:]
        if tuple(target) == tuple(self.shapes[x]):
            return x
        return self.reshape(n, x, target, base=base)

    def per_sample(self, n, c: np.ndarray, x: str) -> np.ndarray:
        """A constant broadcast against value x, as an array broadcasting against one IR sample of x."""
        c = np.asarray(c, dtype=np.float64)
        s = tuple(self.shapes[x])
        if not self.boff:
            r = len(s) + 1
            while c.ndim > r and c.shape[0] == 1:
                c = c[0]
            if c.ndim == r:
                if c.shape[0] != 1:
                    raise self.batch_axis(n, f"with a constant of shape {list(c.shape)} that varies along the batch "
                                             "axis is not supported")
                c = c[0]
        while c.ndim > len(s) and c.shape[0] == 1:
            c = c[0]
        if c.ndim > len(s) or np.broadcast_shapes(c.shape, s) != s:
            raise self.unsupported(n, f"broadcasting a constant of shape {list(c.shape)} enlarges {self.describe(x)}, "
                                      "which is not supported")
        return c

    def opset(self, n: onnx.NodeProto) -> int:
        for o in self.model.opset_import:
            if o.domain in ("", "ai.onnx") and n.domain in ("", "ai.onnx"):
                return int(o.version)
        return 0

    def used(self, onnx_name: str) -> bool:
        return bool(self.uses[onnx_name])

    def set(self, n: onnx.NodeProto, value: str, k: int = 0) -> None:
        """Output k of ONNX node n is IR value `value`."""
        self.vals[n.output[k]] = value

    # -- values ------------------------------------------------------------------------------------------------
    def const(self, n: onnx.NodeProto, name: str) -> np.ndarray:
        if name not in self.consts:
            raise self.unsupported(n, f"needs input {name!r} to be a constant")
        return self.consts[name]

    def var(self, n: onnx.NodeProto, name: str) -> str:
        if name in self.vals:
            return self.vals[name]
        if name in self.consts:
            raise self.unsupported(n, f"on constant input {name!r} cannot be folded")
        raise self.bad(f"node {n.name or n.output[0]!r} reads {name!r}, which no earlier node or input produces")

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            name, k = f"{base}:{k}", k + 1
        self.names.add(name)
        return name

    def emit(self, n: onnx.NodeProto, op: str, inputs: list[str], params: dict | None = None,
             attrs: dict | None = None, base: str | None = None) -> str:
        params = {k: exact_param(v) for k, v in (params or {}).items()}
        node = Node(self.fresh(base or n.output[0]), op, list(inputs), params, dict(attrs or {}))
        for k, v in node.params.items():
            if not torch.isfinite(v).all():
                raise self.bad(f"{n.op_type} {self._where(n)}: derived parameter {k!r} is NaN or Inf "
                               "(overflow in float32)")
        probes = [torch.zeros((1, *self.shapes[i]), dtype=torch.float64) for i in inputs]
        try:
            y = apply_op(node, probes)
        except Exception as e:
            raise self.bad(f"{n.op_type} {self._where(n)} cannot run on input shapes "
                           f"{[list(self.shapes[i]) for i in inputs]}: {_one_line(e)}") from None
        node.shape = tuple(y.shape[1:])
        self.shapes[node.name] = node.shape
        self.nodes.append(node)
        self.producer[node.name] = node
        self.origin[node.name] = n.output[0]
        return node.name

    def reshape(self, n: onnx.NodeProto, x: str, shape, base: str | None = None) -> str:
        shape = tuple(int(s) for s in shape)
        if math.prod(shape) != math.prod(self.shapes[x]):
            raise self.bad(f"{n.op_type} {self._where(n)}: cannot reshape {list(self.shapes[x])} to {list(shape)}")
        return self.emit(n, "reshape", [x], attrs={"shape": shape}, base=base)

    # -- model level -------------------------------------------------------------------------------------------
    def run(self) -> Network:
        g = self.graph
        for t in g.initializer:
            self.consts[t.name] = self.tensor(t, f"initializer {t.name!r}")
        for t in getattr(g, "sparse_initializer", []):
            raise self.bad(f"sparse initializer {t.values.name!r} is not supported")
        real = [i for i in g.input if i.name not in self.consts]
        if len(real) != 1:
            raise self.bad(f"model has {len(real)} non-constant inputs {[i.name for i in real]}; exactly one is supported")
        if len(g.output) != 1:
            raise self.bad(f"model has {len(g.output)} outputs {[o.name for o in g.output]}; exactly one is supported")
        inp = real[0]
        shape, self.batch = self.input_shape(inp)
        self.names.add(inp.name)
        self.vals[inp.name] = inp.name
        self.shapes[inp.name] = shape
        out = g.output[0].name
        needed = {out}
        live = []
        for n in reversed(g.node):  # drop nodes the output does not depend on
            if any(o in needed for o in n.output if o):
                needed.update(i for i in n.input if i)
                live.append(n)
        live.reverse()
        self.uses = Counter(i for n in live for i in n.input if i)
        self.uses[out] += 1
        for n in live:
            self.node(n)
        if out in self.consts:
            raise self.bad(f"output {out!r} is a constant: it does not depend on the input")
        if out not in self.vals:
            raise self.bad(f"output {out!r} is not produced by any node")
        res = self.vals[out]
        if res == inp.name or self.producer.get(res) is None:  # identity network: keep one explicit node
            res = self.emit(g.node[-1] if len(g.node) else helper.make_node("Identity", [inp.name], [out]),
                            "reshape", [res], attrs={"shape": shape}, base=out)
        self.check_output_shape(g.output[0], self.shapes[res])
        return Network(inp.name, shape, self.nodes, res, source=self.path, onnx_bytes=self.data,
                       input_dtype=_INPUT_DTYPES[inp.type.tensor_type.elem_type])

    def tensor(self, t: onnx.TensorProto, what: str) -> np.ndarray:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise self.bad(f"{what} stores its data in an external file, which is not supported")
        try:
            a = numpy_helper.to_array(t)
        except Exception as e:
            raise self.bad(f"{what} cannot be read: {_one_line(e)}") from None
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise self.bad(f"{what} contains NaN or Inf")
        return a

    def input_shape(self, inp: onnx.ValueInfoProto) -> tuple[tuple[int, ...], int | None]:
        tt = inp.type.tensor_type if inp.type.HasField("tensor_type") else None
        if tt is None:
            raise self.bad(f"input {inp.name!r} is not a tensor")
        if tt.elem_type not in _FLOAT_TYPES:
            raise self.bad(f"input {inp.name!r} has type {_type_name(tt.elem_type)}; only float inputs are supported")
        if not tt.HasField("shape"):
            raise self.bad(f"input {inp.name!r} has no shape; fixed sizes after the batch axis are required")
        dims = list(tt.shape.dim)
        if not dims:
            raise self.bad(f"input {inp.name!r} is a scalar; a tensor input is required")
        first = dims[0].dim_value if dims[0].HasField("dim_value") else 0
        if len(dims) == 1 or first > 1:
            self.boff = 1
        shape = []
        for k, d in enumerate(dims[1 - self.boff:], start=1 - self.boff):
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(int(d.dim_value))
            else:
                what = repr(d.dim_param) if d.HasField("dim_param") else "unknown" if not d.HasField("dim_value") \
                    else str(d.dim_value)
                raise self.bad(f"input {inp.name!r} dimension {k} is dynamic ({what}); only the first (batch) "
                               "dimension may be")
        return tuple(shape), (first or None) if not self.boff else 1

    def check_output_shape(self, out: onnx.ValueInfoProto, shape: tuple[int, ...]) -> None:
        tt = out.type.tensor_type
        if not out.type.HasField("tensor_type") or not tt.HasField("shape"):
            return
        dims = list(tt.shape.dim)[1 - self.boff:]
        declared = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if len(declared) != len(shape) or any(d not in (None, 0, s) for d, s in zip(declared, shape)):
            lead = "" if self.boff else "batch, "
            raise self.bad(f"output {out.name!r} is declared as [{lead}{', '.join(map(str, declared))}] but the "
                           f"graph computes [{lead}{', '.join(map(str, shape))}]")

    # -- nodes -------------------------------------------------------------------------------------------------
    def attrs(self, n: onnx.NodeProto, allowed: tuple[str, ...]) -> dict[str, Any]:
        out = {}
        for a in n.attribute:
            if a.name not in allowed:
                raise self.unsupported(n, f"has attribute {a.name!r}, which is not supported")
            v = helper.get_attribute_value(a)
            out[a.name] = v.decode() if isinstance(v, bytes) else v
        return out

    def node(self, n: onnx.NodeProto) -> None:
        if n.domain not in ("", "ai.onnx"):
            raise self.unsupported(n, f"from domain {n.domain!r} is not supported")
        ins = [i for i in n.input if i]
        if n.op_type == "Shape" and ins and ins[0] in self.vals:
            return self.shape_of(n)
        if n.op_type == "Size" and ins and ins[0] in self.vals:
            self.consts[n.output[0]] = np.array(math.prod(self.full(self.vals[ins[0]])), dtype=np.int64)
            return
        if all(i in self.consts for i in ins) and n.op_type not in ("RandomNormal", "RandomUniform", "Multinomial"):
            return self.fold(n)
        from ..registry import get_registry
        importer = get_registry().onnx_importers.get(n.op_type)
        if importer is None:
            raise self.unsupported(n)
        importer(self, n)

    def fold(self, n: onnx.NodeProto) -> None:
        """Evaluate a node whose inputs are all constant with onnx's reference implementation."""
        from onnx.reference import ReferenceEvaluator

        ins = [i for i in n.input if i]
        vi = [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(self.consts[i].dtype), None)
              for i in ins]
        outs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in n.output if o]
        g = helper.make_graph([n], "fold", vi, outs)
        m = helper.make_model(g, opset_imports=list(self.model.opset_import), ir_version=self.model.ir_version or 8)
        try:
            res = ReferenceEvaluator(m).run(None, {i: self.consts[i] for i in ins})
        except Exception as e:
            raise self.unsupported(n, f"on constant inputs cannot be evaluated: {_one_line(e)}") from None
        for o, v in zip([o for o in n.output if o], res):
            v = np.asarray(v)
            if v.dtype.kind == "f" and not np.isfinite(v).all():
                what = f"constant {o!r}" if n.op_type == "Constant" else f"constant {o!r} computed by {n.op_type}"
                raise self.bad(f"{what} {self._where(n)} contains NaN or Inf")
            self.consts[o] = v

    def alias(self, n: onnx.NodeProto, src: str) -> None:
        if src in self.consts:
            self.consts[n.output[0]] = self.consts[src]
        else:
            self.vals[n.output[0]] = self.var(n, src)

    def only_first_output(self, n: onnx.NodeProto) -> None:
        for o in n.output[1:]:
            if o and self.uses[o]:
                raise self.unsupported(n, f"output {o!r} is used; only the first output is supported")

    def shape_of(self, n: onnx.NodeProto) -> None:
        a = self.attrs(n, ("start", "end"))
        full = self.full(self.vals[n.input[0]])
        r = len(full)
        s, e = a.get("start", 0), a.get("end", r)
        s, e = (s + r if s < 0 else s), (e + r if e < 0 else e)
        self.consts[n.output[0]] = np.array(full[max(0, min(s, r)):max(0, min(e, r))], dtype=np.int64)

    # elementwise ---------------------------------------------------------------------------------------------
    def _unary(self, n, op, attrs=None):
        self.vals[n.output[0]] = self.emit(n, op, [self.var(n, n.input[0])], attrs=attrs)

    def op_Relu(self, n):
        self.attrs(n, ())
        self._unary(n, "relu")

    def op_Sigmoid(self, n):
        self.attrs(n, ())
        self._unary(n, "sigmoid")

    def op_Tanh(self, n):
        self.attrs(n, ())
        self._unary(n, "tanh")

    def op_LeakyRelu(self, n):
        alpha = float(self.attrs(n, ("alpha",)).get("alpha", 0.01))
        if not 0.0 <= alpha <= 1.0:
            raise self.unsupported(n, f"with alpha={alpha} is not supported (alpha must be in [0, 1])")
        self._unary(n, "leaky_relu", {"alpha": alpha})

    def op_Identity(self, n):
        self.attrs(n, ())
        self.alias(n, n.input[0])

    def op_Dropout(self, n):
        a = self.attrs(n, ("ratio", "seed", "is_test", "consumed_inputs"))
        if "is_test" in a and not a["is_test"]:
            raise self.unsupported(n, "in training mode (is_test=0) is not supported")
        if len(n.input) > 2 and n.input[2]:
            if n.input[2] not in self.consts:
                raise self.unsupported(n, "with a non-constant training_mode is not supported")
            if bool(np.asarray(self.consts[n.input[2]]).reshape(-1)[0]):
                raise self.unsupported(n, "in training mode is not supported")
        self.only_first_output(n)
        self.alias(n, n.input[0])

    def op_Cast(self, n):
        to = self.attrs(n, ("to", "saturate", "round_mode")).get("to")
        if to not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
            raise self.unsupported(n, f"to {_type_name(to)} on a non-constant value is not supported")
        self.alias(n, n.input[0])

    # shapes --------------------------------------------------------------------------------------------------
    def op_Flatten(self, n):
        axis = int(self.attrs(n, ("axis",)).get("axis", 1))
        x = self.var(n, n.input[0])
        full = self.full(x)
        axis = axis + len(full) if axis < 0 else axis
        if axis == 0 and not self.boff:
            raise self.batch_axis(n, "with axis=0 merges the batch axis with others, which is not supported")
        self.set(n, self.reshape_full(n, x, (math.prod(full[:axis]), math.prod(full[axis:]))))

    def op_Reshape(self, n):
        a = self.attrs(n, ("shape", "allowzero", "consumed_inputs"))
        x = self.var(n, n.input[0])
        if len(n.input) > 1 and n.input[1]:
            if n.input[1] not in self.consts:
                raise self.bad(f"Reshape {self._where(n)}: target shape {n.input[1]!r} is not constant "
                               "and cannot be resolved")
            target = [int(v) for v in np.asarray(self.consts[n.input[1]]).reshape(-1)]
        elif "shape" in a:
            target = [int(v) for v in a["shape"]]
        else:
            raise self.bad(f"Reshape {self._where(n)} has no target shape")
        full = self.full(x)
        if a.get("allowzero", 0) and 0 in target:
            raise self.unsupported(n, "with allowzero=1 and a zero in the target shape is not supported")
        out = []
        for k, t in enumerate(target):
            if t == 0:
                if k >= len(full):
                    raise self.bad(f"Reshape {self._where(n)}: 0 at position {k} has no input dimension to copy")
                out.append(full[k])
            else:
                out.append(t)
        numel = math.prod(full)
        if sum(v == -1 for v in out) > 1 or any(v < -1 for v in out):
            raise self.bad(f"Reshape {self._where(n)}: invalid target shape {target}")
        if -1 in out:
            known = math.prod(v for v in out if v != -1)
            if known == 0 or numel % known:
                raise self.bad(f"Reshape {self._where(n)}: cannot reshape {self.describe(x)} to {target}")
            out[out.index(-1)] = numel // known
        if math.prod(out) != numel:
            raise self.bad(f"Reshape {self._where(n)}: cannot reshape {self.describe(x)} to {target}")
        self.set(n, self.reshape_full(n, x, out))

    def _axes(self, n, a) -> list[int] | None:
        if len(n.input) > 1 and n.input[1]:
            return [int(v) for v in np.asarray(self.const(n, n.input[1])).reshape(-1)]
        return [int(v) for v in a["axes"]] if "axes" in a else None

    def op_Squeeze(self, n):
        a = self.attrs(n, ("axes",))
        x = self.var(n, n.input[0])
        full = self.full(x)
        r = len(full)
        axes = self._axes(n, a)
        axes = [k for k in range(r) if full[k] == 1 and (k or self.boff)] if axes is None else \
            [k + r if k < 0 else k for k in axes]
        if any(not 0 <= k < r or full[k] != 1 for k in axes):
            raise self.bad(f"Squeeze {self._where(n)}: axes {axes} are not size-1 axes of {self.describe(x)}")
        self.set(n, self.reshape_full(n, x, [d for k, d in enumerate(full) if k not in axes]))

    def op_Unsqueeze(self, n):
        a = self.attrs(n, ("axes",))
        x = self.var(n, n.input[0])
        full = self.full(x)
        axes = self._axes(n, a)
        if axes is None:
            raise self.bad(f"Unsqueeze {self._where(n)} has no axes")
        r = len(full) + len(axes)
        axes = sorted(k + r if k < 0 else k for k in axes)
        out, it = [], iter(full)
        for k in range(r):
            out.append(1 if k in axes else next(it))
        self.set(n, self.reshape_full(n, x, out))

    # linear maps ---------------------------------------------------------------------------------------------
    def op_Gemm(self, n):
        a = self.attrs(n, ("alpha", "beta", "transA", "transB", "broadcast"))
        if a.get("transA", 0):
            raise self.unsupported(n, "with transA=1 (transposing the batch axis) is not supported")
        x = self.var(n, n.input[0])
        if len(self.full(x)) != 2:
            raise self.bad(f"Gemm {self._where(n)}: input A must be 2-D, got {self.describe(x)}")
        if n.input[1] not in self.consts:
            raise self.unsupported(n, "with a non-constant B is not supported")
        B = np.asarray(self.consts[n.input[1]], dtype=np.float64)
        if B.ndim != 2:
            raise self.bad(f"Gemm {self._where(n)}: B must be 2-D, got shape {list(B.shape)}")
        W = float(a.get("alpha", 1.0)) * (B if a.get("transB", 0) else B.T)
        params = {"W": W}
        if len(n.input) > 2 and n.input[2]:
            C = np.asarray(self.const(n, n.input[2]), dtype=np.float64) * float(a.get("beta", 1.0))
            params["b"] = self.bias_vector(n, C, W.shape[0])
        self.vals[n.output[0]] = self.emit(n, "linear", [x], params)

    def bias_vector(self, n, c: np.ndarray, out: int) -> np.ndarray:
        """c broadcast over [batch, out] as a vector [out] (leading size-1 axes allowed)."""
        while c.ndim > 1 and c.shape[0] == 1:
            c = c[0]
        if c.ndim == 0 or c.shape == (1,):
            return np.full(out, float(c.reshape(-1)[0]))
        if c.shape != (out,):
            raise self.unsupported(n, f"with a bias of shape {list(c.shape)} that is not one value per output "
                                      f"({out}) is not supported")
        return c

    def op_MatMul(self, n):
        self.attrs(n, ())
        A, B = n.input[0], n.input[1]
        if A in self.vals and B in self.consts:
            x, W = self.vals[A], np.asarray(self.consts[B], dtype=np.float64)
            s = self.shapes[x]
            while W.ndim > 2 and W.shape[0] == 1:
                W = W[0]
            if W.ndim > 2:
                raise self.unsupported(n, f"with a batched constant of shape {list(W.shape)} is not supported")
            if W.ndim == 1:
                if len(s) < 2 - self.boff:
                    raise self.batch_axis(n, "reducing the input to the batch axis alone is not supported")
                y = self.emit(n, "linear", [x], {"W": W[None, :]}, base=n.output[0] + "/linear")
                self.vals[n.output[0]] = self.reshape(n, y, s[:-1])
                return
            if W.shape[0] != s[-1]:
                raise self.bad(f"MatMul {self._where(n)}: {self.describe(x)} @ {list(W.shape)} has mismatched sizes")
            self.vals[n.output[0]] = self.emit(n, "linear", [x], {"W": W.T})
        elif A in self.consts and B in self.vals:
            W, x = np.asarray(self.consts[A], dtype=np.float64), self.vals[B]
            s = self.shapes[x]
            while W.ndim > 2 and W.shape[0] == 1:
                W = W[0]
            if W.ndim > 2:
                raise self.unsupported(n, f"with a batched constant of shape {list(W.shape)} is not supported")
            if len(s) < 2 or s[-1] != 1:
                raise self.unsupported(n, f"with a constant on the left of {self.describe(x)} (not a column "
                                          "vector) is not supported")
            W2 = W[None, :] if W.ndim == 1 else W
            if W2.shape[1] != s[-2]:
                raise self.bad(f"MatMul {self._where(n)}: {list(W.shape)} @ {self.describe(x)} has mismatched sizes")
            flat = self.reshape(n, x, s[:-1], base=n.output[0] + "/col")
            y = self.emit(n, "linear", [flat], {"W": W2}, base=n.output[0] + "/linear")
            out_shape = (*s[:-2], 1) if W.ndim == 1 else (*s[:-2], W.shape[0], 1)
            self.vals[n.output[0]] = self.reshape(n, y, out_shape)
        elif A in self.vals and B in self.vals:
            xa, xb = self.vals[A], self.vals[B]
            if min(len(self.full(xa)), len(self.full(xb))) < 3 - self.boff or \
                    len(self.full(xa)) != len(self.full(xb)):
                raise self.unsupported(n, f"of {self.describe(xa)} and {self.describe(xb)} is not supported (two "
                                          "variables need matrices of equal rank with the batch axis in front)")
            self.set(n, self.emit(n, "matmul", [xa, xb]))
        else:
            self.var(n, A if A not in self.vals else B)

    def to_chw(self, n, x: str) -> tuple[str, callable]:
        """x as an IR value of per-sample shape [C, H, W] for 2-D kernels, and the map back to x's layout: a 1-D
        signal [C, L] becomes [C, 1, L]; an unbatched graph's leading ONNX batch of 1 is dropped."""
        full = self.full(x)
        if len(full) not in (3, 4) or full[0] != 1 and self.boff:
            raise self.unsupported(n, f"on {self.describe(x)} is not supported (only 1-D and 2-D, batch 1 when the "
                                      "graph has no batch axis)")
        chw = (*full[1:-1], 1, full[-1]) if len(full) == 3 else tuple(full[1:])
        y = self.reshape(n, x, chw, base=n.output[0] + "/chw") if chw != tuple(self.shapes[x]) else x

        def back(v: str) -> str:
            c, h, w = self.shapes[v]
            out = (c, w) if len(full) == 3 else (c, h, w)
            out = (1, *out) if self.boff else out
            return self.reshape(n, v, out) if out != (c, h, w) else v
        return y, back

    def op_Conv(self, n):
        a = self.attrs(n, ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"))
        x, back = self.to_chw(n, self.var(n, n.input[0]))
        s = self.shapes[x]
        W = np.asarray(self.const(n, n.input[1]), dtype=np.float64)
        one_d = W.ndim == 3
        if one_d:
            W = W[:, :, None, :]
            a = {k: ([1, *v] if k in ("dilations", "kernel_shape", "strides") else
                     [0, v[0], 0, v[1]] if k == "pads" else v) for k, v in a.items()}
        if W.ndim != 4:
            raise self.unsupported(n, f"with weight shape {list(W.shape)} is not supported (only 1-D and 2-D)")
        k = tuple(W.shape[2:])
        if "kernel_shape" in a and tuple(a["kernel_shape"]) != k:
            raise self.bad(f"Conv {self._where(n)}: kernel_shape {a['kernel_shape']} disagrees with weights {list(W.shape)}")
        stride = tuple(a.get("strides", (1, 1)))
        dil = tuple(a.get("dilations", (1, 1)))
        pads = self.pads(n, a, s[1:], k, stride, dil)
        params = {"W": W}
        if len(n.input) > 2 and n.input[2]:
            params["b"] = np.asarray(self.const(n, n.input[2]), dtype=np.float64).reshape(-1)
        y = self.emit(n, "conv2d", [x], params, {"stride": stride, "pads": pads, "dilation": dil,
                                                 "groups": int(a.get("group", 1))})
        self.set(n, back(y))

    def pads(self, n, a, hw, k, stride, dil) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) from ONNX pads [h_begin, w_begin, h_end, w_end] or auto_pad."""
        if len(stride) != 2 or len(dil) != 2:
            raise self.unsupported(n, "with non 2-D strides/dilations is not supported")
        mode = a.get("auto_pad", "NOTSET") or "NOTSET"
        if mode == "NOTSET":
            p = tuple(int(v) for v in a.get("pads", (0, 0, 0, 0)))
            if len(p) != 4 or min(p) < 0:
                raise self.bad(f"{n.op_type} {self._where(n)}: pads {list(p)} are not 4 non-negative values")
            return p
        if mode == "VALID":
            return (0, 0, 0, 0)
        if mode not in ("SAME_UPPER", "SAME_LOWER"):
            raise self.unsupported(n, f"with auto_pad={mode!r} is not supported")
        begin, end = [], []
        for size, kk, st, d in zip(hw, k, stride, dil):
            out = -(-size // st)
            total = max((out - 1) * st + (kk - 1) * d + 1 - size, 0)
            lo = total // 2 if mode == "SAME_UPPER" else total - total // 2
            begin.append(lo)
            end.append(total - lo)
        return (begin[0], begin[1], end[0], end[1])

    def op_Pad(self, n):
        """Zero padding of the two spatial axes of a batched image imports as a 1x1 identity depthwise conv2d with
        pads (the form the Lipschitz and MILP engines read); any other constant padding as the pad op."""
        from ..ops.tensor import import_pad
        import_pad(self, n)
        node = self.nodes[-1] if self.nodes else None
        if node is None or node.op != "pad" or self.vals[n.output[0]] != node.name or self.boff:
            return
        pairs, x = node.attrs["pads"], node.inputs[0]
        if len(pairs) != 3 or node.attrs["value"] != 0.0 or any(pairs[0]):
            return
        self.nodes.pop()
        C = self.shapes[x][0]
        (t, b), (l, r) = pairs[1], pairs[2]
        self.set(n, self.emit(n, "conv2d", [x], {"W": np.ones((C, 1, 1, 1))},
                              {"stride": (1, 1), "pads": (t, l, b, r), "dilation": (1, 1), "groups": C},
                              base=n.output[0] + "/conv"))

    def op_Neg(self, n):
        self.attrs(n, ())
        self.vals[n.output[0]] = self.emit(n, "affine", [self.var(n, n.input[0])], {"scale": -np.ones(())})

    # pools ---------------------------------------------------------------------------------------------------
    def _pool(self, n, op):
        a = self.attrs(n, ("auto_pad", "ceil_mode", "count_include_pad", "kernel_shape", "pads", "strides",
                           "dilations", "storage_order"))
        self.only_first_output(n)
        x0 = self.var(n, n.input[0])
        k = tuple(a.get("kernel_shape", ()))
        if len(self.full(x0)) != 4 or len(k) != 2:
            raise self.unsupported(n, f"with kernel {list(k)} on {self.describe(x0)} is not supported (only 2-D pooling)")
        x, back = self.to_chw(n, x0)
        s = self.shapes[x]
        if tuple(a.get("dilations", (1, 1))) != (1, 1):
            raise self.unsupported(n, f"with dilations {list(a['dilations'])} is not supported")
        stride = tuple(a.get("strides", (1, 1)))
        pads = self.pads(n, a, s[1:], k, stride, (1, 1))
        if op == "avgpool2d" and not a.get("count_include_pad", 0) and any(pads):
            raise self.unsupported(n, "with padding and count_include_pad=0 is not supported")
        if a.get("ceil_mode", 0):
            for size, kk, st, lo, hi in zip(s[1:], k, stride, pads[:2], pads[2:]):
                span = size + lo + hi - kk
                if span % st:  # ceil and floor output sizes differ
                    raise self.unsupported(n, "with ceil_mode=1 changing the output size is not supported")
        self.set(n, back(self.emit(n, op, [x], attrs={"kernel": k, "stride": stride, "pads": pads})))

    def op_AveragePool(self, n):
        self._pool(n, "avgpool2d")

    def op_MaxPool(self, n):
        self._pool(n, "maxpool2d")

    def _global_pool(self, n, op):
        self.attrs(n, ())
        x0 = self.var(n, n.input[0])
        if len(self.full(x0)) != 4:
            raise self.unsupported(n, f"on {self.describe(x0)} is not supported (only 2-D pooling)")
        x, back = self.to_chw(n, x0)
        k = tuple(self.shapes[x][1:])
        self.set(n, back(self.emit(n, op, [x], attrs={"kernel": k, "stride": k, "pads": (0, 0, 0, 0)})))

    def op_GlobalAveragePool(self, n):
        self._global_pool(n, "avgpool2d")

    def op_GlobalMaxPool(self, n):
        self._global_pool(n, "maxpool2d")

    # normalisation -------------------------------------------------------------------------------------------
    def op_BatchNormalization(self, n):
        a = self.attrs(n, ("epsilon", "momentum", "spatial", "training_mode", "is_test", "consumed_inputs"))
        if a.get("training_mode", 0) or ("is_test" in a and not a["is_test"]):
            raise self.unsupported(n, "in training mode is not supported")
        if not a.get("spatial", 1):
            raise self.unsupported(n, "with spatial=0 is not supported")
        self.only_first_output(n)
        x = self.var(n, n.input[0])
        full = self.full(x)
        if len(full) < 2:
            raise self.bad(f"BatchNormalization {self._where(n)}: input {self.describe(x)} has no channel axis")
        g, b, mean, var = (np.asarray(self.const(n, i), dtype=np.float64).reshape(-1) for i in n.input[1:5])
        eps = float(a.get("epsilon", 1e-5))
        if not len(g) == len(b) == len(mean) == len(var) == full[1]:
            raise self.bad(f"BatchNormalization {self._where(n)}: parameters do not have {full[1]} channels")
        if (var + eps <= 0).any():
            raise self.bad(f"BatchNormalization {self._where(n)}: var + epsilon is not positive")
        scale = g / np.sqrt(var + eps)
        shift = b - mean * scale
        view = (1,) * self.boff + (-1,) + (1,) * (len(full) - 2)
        self.set(n, self.emit(n, "affine", [x], {"scale": scale.reshape(view), "shift": shift.reshape(view)}))

    # arithmetic ----------------------------------------------------------------------------------------------
    def fold_bias(self, x: str, onnx_name: str, c: np.ndarray) -> bool:
        """Add constant c (per sample) into the node producing x when that is exact: the bias of a linear or
        conv2d node, or the missing shift of a scale-only affine node. Only when x has no other consumer."""
        node = self.producer.get(x)
        if node is None or node.op not in ("linear", "conv2d", "affine") or self.origin.get(x) != onnx_name \
                or self.uses[onnx_name] != 1 or node is not self.nodes[-1]:
            return False
        if node.op == "affine":  # x * scale followed by + c: the same computation as one affine node
            if "shift" in node.params or np.broadcast_shapes(c.shape, node.shape) != node.shape:
                return False
            node.params["shift"] = exact_param(c)
            return True
        if node.op == "linear":
            out = node.shape[-1]
            cc = c.reshape(c.shape[-1:]) if c.ndim and math.prod(c.shape[:-1]) == 1 else c if c.ndim == 0 else None
        else:
            out = node.shape[0]
            cc = c.reshape(-1) if (c.ndim == 3 and c.shape[1:] == (1, 1)) else \
                c.reshape(()) if c.size == 1 and c.ndim < 3 else None
        if cc is None:
            return False
        cc = np.broadcast_to(cc, (out,)) if cc.ndim == 0 or cc.shape == (1,) else cc
        if cc.shape != (out,):
            return False
        b = node.params.get("b")
        new = (b.double().numpy() if b is not None else 0.0) + cc
        node.params["b"] = exact_param(new)
        return True

    def _arith(self, n, kind: str):
        a = self.attrs(n, ("broadcast", "axis", "consumed_inputs"))
        if len(n.input) != 2:
            raise self.bad(f"{n.op_type} {self._where(n)} needs 2 inputs")
        A, B = n.input
        if A in self.vals and B in self.vals:
            return self._arith_vars(n, kind, self.vals[A], self.vals[B])
        var_left = A in self.vals
        x = self.var(n, A if var_left else B)
        c = np.asarray(self.const(n, B if var_left else A))
        if a.get("broadcast") and "axis" in a:  # opset < 7: B is aligned with A starting at `axis`
            if not var_left:
                raise self.unsupported(n, "with legacy broadcasting of a non-constant second input is not supported")
            r = len(self.full(x))
            axis = a["axis"] + r if a["axis"] < 0 else a["axis"]
            if axis + c.ndim > r:
                raise self.bad(f"{n.op_type} {self._where(n)}: legacy broadcast axis {a['axis']} does not fit")
            c = c.reshape(c.shape + (1,) * (r - axis - c.ndim))
        c = self.per_sample(n, c, x)
        onnx_in = A if var_left else B
        if kind == "add" or (kind == "sub" and var_left):
            shift = c if kind == "add" else -c
            if self.fold_bias(x, onnx_in, shift):
                self.vals[n.output[0]] = x
                return
            params = {"shift": shift}
        elif kind == "sub":  # c - x
            params = {"scale": -np.ones(()), "shift": c}
        elif kind == "mul":
            params = {"scale": c}
        elif var_left:  # x / c
            if (c == 0).any():
                raise self.bad(f"Div {self._where(n)}: division by a constant containing zero")
            params = {"scale": 1.0 / c}
        else:
            raise self.unsupported(n, "dividing a constant by a non-constant input is not supported")
        self.set(n, self.emit(n, "affine", [x], params))

    def _arith_vars(self, n, kind: str, xa: str, xb: str):
        """Two variables: add / sub / mul with numpy broadcasting of the ONNX shapes (never across the batch
        axis); a / b as a * b**-1."""
        fa, fb = self.full(xa), self.full(xb)
        r = max(len(fa), len(fb))
        if not self.boff and len(fa) != len(fb):
            raise self.batch_axis(n, f"broadcasting {self.describe(xa)} with {self.describe(xb)} aligns the batch "
                                     "axis with another axis")
        try:
            np.broadcast_shapes(tuple(fa), tuple(fb))
        except ValueError:
            raise self.bad(f"{n.op_type} {self._where(n)}: {self.describe(xa)} and {self.describe(xb)} do not "
                           "broadcast") from None
        xa, xb = (self.reshape_full(n, v, [1] * (r - len(f)) + f, base=n.output[0] + "/rank")
                  for v, f in ((xa, fa), (xb, fb)))
        if kind == "div":
            xb = self.emit(n, "pow", [xb], attrs={"exponent": -1.0}, base=n.output[0] + "/reciprocal")
            kind = "mul"
        self.set(n, self.emit(n, kind, [xa, xb]))

    def op_Add(self, n):
        self._arith(n, "add")

    def op_Sub(self, n):
        self._arith(n, "sub")

    def op_Mul(self, n):
        self._arith(n, "mul")

    def op_Div(self, n):
        self._arith(n, "div")


def load_onnx(path: str | Path) -> Network:
    """Read an ONNX model file into an IR Network with `source=str(path)` and `onnx_bytes` the file's bytes.

    Raises BadInput (UnsupportedOp for ops or op variants without an exact IR mapping) with a one-line message
    that names the file and the problem.
    """
    p = Path(path)
    src = str(path)
    if not p.exists():
        raise BadInput("file not found", src)
    if p.is_dir():
        raise BadInput("is a directory, not an ONNX model file", src)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise BadInput(f"cannot read file: {_one_line(e)}", src) from None
    return load_onnx_bytes(data, src)


def load_onnx_bytes(data: bytes, source: str = "<bytes>") -> Network:
    """Like `load_onnx` for a model already in memory; `source` names it in messages."""
    if not data:
        raise BadInput("empty file, not an ONNX model", source)
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:
        raise BadInput(f"not an ONNX model or truncated (protobuf decoding failed: {_one_line(e)})", source) from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output) or model.ir_version <= 0:
        raise BadInput("not an ONNX model (no graph or IR version found)", source)
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise BadInput(f"invalid ONNX model: {_one_line(e)}", source) from None
    ctx = OnnxContext(model, source, data)
    try:
        return ctx.run()
    except _BatchAxis:
        if ctx.batch != 1:  # a symbolic batch axis really is one
            raise
        # an op mixes the fixed first axis of size 1 with others: read the graph as one unbatched sample
        return OnnxContext(model, source, data, unbatched=True).run()
