"""MILP complete verification (engine/search/milp.py) against exact oracles and ground truth.

Oracle: the exact maximum of min_r (C_r y + d_r) over a box, by enumerating every activation pattern of the
neurons that interval arithmetic leaves unstable and solving one LP per pattern (scipy's linprog; a formulation
independent of the big-M encoding under test).
"""
from __future__ import annotations

import csv
import itertools
import time

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from torch import nn

from nncert.engine.counterexample import to_model_precision
from nncert.engine.io.data import shared_dir
from nncert.engine.search.milp import milp_verify, preactivation_bounds
from nncert.engine.mlp import mlp_chain
from nncert.engine.spec import Box, Case, Disjunct, Spec
from nncert.engine.io.torch_import import from_torch

torch.set_num_threads(1)


def _mlp(sizes, seed):
    torch.manual_seed(seed)
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return from_torch(nn.Sequential(*layers).eval(), (sizes[0],))


def _ibp_unstable(layers, lo, hi):
    """Interval bounds of each pre-activation (plain numpy, independent of engine code)."""
    out, hl, hu = [], lo, hi
    for W, b in layers[:-1]:
        Wp, Wn = np.clip(W, 0, None), np.clip(W, None, 0)
        l, u = Wp @ hl + Wn @ hu + b, Wp @ hu + Wn @ hl + b
        out.append((l, u))
        hl, hu = np.clip(l, 0, None), np.clip(u, 0, None)
    return out


def exact_max(layers, lo, hi, C, d, max_unstable=8):
    """max over the box of min_r (C y + d)_r, exactly (LP per activation pattern); None if too many patterns."""
    ib = _ibp_unstable(layers, lo, hi)
    unstable = [(k, j) for k, (l, u) in enumerate(ib) for j in range(len(l)) if l[j] < 0 < u[j]]
    if len(unstable) > max_unstable:
        return None
    n = len(lo)
    best = -np.inf
    for bits in itertools.product((0, 1), repeat=len(unstable)):
        pat = dict(zip(unstable, bits))
        P, q = np.eye(n), np.zeros(n)          # h = P x + q
        A_ub, b_ub = [], []
        for k, (l, u) in enumerate(ib):
            W, b = layers[k]
            Zp, zq = W @ P, W @ q + b
            act = np.array([1.0 if l[j] >= 0 else 0.0 if u[j] <= 0 else float(pat[(k, j)]) for j in range(len(l))])
            for j in range(len(l)):
                if (k, j) in pat:               # active: z >= 0 ; inactive: z <= 0
                    s = 1.0 if pat[(k, j)] else -1.0
                    A_ub.append(np.r_[-s * Zp[j], 0.0])
                    b_ub.append(s * zq[j])
            P, q = Zp * act[:, None], zq * act
        WL, bL = layers[-1]
        Y, yq = C @ WL @ P, C @ (WL @ q + bL) + d
        for r in range(len(d)):                # t <= Y_r x + yq_r
            A_ub.append(np.r_[-Y[r], 1.0])
            b_ub.append(yq[r])
        res = linprog(np.r_[np.zeros(n), -1.0], A_ub=np.array(A_ub), b_ub=np.array(b_ub),
                      bounds=[(lo[i], hi[i]) for i in range(n)] + [(None, None)], method="highs")
        if res.status == 0:
            best = max(best, -res.fun)
    return best


def _case(rng, net, width):
    centre = rng.uniform(-1, 1, net.n_inputs)
    lo, hi = centre - width, centre + width
    m = int(rng.integers(1, 3))
    C = rng.normal(size=(m, net.n_outputs))
    return lo, hi, C


