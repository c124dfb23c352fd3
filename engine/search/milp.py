"""Complete verification of ReLU MLPs: alpha-CROWN, ReLU-split branch and bound, then mixed-integer linear
programming (HiGHS through `highspy`) for what is left.

Encoding (Tjeng, Xiao & Tedrake 2019, "Evaluating Robustness of Neural Networks with Mixed Integer Programming";
the standard big-M form): for a pre-activation z = W h + b with sound bounds l <= z <= u,
  stable active  (l >= 0): a = z                      (linear, no binary)
  stable inactive(u <= 0): a = 0                      (dropped)
  unstable      (l < 0 < u): 0 <= a <= u, a >= z, a <= z - l (1 - delta), a <= u delta, delta in {0, 1},
                           with z a column of its own (l <= z <= u, z = W h + b): its dense row is written once,
                           not in two rows (mnist_fc 256x4: 96k -> 57k nonzeros, LP tightening 23% faster).
The open disjuncts {C y + d >= 0} of a case share one MILP: maximise t subject to t <= C_r y + d_r for the rows r
of one disjunct, chosen by binaries (_solve_disjuncts). The unsafe set meets some disjunct iff that maximum is >= 0.
Before the MILP, the bounds l, u of layers 2.. are tightened by LPs over this encoding, strengthened with cuts of
the ideal single-neuron formulation (Anderson et al. 2020; _Encoding.ideal_cuts, tighten_layer): fewer unstable
neurons, fewer binaries. The MILP itself gets no cuts (added to it they slowed HiGHS on mnist_fc).

Soundness and tolerances. MILP solvers work with feasibility tolerances (HiGHS: primal 1e-7, integrality 1e-6);
integrality slack only *relaxes* the ReLU encoding (larger feasible set, larger maximum), which is conservative for
`unsat`. What is not covered by the exact maths is the solver's proven bound being off by its tolerances, so a
disjunct is refuted only when the proven bound is below -margin, margin = MARGIN_REL * (1 + scale), where scale
is twice the largest magnitude of the sound (CROWN/IBP) bounds of the disjuncts' rows C y + d and of the
pre-activation bounds (the big-M constants; the disjunct choice constants are differences of two row bounds).
MARGIN_REL = 1e-5 is ~100x HiGHS's primal feasibility tolerance (1e-7) relative to the problem's magnitudes.
We also give t the lower bound -margin, so the solver prunes every branch that cannot reach -margin (a cutoff);
"infeasible" then means the maximum is < -margin as well. `sat` is reported only for a solver point whose input,
re-run on the real model by engine.counterexample.recheck, lies in the unsafe set.

The claims are about the network in exact arithmetic with its float32 weights read as float64, the same
convention as the bound domains (engine/verify.py).
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch

from ..mlp import mlp_chain
from ..progress import report

MARGIN_REL = 1e-5          # see module docstring
MIN_SOLVE_SECONDS = 0.05   # do not start HiGHS with less time than this
ATTACK_FRACTION = 0.1      # share of the budget for the PGD attack (attack=True)
TIGHTEN_FRACTION = 0.4     # share of the time left for LP tightening of intermediate bounds
# a layer's LP tightening stops when its first TIGHTEN_PROBE neurons narrowed by less than TIGHTEN_MIN_GAIN of their
# width: after alpha-CROWN a plain LP relaxation rarely gains (mnist_fc 256x4 eps 0.03/0.05: 0-1% in every layer, for
# 17-46 s of LPs that the MILP then lacks)
TIGHTEN_PROBE, TIGHTEN_MIN_GAIN = 16, 0.02
# cuts of the ideal formulation (_Encoding.ideal_cuts) per tightening LP, added when violated by > CUT_TOL: on mnist_fc
# 256x4 prop_0 eps 0.05 they cut the unstable neurons of layers 2-4 from 86/5/67 to 58/1/27 in 30 s (plain LPs: 0-1%
# narrower), and the MILP then proves the instance in 3 s where it had timed out
CUT_ROUNDS, CUT_TOL = 3, 1e-4
# share of the time left for ReLU-split branch and bound before LP tightening and MILP, split evenly among the open
# disjuncts; the first disjunct it does not refute ends the stage, since the rest are then mostly left too (mnist_fc
# 256x4 prop_6 eps 0.03 and prop_7 eps 0.05: 0-79% of each tree closed, none refuted, 14 s the MILP then lacked)
RELU_BAB_FRACTION = 0.05
MIP_HEURISTIC_EFFORT = 0.0 # HiGHS primal heuristics off: MILPs here mostly prove unsat (PGD finds most sat);
                           # on mnist_fc 256x4 this proved 4 of 5 disjuncts in 30 s instead of 1 of 2


# ------------------------------------------------------------------------------------------------- network

# ------------------------------------------------------------------------------------------------- bounds

def _widen(lo, hi):
    from ..numerics import widen
    lo_t, hi_t = widen(torch.as_tensor(lo), torch.as_tensor(hi))
    return lo_t.numpy(), hi_t.numpy()


def preactivation_bounds(layers, lo: np.ndarray, hi: np.ndarray, method: str = "alpha"):
    """Sound, widened bounds [(l_k, u_k)] of every pre-activation z_k = W_k h_{k-1} + b_k (k < L) over the box.

    method "crown": the hidden bounds of one CROWN pass (engine.kernels.linear_bounds.crown_mlp), "alpha": those
    tightened by alpha-CROWN (plugins.crown.alpha.alpha_hidden_bounds), each intersected with interval
    arithmetic from the previous layer's bounds; "ibp": interval arithmetic only.
    """
    hidden = None
    if method in ("crown", "alpha") and len(layers) > 1:
        try:
            from ..kernels.linear_bounds import crown_mlp
            Ws = [torch.as_tensor(W) for W, _ in layers]
            bs = [torch.as_tensor(b) for _, b in layers]
            lo_t, hi_t = torch.as_tensor(lo)[None], torch.as_tensor(hi)[None]
            _, _, inter = crown_mlp(lo_t, hi_t, Ws, bs, keep_inter=True)
            if method == "alpha":
                from nncert.plugins.crown.alpha import alpha_hidden_bounds
                inter = alpha_hidden_bounds(lo_t, hi_t, Ws, bs, inter)
            from nncert.plugins.crown.alpha import split_hidden
            hidden = [(l[0].numpy(), u[0].numpy()) for l, u in
                      split_hidden(inter, [Ws[0].shape[1]] + [W.shape[0] for W in Ws])]
        except Exception:  # the kernels are optional: interval bounds stay sound
            hidden = None
    out = []
    hl, hu = lo, hi
    for k in range(len(layers) - 1):
        W, b = layers[k]
        Wp, Wn = np.clip(W, 0, None), np.clip(W, None, 0)
        il, iu = _widen(Wp @ hl + Wn @ hu + b, Wp @ hu + Wn @ hl + b)
        if hidden is not None:
            cl, cu = _widen(*hidden[k])
            il, iu = np.maximum(il, cl), np.minimum(iu, cu)
        out.append((il, iu))
        hl, hu = np.clip(il, 0, None), np.clip(iu, 0, None)
    return out


def _crown_rows(layers, lo, hi, C, d):
    """Sound, widened CROWN bounds of C f(x) + d over the box, or (None, None) when the kernel is unavailable."""
    try:
        from ..kernels.linear_bounds import crown_mlp
        cl, cu = crown_mlp(torch.as_tensor(lo)[None], torch.as_tensor(hi)[None],
                           [torch.as_tensor(W) for W, _ in layers], [torch.as_tensor(b) for _, b in layers],
                           torch.as_tensor(C))
    except Exception:  # interval bounds stay sound without it
        return None, None
    return _widen(cl[0].numpy() + d, cu[0].numpy() + d)


def _alpha_refutes(layers, lo, hi, pre, C, d, weights: bool = False):
    """Whether alpha-CROWN on the last pass (plugins.crown.alpha.optimise_conjunctions, with the sound hidden
    bounds `pre`) proves the conjunction {C f(x) + d >= 0} empty on the box; with weights=True also the row
    weights lam [m] (numpy) it found (any non-negative weights give a sound single-row relaxation)."""
    from nncert.plugins.crown.alpha import optimise_conjunctions
    from ..numerics import refuted_combination, widen
    Ws = [torch.as_tensor(W) for W, _ in layers]
    bs = [torch.as_tensor(b) for _, b in layers]
    inter = torch.as_tensor(np.concatenate([np.r_[l, u] for l, u in pre]))[None]
    C, d = torch.as_tensor(C, dtype=torch.float64), torch.as_tensor(d, dtype=torch.float64)
    with torch.enable_grad():
        u, lam = optimise_conjunctions(Ws, bs, torch.as_tensor(lo)[None], torch.as_tensor(hi)[None], inter, C, d,
                                       torch.zeros(C.shape[0], dtype=torch.long), iters=20, lr=0.1)
    ok = bool(refuted_combination(widen(u, u)[1], lam, d)[0, 0])
    return (ok, lam[0, 0].numpy()) if weights else ok


def _relu_bab_refutes(layers, lo, hi, pre, A, c, lam, deadline, on_points):
    """engine.search.relu_bab on the row lam . (A h + c) (h the last hidden vector): ("unsat"|"sat"|..., cex, stats)."""
    from .relu_bab import relu_split_bab
    Ws = [torch.as_tensor(W) for W, _ in layers]
    bs = [torch.as_tensor(b) for _, b in layers]
    pt = [(torch.as_tensor(l), torch.as_tensor(u)) for l, u in pre]
    return relu_split_bab(Ws, bs, torch.as_tensor(lo), torch.as_tensor(hi), pt, torch.as_tensor(lam @ A),
                          float(lam @ c), deadline, on_points)


# ------------------------------------------------------------------------------------------------- encoding

def _quiet(make):
    """make() with the process's standard output muted: HiGHS prints its banner on the C level while a Highs is
    constructed, before output_flag can be set, which would corrupt `--json` output on stdout."""
    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        return make()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


class _Encoding:
    """Columns and rows of the network encoding (without the objective), in CSR form for HiGHS; layers are added
    one at a time (LP tightening of layer k needs the encoding of layers < k)."""

    def __init__(self, lo, hi):
        self.col_lo, self.col_hi, self.integer = list(lo), list(hi), []
        self.rows_lo, self.rows_hi, self.starts, self.index, self.value = [], [], [], [], []
        self.n_in = len(lo)
        self.h_cols = np.arange(self.n_in)     # columns of the current hidden vector (-1: constant 0)
        self.layer_cols = []
        self.relus = []     # per layer with unstable neurons: what ideal_cuts separates (see there)

    @classmethod
    def build(cls, layers, lo, hi, pre):
        enc = cls(lo, hi)
        for k, (l, u) in enumerate(pre):
            enc.add_layer(*layers[k], l, u)
        return enc

    @property
    def n_binary(self):
        return len(self.integer)

    def add_layer(self, W, b, l, u):
        h_cols = self.h_cols
        nz_in = h_cols >= 0
        Wk, hc = W[:, nz_in], h_cols[nz_in]
        new = np.full(W.shape[0], -1)
        unstable = []
        for j in range(W.shape[0]):
            if u[j] <= 0:
                continue
            a = self._col(max(l[j], 0.0), u[j])
            new[j] = a
            w = Wk[j]
            nzw = w != 0
            idx, val = hc[nzw], w[nzw]
            if l[j] >= 0:      # a = z
                self._row(b[j], b[j], np.r_[a, idx], np.r_[1.0, -val])
                continue
            dlt = self._col(0.0, 1.0, integer=True)
            unstable.append((j, a, dlt))
            z = self._col(l[j], u[j])       # the pre-activation once, so its dense row is not repeated
            self._row(b[j], b[j], np.r_[z, idx], np.r_[1.0, -val])                  # z = w h + b
            self._row(0.0, np.inf, np.r_[a, z], np.r_[1.0, -1.0])                   # a >= z
            self._row(-np.inf, -l[j], np.r_[a, z, dlt], np.r_[1.0, -1.0, -l[j]])    # a <= z - l (1 - d)
            self._row(-np.inf, 0.0, np.r_[a, dlt], np.r_[1.0, -u[j]])               # a <= u d
        if unstable:
            rows, a, dlt = (np.array(v) for v in zip(*unstable))
            lo, hi = np.array(self.col_lo)[hc], np.array(self.col_hi)[hc]
            Wu = Wk[rows]
            pos = Wu >= 0
            self.relus.append((a, dlt, hc, Wu, b[rows], np.where(pos, lo, hi), np.where(pos, hi, lo),
                               np.abs(Wu) @ np.maximum(np.abs(lo), np.abs(hi)) + np.abs(b[rows])))
        self.h_cols = new
        self.layer_cols.append(new)

    def ideal_cuts(self, v, tol):
        """For each unstable neuron a = relu(w h + b) encoded so far, the inequality of the ideal formulation
        (Anderson et al. 2020, "Strong mixed-integer programming formulations for trained neural networks",
        Thm. 1) that the point v (a relaxation's solution) violates most, when by more than tol:
            a <= sum_{i in I} w_i (h_i - L_i (1 - d)) + (b + sum_{i not in I} w_i U_i) d,
        L_i/U_i the bounds of h_i's column where w_i >= 0, swapped where w_i < 0, I chosen per term as the
        smaller side. Each holds at every point of the encoding with integral d (d = 0: a = 0 <= the sum of
        w_i (h_i - L_i) >= 0; d = 1: the right side is >= w h + b = a), so the cuts only remove fractional
        points. The bound carries a float64 rounding slack of 1e-9 (1 + sum |w_i| max(|L_i|, |U_i|) + |b|).
        Returns [(column indices, values, upper bound)] of rows  a - sum_I w_i h_i - k d <= ub."""
        out = []
        for a, d, hc, W, b, L, U, size in self.relus:
            z = v[d][:, None]
            inside = W * (v[hc][None, :] - L * (1 - z))
            outside = W * U * z
            pick = inside < outside
            viol = v[a] - (np.where(pick, inside, outside).sum(1) + b * z[:, 0])
            for j in np.nonzero(viol > tol)[0]:
                I = pick[j] & (W[j] != 0)
                wl = float(W[j][I] @ L[j][I])
                k = wl + b[j] + float(W[j][~pick[j]] @ U[j][~pick[j]])
                out.append((np.r_[a[j], hc[I], d[j]].astype(np.int32), np.r_[1.0, -W[j][I], -k],
                            -wl + 1e-9 * (1.0 + size[j])))
        return out

    def highs(self, integer: bool, threads: int = 1):
        """A Highs instance holding this encoding (binaries relaxed to [0, 1] unless integer)."""
        import highspy
        h = _quiet(highspy.Highs)
        h.setOptionValue("output_flag", bool(os.environ.get("NNCERT_MILP_LOG")))
        h.setOptionValue("threads", threads)
        h.setOptionValue("random_seed", 0)
        inf = highspy.kHighsInf
        lo, hi = np.array(self.col_lo, dtype=np.float64), np.array(self.col_hi, dtype=np.float64)
        h.addVars(len(lo), lo, hi)
        if self.rows_lo:
            rl, rh = np.array(self.rows_lo), np.array(self.rows_hi)
            rl[np.isinf(rl)] = -inf
            rh[np.isinf(rh)] = inf
            h.addRows(len(rl), rl, rh, len(self.index), np.array(self.starts, dtype=np.int32),
                      np.array(self.index, dtype=np.int32), np.array(self.value, dtype=np.float64))
        if integer and self.integer:
            ints = np.array(self.integer, dtype=np.int32)
            h.changeColsIntegrality(len(ints), ints, np.full(len(ints), highspy.HighsVarType.kInteger))
        return h

    def matrix(self):
        """(A as scipy CSR, row lower, row upper, col lower, col upper) in float64."""
        from scipy.sparse import csr_matrix
        starts = np.r_[np.array(self.starts, dtype=np.int64), len(self.index)]
        A = csr_matrix((np.array(self.value), np.array(self.index, dtype=np.int64), starts),
                       shape=(len(self.rows_lo), len(self.col_lo)))
        return (A, np.array(self.rows_lo), np.array(self.rows_hi), np.array(self.col_lo), np.array(self.col_hi))

    def _col(self, lo, hi, integer=False):
        self.col_lo.append(lo)
        self.col_hi.append(hi)
        c = len(self.col_lo) - 1
        if integer:
            self.integer.append(c)
        return c

    def _row(self, lo, hi, idx, val):
        self.rows_lo.append(lo)
        self.rows_hi.append(hi)
        self.starts.append(len(self.index))
        self.index.extend(idx.tolist())
        self.value.extend(val.tolist())

    def assignment(self, layers, pre, x):
        """Column values of the encoding at input x (for a start solution)."""
        vals = np.zeros(len(self.col_lo))
        vals[:self.n_in] = x
        h = x
        for k, (l, u) in enumerate(pre):
            W, b = layers[k]
            z = W @ h + b
            h = np.maximum(z, 0)
            cols = self.layer_cols[k]
            for j in np.nonzero(cols >= 0)[0]:
                vals[cols[j]] = h[j]
                if l[j] < 0:
                    vals[cols[j] + 1] = 1.0 if z[j] > 0 else 0.0
                    vals[cols[j] + 2] = z[j]
        return vals, h


def lp_dual_bound(c, y, A, rlo, rhi, clo, chi) -> float:
    """A rigorous upper bound of max {c v : rlo <= A v <= rhi, clo <= v <= chi} (all columns bounded) from any
    row multipliers y (Neumaier & Shcherbina 2004, "Safe bounds in linear and mixed-integer programming"):
    c v = y (A v) + (c - A^T y) v, each term bounded by interval arithmetic; multipliers that would need an
    infinite row bound are dropped. A final slack covers float64 rounding of these sums (1e-9 relative, as
    engine.numerics.REL), so the bound holds whatever the LP solver's tolerances were."""
    y = np.where(((y > 0) & np.isinf(rhi)) | ((y < 0) & np.isinf(rlo)), 0.0, y)
    r = c - A.T @ y
    row_terms = np.where(y > 0, y * np.where(np.isinf(rhi), 0.0, rhi), y * np.where(np.isinf(rlo), 0.0, rlo))
    col_terms = np.maximum(r * clo, r * chi)
    vmax = np.maximum(np.abs(clo), np.abs(chi))
    rounding = 1e-9 * (np.abs(row_terms).sum() + np.abs(col_terms).sum()
                       + (abs(A).T @ np.abs(y) + np.abs(c)) @ vmax) + 1e-12
    return float(row_terms.sum() + col_terms.sum() + rounding)


class _CutLP:
    """The LP relaxation of an encoding (binaries relaxed), strengthened per objective by up to CUT_ROUNDS rounds of
    ideal-formulation cuts (_Encoding.ideal_cuts) violated by its solution; cuts an LP did not bind are dropped
    before the next objective, to keep the model small."""

    def __init__(self, enc, threads=1):
        self.enc = enc
        self.h = enc.highs(integer=False, threads=threads)
        self.A0, self.rlo0, self.rhi0, self.clo, self.chi = enc.matrix()
        self.cuts = []                         # the model's rows after the encoding's, in order

    def maximise(self, c, deadline):
        """A rigorous upper bound of max c v over the relaxation and its cuts (lp_dual_bound, whatever the
        solver's tolerances), or None when no LP finished before the deadline."""
        import highspy
        from scipy.sparse import csr_matrix, vstack
        h, n, m0 = self.h, len(self.clo), self.A0.shape[0]
        h.changeColsCost(n, np.arange(n, dtype=np.int32), -c)   # HiGHS minimises -c v
        for rnd in range(CUT_ROUNDS + 1):
            left = deadline - time.perf_counter()
            if left < MIN_SOLVE_SECONDS:
                if not rnd:
                    return None
                break
            h.setOptionValue("time_limit", float(left))
            h.run()
            v = np.asarray(h.getSolution().col_value, dtype=np.float64)
            if rnd == CUT_ROUNDS or v.size != n:
                break
            new = self.enc.ideal_cuts(v, CUT_TOL)
            if not new:
                break
            for idx, val, ub in new:
                h.addRow(-highspy.kHighsInf, ub, len(idx), idx, val)
            self.cuts += new
        cuts = self.cuts
        y = np.asarray(h.getSolution().row_dual, dtype=np.float64)
        if y.size != m0 + len(cuts):
            return None
        A, rlo, rhi = self.A0, self.rlo0, self.rhi0
        if cuts:
            C = csr_matrix((np.concatenate([v for _, v, _ in cuts]), np.concatenate([i for i, _, _ in cuts]),
                            np.r_[0, np.cumsum([len(i) for i, _, _ in cuts])]), shape=(len(cuts), n))
            A = vstack([A, C], format="csr")
            rlo, rhi = np.r_[rlo, np.full(len(cuts), -np.inf)], np.r_[rhi, [ub for _, _, ub in cuts]]
        best = min(lp_dual_bound(c, y, A, rlo, rhi, self.clo, self.chi),
                   lp_dual_bound(c, -y, A, rlo, rhi, self.clo, self.chi))
        idle = np.nonzero(np.abs(y[m0:]) < 1e-12)[0]
        if len(idle):
            h.deleteRows(len(idle), (idle + m0).astype(np.int32))
            keep = np.ones(len(cuts), bool)
            keep[idle] = False
            self.cuts = [r for r, k in zip(cuts, keep) if k]
        return best

    def hidden_objective(self, w):
        """The objective vector of w . h over the encoding's current hidden vector h."""
        live = self.enc.h_cols >= 0
        c = np.zeros(len(self.clo))
        c[self.enc.h_cols[live]] = w[live]
        return c


def tighten_layer(enc, W, b, l, u, deadline, threads=1):
    """Bounds of z = W h + b over the relaxation of enc with cuts (_CutLP), for the neurons unstable under (l, u),
    widest first; every new bound is rigorous (lp_dual_bound) and intersected with (l, u). Stops early when the
    first TIGHTEN_PROBE neurons gained less than TIGHTEN_MIN_GAIN of their width. Returns (l, u, LPs solved)."""
    l, u = l.copy(), u.copy()
    todo = np.nonzero((l < 0) & (u > 0))[0]
    if not len(todo):
        return l, u, 0
    todo = todo[np.argsort(-(u - l)[todo], kind="stable")]
    probe = todo[:TIGHTEN_PROBE]
    probe_width = float((u - l)[probe].sum())
    lp = _CutLP(enc, threads)
    solved = 0
    for i, j in enumerate(todo):
        if i == len(probe) and float((u - l)[probe].sum()) > (1 - TIGHTEN_MIN_GAIN) * probe_width:
            return l, u, solved
        for sign in (1.0, -1.0):               # maximise sign * z_j
            best = lp.maximise(lp.hidden_objective(sign * W[j]), deadline)
            if best is None:
                return l, u, solved
            solved += 1
            best += sign * b[j] + 1e-9 * (1.0 + abs(b[j]))   # the float64 rounding of this sum
            if sign > 0:
                u[j] = min(u[j], best)
            else:
                l[j] = max(l[j], -best)
            if u[j] <= 0 or l[j] >= 0:
                break
    return l, u, solved


def _lp_refutes(lp, A, c, deadline):
    """True when some row r of a disjunct {A h + c >= 0} (h the last hidden vector) has a rigorous LP-with-cuts
    maximum below 0 (_CutLP), so the disjunct is empty."""
    for r in range(A.shape[0]):
        best = lp.maximise(lp.hidden_objective(A[r]), deadline)
        # the slack covers the float64 rounding of this sum
        if best is not None and best + float(c[r]) + 1e-9 * (1.0 + abs(float(c[r]))) < 0:
            return True
    return False


def tightened_bounds(layers, lo, hi, pre, deadline, threads=1):
    """Pre-activation bounds with layers 2.. tightened by LP (layer 1 is exact already), until the deadline.
    Returns (bounds, number of LPs solved)."""
    pre = list(pre)
    enc = _Encoding(lo, hi)
    total = 0
    for k in range(len(pre)):
        if k > 0:
            if time.perf_counter() > deadline:
                break
            l, u, cnt = tighten_layer(enc, *layers[k], *pre[k], deadline, threads)
            total += cnt
            pre[k] = (l, u)
            # interval arithmetic from the tightened layer may now beat the CROWN bounds of the next one
            if k + 1 < len(pre):
                W, b = layers[k + 1]
                hl, hu = np.clip(l, 0, None), np.clip(u, 0, None)
                Wp, Wn = np.clip(W, 0, None), np.clip(W, None, 0)
                il, iu = _widen(Wp @ hl + Wn @ hu + b, Wp @ hu + Wn @ hl + b)
                pre[k + 1] = (np.maximum(pre[k + 1][0], il), np.minimum(pre[k + 1][1], iu))
        enc.add_layer(*layers[k], *pre[k])
    return pre, total


def _solve_disjuncts(enc, layers, pre, groups, margin, deadline, start_x, on_solution, threads):
    """Maximise t over the encoding, where t <= A_r h_{L-1} + c_r for every row r of one chosen disjunct: one
    MILP for all of a region's open disjuncts (groups: [(A [m_j, n], c [m_j], rl, ru)], rl/ru sound bounds of
    the rows). With several, binaries s_j (sum 1) choose the disjunct and each row reads
    t <= A_r h + c_r + M_r (1 - s_j), M_r = T - rl_r, T = max_j min_r ru_r the upper bound of t: inactive
    rows never bind, since t <= T <= A_r h + c_r + M_r. The maximum is >= 0 iff some disjunct is reachable; one
    search shares the network's branching and cuts across the disjuncts (mnist_fc 256x6 prop_7 eps 0.03: 9 s
    instead of 56 s for nine separate MILPs). Returns ("unsat"|"sat"|"unknown"|"timeout", info)."""
    import highspy
    left = deadline - time.perf_counter()
    if left < MIN_SOLVE_SECONDS:
        return "timeout", {}
    h = enc.highs(integer=True, threads=threads)
    h.setOptionValue("mip_rel_gap", 0.0)
    h.setOptionValue("mip_abs_gap", 0.0)
    h.setOptionValue("time_limit", float(left))
    h.setOptionValue("mip_heuristic_effort", MIP_HEURISTIC_EFFORT)
    n = len(enc.col_lo)
    inf = highspy.kHighsInf
    t_hi = max(float(ru.min()) for _, _, _, ru in groups)
    h.addVar(-margin, t_hi)
    t_col = n
    G = len(groups)
    if G > 1:                             # choice binaries s_j, sum_j s_j = 1
        h.addVars(G, np.zeros(G), np.ones(G))
        s_cols = np.arange(n + 1, n + 1 + G, dtype=np.int32)
        h.changeColsIntegrality(G, s_cols, np.full(G, highspy.HighsVarType.kInteger))
        h.addRow(1.0, 1.0, G, s_cols, np.ones(G))
    hc = enc.h_cols
    live = hc >= 0
    for j, (A, c, rl, _) in enumerate(groups):
        for r in range(A.shape[0]):       # t - A_r h + M_r s_j <= c_r + M_r   (M_r = 0 with one disjunct)
            w = A[r][live]
            nz = w != 0
            big = t_hi - float(rl[r]) if G > 1 else 0.0
            idx = np.r_[t_col, hc[live][nz]].astype(np.int32)
            val = np.r_[1.0, -w[nz]]
            if G > 1:
                idx, val = np.r_[idx, s_cols[j]].astype(np.int32), np.r_[val, big]
            h.addRow(-inf, float(c[r]) + big, len(idx), idx, val)
    h.changeColCost(t_col, 1.0)
    h.changeObjectiveSense(highspy.ObjSense.kMaximize)
    if start_x is not None:
        vals, hl = enc.assignment(layers, pre, start_x)
        values = [float(np.min(A @ hl + c)) for A, c, _, _ in groups]
        best = int(np.argmax(values))
        tv = values[best]
        if tv >= -margin:
            sol = highspy.HighsSolution()
            choice = np.eye(G)[best] if G > 1 else np.zeros(0)
            sol.col_value = np.r_[vals, min(tv, t_hi), choice].tolist()
            sol.value_valid = True
            try:
                h.setSolution(sol)
            except Exception:
                pass
    found = {}

    def improving(e):
        try:
            sol = np.asarray(e.data_out.mip_solution)
            if sol.size > t_col and sol[t_col] >= 0:
                cex = on_solution(sol[:enc.n_in])
                if cex is not None:
                    found["cex"] = cex
                    e.interrupt()
        except Exception:  # a failing callback must not abort the solve
            pass

    def interrupt(e):
        # HiGHS reports the dual bound of a maximisation as +inf before the root LP and -inf once every node is
        # pruned (the same state as a final "Infeasible"); both compare correctly below.
        if e.data_out.mip_dual_bound < -margin:
            found["refuted"] = float(e.data_out.mip_dual_bound)
            e.interrupt()
        elif time.perf_counter() > deadline:
            e.interrupt()

    h.cbMipImprovingSolution.subscribe(improving)
    h.cbMipInterrupt.subscribe(interrupt)
    h.run()
    info = h.getInfo()
    status = h.getModelStatus()
    stats = {"status": h.modelStatusToString(status), "dual_bound": float(info.mip_dual_bound),
             "primal": float(info.objective_function_value), "nodes": int(info.mip_node_count)}
    if "cex" in found:
        return "sat", {**stats, "cex": found["cex"]}
    if "refuted" in found:
        return "unsat", {**stats, "dual_bound": found["refuted"]}
    if status == highspy.HighsModelStatus.kInfeasible:
        return "unsat", stats
    if status == highspy.HighsModelStatus.kOptimal:
        # a MILP's proven bound; without binaries HiGHS solved an LP and its optimum is the objective value
        proven = info.mip_dual_bound if enc.integer else info.objective_function_value
        if proven < -margin:
            return "unsat", stats
    if status in (highspy.HighsModelStatus.kOptimal, highspy.HighsModelStatus.kSolutionLimit) \
            or h.getInfo().primal_solution_status == 2:
        sol = np.asarray(h.getSolution().col_value)
        if sol.size > t_col and sol[t_col] >= 0:
            cex = on_solution(sol[:enc.n_in])
            if cex is not None:
                return "sat", {**stats, "cex": cex}
    if time.perf_counter() >= deadline or status == highspy.HighsModelStatus.kTimeLimit:
        return "timeout", stats
    return "unknown", stats


# ------------------------------------------------------------------------------------------------- driver

def _last_rows(A, c, pre, lo, hi):
    """Sound (widened) interval bounds of A h_{L-1} + c from the last hidden layer's bounds."""
    hl = np.clip(pre[-1][0], 0, None) if pre else lo
    hu = np.clip(pre[-1][1], 0, None) if pre else hi
    Ap, An = np.clip(A, 0, None), np.clip(A, None, 0)
    return _widen(Ap @ hl + An @ hu + c, Ap @ hu + An @ hl + c)


def milp_verify(network, spec, deadline: float, bounds_domain: str | None = None, threads: int = 1,
                attack: bool = True, tighten: bool = True, relu_bab: bool = True):
    """Complete check of spec on a ReLU MLP by one MILP per disjunct (see the module docstring for guarantees).

    deadline: absolute time.perf_counter() value, respected by every stage. bounds_domain: "alpha" (default),
    "crown" or "ibp" for the starting pre-activation bounds (preactivation_bounds). attack: first spend up to
    ATTACK_FRACTION of the time on PGD (engine.search.attack.pgd_case; pass False when the caller already ran it).
    relu_bab (with "alpha"): disjuncts alpha-CROWN leaves open first get ReLU-split branch and bound
    (engine.search.relu_bab), RELU_BAB_FRACTION of the time left shared among them. tighten: LP-tighten the bounds of
    layers 2.. with dual-certified bounds (lp_dual_bound), up to TIGHTEN_FRACTION of the time left, before the
    MILPs of the disjuncts still open.
    Returns (verdict in {"sat", "unsat", "unknown", "timeout"}, counterexample dict or None, stats dict).
    `unsat` needs every disjunct of every case refuted with margin; `sat` needs counterexample.recheck to confirm the point.
    Networks other than linear/relu chains (reshape and elementwise affine allowed) and input sets other than
    boxes / l_inf balls give "unknown" at once.
    """
    from ..counterexample import recheck
    t0 = time.perf_counter()
    stats = {"milps": 0, "binaries": 0, "refuted": 0, "lps": 0, "seconds": 0.0}

    def finish(verdict, cex=None, **more):
        stats.update(more)
        stats["seconds"] = time.perf_counter() - t0
        return verdict, cex, stats

    layers = mlp_chain(network)
    if layers is None:
        return finish("unknown", reason="not a linear/relu chain")
    WL, bL = layers[-1]
    if spec.n_outputs > WL.shape[0] or spec.n_inputs != layers[0][0].shape[1]:
        return finish("unknown", reason="spec does not fit the network")
    for case in spec.cases:
        s = case.input_set
        if s.kind not in ("box", "lp") or (s.kind == "lp" and s.p != float("inf")):
            return finish("unknown", reason="only box / l_inf input sets")
    method = bounds_domain or "alpha"
    spec = spec.padded(WL.shape[0])
    if attack:
        from .attack import pgd_case
        stop = min(deadline, t0 + ATTACK_FRACTION * (deadline - t0))
        for case in spec.cases:
            cand = pgd_case(network, case, deadline=stop)
            if len(cand):
                cex = recheck(network, spec, cand)
                if cex is not None:
                    return finish("sat", cex, by="pgd")
    todo, encs = [], {}
    for ci, case in enumerate(spec.cases):
        box = case.input_set.bounding_box()
        lo, hi = box.lower.numpy().copy(), box.upper.numpy().copy()
        pre = preactivation_bounds(layers, lo, hi, method)
        if time.perf_counter() > deadline:
            return finish("timeout")
        rows = []
        for di, dj in enumerate(case.disjuncts):
            if time.perf_counter() > deadline:     # each disjunct's CROWN and alpha-CROWN pass takes a while
                return finish("timeout")
            C = dj.C.numpy()
            C = np.pad(C, ((0, 0), (0, WL.shape[0] - C.shape[1]))) if C.shape[1] < WL.shape[0] else C
            A = C @ WL                                    # rows on the last hidden vector
            c = C @ bL + dj.d.numpy()
            rl, ru = _last_rows(A, c, pre, lo, hi)
            if method != "ibp":
                cl, cu = _crown_rows(layers, lo, hi, C, dj.d.numpy())
                if cl is not None:
                    rl, ru = np.maximum(rl, cl), np.minimum(ru, cu)
            if (ru < 0).any():
                stats["refuted"] += 1
                continue
            lam = None
            if method == "alpha":
                ok, lam = _alpha_refutes(layers, lo, hi, pre, C, dj.d, weights=True)
                if ok:
                    stats["refuted"] += 1
                    continue
            rows.append((di, A, c, C, dj.d, rl, ru, lam))
        if rows and relu_bab and method == "alpha":   # ReLU-split branch and bound first, a share of the time each
            bab_end = time.perf_counter() + RELU_BAB_FRACTION * (deadline - time.perf_counter())
            while rows:     # the first disjunct it cannot refute ends the stage (see RELU_BAB_FRACTION)
                r, now = rows[0], time.perf_counter()
                share = now + max(bab_end - now, 0.0) / len(rows)
                report("relu-bab-disjunct", region=ci, disjunct=r[0], open_disjuncts=len(rows), seconds=share - now)
                v, cex, st = _relu_bab_refutes(layers, lo, hi, pre, r[1], r[2], r[7], share,
                                               lambda x: recheck(network, spec, x))
                stats["relu_bab_domains"] = stats.get("relu_bab_domains", 0) + st["domains"]
                if v == "sat":
                    return finish("sat", cex, by="relu-bab")
                if v != "unsat":
                    break
                stats["refuted"] += 1
                rows = rows[1:]
        if rows and tighten and len(pre) > 1:
            now = time.perf_counter()
            report("lp-tighten", region=ci, seconds=TIGHTEN_FRACTION * (deadline - now))
            pre, n_lp = tightened_bounds(layers, lo, hi, pre, now + TIGHTEN_FRACTION * (deadline - now), threads)
            stats["lps"] += n_lp
        centre = (lo + hi) / 2
        hcen = centre
        for W, b in layers[:-1]:
            hcen = np.maximum(W @ hcen + b, 0)
        open_ = []
        lp = _CutLP(_Encoding.build(layers, lo, hi, pre), threads) if rows and tighten else None
        for di, A, c, C, d, rl, ru, _ in rows:
            if time.perf_counter() > deadline:
                return finish("timeout")
            tl, tu = _last_rows(A, c, pre, lo, hi)
            rl, ru = np.maximum(rl, tl), np.minimum(ru, tu)
            if (ru < 0).any() or (method == "alpha" and tighten and len(c) > 1
                                  and _alpha_refutes(layers, lo, hi, pre, C, d)) \
                    or (lp is not None and _lp_refutes(lp, A, c, deadline)):
                stats["refuted"] += 1
                stats["refuted_tightened"] = stats.get("refuted_tightened", 0) + 1
                continue
            value_at_centre = float(np.min(A @ hcen + c))
            open_.append((value_at_centre, A, c, rl, ru))
        if open_:
            # margin: see the module docstring; the choice constants M_r are at most twice these magnitudes
            scale = max(max(float(np.abs(np.r_[rl, ru]).max()) for _, _, _, rl, ru in open_),
                        max((float(np.abs(np.r_[l, u]).max()) for l, u in pre), default=0.0))
            todo.append((-max(g[0] for g in open_), ci, [g[1:] for g in open_], MARGIN_REL * (1.0 + 2 * scale)))
            encs[ci] = (lo, hi, pre)
    todo.sort(key=lambda r: r[0])        # likely-sat regions first: fail fast
    verdict_all = "unsat"
    for _, ci, groups, margin in todo:
        if time.perf_counter() > deadline:
            return finish("timeout")
        lo, hi, pre = encs[ci]
        enc = _Encoding.build(layers, lo, hi, pre)
        stats["binaries"] = max(stats["binaries"], enc.n_binary)

        def on_solution(x, _lo=lo, _hi=hi):
            xt = torch.as_tensor(np.clip(x, _lo, _hi), dtype=torch.float64)[None]
            return recheck(network, spec, xt)

        stats["milps"] += 1
        report("milp", region=ci, disjuncts=len(groups), binaries=enc.n_binary)
        t_solve = time.perf_counter()
        v, info = _solve_disjuncts(enc, layers, pre, groups, margin, deadline, (lo + hi) / 2, on_solution, threads)
        stats.setdefault("regions", []).append({"case": ci, "disjuncts": len(groups), "verdict": v,
                                                "seconds": round(time.perf_counter() - t_solve, 2),
                                                **{k: w for k, w in info.items() if k != "cex"}})
        if v == "sat":
            return finish("sat", info["cex"], by="milp")
        if v == "unsat":
            stats["refuted"] += len(groups)
            continue
        if v == "timeout":
            return finish("timeout")
        verdict_all = "unknown"
    by = "milp" if todo else "lp-cuts" if "refuted_tightened" in stats else "relu-bab" if "relu_bab_domains" in stats \
        else method
    return finish(verdict_all, by=by)
