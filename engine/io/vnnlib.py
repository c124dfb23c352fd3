"""VNN-LIB 1.0 specifications (the VNN-COMP format): reader, writer, counterexample files.

A VNN-LIB file describes the *unsafe* set: the network violates the property iff some input x with output
y = f(x) satisfies every `assert`. `read_vnnlib` turns it into a `Spec` (engine/spec.py): the asserts are
conjoined and put in disjunctive normal form; each DNF term is a conjunction of box bounds on inputs X_i and
linear atoms over outputs Y_j; terms with the same box become one `Case` whose disjuncts are the terms' output
conjunctions (rows `C @ y + d >= 0`).

Supported: `;` comments, `(declare-const X_i Real)` / `(declare-const Y_j Real)`, `assert`, `and`, `or`, `not`,
`<=`, `>=`, `<`, `>`, `=` (chained comparisons as in SMT-LIB), terms built with `+`, `-` (unary and n-ary),
`*` (at most one non-constant factor), `/` (by a constant), decimal numbers (`1`, `-0.5`, `.5`, `5.`, `1e-3`).
The SMT-LIB commands `check-sat`, `get-model`, `set-logic`, `set-info`, `set-option`, `exit` are ignored.

Guarantees:
- Strict `<` / `>` are read as `<=` / `>=`: the unsafe set is replaced by its closure, a superset, so `unsat`
  stays sound (a counterexample on the boundary is re-checked anyway).
- Input bounds keep the real-number meaning of the decimals: a bound whose decimal is not exactly a float64 is
  rounded outward (lower down, upper up, by one ulp at most), so the box read is a superset of the real box.
  Terms like `(<= (* 3 X_0) 1)` are evaluated in exact rational arithmetic and rounded outward the same way.
- Output atoms are stored in float64 rounded to nearest (C and d), as every VNN-COMP tool does.
- Every input must end up with a finite lower and upper bound; an empty box, an undeclared or out-of-range
  variable, a non-linear term, an atom coupling several inputs or inputs with outputs, and more than
  MAX_TERMS DNF terms are errors (`BadInput` with `file:line:col: message`, one line).
"""
from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..errors import BadInput
from ..spec import Box, Case, Disjunct, LpBall, Spec

__all__ = ["read_vnnlib", "parse_vnnlib", "format_vnnlib", "read_counterexample", "parse_counterexample",
           "format_counterexample", "format_result_counterexample", "MAX_TERMS"]

MAX_TERMS = 100_000  # DNF terms (input regions x output conjunctions) a spec may expand to

# Tokens: parentheses and maximal runs of other non-space characters; `;` starts a comment to the end of line.
# Stripping comments first never merges or splits tokens (a comment ends at a newline), so token indices agree
# with _TOK, which keeps every character (group 1 = the token) and is used to find positions for errors.
_TOK = re.compile(r"\s+|;[^\n]*|(\(|\)|[^\s();]+)")
_FAST_TOK = re.compile(r"[()]|[^\s();]+")
_COMMENT = re.compile(r";[^\n]*")
_NUM = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_NUMLIKE = re.compile(r"[+-]?[\d.]")
_VAR = re.compile(r"([XY])_(0|[1-9][0-9]*)")
_CMP = {"<=": False, "<": False, ">=": True, ">": True, "=": None}  # value: "a >= b" (True) / "a <= b"
_NEG = {"<=": ">=", "<": ">=", ">=": "<=", ">": "<="}  # closure of the complement
_IGNORED = {"check-sat", "get-model", "set-logic", "set-info", "set-option", "exit"}

# A parsed tree: an atom is its token index (int); a list is [open-paren token index, child, child, ...].
# An atom of a DNF term is either (0, input index, is_lower, value, token) or (1, {output: coeff}, const, token)
# meaning  sum coeff * Y + const >= 0.


def _tokenize(text: str) -> list[str]:
    return _FAST_TOK.findall(_COMMENT.sub("", text) if ";" in text else text)