@pytest.mark.parametrize("relu_bab", [True, False], ids=["relu-bab", "milp-only"])
@pytest.mark.parametrize("seed", range(12))
def test_verdict_agrees_with_exact_enumeration(seed, relu_bab):
    rng = np.random.default_rng(seed)
    net = _mlp((4, 12, 12, 3), seed)
    layers = mlp_chain(net)
    for width in (0.3, 0.15, 0.05, 0.02):
        lo, hi, C = _case(rng, net, width)
        opt0 = exact_max(layers, lo, hi, C, np.zeros(len(C)))
        if opt0 is not None:
            break
    assert opt0 is not None
    # shift every row by s: the exact optimum becomes opt0 + s (sat for s > 0, unsat for s < 0)
    for delta in (-0.05, 0.05, -1e-3, 1e-3):
        d = np.full(len(C), delta - opt0)
        spec = Spec([Case(Box(lo, hi), [Disjunct(C, d)])], net.n_inputs, net.n_outputs)
        # attack=False: the sat verdicts must come from ReLU-split branch and bound or the MILP itself
        verdict, cex, st = milp_verify(net, spec, time.perf_counter() + 20, attack=False, tighten=seed % 2 == 0,
                                       relu_bab=relu_bab)
        assert verdict == ("sat" if delta > 0 else "unsat"), (delta, opt0, st)
        if not relu_bab:
            assert st["by"] != "relu-bab"
        if verdict == "sat":
            x = torch.tensor(cex["x"], dtype=torch.float64)
            assert bool(to_model_precision(x[None], Box(lo, hi))[1].contains(x[None])[0])  # as the model sees it
            y = net.to(torch.float32)(x[None].float()).double()[0]
            assert float((C @ y.numpy() + d).min()) >= 0


def test_two_disjuncts_unsat_only_when_both_refuted():
    rng = np.random.default_rng(7)
    net = _mlp((4, 10, 10, 3), 3)
    layers = mlp_chain(net)
    lo, hi = rng.uniform(-1, 0, 4), None
    hi = lo + 0.2
    C1, C2 = np.array([[1.0, -1.0, 0.0]]), np.array([[0.0, 1.0, -1.0], [1.0, 0.0, -1.0]])
    m1 = exact_max(layers, lo, hi, C1, np.zeros(1))
    m2 = exact_max(layers, lo, hi, C2, np.zeros(2))
    for s1, s2, want in ((-0.02, -0.02, "unsat"), (-0.02, 0.02, "sat"), (0.02, -0.02, "sat")):
        spec = Spec([Case(Box(lo, hi), [Disjunct(C1, np.full(1, s1 - m1)), Disjunct(C2, np.full(2, s2 - m2))])],
                    4, 3)
        verdict, _, _ = milp_verify(net, spec, time.perf_counter() + 20, attack=False)
        assert verdict == want


@pytest.mark.parametrize("seed", range(4))
def test_joint_milp_over_disjuncts_agrees_with_exact_enumeration(seed):
    """One MILP for all open disjuncts (choice binaries): unsat only when every disjunct's exact maximum is
    below 0, sat (with a counterexample in that disjunct's set) when any one of them reaches it."""
    rng = np.random.default_rng(100 + seed)
    net = _mlp((4, 12, 12, 3), seed)
    layers = mlp_chain(net)
    Cs = [rng.normal(size=(int(rng.integers(1, 3)), 3)) for _ in range(3)]
    for _ in range(200):   # a box with unstable neurons (so binaries), few enough for exact_max to enumerate
        lo = rng.uniform(-1, 1, 4)
        hi = lo + rng.uniform(0.05, 0.5)
        n_unstable = sum(int(((l < 0) & (u > 0)).sum()) for l, u in _ibp_unstable(layers, lo, hi))
        if 4 <= n_unstable <= 10:
            break
    opts = [exact_max(layers, lo, hi, C, np.zeros(len(C)), max_unstable=10) for C in Cs]
    joint = 0
    for reach in (None, 0, 1, 2):          # which disjunct is reachable (by 1e-3), if any
        djs = [Disjunct(C, np.full(len(C), (1e-3 if k == reach else -1e-3) - o))
               for k, (C, o) in enumerate(zip(Cs, opts))]
        spec = Spec([Case(Box(lo, hi), djs)], 4, 3)
        for tighten in (True, False):      # without tightening (and its LP refutations) more reach the MILP
            verdict, cex, st = milp_verify(net, spec, time.perf_counter() + 20, attack=False, relu_bab=False,
                                           tighten=tighten)
            assert verdict == ("unsat" if reach is None else "sat"), (reach, st)
            joint += bool(st["milps"]) and st["regions"][0]["disjuncts"] > 1
            if verdict == "sat":
                y = net.to(torch.float32)(torch.tensor(cex["x"])[None].float()).double()[0].numpy()
                assert float((Cs[reach] @ y + djs[reach].d.numpy()).min()) >= 0
    assert joint, "no MILP over several disjuncts ran"


