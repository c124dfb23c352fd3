"""Import an ONNX model into the IR (`engine/ir.py`).

`load_onnx(path)` maps ONNX nodes onto the canonical IR ops; every op or op variant it cannot map exactly raises
`UnsupportedOp` naming the op, the node and the file, and every malformed model raises `BadInput` (one line,
naming the file). Nothing is approximated: the IR computes the same function as the ONNX graph in exact
arithmetic (weights are kept as stored; derived constants such as 1/c, BatchNorm's scale/sqrt(var+eps) or
merged biases are computed in float64 and kept in float64 unless float32 holds them exactly, so that float64
bounds are bounds of the stored model).

Conventions
- The first dimension of the (single) graph input is the batch axis; it may be fixed (usually 1) or symbolic.
  Every other dimension must be a fixed size. Graph inputs that also have an initializer are constants.
- Supported ops: Gemm (transA=0), MatMul with one constant side reducing to `linear` on the last axis, Add / Sub /
  Mul / Div with a constant (-> `affine`, or folded into a preceding linear/conv bias or scale-only affine) or,
  for Add / Sub, two same-shape variables (-> `add` / `sub`), Conv (2-D; pads, strides, dilations, group,
  auto_pad), Relu, LeakyRelu, Sigmoid, Tanh, Flatten, Reshape, Squeeze, Unsqueeze (batch axis untouched),
  Transpose moving only size-1 axes, BatchNormalization (inference), AveragePool, MaxPool, GlobalAveragePool,
  GlobalMaxPool, Identity, Dropout (inference), Cast between float types, Pad (zero, spatial; as an identity
  depthwise conv2d), Clip to [0, inf) (relu), Neg, Constant, and any node whose inputs are all constant (folded
  with `onnx.reference`; Shape of a variable folds to [batch or 1, *shape]). Nodes the output does not depend
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

from .errors import BadInput, UnsupportedOp
from .ir import Network, Node, apply_op

_FLOAT_TYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.DOUBLE: "float64",
                onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.BFLOAT16: "bfloat16"}


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


class _Importer:
    def __init__(self, model: onnx.ModelProto, path: str, data: bytes):
        self.model, self.path, self.data = model, path, data
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

    def unsupported(self, n: onnx.NodeProto, detail: str = "is not supported") -> UnsupportedOp:
        return UnsupportedOp(f"op {n.op_type!r} {self._where(n)} {detail}", self.path)

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
        return Network(inp.name, shape, self.nodes, res, source=self.path, onnx_bytes=self.data)

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
        if len(dims) < 2:
            raise self.bad(f"input {inp.name!r} has rank {len(dims)}; a leading batch axis and at least one "
                           "more axis are required")
        shape = []
        for k, d in enumerate(dims[1:], start=1):
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(int(d.dim_value))
            else:
                what = repr(d.dim_param) if d.HasField("dim_param") else "unknown" if not d.HasField("dim_value") \
                    else str(d.dim_value)
                raise self.bad(f"input {inp.name!r} dimension {k} is dynamic ({what}); only the first (batch) "
                               "dimension may be")
        b = dims[0].dim_value if dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
        return tuple(shape), b

    def check_output_shape(self, out: onnx.ValueInfoProto, shape: tuple[int, ...]) -> None:
        tt = out.type.tensor_type
        if not out.type.HasField("tensor_type") or not tt.HasField("shape"):
            return
        dims = list(tt.shape.dim)[1:]
        declared = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if len(declared) != len(shape) or any(d not in (None, 0, s) for d, s in zip(declared, shape)):
            raise self.bad(f"output {out.name!r} is declared as [batch, {', '.join(map(str, declared))}] but the "
                           f"graph computes [batch, {', '.join(map(str, shape))}]")

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
            self.consts[n.output[0]] = np.array((self.batch or 1) * math.prod(self.shapes[self.vals[ins[0]]]),
                                                dtype=np.int64)
            return
        if all(i in self.consts for i in ins) and n.op_type not in ("RandomNormal", "RandomUniform", "Multinomial"):
            return self.fold(n)
        handler = getattr(self, "op_" + n.op_type, None)
        if handler is None:
            raise self.unsupported(n)
        handler(n)

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
        full = [self.batch or 1, *self.shapes[self.vals[n.input[0]]]]
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
        s = self.shapes[x]
        r = len(s) + 1
        if axis < 0:
            axis += r
        if axis == 0 or math.prod(s[:axis - 1]) != 1:
            raise self.unsupported(n, f"with axis={axis} merges the batch axis with others, which is not supported")
        self.vals[n.output[0]] = self.reshape(n, x, (math.prod(s[axis - 1:]),))

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
        s = self.shapes[x]
        full = [self.batch or 1, *s]
        if a.get("allowzero", 0) and 0 in target:
            raise self.unsupported(n, "with allowzero=1 and a zero in the target shape is not supported")
        if not target:
            raise self.unsupported(n, "to a scalar drops the batch axis, which is not supported")
        rest = []
        for k, t in enumerate(target[1:], start=1):
            if t == 0:
                if k >= len(full):
                    raise self.bad(f"Reshape {self._where(n)}: 0 at position {k} has no input dimension to copy")
                rest.append(full[k])
            else:
                rest.append(t)
        t0 = target[0]
        ok0 = t0 == 0 or (t0 == -1 and -1 not in rest) or (t0 == (self.batch or 1) and t0 > 0)
        if not ok0 or sum(v == -1 for v in rest) > 1 or any(v < -1 for v in rest):
            raise self.unsupported(n, f"to {target} does not keep the leading batch axis, which is not supported")
        numel = math.prod(s)
        if -1 in rest:
            known = math.prod(v for v in rest if v != -1)
            if known == 0 or numel % known:
                raise self.bad(f"Reshape {self._where(n)}: cannot reshape {list(s)} to {target}")
            rest[rest.index(-1)] = numel // known
        if math.prod(rest) != numel:
            raise self.bad(f"Reshape {self._where(n)}: cannot reshape [batch, {', '.join(map(str, s))}] to {target}")
        self.vals[n.output[0]] = self.reshape(n, x, rest)

    def _axes(self, n, a) -> list[int] | None:
        if len(n.input) > 1 and n.input[1]:
            return [int(v) for v in np.asarray(self.const(n, n.input[1])).reshape(-1)]
        return [int(v) for v in a["axes"]] if "axes" in a else None

    def op_Squeeze(self, n):
        a = self.attrs(n, ("axes",))
        x = self.var(n, n.input[0])
        s = list(self.shapes[x])
        r = len(s) + 1
        axes = self._axes(n, a)
        axes = [k for k in range(1, r) if s[k - 1] == 1] if axes is None else [k + r if k < 0 else k for k in axes]
        if 0 in axes:
            raise self.unsupported(n, "on the batch axis is not supported")
        if any(not 0 < k < r or s[k - 1] != 1 for k in axes):
            raise self.bad(f"Squeeze {self._where(n)}: axes {axes} are not size-1 axes of [batch, {s}]")
        self.vals[n.output[0]] = self.reshape(n, x, [d for k, d in enumerate(s, start=1) if k not in axes])

    def op_Unsqueeze(self, n):
        a = self.attrs(n, ("axes",))
        x = self.var(n, n.input[0])
        s = list(self.shapes[x])
        axes = self._axes(n, a)
        if axes is None:
            raise self.bad(f"Unsqueeze {self._where(n)} has no axes")
        r = len(s) + 1 + len(axes)
        axes = sorted(k + r if k < 0 else k for k in axes)
        if 0 in axes:
            raise self.unsupported(n, "inserting an axis before the batch axis is not supported")
        out, it = [], iter(s)
        for k in range(1, r):
            out.append(1 if k in axes else next(it))
        self.vals[n.output[0]] = self.reshape(n, x, out)

    def op_Transpose(self, n):
        """Only transposes that keep the batch axis first and the order of the axes longer than 1 (a reshape)."""
        x = self.var(n, n.input[0])
        s = self.shapes[x]
        r = len(s) + 1
        perm = [int(p) for p in self.attrs(n, ("perm",)).get("perm", range(r - 1, -1, -1))]
        full = (self.batch or 1, *s)
        moved = [p for p in perm if p > 0 and full[p] > 1]
        if sorted(perm) != list(range(r)) or perm[0] != 0 or moved != sorted(moved):
            raise self.unsupported(n, f"with perm {perm} on [batch, {list(s)}] reorders data, which is not supported")
        self.vals[n.output[0]] = self.reshape(n, x, [full[p] for p in perm[1:]])

    # linear maps ---------------------------------------------------------------------------------------------
    def op_Gemm(self, n):
        a = self.attrs(n, ("alpha", "beta", "transA", "transB", "broadcast"))
        if a.get("transA", 0):
            raise self.unsupported(n, "with transA=1 (transposing the batch axis) is not supported")
        x = self.var(n, n.input[0])
        if len(self.shapes[x]) != 1:
            raise self.bad(f"Gemm {self._where(n)}: input A must be 2-D, got [batch, {list(self.shapes[x])}]")
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
                if len(s) < 2:
                    raise self.unsupported(n, "reducing the input to the batch axis alone is not supported")
                y = self.emit(n, "linear", [x], {"W": W[None, :]}, base=n.output[0] + "/linear")
                self.vals[n.output[0]] = self.reshape(n, y, s[:-1])
                return
            if W.shape[0] != s[-1]:
                raise self.bad(f"MatMul {self._where(n)}: [batch, {list(s)}] @ {list(W.shape)} has mismatched sizes")
            self.vals[n.output[0]] = self.emit(n, "linear", [x], {"W": W.T})
        elif A in self.consts and B in self.vals:
            W, x = np.asarray(self.consts[A], dtype=np.float64), self.vals[B]
            s = self.shapes[x]
            while W.ndim > 2 and W.shape[0] == 1:
                W = W[0]
            if W.ndim > 2:
                raise self.unsupported(n, f"with a batched constant of shape {list(W.shape)} is not supported")
            if len(s) < 2 or s[-1] != 1:
                raise self.unsupported(n, f"with a constant on the left of [batch, {list(s)}] (not a column "
                                          "vector) is not supported")
            W2 = W[None, :] if W.ndim == 1 else W
            if W2.shape[1] != s[-2]:
                raise self.bad(f"MatMul {self._where(n)}: {list(W.shape)} @ [batch, {list(s)}] has mismatched sizes")
            flat = self.reshape(n, x, s[:-1], base=n.output[0] + "/col")
            y = self.emit(n, "linear", [flat], {"W": W2}, base=n.output[0] + "/linear")
            out_shape = (*s[:-2], 1) if W.ndim == 1 else (*s[:-2], W.shape[0], 1)
            self.vals[n.output[0]] = self.reshape(n, y, out_shape)
        elif A in self.vals and B in self.vals:
            raise self.unsupported(n, "with two non-constant inputs is not supported")
        else:
            self.var(n, A if A not in self.vals else B)

    def op_Conv(self, n):
        a = self.attrs(n, ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"))
        x = self.var(n, n.input[0])
        s = self.shapes[x]
        W = np.asarray(self.const(n, n.input[1]), dtype=np.float64)
        if W.ndim != 4 or len(s) != 3:
            raise self.unsupported(n, f"with weight shape {list(W.shape)} on [batch, {list(s)}] is not supported "
                                      "(only 2-D convolution)")
        k = tuple(W.shape[2:])
        if "kernel_shape" in a and tuple(a["kernel_shape"]) != k:
            raise self.bad(f"Conv {self._where(n)}: kernel_shape {a['kernel_shape']} disagrees with weights {list(W.shape)}")
        stride = tuple(a.get("strides", (1, 1)))
        dil = tuple(a.get("dilations", (1, 1)))
        pads = self.pads(n, a, s[1:], k, stride, dil)
        params = {"W": W}
        if len(n.input) > 2 and n.input[2]:
            params["b"] = np.asarray(self.const(n, n.input[2]), dtype=np.float64).reshape(-1)
        self.vals[n.output[0]] = self.emit(n, "conv2d", [x], params, {"stride": stride, "pads": pads,
                                                                      "dilation": dil, "groups": int(a.get("group", 1))})

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
        """Zero padding of the two spatial axes, imported exactly as a 1x1 identity depthwise conv2d with pads."""
        a = self.attrs(n, ("mode", "pads", "value"))
        if a.get("mode", "constant") != "constant":
            raise self.unsupported(n, f"with mode={a['mode']!r} is not supported")
        x = self.var(n, n.input[0])
        s = self.shapes[x]
        r = len(s) + 1
        if len(n.input) > 1 and n.input[1]:
            pads = [int(v) for v in np.asarray(self.const(n, n.input[1])).reshape(-1)]
        else:
            pads = [int(v) for v in a.get("pads", [])]
        value = a.get("value", 0.0)
        if len(n.input) > 2 and n.input[2]:
            value = float(np.asarray(self.const(n, n.input[2])).reshape(-1)[0])
        if len(n.input) > 3 and n.input[3]:  # opset 18 axes: scatter into a full pads list
            axes = [int(v) + r if int(v) < 0 else int(v) for v in np.asarray(self.const(n, n.input[3])).reshape(-1)]
            full = [0] * (2 * r)
            for k, ax in enumerate(axes):
                full[ax], full[r + ax] = pads[k], pads[len(axes) + k]
            pads = full
        if len(pads) != 2 * r:
            raise self.bad(f"Pad {self._where(n)}: {len(pads)} pads for a rank-{r} tensor")
        begin, end = pads[:r], pads[r:]
        if value != 0.0:
            raise self.unsupported(n, f"with constant value {value} is not supported (only zero padding)")
        if r != 4 or any(begin[:2]) or any(end[:2]) or min(pads) < 0:
            raise self.unsupported(n, f"with pads {pads} is not supported (only non-negative padding of the two "
                                      "spatial axes of [batch, C, H, W])")
        C = s[0]
        self.vals[n.output[0]] = self.emit(n, "conv2d", [x], {"W": np.ones((C, 1, 1, 1))},
                                           {"stride": (1, 1), "pads": (begin[2], begin[3], end[2], end[3]),
                                            "dilation": (1, 1), "groups": C})

    def op_Clip(self, n):
        """Clip(min=0, max=none) is Relu; other ranges have no IR op."""
        a = self.attrs(n, ("min", "max"))
        lo, hi = a.get("min"), a.get("max")
        if len(n.input) > 1 and n.input[1]:
            lo = float(np.asarray(self.const(n, n.input[1])).reshape(-1)[0])
        if len(n.input) > 2 and n.input[2]:
            hi = float(np.asarray(self.const(n, n.input[2])).reshape(-1)[0])
        if lo != 0.0 or (hi is not None and hi < np.finfo(np.float32).max):
            raise self.unsupported(n, f"with range [{lo}, {hi}] is not supported (only [0, inf): relu)")
        self._unary(n, "relu")

    def op_Neg(self, n):
        self.attrs(n, ())
        self.vals[n.output[0]] = self.emit(n, "affine", [self.var(n, n.input[0])], {"scale": -np.ones(())})

    # pools ---------------------------------------------------------------------------------------------------
    def _pool(self, n, op):
        a = self.attrs(n, ("auto_pad", "ceil_mode", "count_include_pad", "kernel_shape", "pads", "strides",
                           "dilations", "storage_order"))
        self.only_first_output(n)
        x = self.var(n, n.input[0])
        s = self.shapes[x]
        k = tuple(a.get("kernel_shape", ()))
        if len(s) != 3 or len(k) != 2:
            raise self.unsupported(n, f"with kernel {list(k)} on [batch, {list(s)}] is not supported (only 2-D pooling)")
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
        self.vals[n.output[0]] = self.emit(n, op, [x], attrs={"kernel": k, "stride": stride, "pads": pads})

    def op_AveragePool(self, n):
        self._pool(n, "avgpool2d")

    def op_MaxPool(self, n):
        self._pool(n, "maxpool2d")

    def _global_pool(self, n, op):
        self.attrs(n, ())
        x = self.var(n, n.input[0])
        s = self.shapes[x]
        if len(s) != 3:
            raise self.unsupported(n, f"on [batch, {list(s)}] is not supported (only 2-D pooling)")
        k = tuple(s[1:])
        self.vals[n.output[0]] = self.emit(n, op, [x], attrs={"kernel": k, "stride": k, "pads": (0, 0, 0, 0)})

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
        s = self.shapes[x]
        g, b, mean, var = (np.asarray(self.const(n, i), dtype=np.float64).reshape(-1) for i in n.input[1:5])
        eps = float(a.get("epsilon", 1e-5))
        if not len(g) == len(b) == len(mean) == len(var) == s[0]:
            raise self.bad(f"BatchNormalization {self._where(n)}: parameters do not have {s[0]} channels")
        if (var + eps <= 0).any():
            raise self.bad(f"BatchNormalization {self._where(n)}: var + epsilon is not positive")
        scale = g / np.sqrt(var + eps)
        shift = b - mean * scale
        view = (-1,) + (1,) * (len(s) - 1)
        self.vals[n.output[0]] = self.emit(n, "affine", [x], {"scale": scale.reshape(view),
                                                              "shift": shift.reshape(view)})

    # arithmetic ----------------------------------------------------------------------------------------------
    def sample_const(self, n, c: np.ndarray, s: tuple[int, ...]) -> np.ndarray:
        """A constant broadcast against [batch, *s], as an array broadcasting against one sample."""
        c = np.asarray(c, dtype=np.float64)
        r = len(s) + 1
        while c.ndim > r and c.shape[0] == 1:
            c = c[0]
        if c.ndim > r:
            raise self.unsupported(n, f"broadcasting a constant of shape {list(c.shape)} over [batch, {list(s)}] "
                                      "adds axes, which is not supported")
        if c.ndim == r:
            if c.shape[0] != 1:
                raise self.unsupported(n, f"with a constant of shape {list(c.shape)} that varies along the batch "
                                          "axis is not supported")
            c = c[0]
        if np.broadcast_shapes(c.shape, s) != tuple(s):
            raise self.unsupported(n, f"broadcasting a constant of shape {list(c.shape)} enlarges [batch, {list(s)}], "
                                      "which is not supported")
        return c

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
            xa, xb = self.vals[A], self.vals[B]
            if kind not in ("add", "sub"):
                raise self.unsupported(n, "with two non-constant inputs (a product) is not supported")
            if self.shapes[xa] != self.shapes[xb]:
                raise self.unsupported(n, f"broadcasting [batch, {list(self.shapes[xa])}] with "
                                          f"[batch, {list(self.shapes[xb])}] is not supported")
            self.vals[n.output[0]] = self.emit(n, kind, [xa, xb])
            return
        var_left = A in self.vals
        x = self.var(n, A if var_left else B)
        c = np.asarray(self.const(n, B if var_left else A))
        if a.get("broadcast") and "axis" in a:  # opset < 7: B is aligned with A starting at `axis`
            if not var_left:
                raise self.unsupported(n, "with legacy broadcasting of a non-constant second input is not supported")
            r = len(self.shapes[x]) + 1
            axis = a["axis"] + r if a["axis"] < 0 else a["axis"]
            if axis + c.ndim > r:
                raise self.bad(f"{n.op_type} {self._where(n)}: legacy broadcast axis {a['axis']} does not fit")
            c = c.reshape(c.shape + (1,) * (r - axis - c.ndim))
        c = self.sample_const(n, c, self.shapes[x])
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
        self.vals[n.output[0]] = self.emit(n, "affine", [x], params)

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
    return _Importer(model, source, data).run()