class _Reader:
    POSITIONS = _TOK  # the token pattern with whitespace and comments, for error positions

    def __init__(self, text: str, source: str):
        self.text, self.source = text, source
        self.tokens = self.tokenize(text)

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return _tokenize(text)

    # ---- errors -------------------------------------------------------------------------------------------
    def where(self, i: int | None) -> tuple[int | None, int | None]:
        if i is None:
            return None, None
        k = -1
        for m in self.POSITIONS.finditer(self.text):
            if m.group(1) is not None:
                k += 1
                if k == i:
                    p = m.start()
                    return self.text.count("\n", 0, p) + 1, p - (self.text.rfind("\n", 0, p) + 1) + 1
        return None, None

    def error(self, i: int | None, msg: str):
        line, col = self.where(i)
        raise BadInput(msg, self.source, line, col)

    def name(self, kind: int, i: int) -> str:
        """How messages name input (kind 0) / output (kind 1) number i."""
        return f"{'XY'[kind]}_{i}"

    def tok(self, node) -> int:
        """The token index that locates `node` (an atom, or a list's open paren)."""
        return node if isinstance(node, int) else node[0]

    # ---- S-expressions ------------------------------------------------------------------------------------
    def subtree(self, i: int) -> tuple[list, int]:
        """The form opening at token i (a '(') and the index after its ')'."""
        toks = self.tokens
        root = cur = [i]
        stack = []
        for j in range(i + 1, len(toks)):
            t = toks[j]
            if t == "(":
                node = [j]
                cur.append(node)
                stack.append(cur)
                cur = node
            elif t == ")":
                if not stack:
                    return root, j + 1
                cur = stack.pop()
            else:
                cur.append(j)
        self.error(i, "unbalanced parentheses: this '(' is never closed")

    def tree(self) -> list:
        """All top-level forms (atoms at top level are returned as token indices)."""
        out, i, toks = [], 0, self.tokens
        while i < len(toks):
            if toks[i] == "(":
                node, i = self.subtree(i)
                out.append(node)
            elif toks[i] == ")":
                self.error(i, "unbalanced parentheses: ')' has no matching '('")
            else:
                out.append(i)
                i += 1
        return out

    def head(self, node) -> str:
        if len(node) == 1:
            self.error(node[0], "empty form '()'")
        h = node[1]
        if not isinstance(h, int):
            self.error(h[0], "expected an operator or command name, got a parenthesised form")
        return self.tokens[h]


