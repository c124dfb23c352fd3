"""VNN-LIB 2.0 reader and writer: the same Spec as an independent 1.0 translation, exact round trips (the shipped
examples and the shared benchmark specs), counterexamples named by tensor elements, and one clear error per
broken query."""
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nncert.engine.errors import BadInput
from nncert.engine.io.data import shared_dir
from nncert.engine.io.vnnlib import format_counterexample, parse_counterexample, parse_vnnlib, read_vnnlib
from nncert.engine.io.vnnlib2 import format_vnnlib2, is_vnnlib2
from nncert.engine.spec import Box, Case, Disjunct, Spec

EXAMPLES = Path(__file__).parent.parent / "examples" / "digits"
SHARED = shared_dir()

QUERY = """(vnnlib-version <2.0>)
; a network with a 2x3 input and 4 outputs
(declare-network f
    (declare-input  X float32 [2,3] "input")
    (declare-output Y Real [4]))
(assert (and (>= X[0,0] 0.0) (<= X[0,0] 1.0)))
(assert (and (>= X[0,1] -0.5) (<= X[0,1] 0.5) (>= X[0,2] 0.0) (<= X[0,2] 0.1)))
(assert (<= (* -1.0 X[1,0]) 0.0))
(assert (<= X [1, 0] 0.3))
(assert (and (>= (* 2.0 X[1,1]) 1.0) (<= X[1,1] 1.0) (>= X[1,2] -3) (>= (- X[1,2]) -3)))
(assert (or (and (>= Y[1] Y[0]) (> (+ Y[2] (* -1.5 Y[3])) 0.25))
            (== (- Y[3] Y[0]) 1.0)
            (!= Y[2] 7.0)))
"""


def to_vnnlib1(text: str) -> str:
    """An independent translation of a 2.0 query over a 2x3 input / 4 outputs into 1.0 (regex, not the reader)."""
    body = re.sub(r"\(vnnlib-version[^)]*\)|\(declare-network.*?\)\)", "", text, flags=re.S)
    body = re.sub(r"X\s*\[\s*(\d+)\s*,\s*(\d+)\s*\]", lambda m: f"X_{int(m[1]) * 3 + int(m[2])}", body)
    body = re.sub(r"Y\s*\[\s*(\d+)\s*\]", lambda m: f"Y_{m[1]}", body)
    body = body.replace("(== ", "(= ")
    body = re.sub(r"\(!= ([^()]+|\([^()]*\)) ([^()]+)\)", r"(not (= \1 \2))", body)
    decls = "".join(f"(declare-const X_{i} Real)\n" for i in range(6)) + \
        "".join(f"(declare-const Y_{j} Real)\n" for j in range(4))
    return decls + body


def same_spec(a: Spec, b: Spec):
    assert (a.n_inputs, a.n_outputs, len(a.cases)) == (b.n_inputs, b.n_outputs, len(b.cases))
    for ca, cb in zip(a.cases, b.cases):
        assert torch.equal(ca.input_set.lower, cb.input_set.lower)
        assert torch.equal(ca.input_set.upper, cb.input_set.upper)
        assert len(ca.disjuncts) == len(cb.disjuncts)
        for da, db in zip(ca.disjuncts, cb.disjuncts):
            assert torch.equal(da.C, db.C) and torch.equal(da.d, db.d)


def test_reads_like_its_1_0_translation():
    spec = parse_vnnlib(QUERY, "q.vnnlib")
    assert is_vnnlib2(QUERY) and spec.meta["format"] == "vnnlib-2.0"
    assert spec.meta["input"] == {"name": "X", "shape": [2, 3], "type": "float32", "onnx": "input"}
    same_spec(spec, parse_vnnlib(to_vnnlib1(QUERY), "q1.vnnlib"))
    box = spec.cases[0].input_set   # decimals that are not float64s are rounded outward, as in 1.0
    assert box.upper[3].item() == math.nextafter(0.3, 1) and box.lower[4].item() == 0.5


def random_spec(rng, n_in, n_out, n_cases) -> Spec:
    cases = []
    for _ in range(n_cases):
        lo = torch.tensor(rng.uniform(-2, 1, n_in))
        box = Box(lo, lo + torch.tensor(rng.uniform(0, 1, n_in)))
        djs = [Disjunct(torch.tensor(np.where(rng.random((m, n_out)) < 0.5, rng.normal(size=(m, n_out)), 0.0)),
                        torch.tensor(rng.normal(size=m))) for m in rng.integers(1, 4, rng.integers(1, 4))]
        cases.append(Case(box, djs))
    return Spec(cases, n_in, n_out)


@pytest.mark.parametrize("seed", range(20))
def test_random_specs_round_trip_exactly(seed):
    rng = np.random.default_rng(seed)
    shape = [[6], [2, 3], [1, 2, 3]][seed % 3]
    spec = random_spec(rng, 6, 3, 1 + seed % 3)
    back = parse_vnnlib(format_vnnlib2(spec, shape), "rt.vnnlib")
    same_spec(spec, back)
    assert back.meta["input"]["shape"] == shape


