"""VNN-LIB 2.0 specifications (vnnlib.org, released 2025-12-15): reader and writer.

A 2.0 query declares its network's tensors and then asserts over their elements:

    (vnnlib-version <2.0>)
    (declare-network f
        (declare-input  X float32 [1,2])
        (declare-output Y float32 [3]))
    (assert (and (>= X[0,0] 0.0) (<= X[0,0] 1.0)))
    (assert (>= Y[1] Y[0]))

It reads into the same `Spec` as VNN-LIB 1.0 (engine/io/vnnlib.py, whose guarantees on rounding, strict
comparisons and errors hold here too); element `X[i,j]` is input number ravel((i, j), shape) in C order, the
flattening the network uses. `==` is read as `=`, and `(!= a b)` as 1.0 reads `(not (= a b))`: its closure, which
is everything. The version declaration is optional (the grammar of the standard does not require it); a file is read
as 2.0 when it has one or a `declare-network`, otherwise as 1.0.

Supported subset (anything else is a `BadInput` naming file:line:col): one network with one input and one output
tensor of a real element type (Real, float16, float32, float64, bfloat16); no `declare-hidden`; an ONNX node name
after the shape is accepted and kept in `Spec.meta`. Tensor element references may be written `X[0,1]` or `X [0, 1]`.
"""
from __future__ import annotations

import math
import re
from decimal import Decimal

import numpy as np

from ..errors import BadInput
from ..spec import Box, LpBall, Spec
from .vnnlib import _COMMENT, _SpecReader, asserts

__all__ = ["is_vnnlib2", "parse_vnnlib2", "format_vnnlib2", "element_names"]

VERSION = "2.0"
REAL_TYPES = {"Real", "float16", "float32", "float64", "bfloat16"}
OTHER_TYPES = {"float8e4m3fn", "float8e5m2", "float8e4m3fnuz", "float8e5m2fnuz", "float4e2m1", "int8", "int16",
               "int32", "int64", "uint8", "uint16", "uint32", "uint64", "complex64", "complex128", "bool", "string"}

# An element reference `NAME[i,j]` (spaces allowed) is one token, so are `TYPE [dims]` in declarations.
_ELEM = r"[A-Za-z][\w.]*\s*\[[^\]();]*\]"
_TOK2 = re.compile(r"\s+|;[^\n]*|(\(|\)|" + _ELEM + r"|[^\s();]+)")
_FAST_TOK2 = re.compile(r"[()]|" + _ELEM + r"|[^\s();]+")
_ELEM_PARTS = re.compile(r"([A-Za-z][\w.]*)\s*\[([^\]]*)\]")
_NAME = re.compile(r"[A-Za-z][\w]*")
_IS_2 = re.compile(r"\(\s*(vnnlib-version|declare-network)\b")


def is_vnnlib2(text: str) -> bool:
    """Whether `text` is a VNN-LIB 2.0 query (a version declaration or a declare-network)."""
    return _IS_2.search(_COMMENT.sub("", text) if ";" in text else text) is not None


class _Tensor:
    def __init__(self, kind: int, name: str, etype: str, shape: tuple[int, ...], onnx: str | None, tok: int):
        self.kind, self.name, self.etype, self.shape, self.onnx, self.tok = kind, name, etype, shape, onnx, tok
        self.size = math.prod(shape)


class _AllAt(dict):
    """decl[kind][i] for every i: the token of the tensor's declaration (used to place 'has no bound' errors)."""

    def __init__(self, tok: int):
        super().__init__()
        self.tok = tok

    def __missing__(self, key):
        return self.tok