class _SpecReader(_Reader):
    def __init__(self, text: str, source: str):
        super().__init__(text, source)
        self.vars: dict[str, tuple[int, int]] = {}  # name -> (0 for X / 1 for Y, index)
        self.decl = ({}, {})  # index -> declaring token, for X and Y
        self.rounded: dict[tuple[str, bool], float] = {}  # (decimal, is_lower) -> outward-rounded float64

    # ---- operands and numbers ---------------------------------------------------------------------------
    def number(self, i: int) -> float:
        t = self.tokens[i]
        f = float(t)
        if not math.isfinite(f):
            self.error(i, f"bad number '{t}': outside the float64 range")
        return f

    def operand(self, i: int):
        """Atom -> (0, X index) | (1, Y index) | (2, token index of a number)."""
        t = self.tokens[i]
        v = self.vars.get(t)
        if v is not None:
            return v
        if _NUM.fullmatch(t):
            return 2, i
        if _NUMLIKE.match(t):
            self.error(i, f"bad number '{t}'")
        if _VAR.fullmatch(t):
            self.error(i, f"undeclared variable {t}")
        self.error(i, f"unknown symbol '{t}' (expected a declared X_i / Y_j or a number)")

    def bound(self, i: int, num_tok: int, lower: bool, at: int):
        """Input bound X_i >= / <= decimal token, rounded outward when the decimal is not a float64."""
        key = (self.tokens[num_tok], lower)
        f = self.rounded.get(key)
        if f is None:
            f = self.number(num_tok)
            exact, approx = Decimal(key[0]), Decimal(f)
            if lower and approx > exact:
                f = math.nextafter(f, -math.inf)
            elif not lower and approx < exact:
                f = math.nextafter(f, math.inf)
            self.rounded[key] = f
        return (0, i, lower, f, at)

    # ---- linear terms (general path, exact rationals) ------------------------------------------------------
    def linear(self, node) -> tuple[dict, Fraction]:
        """Term -> ({key: coeff}, const) with key i >= 0 for Y_i and -(i+1) for X_i; exact Fractions."""
        if isinstance(node, int):
            kind, v = self.operand(node)
            if kind == 2:
                self.number(v)
                return {}, Fraction(self.tokens[v])
            return {(v if kind == 1 else -(v + 1)): Fraction(1)}, Fraction(0)
        op = self.head(node)
        args = node[2:]
        if op in ("+", "-", "*", "/") and not args:
            self.error(node[1], f"'{op}' needs at least one argument")
        if op == "+" or op == "-":
            terms = [self.linear(a) for a in args]
            if op == "-" and len(terms) == 1:
                c, k = terms[0]
                return {v: -w for v, w in c.items()}, -k
            coeffs, const = dict(terms[0][0]), terms[0][1]
            sign = 1 if op == "+" else -1
            for c, k in terms[1:]:
                for v, w in c.items():
                    coeffs[v] = coeffs.get(v, 0) + sign * w
                const += sign * k
            return coeffs, const
        if op == "*":
            coeffs, const, var_seen = {}, Fraction(1), False
            for a in args:
                c, k = self.linear(a)
                if any(c.values()):
                    if var_seen:
                        self.error(node[1], "non-linear term: product of two variable terms")
                    var_seen = True
                    coeffs = {v: w * const for v, w in c.items()}
                    const = k * const
                else:
                    coeffs = {v: w * k for v, w in coeffs.items()}
                    const *= k
            return coeffs, const
        if op == "/":
            if len(args) != 2:
                self.error(node[1], "'/' needs exactly two arguments")
            c, k = self.linear(args[0])
            dc, dk = self.linear(args[1])
            if any(dc.values()):
                self.error(node[1], "non-linear term: division by a variable term")
            if dk == 0:
                self.error(node[1], "division by zero")
            return {v: w / dk for v, w in c.items()}, k / dk
        if op in _CMP or op in ("and", "or", "not"):
            self.error(node[1], f"expected an arithmetic term, got the formula operator '{op}'")
        self.error(node[1], f"unknown operator '{op}'")

    # ---- atoms -----------------------------------------------------------------------------------------------
    def compare(self, ge: bool, a, b, at: int):
        """Atoms of `a >= b` (ge) or `a <= b`."""
        if isinstance(a, int) and isinstance(b, int):  # fast path: the forms competition files use
            (ka, va), (kb, vb) = self.operand(a), self.operand(b)
            if ka == 0 and kb == 2:
                return self.bound(va, vb, ge, at)
            if ka == 2 and kb == 0:
                return self.bound(vb, va, not ge, at)
            if ka != 0 and kb != 0:
                s = 1.0 if ge else -1.0  # row: s * (a - b) >= 0
                coeffs, const = {}, 0.0
                if ka == 1:
                    coeffs[va] = s
                else:
                    const += s * self.number(va)
                if kb == 1:
                    coeffs[vb] = coeffs.get(vb, 0.0) - s
                else:
                    const -= s * self.number(vb)
                return (1, coeffs, const, at)
        (ca, ka), (cb, kb) = self.linear(a), self.linear(b)
        coeffs = dict(ca)
        for v, w in cb.items():
            coeffs[v] = coeffs.get(v, 0) - w
        const = ka - kb
        if not ge:
            coeffs, const = {v: -w for v, w in coeffs.items()}, -const
        coeffs = {v: w for v, w in coeffs.items() if w != 0}
        xs = sorted(-v - 1 for v in coeffs if v < 0)
        ys = sorted(v for v in coeffs if v >= 0)
        if xs and ys:
            self.error(at, f"constraint mixes input {self.name(0, xs[0])} and output {self.name(1, ys[0])}: "
                           "inputs may only be "
                           "bounded by constants")
        if len(xs) > 1:
            self.error(at, f"constraint couples inputs {self.name(0, xs[0])} and {self.name(0, xs[1])}: only "
                           "bounds on single inputs "
                           "(a box) are supported")
        if xs:
            i = xs[0]
            w = coeffs[-(i + 1)]
            val = -const / w  # w * X_i + const >= 0
            lower = w > 0
            f = float(val)
            if not math.isfinite(f):
                self.error(at, "input bound outside the float64 range")
            if lower and Fraction(f) > val:
                f = math.nextafter(f, -math.inf)
            elif not lower and Fraction(f) < val:
                f = math.nextafter(f, math.inf)
            return (0, i, lower, f, at)
        out = {v: float(w) for v, w in coeffs.items()}
        c = float(const)
        if not (math.isfinite(c) and all(math.isfinite(w) for w in out.values())):
            self.error(at, "output constraint coefficients outside the float64 range")
        return (1, out, c, at)

    def comparison(self, node, op: str, negate: bool) -> list[list]:
        """DNF of a (possibly chained, possibly negated) comparison."""
        args = node[2:]
        if len(args) < 2:
            self.error(node[1], f"'{op}' needs at least two arguments")
        pairs = list(zip(args, args[1:]))
        at = node[0]
        if not negate:
            atoms = []
            for a, b in pairs:
                if op == "=":
                    atoms += [self.compare(True, a, b, at), self.compare(False, a, b, at)]
                else:
                    atoms.append(self.compare(_CMP[op], a, b, at))
            return [atoms]
        terms = []  # not (p1 and p2 ...) = (not p1) or (not p2) ...
        for a, b in pairs:
            if op == "=":  # closure of a != b is everything: a <= b or a >= b
                terms += [[self.compare(True, a, b, at)], [self.compare(False, a, b, at)]]
            else:
                terms.append([self.compare(_CMP[_NEG[op]], a, b, at)])
        return terms

    # ---- formulas -> DNF ------------------------------------------------------------------------------------
    def dnf(self, node, negate: bool = False) -> list[list]:
        if isinstance(node, int):
            self.error(node, f"expected a formula, got '{self.tokens[node]}'")
        op = self.head(node)
        if op in _CMP:
            return self.comparison(node, op, negate)
        args = node[2:]
        if op == "not":
            if len(args) != 1:
                self.error(node[1], "'not' needs exactly one argument")
            return self.dnf(args[0], not negate)
        if op in ("and", "or"):
            if not args:
                self.error(node[1], f"'{op}' needs at least one argument")
            if (op == "and") != negate:  # conjunction: distribute
                terms = [[]]
                for a in args:
                    d = self.dnf(a, negate)
                    if len(d) == 1:
                        for t in terms:
                            t.extend(d[0])
                    else:
                        if len(terms) * len(d) > MAX_TERMS:
                            self.error(node[1], f"spec expands to more than {MAX_TERMS} disjuncts")
                        terms = [t + s for t in terms for s in d]
                return terms
            terms = []
            for a in args:
                terms += self.dnf(a, negate)
                if len(terms) > MAX_TERMS:
                    self.error(node[1], f"spec expands to more than {MAX_TERMS} disjuncts")
            return terms
        if op in ("+", "-", "*", "/"):
            self.error(node[1], f"expected a formula, got the arithmetic operator '{op}'")
        self.error(node[1], f"unknown operator '{op}'")

    # ---- commands ---------------------------------------------------------------------------------------------
    def declare(self, node):
        if len(node) != 4 or not isinstance(node[2], int) or not isinstance(node[3], int):
            self.error(node[0], "expected (declare-const NAME Real)")
        self.declare_tokens(node[2], node[3])

    def declare_tokens(self, name_tok: int, sort_tok: int):
        name, sort = self.tokens[name_tok], self.tokens[sort_tok]
        m = _VAR.fullmatch(name)
        if not m:
            self.error(name_tok, f"variable name '{name}' is not X_i (input) or Y_j (output)")
        if sort != "Real":
            self.error(sort_tok, f"unsupported sort '{sort}' (VNN-LIB variables are Real)")
        if name in self.vars:
            self.error(name_tok, f"{name} is declared twice")
        kind, idx = (0 if m.group(1) == "X" else 1), int(m.group(2))
        self.vars[name] = (kind, idx)
        self.decl[kind][idx] = name_tok

    def count(self, kind: int, given: int | None) -> int:
        letter, what = ("X", "inputs") if kind == 0 else ("Y", "outputs")
        decl = self.decl[kind]
        if not decl:
            self.error(None, f"spec declares no {what} {letter}_i")
        n = max(decl) + 1
        if len(decl) != n:
            missing = min(set(range(n)) - set(decl))
            self.error(decl[n - 1], f"{letter}_{n - 1} is declared but {letter}_{missing} is not")
        if given is not None and n != given:
            at = decl[given] if n > given else decl[n - 1]
            self.error(at, f"spec declares {n} {what} {letter}_0..{letter}_{n - 1} but the network has {given}")
        return n

    def spec(self, n_inputs: int | None, n_outputs: int | None) -> Spec:
        common: list = []      # atoms of single-term asserts: conjoined into every term
        multi: list = [[]]     # product of the multi-term asserts
        n_asserts = 0
        toks, names, rounded = self.tokens, self.vars, self.rounded
        i, n = 0, len(toks)
        while i < n:
            # fast paths for (declare-const NAME Real) and (assert (op X_i number)), the bulk of image specs
            if toks[i] == "(" and i + 4 < n:
                t1 = toks[i + 1]
                if t1 == "declare-const" and toks[i + 4] == ")" and toks[i + 2] not in "()" \
                        and toks[i + 3] not in "()":
                    self.declare_tokens(i + 2, i + 3)
                    i += 5
                    continue
                if t1 == "assert" and i + 7 < n and toks[i + 2] == "(" and toks[i + 6] == ")" \
                        and toks[i + 7] == ")":
                    ge, v = _CMP.get(toks[i + 3]), names.get(toks[i + 4])
                    if ge is not None and v is not None and v[0] == 0:
                        f = rounded.get((toks[i + 5], ge))
                        if f is None and _NUM.fullmatch(toks[i + 5]):
                            f = self.bound(v[1], i + 5, ge, i + 2)[3]
                        if f is not None:
                            common.append((0, v[1], ge, f, i + 2))
                            n_asserts += 1
                            i += 8
                            continue
            if toks[i] == ")":
                self.error(i, "unbalanced parentheses: ')' has no matching '('")
            if toks[i] != "(":
                self.error(i, f"unexpected token '{toks[i]}' outside a form")
            form, i = self.subtree(i)
            cmd = self.head(form)
            if cmd == "declare-const":
                self.declare(form)
            elif cmd == "assert":
                n_asserts += 1
                multi = self.assertion(form, common, multi)
            elif cmd == "declare-fun":
                self.error(form[1], "declare-fun is not VNN-LIB 1.0: use (declare-const NAME Real)")
            elif cmd not in _IGNORED:
                self.error(form[1], f"unknown command '{cmd}'")
        if not n_asserts:
            self.error(None, "empty spec: no assert")
        n_in, n_out = self.count(0, n_inputs), self.count(1, n_outputs)
        return self.build(common, multi, n_in, n_out, {"format": "vnnlib-1.0", "asserts": n_asserts})

    def assertion(self, form, common: list, multi: list) -> list:
        """Add an (assert F) to the single-term atoms `common` or the product `multi`; returns the new multi."""
        if len(form) != 3:
            self.error(form[1], "'assert' takes exactly one formula")
        d = self.dnf(form[2])
        if len(d) == 1:
            common.extend(d[0])
            return multi
        if len(multi) * len(d) > MAX_TERMS:
            self.error(form[1], f"spec expands to more than {MAX_TERMS} disjuncts")
        return [t + s for t in multi for s in d]

    def build(self, common: list, multi: list, n_in: int, n_out: int, meta: dict) -> Spec:
        """The Spec of the conjunction of `common` atoms with the disjunction of `multi` terms."""
        if not any(a[0] == 1 for a in common) and not any(a[0] == 1 for t in multi for a in t):
            self.error(None, "empty spec: no output constraint (no assert mentions a Y_j)")

        base_lo, base_hi = [-math.inf] * n_in, [math.inf] * n_in
        base_rows = []
        self._apply(common, base_lo, base_hi, base_rows)
        cases: dict[tuple, Case] = {}
        base_box = None  # (key, case) of the box shared by all terms without input atoms
        for term in multi:
            rows = list(base_rows)
            if base_box is not None and not any(a[0] == 0 for a in term):
                self._apply(term, base_lo, base_hi, rows)  # output rows only: the box is untouched
                key, case = base_box
            else:
                lo, hi = list(base_lo), list(base_hi)
                self._apply(term, lo, hi, rows)
                key, case = self._box(lo, hi, (common, term), cases)
                if not any(a[0] == 0 for a in term):
                    base_box = key, case
            if not rows:
                first = (term or common)[0][4]
                self.error(first, "input region has no output constraint (its conjunction mentions no Y_j)")
            C = np.zeros((len(rows), n_out))
            d = np.empty(len(rows))
            for r, (coeffs, const) in enumerate(rows):
                for j, w in coeffs.items():
                    C[r, j] += w
                d[r] = const
            case.disjuncts.append(Disjunct(torch.from_numpy(C), torch.from_numpy(d)))
        return Spec(list(cases.values()), n_in, n_out, source=self.source, meta={**meta, "terms": len(multi)})

    def _box(self, lo: list, hi: list, atoms: tuple[list, list], cases: dict) -> tuple[tuple, Case]:
        """Check a term's box (both bounds on every input, non-empty) and find or make its case."""
        lo_a, hi_a = np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64)
        bad = np.flatnonzero((lo_a > hi_a) | np.isinf(lo_a) | np.isinf(hi_a))
        if bad.size:
            i = int(bad[0])
            if lo[i] > hi[i]:
                last = [a[4] for a in atoms[0] + atoms[1] if a[0] == 0 and a[1] == i][-1]
                self.error(last, f"empty input box: {self.name(0, i)} lower bound {lo[i]!r} > upper bound {hi[i]!r}")
            side = "lower" if lo[i] == -math.inf else "upper"
            self.error(self.decl[0][i], f"{self.name(0, i)} has no {side} bound")
        key = (tuple(lo), tuple(hi))
        case = cases.get(key)
        if case is None:
            case = cases[key] = Case(Box(torch.from_numpy(lo_a), torch.from_numpy(hi_a)), [])
        return key, case

    def _apply(self, atoms, lo, hi, rows):
        for a in atoms:
            if a[0] == 0:
                _, i, lower, v, _ = a
                if lower:
                    if v > lo[i]:
                        lo[i] = v
                elif v < hi[i]:
                    hi[i] = v
            else:
                rows.append((a[1], a[2]))