def test_preactivation_bounds_are_sound():
    rng = np.random.default_rng(1)
    for seed in range(4):
        net = _mlp((6, 16, 16, 16, 4), seed)
        layers = mlp_chain(net)
        lo = rng.uniform(-1, 1, 6)
        hi = lo + rng.uniform(0, 0.5, 6)
        pres = {m: preactivation_bounds(layers, lo, hi, m) for m in ("alpha", "crown", "ibp")}
        for pre in pres.values():
            x = lo + rng.uniform(size=(4000, 6)) * (hi - lo)
            h = x
            for (W, b), (l, u) in zip(layers, pre):
                z = h @ W.T + b
                assert (z >= l - 1e-12).all() and (z <= u + 1e-12).all()
                h = np.maximum(z, 0)
        for (la, ua), (lc, uc) in zip(pres["alpha"], pres["crown"]):   # alpha-CROWN is never looser
            assert (la >= lc).all() and (ua <= uc).all()


def test_chain_folds_affine_and_reshape():
    torch.manual_seed(0)
    from nncert.engine.ir import Network, Node
    W1, b1 = torch.randn(5, 4), torch.randn(5)
    W2, b2 = torch.randn(3, 5), torch.randn(3)
    nodes = [Node("r", "reshape", ["x"], attrs={"shape": (4,)}),
             Node("a", "affine", ["r"], {"scale": torch.tensor([2.0, 1.0, 0.5, -1.0]), "shift": torch.tensor(0.3)}),
             Node("l1", "linear", ["a"], {"W": W1, "b": b1}),
             Node("s", "affine", ["l1"], {"scale": torch.rand(5) + 0.5}),
             Node("h", "relu", ["s"]),
             Node("l2", "linear", ["h"], {"W": W2, "b": b2})]
    net = Network("x", (2, 2), nodes)
    layers = mlp_chain(net)
    assert len(layers) == 2
    x = torch.randn(50, 4, dtype=torch.float64)
    h = np.maximum(x.numpy() @ layers[0][0].T + layers[0][1], 0)
    y = h @ layers[1][0].T + layers[1][1]
    assert np.allclose(y, net.to(torch.float64).forward_flat(x).numpy(), atol=1e-10)


def test_unsupported_network_and_deadline():
    torch.manual_seed(0)
    net = from_torch(nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 2)).eval(), (3,))
    spec = Spec([Case(Box(np.zeros(3), np.ones(3)), [Disjunct(np.array([[1.0, -1.0]]), np.zeros(1))])], 3, 2)
    t = time.perf_counter()
    assert milp_verify(net, spec, t + 10)[0] == "unknown"
    relu = _mlp((3, 8, 2), 0)
    v, _, _ = milp_verify(relu, spec, time.perf_counter() - 1)
    assert v == "timeout"                    # a spent budget never turns into a verdict
    assert time.perf_counter() - t < 5


def test_mnist_fc_never_contradicts_truth():
    root = shared_dir()
    if root is None:
        pytest.skip("../shared is absent: no mnist_fc benchmark")
    from nncert.engine.io.onnx_import import load_onnx
    from nncert.engine.counterexample import recheck as verify_recheck
    from nncert.engine.io.vnnlib import read_vnnlib
    bench = root / "benchmarks" / "mnist_fc"
    rows = [r for r in csv.DictReader(open(bench / "truth.csv")) if "256x2" in r["onnx"]]
    net = load_onnx(bench / rows[0]["onnx"])
    solved = 0
    for r in rows[:2] + rows[3:5]:
        spec = read_vnnlib(bench / r["vnnlib"], n_inputs=net.n_inputs, n_outputs=net.n_outputs).padded(net.n_outputs)
        verdict, cex, _ = milp_verify(net, spec, time.perf_counter() + 10)
        if verdict in ("sat", "unsat"):
            solved += 1
            assert verdict == r["answer"], r["vnnlib"]
        if verdict == "sat":
            assert verify_recheck(net, spec, torch.tensor([cex["x"]], dtype=torch.float64)) is not None
    assert solved >= 2