class _Reader2(_SpecReader):
    POSITIONS = _TOK2

    def __init__(self, text: str, source: str):
        super().__init__(text, source)
        self.tensors: dict[str, _Tensor] = {}
        self.decl = [{}, {}]
        self.io: list[_Tensor | None] = [None, None]

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return _FAST_TOK2.findall(_COMMENT.sub("", text) if ";" in text else text)

    def name(self, kind: int, i: int) -> str:
        t = self.io[kind]
        return f"{t.name}[{','.join(map(str, np.unravel_index(i, t.shape)))}]" if t.shape else f"{t.name}[]"

    def operand(self, i: int):
        t = self.tokens[i]
        v = self.vars.get(t)
        if v is not None:
            return v
        m = _ELEM_PARTS.fullmatch(t)
        if m is None:
            if t in self.tensors:   # a scalar tensor may be named without []
                ten = self.tensors[t]
                if ten.shape:
                    self.error(i, f"{t} is a tensor of shape [{','.join(map(str, ten.shape))}]: name one element, "
                                  f"e.g. {t}[{','.join('0' * len(ten.shape))}]")
                self.vars[t] = (ten.kind, 0)
                return ten.kind, 0
            if _NAME.fullmatch(t) and t not in ("and", "or", "not"):
                self.error(i, f"undeclared variable {t}")
            return super().operand(i)
        ten = self.tensors.get(m.group(1))
        if ten is None:
            self.error(i, f"undeclared tensor {m.group(1)}")
        parts = [p.strip() for p in m.group(2).split(",")] if m.group(2).strip() else []
        if not all(p.isdigit() for p in parts):
            self.error(i, f"bad index [{m.group(2)}]: indices are non-negative integers")
        idx = tuple(int(p) for p in parts)
        if len(idx) != len(ten.shape) or any(k >= n for k, n in zip(idx, ten.shape)):
            self.error(i, f"index [{','.join(map(str, idx))}] out of range for {ten.name} of shape "
                          f"[{','.join(map(str, ten.shape))}]")
        v = ten.kind, int(np.ravel_multi_index(idx, ten.shape)) if idx else 0
        self.vars[t] = v
        return v

    # ---- declarations ---------------------------------------------------------------------------------------
    def version(self, form):
        if len(form) != 3 or not isinstance(form[2], int):
            self.error(form[0], "expected (vnnlib-version <2.0>)")
        v = self.tokens[form[2]].strip("<>")
        if v != VERSION:
            self.error(form[2], f"unsupported VNN-LIB version {v}: nncert reads 1.0 (no version declaration) and 2.0")

    def network(self, form):
        if len(form) < 3 or not isinstance(form[2], int) or not _NAME.fullmatch(self.tokens[form[2]]):
            self.error(form[0], "expected (declare-network NAME (declare-input ...) (declare-output ...))")
        if self.io[0] is not None:
            self.error(form[0], "a second declare-network: nncert verifies queries over one network")
        for d in form[3:]:
            if isinstance(d, int):
                self.error(d, f"expected (declare-input ...) or (declare-output ...), got '{self.tokens[d]}'")
            what = self.head(d)
            if what == "declare-hidden":
                self.error(d[0], "declare-hidden (constraints on hidden nodes) is not supported")
            if what not in ("declare-input", "declare-output"):
                self.error(d[1], f"unknown declaration '{what}' in declare-network")
            self.tensor(d, 0 if what == "declare-input" else 1)
        for kind, what in ((0, "declare-input"), (1, "declare-output")):
            if self.io[kind] is None:
                self.error(form[0], f"network {self.tokens[form[2]]} has no {what}")
        self.network_name = self.tokens[form[2]]

    def tensor(self, d, kind: int):
        what = "input" if kind == 0 else "output"
        args = d[2:]
        if not (2 <= len(args) <= 3) or not all(isinstance(a, int) for a in args):
            self.error(d[0], f"expected (declare-{what} NAME TYPE [dims]) with an optional ONNX name")
        name = self.tokens[args[0]]
        if not _NAME.fullmatch(name):
            self.error(args[0], f"bad tensor name '{name}'")
        typed = _ELEM_PARTS.fullmatch(self.tokens[args[1]])
        if typed is None:
            self.error(args[1], f"expected the element type and shape, e.g. float32 [1,28,28], after {name}")
        etype, dims = typed.group(1), typed.group(2)
        if etype not in REAL_TYPES:
            self.error(args[1], f"element type {etype} is not supported: nncert verifies real-valued tensors"
                       if etype in OTHER_TYPES else f"unknown element type '{etype}'")
        parts = [p.strip() for p in dims.split(",")] if dims.strip() else []
        if not all(p.isdigit() and int(p) > 0 for p in parts):
            self.error(args[1], f"bad shape [{dims}]: dimensions are positive integers")
        onnx = self.tokens[args[2]].strip('"') if len(args) == 3 else None
        if name in self.tensors:
            self.error(args[0], f"tensor {name} is declared twice")
        if self.io[kind] is not None:
            self.error(d[0], f"a second {what} tensor: nncert verifies networks with one input and one output")
        t = self.tensors[name] = self.io[kind] = _Tensor(kind, name, etype, tuple(int(p) for p in parts), onnx, d[0])
        self.decl[kind] = _AllAt(t.tok)

    # ---- query --------------------------------------------------------------------------------------------
    def spec(self, n_inputs: int | None, n_outputs: int | None) -> Spec:
        common: list = []
        multi: list = [[]]
        n_asserts = 0
        for k, form in enumerate(self.tree()):
            if isinstance(form, int):
                self.error(form, f"unexpected token '{self.tokens[form]}' outside a form")
            cmd = self.head(form)
            if cmd == "vnnlib-version":
                if k:
                    self.error(form[0], "the version declaration must come first")
                self.version(form)
            elif cmd == "declare-network":
                if n_asserts:
                    self.error(form[0], "declare-network must come before the asserts")
                self.network(form)
            elif cmd == "assert":
                if self.io[0] is None:
                    self.error(form[0], "assert before any declare-network")
                n_asserts += 1
                multi = self.assertion(form, common, multi)
            elif cmd == "declare-const":
                self.error(form[1], "declare-const is VNN-LIB 1.0: a 2.0 query declares tensors in declare-network")
            else:
                self.error(form[1], f"unknown command '{cmd}'")
        if self.io[0] is None:
            self.error(None, "no declare-network")
        if not n_asserts:
            self.error(None, "empty spec: no assert")
        for kind, given, what in ((0, n_inputs, "inputs"), (1, n_outputs, "outputs")):
            t = self.io[kind]
            if given is not None and t.size != given:
                self.error(t.tok, f"{t.name} has {t.size} elements but the network has {given} {what}")
        x, y = self.io
        meta = {"format": "vnnlib-2.0", "asserts": n_asserts, "network": self.network_name,
                "input": {"name": x.name, "shape": list(x.shape), "type": x.etype, "onnx": x.onnx},
                "output": {"name": y.name, "shape": list(y.shape), "type": y.etype, "onnx": y.onnx}}
        return self.build(common, multi, x.size, y.size, meta)

    def dnf(self, node, negate: bool = False) -> list[list]:
        if not isinstance(node, int) and len(node) > 1 and isinstance(node[1], int):
            op = self.tokens[node[1]]
            if op == "==":
                return self.comparison(node, "=", negate)
            if op == "!=":
                return self.comparison(node, "=", not negate)
        return super().dnf(node, negate)


