"""VNN-LIB 1.0 reader: shared benchmark specs against an independent S-expression evaluator, counterexamples,
random specs (text -> Spec vs the evaluator; Spec -> text -> Spec), outward rounding, the broken-spec corpus."""
import csv
import math
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from nncert.engine.io.data import shared_dir
from nncert.engine.errors import BadInput
from nncert.engine.spec import Box, Case, Disjunct, Spec
from nncert.engine.io.vnnlib import (format_counterexample, format_vnnlib, parse_counterexample, parse_vnnlib,
                                  read_counterexample, read_vnnlib)

SHARED = shared_dir()
SPEC_FILES = sorted(SHARED.glob("benchmarks/*/vnnlib/*.vnnlib")) if SHARED else []
CE_FILES = sorted(SHARED.glob("benchmarks/*/own_counterexamples/*.counterexample")) if SHARED else []
BAD = sorted((Path(__file__).parent / "bad_inputs").glob("vnnlib_*.vnnlib"))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add contention on a shared machine
    yield
    torch.set_num_threads(n)


needs_shared = pytest.mark.skipif(SHARED is None, reason="shared benchmarks not found (set NNCERT_SHARED)")


# ---- an independent oracle: S-expressions evaluated directly on points (closed < and >) ----------------------

def sexprs(text: str) -> list:
    toks = re.sub(r";[^\n]*", "", text).replace("(", " ( ").replace(")", " ) ").split()
    stack = [[]]
    for t in toks:
        if t == "(":
            stack.append([])
        elif t == ")":
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(t)
    assert len(stack) == 1
    return stack[0]


def evaluate(e, env: dict):
    """Numbers as float64, variables from env (arrays over points); returns arrays (bool for formulas)."""
    if isinstance(e, str):
        return env[e] if e in env else float(e)
    op, *args = e
    v = [evaluate(a, env) for a in args]
    if op == "and":
        return np.logical_and.reduce(v)
    if op == "or":
        return np.logical_or.reduce(v)
    if op in ("<=", "<", ">=", ">", "="):
        f = {"<=": np.less_equal, "<": np.less_equal, ">=": np.greater_equal, ">": np.greater_equal,
             "=": np.equal}[op]
        return np.logical_and.reduce([np.broadcast_to(f(a, b), env["#n"]) for a, b in zip(v, v[1:])])
    if op == "+":
        return sum(v[1:], v[0])
    if op == "-":
        return -v[0] if len(v) == 1 else v[0] - sum(v[1:], 0.0)
    if op == "*":
        out = v[0]
        for w in v[1:]:
            out = out * w
        return out
    raise AssertionError(f"oracle does not know {op}")