def test_lp_dual_bound_is_an_upper_bound_for_any_multipliers():
    from scipy.sparse import csr_matrix

    from nncert.engine.search.milp import lp_dual_bound
    rng = np.random.default_rng(3)
    for _ in range(20):
        m, n = 6, 5
        A = rng.normal(size=(m, n))
        clo, chi = -rng.uniform(0.5, 2, n), rng.uniform(0.5, 2, n)
        x0 = rng.uniform(clo, chi)
        rlo = np.where(rng.uniform(size=m) < 0.5, -np.inf, A @ x0 - rng.uniform(0, 1, m))
        rhi = np.where(np.isinf(rlo), A @ x0 + rng.uniform(0, 1, m), np.inf)
        c = rng.normal(size=n)
        A_ub = np.r_[A[np.isfinite(rhi)], -A[np.isfinite(rlo)]]
        b_ub = np.r_[rhi[np.isfinite(rhi)], -rlo[np.isfinite(rlo)]]
        res = linprog(-c, A_ub=A_ub, b_ub=b_ub, bounds=list(zip(clo, chi)), method="highs")
        assert res.status == 0
        opt = -res.fun
        for y in (rng.normal(size=m), np.zeros(m), 10 * rng.normal(size=m)):
            assert lp_dual_bound(c, y, csr_matrix(A), rlo, rhi, clo, chi) >= opt - 1e-12


def _lp_tightened(seed, sizes, width):
    """(layers, lo, hi, CROWN bounds, their LP tightening, LPs solved) of a random MLP on a random box."""
    from nncert.engine.search.milp import tightened_bounds
    rng = np.random.default_rng(seed)
    layers = mlp_chain(_mlp(sizes, seed - 3))
    lo = rng.uniform(-1, 1, sizes[0])
    hi = lo + width
    pre = preactivation_bounds(layers, lo, hi, "crown")
    return (layers, lo, hi, pre, *tightened_bounds(layers, lo, hi, pre, time.perf_counter() + 60))


def test_lp_tightened_bounds_are_sound_and_tighter():
    layers, lo, hi, pre, tight, n_lp = _lp_tightened(5, (5, 16, 16, 16, 3), 0.6)
    rng = np.random.default_rng(0)
    assert n_lp > 0
    width = sum(float((u - l).sum()) for l, u in pre)
    assert sum(float((u - l).sum()) for l, u in tight) < width
    x = lo + rng.uniform(size=(20000, 5)) * (hi - lo)
    x = np.r_[x, lo + rng.integers(0, 2, size=(32, 5)) * (hi - lo)]
    h = x
    for (W, b), (l, u) in zip(layers, tight):
        z = h @ W.T + b
        assert (z >= l).all() and (z <= u).all()
        h = np.maximum(z, 0)


def _encoded_points(seed, net_seed, n):
    """A 3-hidden-layer MLP's encoding over a unit box (CROWN bounds) and n sampled inputs plus the box corners:
    (layers, pre, enc, xs)."""
    from nncert.engine.search.milp import _Encoding
    rng = np.random.default_rng(seed)
    layers = mlp_chain(_mlp((4, 12, 12, 12, 3), net_seed))
    lo = rng.uniform(-1, 1, 4)
    hi = lo + 1.0
    pre = preactivation_bounds(layers, lo, hi, "crown")
    xs = np.r_[lo + rng.uniform(size=(n, 4)) * (hi - lo),
               lo + np.array(list(itertools.product((0, 1), repeat=4))) * (hi - lo)]
    return layers, pre, _Encoding.build(layers, lo, hi, pre), xs


def test_encoding_holds_at_every_network_point():
    """Every row and column bound of the encoding holds (to 1e-9) at the columns' values of sampled inputs and box
    corners: the pre-activation columns, the ReLU rows and the binaries agree with the real network."""
    layers, pre, enc, xs = _encoded_points(5, 5, 2000)
    assert enc.n_binary > 10
    A, rlo, rhi, clo, chi = enc.matrix()
    for x in xs:
        v, h = enc.assignment(layers, pre, x)
        r = A @ v
        assert (r >= rlo - 1e-9).all() and (r <= rhi + 1e-9).all()
        assert (v >= clo - 1e-9).all() and (v <= chi + 1e-9).all()
        z = x
        for W, b in layers[:-1]:
            z = np.maximum(W @ z + b, 0)
        assert np.allclose(h, z)


