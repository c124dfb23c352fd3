"""Input-splitting branch and bound: exact answers on small networks (grid oracle) and on ACAS Xu (truth.csv)."""
import csv
from pathlib import Path

import pytest
import torch

from nncert.engine.io.data import shared_dir
from nncert.engine.registry import get_registry
from nncert.engine.spec import Box, Case, Disjunct, Spec
from nncert.engine.counterexample import recheck
from nncert.engine.verify import verify

from netgen import random_mlp

F64 = torch.float64


def _grid(lo, hi, n=400):
    t = torch.linspace(0, 1, n, dtype=F64)
    g = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    return lo + g * (hi - lo)


def _lipschitz_y0(net):
    """A crude upper bound of |d y0 / dx|_1 over R^2: product of the layers' l_inf operator norms."""
    L = 1.0
    for node in net.nodes:
        if node.op == "linear":
            L *= float(node.params["W"].double().abs().sum(1).max())
    return L


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bab_exact_on_two_input_mlps(seed):
    """y0 <= t on a 2-D box: with t just below the grid maximum the answer is sat (a grid point violates it);
    with t above the grid maximum by more than what the function can vary between grid points it is unsat.
    BaB must find both, and its counterexample must be real."""
    net = random_mlp((2, 16, 16, 16, 2), seed=seed)
    lo, hi = torch.tensor([-1.0, -1.0], dtype=F64), torch.tensor([1.0, 1.0], dtype=F64)
    x = _grid(lo, hi)
    with torch.no_grad():
        y0 = net.to(F64).forward_flat(x)[:, 0]
    top = float(y0.max())
    step = float((hi - lo).max()) / (400 - 1)
    slack = _lipschitz_y0(net) * step + 1e-3
    reg = get_registry()
    for t, answer in ((top - 1e-3 * (1 + abs(top)), "sat"), (top + slack, "unsat")):
        # unsafe set: y0 - t >= 0
        spec = Spec([Case(Box(lo, hi), [Disjunct(torch.tensor([[1.0, 0.0]]), torch.tensor([-t]))])], 2, 2)
        res = verify(net, spec, domain="auto", timeout=60, registry=reg)
        assert str(res.verdict) == answer, (t, res.verdict, res.evidence)
        if answer == "sat":
            xt = torch.tensor([res.counterexample["x"]], dtype=F64)
            assert recheck(net, spec, xt) is not None


def _acas(cases):
    root = shared_dir()
    if root is None:
        pytest.skip("../shared is absent: no ACAS Xu benchmark")
    folder = root / "benchmarks" / "acasxu"
    truth = {(r["onnx"], r["vnnlib"]): r["answer"] for r in csv.DictReader(open(folder / "truth.csv"))}
    return folder, [(o, v, truth[(o, v)]) for o, v in cases]


# instances that the bounding pass and PGD leave open, so that branch and bound decides them
HARD = [("onnx/ACASXU_run2a_4_2_batch_2000.onnx", "vnnlib/prop_2.vnnlib"),   # unsat: needs the conjunction
        ("onnx/ACASXU_run2a_1_1_batch_2000.onnx", "vnnlib/prop_5.vnnlib"),   # unsat: 4 disjuncts, thin box
        ("onnx/ACASXU_run2a_1_9_batch_2000.onnx", "vnnlib/prop_7.vnnlib")]   # sat: found during the search


def test_bab_decides_hard_acasxu_instances():
    from nncert.engine.io.onnx_import import load_onnx
    from nncert.engine.io.vnnlib import read_vnnlib
    folder, rows = _acas(HARD)
    for onnx, vnnlib, answer in rows:
        net = load_onnx(folder / onnx)
        spec = read_vnnlib(folder / vnnlib, n_inputs=net.n_inputs, n_outputs=net.n_outputs)
        res = verify(net, spec, timeout=100)
        assert str(res.verdict) == answer, f"{onnx} {vnnlib}: {res.verdict} ({res.evidence}), truth {answer}"
        if answer == "sat":
            x = torch.tensor([res.counterexample["x"]], dtype=F64)
            assert recheck(net, spec, x) is not None