def shared_specs():
    if SHARED is None:
        return []
    files = []
    for bench in ("acasxu", "mnist_fc"):
        files += sorted((SHARED / "benchmarks" / bench).glob("vnnlib/*.vnnlib"))[:3]
    return files


@pytest.mark.skipif(SHARED is None, reason="../shared not found (set NNCERT_SHARED)")
@pytest.mark.parametrize("path", shared_specs(), ids=lambda p: p.name)
def test_benchmark_specs_survive_1_0_to_2_0(path):
    spec = read_vnnlib(path)
    same_spec(spec, parse_vnnlib(format_vnnlib2(spec, [1, spec.n_inputs]), "2.vnnlib"))


def test_cli_reads_2_0_and_names_counterexample_elements(tmp_path):
    net_shape = [1, 64]
    for name, want in (("prop_0_0.01", "unsat"), ("prop_0_0.1", "sat")):
        spec = read_vnnlib(EXAMPLES / f"{name}.vnnlib")
        f = tmp_path / f"{name}.vnnlib"
        f.write_text(format_vnnlib2(spec, net_shape, network="digits"))
        out = subprocess.run([sys.executable, "-m", "nncert.engine.cli", "verify", str(EXAMPLES / "mlp.onnx"),
                              str(f)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == want
        if want == "sat":
            cex = "\n".join(lines[1:-1])
            assert cex.startswith("((X[0,0] ") and "(Y[9] " in cex
            x, y = parse_counterexample(cex, spec=read_vnnlib(f))
            assert spec.unsafe(torch.tensor(x)[None], torch.tensor(y)[None], tol=1e-6).item()


def test_counterexample_names_round_trip():
    spec = parse_vnnlib(QUERY)
    x, y = np.arange(6) / 10, np.array([1.0, 2.0, -3.0, 4.5])
    text = format_counterexample(x, y, spec)
    assert text.startswith("((X[0,0] 0.0)") and "(X[1,2] 0.5)" in text and text.endswith("(Y[3] 4.5))")
    back = parse_counterexample("sat\n" + text, spec=spec)
    assert np.array_equal(back[0], x) and np.array_equal(back[1], y)
    with pytest.raises(BadInput, match="not X_i or Y_j"):
        parse_counterexample(text)   # element names need the spec


BROKEN = [
    ("X[0,0] 0.0)", "X[2,0] 0.0)", "index [2,0] out of range for X of shape [2,3]"),
    ("float32 [2,3]", "int8 [2,3]", "element type int8 is not supported"),
    ("float32 [2,3]", "float33 [2,3]", "unknown element type 'float33'"),
    ("float32 [2,3]", "float32 [2,0]", "bad shape"),
    ("<2.0>", "<1.5>", "unsupported VNN-LIB version 1.5"),
    ("(>= X[0,0] 0.0)", "(>= Z[0,0] 0.0)", "undeclared tensor Z"),
    ("(>= X[0,0] 0.0)", "(>= X 0.0)", "X is a tensor of shape [2,3]: name one element"),
    ("(declare-output Y Real [4])", "(declare-hidden H Real [3] \"h\") (declare-output Y Real [4])",
     "declare-hidden (constraints on hidden nodes) is not supported"),
    ("(declare-output Y Real [4])", "(declare-output Y Real [4]) (declare-output Z Real [1])",
     "a second output tensor"),
    ("(declare-output Y Real [4])", "", "has no declare-output"),
    ("(assert (<= X [1, 0] 0.3))", "(assert (<= X [1, 0] 0.3)) (declare-const X_0 Real)",
     "declare-const is VNN-LIB 1.0"),
    ("(<= X[0,2] 0.1)", "(<= X[0,1] 0.1)", "X[0,2] has no upper bound"),
    ("(>= (* 2.0 X[1,1]) 1.0)", "(>= (* X[1,0] X[1,1]) 1.0)", "non-linear term"),
    ("(>= (* 2.0 X[1,1]) 1.0)", "(>= (+ X[1,0] X[1,1]) 1.0)", "couples inputs X[1,0] and X[1,1]"),
    ("(>= Y[1] Y[0])", "(>= Y[1] X[0,0])", "mixes input X[0,0] and output Y[1]"),
    ("(vnnlib-version <2.0>)", "(assert (>= X[0,0] 0.0)) (vnnlib-version <2.0>)", "assert before any declare"),
]


@pytest.mark.parametrize("old,new,message", BROKEN, ids=[b[2][:30] for b in BROKEN])
def test_broken_queries_name_file_line_and_problem(old, new, message):
    assert old in QUERY
    with pytest.raises(BadInput) as e:
        parse_vnnlib(QUERY.replace(old, new, 1), "bad.vnnlib")
    assert message in str(e.value)
    assert re.match(r"bad\.vnnlib:\d+:\d+: ", str(e.value)), str(e.value)


def test_sizes_checked_against_the_network():
    with pytest.raises(BadInput, match="X has 6 elements but the network has 5 inputs"):
        parse_vnnlib(QUERY, "q.vnnlib", n_inputs=5)