def oracle_unsafe(text: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    env = {f"X_{i}": x[:, i] for i in range(x.shape[1])} | {f"Y_{j}": y[:, j] for j in range(y.shape[1])}
    env["#n"] = (len(x),)
    res = np.ones(len(x), dtype=bool)
    for form in sexprs(text):
        if form[0] == "assert":
            res &= evaluate(form[1], env)
    return res


def sample_points(spec: Spec, n: int, seed: int, grid: bool = False):
    """Points inside each case's box, on its faces (exact bounds) and just outside; outputs with ties.

    Returns x, y and a mask of the points that lie on a face (where outward rounding may differ)."""
    rng = np.random.default_rng(seed)
    xs, face = [], []
    for c in spec.cases:
        lo, hi = c.input_set.lower.numpy(), c.input_set.upper.numpy()
        u = lo + rng.random((n, lo.size)) * (hi - lo)
        k = n // 3
        on = rng.random((k, lo.size)) < 0.3
        u[:k] = np.where(on, np.where(rng.random((k, lo.size)) < 0.5, lo, hi), u[:k])
        i = rng.integers(0, lo.size, n - 2 * k)
        delta = 0.01 * (hi - lo)[i] + 1e-3
        side = rng.random(n - 2 * k) < 0.5
        rows = np.arange(2 * k, n)
        u[rows, i] = np.where(side, lo[i] - delta, hi[i] + delta)
        xs.append(u)
        face.append(np.arange(n) < k)
    x, face = np.concatenate(xs), np.concatenate(face)
    scale = 1.5 * max([1.0] + [float(d.d.abs().max()) for c in spec.cases for d in c.disjuncts])
    if grid:
        y = rng.integers(-256, 257, (len(x), spec.n_outputs)) / 64.0
    else:
        y = rng.normal(size=(len(x), spec.n_outputs)) * scale
    if spec.n_outputs > 1:  # ties Y_i = Y_j
        t = rng.random(len(x)) < 0.3
        a, b = rng.integers(0, spec.n_outputs, (2, len(x)))
        y[t, a[t]] = y[t, b[t]]
    return x, y, face


def expected_counts(text: str) -> tuple[int, int]:
    """(input regions, disjuncts per region) from the top-level `or`s: an independent count for shared specs."""
    regions, disjuncts = 1, 1
    for form in sexprs(text):
        if form[0] == "assert" and isinstance(form[1], list) and form[1][0] == "or":
            flat = str(form[1])
            if "X_" in flat:
                regions *= len(form[1]) - 1
            if "Y_" in flat and "X_" not in flat:
                disjuncts *= len(form[1]) - 1
    return regions, disjuncts


# ---- shared benchmark specs ------------------------------------------------------------------------------

@needs_shared
@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: f"{p.parts[-3]}/{p.name}")
def test_shared_specs_match_oracle(path):
    text = path.read_text()
    spec = read_vnnlib(path)
    regions, disjuncts = expected_counts(text)
    assert len(spec.cases) == regions
    assert all(len(c.disjuncts) == disjuncts for c in spec.cases)
    assert spec.n_inputs == len(re.findall(r"declare-const X_", text))
    assert spec.n_outputs == len(re.findall(r"declare-const Y_", text))
    x, y, face = sample_points(spec, 60, seed=len(text))
    ours = spec.unsafe(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    ref = oracle_unsafe(text, x, y)
    assert 0 < ref.sum() < len(ref)  # the samples exercise both answers
    assert (ours[~face] == ref[~face]).all()
    assert (ours[face] | ~ref[face]).all()  # on faces the read box may only be larger (outward rounding)


def _onnx_sizes(path: Path) -> tuple[int, int]:
    onnx = pytest.importorskip("onnx")
    m = onnx.load(str(path), load_external_data=False)
    init = {i.name for i in m.graph.initializer}
    size = lambda v: math.prod(d.dim_value for d in v.type.tensor_type.shape.dim)
    (inp,) = [v for v in m.graph.input if v.name not in init]
    return size(inp), size(m.graph.output[0])


@needs_shared
def test_shared_specs_match_their_networks():
    pairs = set()
    for inst in SHARED.glob("benchmarks/*/instances.csv"):
        with open(inst) as f:
            pairs |= {(inst.parent / r[0], inst.parent / r[1]) for r in csv.reader(f) if r}
    first = {}  # each spec with the first network it is paired with (networks of a benchmark share shapes)
    for onnx_path, spec_path in sorted(pairs):
        first.setdefault(spec_path, onnx_path)
    sizes = {}
    for spec_path, onnx_path in sorted(first.items()):
        if onnx_path not in sizes:
            sizes[onnx_path] = _onnx_sizes(onnx_path)
        n_in, n_out = sizes[onnx_path]
        spec = read_vnnlib(spec_path, n_inputs=n_in, n_outputs=n_out)
        assert (spec.n_inputs, spec.n_outputs) == (n_in, n_out)
        with pytest.raises(BadInput, match="but the network has"):
            read_vnnlib(spec_path, n_inputs=n_in, n_outputs=n_out + 1)


@needs_shared
@pytest.mark.parametrize("path", CE_FILES, ids=lambda p: p.name)
def test_shared_counterexamples_are_unsafe(path):
    prop = path.stem.split("__")[-1]
    spec = read_vnnlib(path.parent.parent / "vnnlib" / f"{prop}.vnnlib")
    x, y = read_counterexample(path)
    assert (x.size, y.size) == (spec.n_inputs, spec.n_outputs)
    assert spec.unsafe(torch.from_numpy(x)[None], torch.from_numpy(y)[None], tol=1e-6).item()
    # and the independent oracle agrees on the outputs (inputs with the same 1e-6 tolerance via clipping)
    case = next(c for c in spec.cases if c.input_set.contains(torch.from_numpy(x)[None], 1e-6).item())
    xc = np.clip(x, case.input_set.lower.numpy(), case.input_set.upper.numpy())
    assert oracle_unsafe(Path(spec.source).read_text(), xc[None], y[None]).item()


# ---- random specs ------------------------------------------------------------------------------------------

def _num(v: float, rng) -> str:
    """A dyadic value written in one of the decimal spellings VNN-LIB files use."""
    s = repr(float(v))
    forms = [s, s.rstrip("0") if "." in s else s, f"{v:e}", f"{Fraction(v).numerator}" if v == int(v) else s]
    if 0 < abs(v) < 1:
        forms.append(("-" if v < 0 else "") + s.lstrip("-")[1:])  # .5 / -.25
    return forms[rng.integers(len(forms))]


def _bound_atoms(lo, hi, rng) -> list[str]:
    out = []
    for i, (a, b) in enumerate(zip(lo, hi)):
        if a == b and rng.random() < 0.5:
            out.append(f"(= X_{i} {_num(a, rng)})" if rng.random() < 0.5 else f"(= {_num(a, rng)} X_{i})")
            continue
        out.append(f"(>= X_{i} {_num(a, rng)})" if rng.random() < 0.5 else f"(<= {_num(a, rng)} X_{i})")
        out.append(f"(<= X_{i} {_num(b, rng)})" if rng.random() < 0.5 else f"(> {_num(b, rng)} X_{i})")
        if rng.random() < 0.2:  # a redundant looser bound
            out.append(f"(<= X_{i} {_num(b + 1, rng)})")
    rng.shuffle(out)
    return out


def _term(n_out, rng) -> str:
    """A linear term over outputs with dyadic coefficients, in varied syntax."""
    j = int(rng.integers(n_out))
    c = float(rng.choice([-2, -1, -0.5, 0.5, 1, 2, 3]))
    k = rng.integers(6)
    if k == 0:
        return f"Y_{j}"
    if k == 1:
        return f"(* {_num(c, rng)} Y_{j})" if rng.random() < 0.5 else f"(* Y_{j} {_num(c, rng)})"
    if k == 2:
        return f"(- Y_{j})"
    if k == 3:
        return f"(+ {_term(n_out, rng)} {_term(n_out, rng)} {_num(rng.integers(-16, 17) / 8, rng)})"
    if k == 4:
        return f"(- {_term(n_out, rng)} {_term(n_out, rng)})"
    return _num(rng.integers(-16, 17) / 8, rng)


def _y_atom(n_out, rng) -> str:
    op = rng.choice(["<=", ">=", "<", ">"])
    k = rng.integers(3)
    if k == 0:  # output vs a (not necessarily dyadic) constant
        c = rng.choice(["1e-3", "-0.3", ".7", "0.1", "2", "-1.5e-1"])
        return f"({op} Y_{rng.integers(n_out)} {c})" if rng.random() < 0.5 else f"({op} {c} Y_{rng.integers(n_out)})"
    if k == 1:
        return f"({op} Y_{rng.integers(n_out)} Y_{rng.integers(n_out)})"
    return f"({op} {_term(n_out, rng)} {_term(n_out, rng)})"


def _y_formula(n_out, rng, depth=0) -> str:
    if depth >= 2 or rng.random() < 0.3:
        return _y_atom(n_out, rng)
    op = "or" if rng.random() < 0.6 else "and"
    return f"({op} " + " ".join(_y_formula(n_out, rng, depth + 1) for _ in range(rng.integers(1, 4))) + ")"


def random_spec_text(seed: int) -> str:
    rng = np.random.default_rng(seed)
    n_in, n_out = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    lines = [f"; random spec {seed}"] + [f"(declare-const X_{i} Real)" for i in range(n_in)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    boxes = []
    for _ in range(int(rng.integers(1, 4))):
        lo = rng.integers(-8, 9, n_in) / 8
        boxes.append((lo, lo + rng.integers(0, 9, n_in) / 8))
    y_asserts = [f"(assert {_y_formula(n_out, rng)})" for _ in range(int(rng.integers(1, 4)))]
    if len(boxes) == 1:
        atoms = _bound_atoms(*boxes[0], rng)
        while atoms:  # split the bounds over asserts, some grouped under `and`
            k = int(rng.integers(1, 4))
            group, atoms = atoms[:k], atoms[k:]
            lines.append(f"(assert {group[0]})" if k == 1 or len(group) == 1 else
                         f"(assert (and {' '.join(group)}))")
    else:  # disjunctive input regions, some carrying their own output atoms
        regions = []
        for lo, hi in boxes:
            extra = f" {_y_formula(n_out, rng, 1)}" if rng.random() < 0.5 else ""
            regions.append(f"    (and {' '.join(_bound_atoms(lo, hi, rng))}{extra})")
        lines.append("(assert (or\n" + "\n".join(regions) + "\n))")
    lines += y_asserts
    order = rng.permutation(len(lines) - 1 - n_in - n_out) + 1 + n_in + n_out  # asserts in any order
    lines = lines[:1 + n_in + n_out] + [lines[i] for i in order]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("seed", range(40))
def test_random_specs_match_oracle(seed):
    text = random_spec_text(seed)
    spec = parse_vnnlib(text, f"random{seed}")
    x, y, _ = sample_points(spec, 90, seed, grid=True)
    ours = spec.unsafe(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    ref = oracle_unsafe(text, x, y)
    assert (ours == ref).all(), text  # dyadic data: exact in float64, faces and ties included


def random_spec(seed: int) -> Spec:
    g = torch.Generator().manual_seed(seed)
    n_in, n_out = int(torch.randint(1, 6, (1,), generator=g)), int(torch.randint(1, 5, (1,), generator=g))
    cases = []
    for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
        lo = torch.randn(n_in, generator=g, dtype=torch.float64)
        hi = lo + torch.rand(n_in, generator=g, dtype=torch.float64) * (torch.rand(n_in, generator=g) < 0.8)
        djs = []
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            m = int(torch.randint(1, 4, (1,), generator=g))
            scale = 10.0 ** torch.randint(-3, 4, (m, 1), generator=g)
            C = torch.randn(m, n_out, generator=g, dtype=torch.float64) * scale
            C[torch.rand(m, n_out, generator=g) < 0.3] = 0
            C[0, 0] = 1.0 if torch.rand(1, generator=g) < 0.3 else C[0, 0]
            djs.append(Disjunct(C, torch.randn(m, generator=g, dtype=torch.float64) * 1e3))
        cases.append(Case(Box(lo, hi), djs))
    return Spec(cases, n_in, n_out)


@pytest.mark.parametrize("seed", range(25))
def test_write_read_round_trip(seed):
    spec = random_spec(seed)
    back = parse_vnnlib(format_vnnlib(spec))
    assert (back.n_inputs, back.n_outputs, len(back.cases)) == (spec.n_inputs, spec.n_outputs, len(spec.cases))
    for a, b in zip(spec.cases, back.cases):
        assert torch.equal(a.input_set.lower, b.input_set.lower) and torch.equal(a.input_set.upper, b.input_set.upper)
        assert len(a.disjuncts) == len(b.disjuncts)
        for p, q in zip(a.disjuncts, b.disjuncts):
            assert torch.equal(p.C, q.C) and torch.equal(p.d, q.d)


@needs_shared
@pytest.mark.parametrize("path", SPEC_FILES[::4], ids=lambda p: p.name)
def test_shared_specs_round_trip(path):
    spec = read_vnnlib(path)
    back = parse_vnnlib(format_vnnlib(spec))
    for a, b in zip(spec.cases, back.cases, strict=True):
        assert torch.equal(a.input_set.lower, b.input_set.lower) and torch.equal(a.input_set.upper, b.input_set.upper)
        for p, q in zip(a.disjuncts, b.disjuncts, strict=True):
            assert torch.equal(p.C, q.C) and torch.equal(p.d, q.d)


# ---- semantics details ---------------------------------------------------------------------------------

HEAD = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"


def test_input_bounds_round_outward():
    for dec in ["0.1", "0.029999999329447746", "-0.3", "0.679857769", "1e-7", "0.5", "-2", "3.0e-1"]:
        spec = parse_vnnlib(HEAD + f"(assert (>= X_0 {dec}))(assert (<= X_0 {dec}))(assert (<= Y_0 Y_1))")
        lo, hi = spec.cases[0].input_set.lower.item(), spec.cases[0].input_set.upper.item()
        r = Fraction(dec)
        assert Fraction(lo) <= r <= Fraction(hi)
        assert hi == lo if Fraction(float(dec)) == r else math.nextafter(lo, math.inf) == hi
    # a scaled bound is exact rational arithmetic rounded outward: 3 X_0 <= 1
    spec = parse_vnnlib(HEAD + "(assert (<= (* 3 X_0) 1))(assert (<= (/ X_0 -2) 0.5))(assert (<= Y_0 Y_1))")
    box = spec.cases[0].input_set
    up = box.upper.item()
    assert box.lower.item() == -1.0 and Fraction(up) >= Fraction(1, 3) > Fraction(math.nextafter(up, -1))


def test_distribution_and_negation():
    text = HEAD + ("(assert (and (>= X_0 0) (<= X_0 1)))\n"
                   "(assert (or (<= Y_0 0.5) (>= Y_1 2)))\n(assert (or (<= Y_0 Y_1) (and (> Y_0 3) (< Y_1 -1))))")
    spec = parse_vnnlib(text)
    assert len(spec.cases) == 1 and len(spec.cases[0].disjuncts) == 4  # (A or B) and (C or D)
    # not(Y_0 <= Y_1 and Y_0 = 2): closure is Y_0 >= Y_1 or Y_0 <= 2 or Y_0 >= 2
    spec = parse_vnnlib(HEAD + "(assert (<= 0 X_0 1))(assert (not (and (<= Y_0 Y_1) (= Y_0 2))))")
    y = torch.tensor([[1.0, 3.0], [2.0, 5.0], [3.0, 1.0]], dtype=torch.float64)
    assert spec.unsafe(torch.zeros(3, 1, dtype=torch.float64), y).all()
    assert [len(d.C) for d in spec.cases[0].disjuncts] == [1, 1, 1]
    # a chained comparison bounds X_0 on both sides
    assert spec.cases[0].input_set.lower.item() == 0 and spec.cases[0].input_set.upper.item() == 1


def test_mixed_regions_are_separate_cases():
    text = HEAD + ("(assert (or (and (>= X_0 0) (<= X_0 0.5) (<= Y_0 0))\n"
                   "            (and (>= X_0 0.5) (<= X_0 1) (>= Y_1 0) (>= Y_1 Y_0))\n"
                   "            (and (<= X_0 0.5) (>= X_0 0) (>= Y_0 7))))")
    spec = parse_vnnlib(text)
    assert [len(c.disjuncts) for c in spec.cases] == [2, 1]
    assert spec.cases[1].disjuncts[0].C.tolist() == [[0.0, 1.0], [-1.0, 1.0]]


def test_ignored_commands_and_comments():
    spec = parse_vnnlib("; c\n(set-logic QF_LRA) ; trailing (\n" + HEAD + "(assert (<= 0 X_0 1))(assert (<= Y_0 Y_1))"
                        "\n(check-sat)\n(get-model)\n; end ) ) (")
    assert len(spec.cases) == 1


def test_deep_nesting_is_bad_input():
    deep = "(and " * 5000 + "(<= Y_0 Y_1)" + ")" * 5000
    with pytest.raises(BadInput, match="nested too deeply"):
        parse_vnnlib(HEAD + f"(assert (<= 0 X_0 1))(assert {deep})")


def test_missing_file():
    with pytest.raises(BadInput, match="file not found"):
        read_vnnlib("/nonexistent/spec.vnnlib")


# ---- broken specs ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_broken_specs(path):
    lines = path.read_text().splitlines()
    m = re.fullmatch(r"; expect: (\S+) (.+)", lines[0])
    assert m, "first line must be '; expect: LINE:COL message'"
    kwargs = {}
    if lines[1].startswith("; args:"):
        kwargs = {k: int(v) for k, v in (a.split("=") for a in lines[1].split()[2:])}
    with pytest.raises(BadInput) as err:
        read_vnnlib(path, **kwargs)
    msg = str(err.value)
    assert "\n" not in msg
    where = f"{path}:" if m.group(1) == "-" else f"{path}:{m.group(1)}:"
    assert msg.startswith(where + " ") and m.group(2) in msg, msg


# ---- counterexamples -------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_counterexample_round_trip(seed):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=int(rng.integers(1, 800))) * 10.0 ** rng.integers(-8, 8), rng.normal(size=10)
    text = format_counterexample(torch.from_numpy(x), y)
    assert text.startswith("((X_0 ") and text.endswith(")") and "\n (X_1 " in text or x.size == 1
    for t in (text, "sat\n" + text + "\n"):
        x2, y2 = parse_counterexample(t)
        assert np.array_equal(x, x2) and np.array_equal(y, y2)


def test_bad_counterexamples():
    with pytest.raises(BadInput, match="no value for X_1"):
        parse_counterexample("((X_0 1.0)\n (X_2 2.0)\n (Y_0 0.5))", "ce")
    with pytest.raises(BadInput, match=r"ce:2:7: bad number"):
        parse_counterexample("((X_0 1.0)\n (X_1 x2)\n (Y_0 0.5))", "ce")
    with pytest.raises(BadInput, match="never closed"):
        parse_counterexample("((X_0 1.0)\n (Y_0 0.5)", "ce")
    with pytest.raises(BadInput, match="NaN"):
        format_counterexample([float("nan")], [0.0])


def test_padded_spec_is_a_copy():
    """Spec.padded widens C with zero columns in a new Spec and leaves the original untouched."""
    import torch
    from nncert.engine.spec import Box, Case, Disjunct, Spec
    C = torch.tensor([[1.0, -1.0]])
    spec = Spec([Case(Box(torch.zeros(2), torch.ones(2)), [Disjunct(C, torch.tensor([0.5]))])], 2, 2)
    wide = spec.padded(4)
    assert wide is not spec and wide.n_outputs == 4 and spec.n_outputs == 2
    assert spec.cases[0].disjuncts[0].C.shape == (1, 2)
    assert torch.equal(wide.cases[0].disjuncts[0].C, torch.tensor([[1.0, -1.0, 0.0, 0.0]]))
    y = torch.tensor([[2.0, 0.0, 7.0, -3.0]])
    assert bool(wide.unsafe(torch.full((1, 2), 0.5), y)) == bool(spec.unsafe(torch.full((1, 2), 0.5), y[:, :2]))
    assert spec.padded(2) is spec