def parse_vnnlib2(text: str, source: str = "<string>", n_inputs: int | None = None,
                  n_outputs: int | None = None) -> Spec:
    """Parse VNN-LIB 2.0 text into a `Spec` (the unsafe set); sizes as in `parse_vnnlib`."""
    try:
        return _Reader2(text, str(source)).spec(n_inputs, n_outputs)
    except RecursionError:
        raise BadInput("formula nested too deeply", str(source)) from None


# ---- writer ------------------------------------------------------------------------------------------------

def _num(v: float, exact: bool = False) -> str:
    """A 2.0 numeral (digits.digits, no exponent): the exact value of v, or its shortest round-trip decimal."""
    s = format(Decimal(v) if exact else Decimal(repr(float(v))), "f")
    return s if "." in s else s + ".0"


def element_names(name: str, shape) -> list[str]:
    """`NAME[i,j,...]` for every element of a tensor, in C order."""
    shape = tuple(int(s) for s in shape)
    if not shape:
        return [f"{name}[]"]
    return [f"{name}[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape)]


def format_vnnlib2(spec: Spec, input_shape, output_shape=None, network: str = "N", names=("X", "Y"),
                   dtype: str = "float32") -> str:
    """A Spec with box input sets as VNN-LIB 2.0 text (inputs of `input_shape`, outputs of `output_shape`, default
    [n_outputs]); `parse_vnnlib2` reads it back to the same Spec (input bounds are written exactly)."""
    output_shape = [spec.n_outputs] if output_shape is None else list(output_shape)
    if math.prod(input_shape) != spec.n_inputs or math.prod(output_shape) != spec.n_outputs:
        raise BadInput("format_vnnlib2: the shapes do not match the spec's sizes", spec.source)
    xs, ys = element_names(names[0], input_shape), element_names(names[1], output_shape)
    shape = lambda s: "[" + ",".join(map(str, s)) + "]"  # noqa: E731
    out = [f"; written by nncert ({len(spec.cases)} input region(s))", f"(vnnlib-version <{VERSION}>)",
           f"(declare-network {network}",
           f"    (declare-input {names[0]} {dtype} {shape(input_shape)})",
           f"    (declare-output {names[1]} {dtype} {shape(output_shape)}))"]
    boxes = []
    for c in spec.cases:
        s = c.input_set
        if isinstance(s, LpBall) and s.p != float("inf"):
            raise BadInput("VNN-LIB cannot express an l2 ball input set", spec.source)
        boxes.append(s.bounding_box())

    def bounds(b: Box) -> list[str]:
        return [f"({op} {xs[i]} {_num(v, exact=True)})"
                for i, (lo, hi) in enumerate(zip(b.lower.tolist(), b.upper.tolist()))
                for op, v in ((">=", lo), ("<=", hi))]

    def row(c, d) -> str:
        terms = [f"(* {_num(w)} {ys[j]})" for j, w in enumerate(c) if w != 0]
        if not terms:
            return f"(>= {_num(d)} 0.0)"
        lhs = terms[0] if len(terms) == 1 else f"(+ {' '.join(terms)})"
        return f"(>= {lhs} {_num(-d)})"

    def conj(dj) -> str:
        if dj.C.shape[0] == 0:
            raise BadInput("VNN-LIB writer: a disjunct has no rows", spec.source)
        return " ".join(row(r, v) for r, v in zip(dj.C.numpy(), dj.d.tolist()))

    return "\n".join(out + asserts(spec, boxes, bounds, conj)) + "\n"