def test_ideal_cuts_hold_at_every_network_point():
    """Cuts separated at random fractional points of the encoding never cut off a point the network reaches
    (sampled inputs and box corners, with their exact activations)."""
    from scipy.sparse import csr_matrix
    layers, pre, enc, xs = _encoded_points(3, 4, 3000)
    rng = np.random.default_rng(3)
    clo, chi = np.array(enc.col_lo), np.array(enc.col_hi)
    cuts = [c for _ in range(50) for c in enc.ideal_cuts(clo + rng.uniform(size=len(clo)) * (chi - clo), 0.0)]
    assert len(cuts) > 100
    C = csr_matrix((np.concatenate([v for _, v, _ in cuts]), np.concatenate([i for i, _, _ in cuts]),
                    np.r_[0, np.cumsum([len(i) for i, _, _ in cuts])]), shape=(len(cuts), len(clo)))
    ub = np.array([u for _, _, u in cuts])
    V = np.array([enc.assignment(layers, pre, x)[0] for x in xs])
    assert (C @ V.T <= ub[:, None]).all()


def test_ideal_cuts_tighten_lp_bounds_soundly():
    """The cut rounds narrow the LP bounds beyond plain LPs, and the bounds still hold at sampled points."""
    from nncert.engine.search import milp
    layers, lo, hi, pre, tight, _ = _lp_tightened(6, (5, 48, 48, 48, 3), 0.8)
    rounds = milp.CUT_ROUNDS
    try:
        milp.CUT_ROUNDS = 0
        plain, _ = milp.tightened_bounds(layers, lo, hi, pre, time.perf_counter() + 60)
    finally:
        milp.CUT_ROUNDS = rounds
    width = [float((u - l).sum()) for l, u in tight[1:]]
    assert all(w <= p + 1e-9 for w, p in zip(width, (float((u - l).sum()) for l, u in plain[1:])))
    assert sum(width) < 0.95 * sum(float((u - l).sum()) for l, u in plain[1:])
    rng = np.random.default_rng(1)
    h = lo + rng.uniform(size=(20000, 5)) * (hi - lo)
    for (W, b), (l, u) in zip(layers, tight):
        z = h @ W.T + b
        assert (z >= l).all() and (z <= u).all()
        h = np.maximum(z, 0)


def test_lp_tightening_stops_after_a_probe_that_gains_nothing():
    """Bounds that are LP-tight already: the second pass solves at most the probe's LPs per layer (2 per neuron)."""
    from nncert.engine.search import milp
    layers, lo, hi, _, tight, _ = _lp_tightened(6, (5, 48, 48, 48, 3), 0.8)
    unstable = [int(((l < 0) & (u > 0)).sum()) for l, u in tight[1:]]
    assert max(unstable) > milp.TIGHTEN_PROBE     # the probe is a strict part of some layer
    again, n_lp = milp.tightened_bounds(layers, lo, hi, tight, time.perf_counter() + 60)
    assert n_lp <= sum(2 * min(k, milp.TIGHTEN_PROBE) for k in unstable)
    for (l, u), (l2, u2) in zip(tight, again):
        assert (l2 >= l).all() and (u2 <= u).all()


def test_spec_naming_fewer_outputs_and_no_deadline():
    net = _mlp((4, 12, 12, 3), 1)
    layers = mlp_chain(net)
    lo, hi = np.full(4, -0.1), np.full(4, 0.1)
    C = np.array([[1.0, -1.0]])
    opt = exact_max(layers, lo, hi, np.c_[C, np.zeros(1)], np.zeros(1), max_unstable=10)
    assert opt is not None
    for s, want in ((-0.05, "unsat"), (0.05, "sat")):
        spec = Spec([Case(Box(lo, hi), [Disjunct(C, np.array([s - opt]))])], 4, 2)
        for attack in (True, False):
            assert milp_verify(net, spec, float("inf"), attack=attack)[0] == want


def test_highs_banner_kept_off_stdout():
    """`--json` output on stdout must stay parseable: HiGHS's construction banner is muted."""
    import subprocess
    import sys
    code = "import highspy; from nncert.engine.search.milp import _quiet; _quiet(highspy.Highs); print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout == "ok\n", out.stdout