@pytest.mark.parametrize("seed", [0, 1])
def test_bab_many_regions_with_their_own_thresholds(seed):
    """Sixteen 2-D regions, each with its own threshold t_k in y0 - t_k >= 0 (the rows are shared, the constants
    not, so one search covers all regions): unsat when every t_k clears its region's grid maximum by the Lipschitz
    slack; sat, with a counterexample inside the one violable region, when one t_k is just below its maximum."""
    net = random_mlp((2, 16, 16, 2), seed=seed)
    f = net.to(F64)
    slack = _lipschitz_y0(net) * 0.5 / (100 - 1) + 1e-3
    corners = torch.stack(torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1).reshape(-1, 2)
    regions, tops = [], []
    for c in corners.to(F64):
        lo, hi = -1 + 0.5 * c, -0.5 + 0.5 * c
        with torch.no_grad():
            tops.append(float(f.forward_flat(_grid(lo, hi, 100))[:, 0].max()))
        regions.append((lo, hi))
    row = torch.tensor([[1.0, 0.0]])

    def spec(thresholds):
        return Spec([Case(Box(lo, hi), [Disjunct(row, torch.tensor([-t]))])
                     for (lo, hi), t in zip(regions, thresholds)], 2, 2)

    safe = [t + slack for t in tops]
    res = verify(net, spec(safe), domain="auto", timeout=60)
    assert str(res.verdict) == "unsat", res.evidence
    k = 5
    risky = list(safe)
    risky[k] = tops[k] - 1e-3 * (1 + abs(tops[k]))
    res = verify(net, spec(risky), domain="auto", timeout=60)
    assert str(res.verdict) == "sat", res.evidence
    x = torch.tensor(res.counterexample["x"], dtype=F64)
    lo, hi = regions[k]
    assert bool(((x >= lo) & (x <= hi)).all()) and recheck(net, spec(risky), x[None]) is not None



def test_boxes_stay_within_the_aspect_bound_and_cersyve_closes(monkeypatch):
    """cersyve lane_keep_finetune_con (truth: unsat): with CROWN's hidden bounds carried into sub-boxes, every box
    the search takes up keeps each input at least 1/(2 MAX_ASPECT) as wide (relative to the root) as its widest
    (a split goes only to inputs within MAX_ASPECT of the widest). Without that rule re-bounding an unchanged box
    won the split: inputs were halved to width 0 and the search timed out at depth 59; with it, unsat."""
    import time

    import nncert.engine.search.bab as bab
    from nncert.engine.api import load, read_vnnlib
    root = (shared_dir() or Path("/nonexistent")) / "benchmarks" / "vnncomp2025" / "cersyve"
    if not root.is_dir():
        pytest.skip("../shared/benchmarks/vnncomp2025/cersyve not found (set NNCERT_SHARED)")
    net = load(root / "onnx" / "lane_keep_finetune_con.onnx")
    spec = read_vnnlib(root / "vnnlib" / "prop_lane_keep.vnnlib", net)
    box = spec.cases[0].input_set.bounding_box()
    popped = []
    take = bab._take

    def spy(entry, index):
        out = take(entry, index)
        if isinstance(index, slice) and index.start == 0 and index.stop is not None:
            popped.append(((out[1] - out[0]) / (box.upper - box.lower)).clone())
        return out

    monkeypatch.setattr(bab, "_take", spy)
    reg = get_registry()
    out = bab.input_split_bab([reg.domain("ibp"), reg.domain("crown")], net, spec, time.perf_counter() + 60,
                              lambda x: recheck(net, spec, x))
    assert out.verdict == "unsat" and popped
    for rel in popped:
        assert bool((rel.amin(1) >= rel.amax(1) / (2 * bab.MAX_ASPECT)).all())
