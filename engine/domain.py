"""The abstract-domain protocol and the result format every domain reports in.

A domain owns only its math; the engine owns graph traversal helpers, batching, time budgets and I/O.
Two kinds of domain:

* bound domains (guarantee "sound") implement `bounds`: sound lower/upper bounds on C @ f(x) over a batch of
  input boxes. The engine turns them into verdicts (`engine.verify`).
* certificate domains (guarantee "sound" or "probabilistic") implement `certify`: per-sample certificates on a
  dataset (`engine.certify`).

A domain declares which input sets (`"box"`, `"linf"`, `"l2"`, `"transform"`) and which IR ops it supports, so
`nncert domains` can list them and unsupported inputs fail with a clear error instead of a wrong answer.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from .errors import PluginError, UnsupportedOp


class Verdict(str, enum.Enum):
    SAT = "sat"          # a counterexample was found and re-checked on the network
    UNSAT = "unsat"      # proven: the unsafe set is empty
    UNKNOWN = "unknown"
    TIMEOUT = "timeout"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


@dataclass
class Result:
    """What `verify` reports. `seconds` is wall time of the verification (not process start or parsing)."""

    verdict: Verdict
    domain: str
    seconds: float
    counterexample: dict | None = None   # {"x": [...], "y": [...]} flat lists, re-checked
    guarantee: str = "sound"
    certificate: Any = None
    evidence: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"verdict": str(self.verdict), "domain": self.domain, "seconds": self.seconds,
                "counterexample": self.counterexample, "guarantee": self.guarantee,
                "certificate": self.certificate, "evidence": self.evidence}


class Domain:
    """Base class of every domain. Subclasses set the class attributes and implement bounds and/or certify."""

    name: ClassVar[str] = ""
    guarantee: ClassVar[str] = "sound"            # "sound" | "probabilistic"
    input_sets: ClassVar[tuple[str, ...]] = ()    # subset of ("box", "linf", "l2", "transform")
    description: ClassVar[str] = ""
    default_rules: ClassVar[dict[str, Any]] = {}  # the domain's own per-op rules, keyed by IR op name
    forward_only: ClassVar[bool] = False          # only evaluates the network (smoothing): every IR op is supported
    registry = None  # the Registry that made this instance (Registry.domain sets it); None: the process registry

    def __init__(self, op_rules: dict[str, Any] | None = None):
        # the domain's own rules plus those contributed through the nncert_register_op_rules hook
        extra = dict(op_rules or {})
        clash = sorted(set(extra) & set(self.default_rules))
        if clash:
            raise PluginError(f"a plugin registers rules for ops {clash} that domain {self.name!r} already has")
        self.op_rules: dict[str, Any] = {**self.default_rules, **extra}
        self._resolved: dict[str, Any] = {}

    @property
    def ops(self) -> dict:
        """The op registry's ops (engine/ops) this domain serves: its registry's, else the process registry's."""
        if getattr(self, "_ops", None) is None:
            from .ops import op_table
            self._ops = op_table()
        return self._ops

    @ops.setter
    def ops(self, table: dict) -> None:
        self._ops = table
        self._resolved = {}

    def derived_rule(self, op):
        """A rule derived from an op's traits (engine/ops) for an op the domain has no rule of its own for, or None.
        Domains override this (IBP: monotone ops map bounds to bounds; CROWN: linear ops are exact adjoints)."""
        return None

    def rule(self, op_name: str):
        """The domain's rule for an op: its own or a plugin's, else one derived from the op's traits; None if none."""
        if op_name not in self._resolved:
            r = self.op_rules.get(op_name)
            if r is None and op_name in self.ops:
                r = self.derived_rule(self.ops[op_name])
            self._resolved[op_name] = r
        return self._resolved[op_name]

    def supported_ops(self) -> list[str]:
        """IR ops this domain can handle (own rules, plugins' rules and rules derived from op traits)."""
        names = set(self.ops) | set(self.op_rules)
        if self.forward_only:
            return sorted(names)
        return sorted(n for n in names if self.rule(n) is not None)

    def check_network(self, network) -> None:
        """Raise UnsupportedOp naming the first node whose op this domain has no rule for."""
        ops = set(self.supported_ops())
        for node in network.nodes:
            if node.op not in ops:
                raise UnsupportedOp(f"op {node.op!r} (node {node.name!r}) has no rule in domain {self.name!r}",
                                    network.source)

    def can_bound(self) -> bool:
        return type(self).bounds is not Domain.bounds

    def can_certify(self) -> bool:
        return type(self).certify is not Domain.certify

    def bounds(self, network, lower: torch.Tensor, upper: torch.Tensor,
               C: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sound bounds over each box of a batch.

        lower, upper: [B, n_inputs] flat box bounds. C: None (bound the flat outputs) or [m, n_outputs] or
        [B, m, n_outputs]. Returns (lo, hi), each [B, m] (m = n_outputs when C is None), such that for every x in
        box b: lo[b] <= C @ f(x) <= hi[b], in exact arithmetic and after the domain's floating-point widening.
        """
        raise NotImplementedError(f"domain {self.name!r} computes no bounds")

    def bounds_refine(self, network, lower: torch.Tensor, upper: torch.Tensor, C: torch.Tensor | None = None,
                      state: torch.Tensor | None = None):
        """`bounds` for search over nested boxes: (lo, hi, state). `state` [B, s] (or None) is what an earlier call
        returned for a box containing each box (e.g. the parent in branch and bound); a domain may use it to
        tighten the bounds, which stay sound for the box. The default keeps no state."""
        return (*self.bounds(network, lower, upper, C), None)

    def bab_root(self, network, lower: torch.Tensor, upper: torch.Tensor):
        """Branch-and-bound protocol (optional): the state branch_and_bound starts from on the box
        [lower, upper] ([1, n_inputs], float64), or None when the domain offers no branch and bound."""
        return None

    def branch_and_bound(self, state, C: torch.Tensor, d: torch.Tensor, deadline: float, is_cex):
        """Decide the disjunct {C y + d >= 0} on the box of `state` before `deadline` (time.perf_counter()):
        ("unsat" | "sat" | "timeout" | "unknown", counterexample or None, stats). is_cex(x [K, n]) re-checks
        candidate inputs on the real model and returns a counterexample or None."""
        raise NotImplementedError

    def certify(self, model, x: torch.Tensor, y: torch.Tensor, options: dict) -> list[dict]:
        """Per-sample certificates for inputs x [N, *input_shape] with labels y [N].

        Returns one dict per sample with at least idx, label, predict (-1 = abstain), correct, time, and the
        domain's certificate fields (e.g. radius, certified).
        """
        raise NotImplementedError(f"domain {self.name!r} issues no dataset certificates")

    def info(self) -> dict:
        return {"name": self.name, "guarantee": self.guarantee, "input_sets": list(self.input_sets),
                "ops": self.supported_ops(), "bounds": self.can_bound(), "certify": self.can_certify(),
                "description": self.description}