def parse_vnnlib(text: str, source: str = "<string>", n_inputs: int | None = None,
                 n_outputs: int | None = None) -> Spec:
    """Parse VNN-LIB text into a `Spec` (the unsafe set). `source` names it in error messages. Version 2.0 text (a
    version declaration or a declare-network) goes to engine/io/vnnlib2.py.

    When `n_inputs` / `n_outputs` are given (the network's sizes), the declared X_i / Y_j must match them.
    """
    from .vnnlib2 import is_vnnlib2, parse_vnnlib2
    if is_vnnlib2(text):
        return parse_vnnlib2(text, source, n_inputs, n_outputs)
    try:
        return _SpecReader(text, str(source)).spec(n_inputs, n_outputs)
    except RecursionError:
        raise BadInput("formula nested too deeply", str(source)) from None


def _read_text(path) -> str:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        raise BadInput("file not found", str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read file: {e}", str(path)) from None


def read_vnnlib(path, n_inputs: int | None = None, n_outputs: int | None = None) -> Spec:
    """Read a VNN-LIB 1.0 or 2.0 file into a `Spec`; see `parse_vnnlib`."""
    return parse_vnnlib(_read_text(path), str(path), n_inputs, n_outputs)


# ---- writer ------------------------------------------------------------------------------------------------

def _exact(v: float) -> str:
    """The exact decimal value of a float64 (so reading it back needs no outward rounding)."""
    return str(Decimal(v))


def _row(c: np.ndarray, d: float) -> str:
    terms = [f"(* {float(w)!r} Y_{j})" for j, w in enumerate(c) if w != 0]
    lhs = terms[0] if len(terms) == 1 else f"(+ {' '.join(terms)})" if terms else "0"
    return f"(>= {lhs} {(-float(d))!r})" if terms else f"(>= {float(d)!r} 0)"


def format_vnnlib(spec: Spec) -> str:
    """Write a Spec with box input sets as VNN-LIB 1.0 text; `parse_vnnlib` reads it back to the same Spec."""
    out = [f"; written by nncert ({len(spec.cases)} input region(s))"]
    out += [f"(declare-const X_{i} Real)" for i in range(spec.n_inputs)]
    out += [f"(declare-const Y_{j} Real)" for j in range(spec.n_outputs)]
    boxes = []
    for c in spec.cases:
        s = c.input_set
        if isinstance(s, LpBall) and s.p != float("inf"):
            raise BadInput("VNN-LIB 1.0 cannot express an l2 ball input set", spec.source)
        boxes.append(s.bounding_box())
        for dj in c.disjuncts:
            if dj.C.shape[0] == 0:
                raise BadInput("VNN-LIB 1.0 writer: a disjunct has no rows", spec.source)

    def bounds(b: Box) -> list[str]:
        return [f"({op} X_{i} {_exact(v)})" for i, (l, u) in enumerate(zip(b.lower.tolist(), b.upper.tolist()))
                for op, v in ((">=", l), ("<=", u))]

    def conj(dj: Disjunct) -> str:
        return " ".join(_row(r, v) for r, v in zip(dj.C.numpy(), dj.d.tolist()))

    return "\n".join(out + asserts(spec, boxes, bounds, conj)) + "\n"


def asserts(spec: Spec, boxes: list, bounds, conj) -> list[str]:
    """The assert lines of a writer (1.0 and 2.0): one case as box asserts and an (or (and ...)) of its disjuncts,
    several as one (or (and box... rows...)); bounds(box) and conj(disjunct) give the atoms in the version's names."""
    if len(spec.cases) == 1:
        out = [f"(assert {a})" for a in bounds(boxes[0])] + ["(assert (or"]
        out += [f"    (and {conj(dj)})" for dj in spec.cases[0].disjuncts]
    else:
        out = ["(assert (or"]
        for b, c in zip(boxes, spec.cases):
            bx = " ".join(bounds(b))
            out += [f"    (and {bx} {conj(dj)})" for dj in c.disjuncts]
    return out + ["))"]


# ---- counterexamples ----------------------------------------------------------------------------------------

def _names(spec: Spec | None) -> tuple[list[str], list[str]] | None:
    """Element names of a VNN-LIB 2.0 spec's input and output tensors (None for a 1.0 spec)."""
    if spec is None or spec.meta.get("format") != "vnnlib-2.0":
        return None
    from .vnnlib2 import element_names
    return tuple(element_names(spec.meta[k]["name"], spec.meta[k]["shape"]) for k in ("input", "output"))


def parse_counterexample(text: str, source: str = "<string>", spec: Spec | None = None) \
        -> tuple[np.ndarray, np.ndarray]:
    """`((X_0 v) ... (Y_0 v) ...)`, optionally after a `sat` line -> (x, y) float64 arrays in index order.
    With a VNN-LIB 2.0 `spec`, its element names (`X[0,3]`) are read as well."""
    elements = {n: (k, i) for k, ns in enumerate(_names(spec) or ()) for i, n in enumerate(ns)}
    r = _Reader(text, str(source))
    forms = r.tree()
    if forms and isinstance(forms[0], int) and r.tokens[forms[0]] == "sat":
        forms = forms[1:]
    if len(forms) == 1 and not isinstance(forms[0], int) and len(forms[0]) > 1 \
            and not isinstance(forms[0][1], int):
        forms = forms[0][1:]  # the outer parentheses
    vals: tuple[dict, dict] = ({}, {})
    for f in forms:
        if isinstance(f, int) or len(f) != 3 or not isinstance(f[1], int):
            r.error(r.tok(f), "expected (X_i value) or (Y_j value)")
        name = r.tokens[f[1]]
        m = _VAR.fullmatch(name)
        if not m and name not in elements:
            r.error(f[1], f"variable name '{name}' is not X_i or Y_j" + (" or an element of the spec's tensors"
                                                                          if elements else ""))
        v, sign = f[2], 1.0
        if not isinstance(v, int):  # (- 0.5)
            if len(v) == 3 and isinstance(v[1], int) and r.tokens[v[1]] == "-" and isinstance(v[2], int):
                v, sign = v[2], -1.0
            else:
                r.error(v[0], "expected a number")
        t = r.tokens[v]
        if not _NUM.fullmatch(t) or not math.isfinite(float(t)):
            r.error(v, f"bad number '{t}'")
        kind, idx = elements[name] if not m else ((0 if m.group(1) == "X" else 1), int(m.group(2)))
        if idx in vals[kind]:
            r.error(f[1], f"{name} is given twice")
        vals[kind][idx] = sign * float(t)
    out = []
    for kind, letter in ((0, "X"), (1, "Y")):
        n = max(vals[kind], default=-1) + 1
        if not n or len(vals[kind]) != n:
            missing = min(set(range(max(n, 1))) - set(vals[kind]))
            names = _names(spec)
            r.error(None, f"counterexample has no value for {names[kind][missing] if names else f'{letter}_{missing}'}")
        out.append(np.array([vals[kind][i] for i in range(n)], dtype=np.float64))
    return out[0], out[1]


def read_counterexample(path, spec: Spec | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a VNN-COMP counterexample / result file; see `parse_counterexample`."""
    return parse_counterexample(_read_text(path), str(path), spec)


def format_counterexample(x, y, spec: Spec | None = None) -> str:
    """VNN-COMP counterexample text `((X_0 v)\\n (X_1 v)\\n ... (Y_0 v)\\n ...)`, exact float64 repr values;
    for a VNN-LIB 2.0 `spec`, named by its tensors' elements (`(X[0,0] v)`).

    No trailing newline and no `sat` line: a result file is `"sat\\n" + format_counterexample(x, y) + "\\n"`.
    """
    xs = np.asarray(torch.as_tensor(x, dtype=torch.float64).flatten())
    ys = np.asarray(torch.as_tensor(y, dtype=torch.float64).flatten())
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise BadInput("counterexample contains NaN or Inf")
    names = _names(spec) or ([f"X_{i}" for i in range(xs.size)], [f"Y_{j}" for j in range(ys.size)])
    if (len(names[0]), len(names[1])) != (xs.size, ys.size):
        raise BadInput("counterexample sizes do not match the spec's tensors")
    items = [f"({n} {float(v)!r})" for n, v in zip(names[0], xs)] + [f"({n} {float(v)!r})" for n, v in zip(names[1], ys)]
    return "(" + "\n ".join(items) + ")"


def format_result_counterexample(cex: dict, spec_path) -> str:
    """`format_counterexample` of a result's {"x", "y"}, named as the spec file at `spec_path` names its variables
    (X_i for VNN-LIB 1.0, tensor elements for 2.0; the file is re-read only when it is 2.0)."""
    spec = None
    text = _read_text(spec_path)
    from .vnnlib2 import is_vnnlib2
    if is_vnnlib2(text):
        spec = parse_vnnlib(text, str(spec_path))
    return format_counterexample(cex["x"], cex["y"], spec)
