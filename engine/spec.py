"""Specifications: input sets and output properties.

A `Spec` describes the *unsafe* set, as VNN-LIB does: the union over its cases of
{x in case.input_set and y = f(x) satisfies some disjunct of case.disjuncts}, where a disjunct is a conjunction
of linear atoms `C @ y + d >= 0` (all rows). `unsat` means that set is empty (the network is safe),
`sat` means a concrete x in it was found.
Input vectors are flat (length n_inputs, in the order of the network input's C-order flattening);
tensors are float64.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .errors import BadInput


def _f64(t) -> torch.Tensor:
    return torch.as_tensor(t, dtype=torch.float64).flatten()


@dataclass
class Box:
    """Axis-aligned box lower <= x <= upper (flat, float64)."""

    lower: torch.Tensor
    upper: torch.Tensor
    kind = "box"

    def __post_init__(self):
        self.lower, self.upper = _f64(self.lower), _f64(self.upper)
        if self.lower.shape != self.upper.shape:
            raise BadInput(f"box bounds have different lengths {self.lower.numel()} and {self.upper.numel()}")
        if not (torch.isfinite(self.lower).all() and torch.isfinite(self.upper).all()):
            raise BadInput("box bounds must be finite")
        bad = (self.lower > self.upper).nonzero().flatten()
        if bad.numel():
            i = int(bad[0])
            raise BadInput(f"empty input box: lower {self.lower[i].item()} > upper {self.upper[i].item()} at X_{i}")

    @property
    def center(self) -> torch.Tensor:
        return (self.lower + self.upper) / 2

    def bounding_box(self) -> "Box":
        return self

    def free(self) -> torch.Tensor:
        """The inputs [n] (flat) the box lets vary: widths below 1e-9 of its widest (e.g. an input fixed at a
        decimal, read as a sliver one rounding wide) do not count."""
        w = (self.upper - self.lower).reshape(-1)
        return w > 1e-9 * float(w.max()) if w.numel() and float(w.max()) > 0 else torch.zeros_like(w, dtype=torch.bool)

    def contains(self, x: torch.Tensor, tol: float = 0.0) -> torch.Tensor:
        """Per-row membership of flat points x [N, n]."""
        return ((x >= self.lower - tol) & (x <= self.upper + tol)).all(dim=-1)


@dataclass
class LpBall:
    """{x : ||x - center||_p <= eps}, p in {2, inf}, optionally intersected with [clip_lower, clip_upper]."""

    center: torch.Tensor
    eps: float
    p: float = float("inf")
    kind = "lp"

    def __post_init__(self):
        self.center = _f64(self.center)
        if not (self.eps >= 0):
            raise BadInput(f"eps must be >= 0, got {self.eps}")
        if self.p not in (2, 2.0, float("inf")):
            raise BadInput(f"only p = 2 and p = inf balls are supported, got p = {self.p}")

    def bounding_box(self) -> Box:
        return Box(self.center - self.eps, self.center + self.eps)

    def contains(self, x: torch.Tensor, tol: float = 0.0) -> torch.Tensor:
        return torch.linalg.vector_norm(x - self.center, ord=self.p, dim=-1) <= self.eps + tol


def linf_ball(center, eps: float) -> Box:
    """An l_inf ball as a Box (the two are the same set)."""
    b = LpBall(center, eps, float("inf"))
    return b.bounding_box()


@dataclass
class Disjunct:
    """A conjunction of rows C @ y + d >= 0 (C [m, n_outputs], d [m])."""

    C: torch.Tensor
    d: torch.Tensor

    def __post_init__(self):
        self.C = torch.as_tensor(self.C, dtype=torch.float64).reshape(-1, torch.as_tensor(self.C).shape[-1])
        self.d = _f64(self.d)
        if self.C.shape[0] != self.d.shape[0]:
            raise BadInput("disjunct C and d have different row counts")

    def holds(self, y: torch.Tensor) -> torch.Tensor:
        """Per-row truth for flat outputs y [N, n_outputs] (closed atoms: >= 0)."""
        return ((y.to(torch.float64) @ self.C.T + self.d) >= 0).all(dim=-1)


@dataclass
class Case:
    """One input region with the disjuncts of the unsafe output set that apply to it."""

    input_set: Box | LpBall
    disjuncts: list[Disjunct]


@dataclass
class Spec:
    cases: list[Case]
    n_inputs: int
    n_outputs: int
    source: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.cases:
            raise BadInput("spec has no input region", self.source)
        for c in self.cases:
            if not c.disjuncts:
                raise BadInput("spec has an input region with no output constraint", self.source)

    def padded(self, n_outputs: int) -> "Spec":
        """This spec with every C matrix widened by zero columns to n_outputs network outputs (a spec may name only
        the first Y_i); a new Spec (self when nothing needs widening), never a mutation."""
        if all(dj.C.shape[1] == n_outputs for c in self.cases for dj in c.disjuncts):
            return self if self.n_outputs == n_outputs else Spec(self.cases, self.n_inputs, n_outputs, self.source,
                                                                  dict(self.meta))
        cases = [Case(c.input_set, [Disjunct(torch.cat([dj.C, dj.C.new_zeros(dj.C.shape[0], n_outputs - dj.C.shape[1])],
                                                       1), dj.d) for dj in c.disjuncts]) for c in self.cases]
        return Spec(cases, self.n_inputs, n_outputs, self.source, dict(self.meta))

    def unsafe(self, x: torch.Tensor, y: torch.Tensor, tol: float = 0.0) -> torch.Tensor:
        """Per-row: flat input x [N, n_inputs] with output y [N, n_outputs] lies in the unsafe set."""
        out = torch.zeros(x.shape[0], dtype=torch.bool)
        for c in self.cases:
            inside = c.input_set.contains(x.to(torch.float64), tol)
            hit = torch.zeros_like(out)
            for dj in c.disjuncts:
                hit |= dj.holds(y)
            out |= inside & hit
        return out
