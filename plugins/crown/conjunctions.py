"""Refuting conjunctions of output rows on any graph (the graph counterpart of plugins.crown.alpha's
`optimise_conjunctions` for ReLU MLPs).

For a disjunct {x : C_r f(x) + d_r >= 0 for every row r} over a box, any weights lam_r >= 0 give
    max over the box of  sum_r lam_r (C_r f(x) + d_r)  <  0   =>   the disjunct is empty on the box,
and one CROWN backward pass from the combined row sum_r lam_r C_r bounds that maximum for any lower ReLU slopes
alpha in [0, 1] on the unstable ReLU inputs (plugins.crown.bab._Pass; other nonlinear ops keep their fixed
relaxations). A row that no single row refutes can still be refuted by a combination (e.g. Y_0 <= 0 and Y_1 >= 0
near the point where both are tight). lam (a softmax over the disjunct's rows, started on the row with the
smallest plain CROWN bound) and alpha are searched by a few Adam steps; every iterate is a sound bound, so the
search quality affects tightness only. Hidden bounds are CROWN's over each box (fixed).
"""
from __future__ import annotations

import torch

from .alpha import ITERS, LR, search_weights
from .bab import _Pass, _relu_inputs


def optimise_conjunctions_graph(network, bounds, C, d, owner, todo, ops, rule_for, iters: int = ITERS,
                                lr: float = LR):
    """(upper [B, G], lam [B, G, m]) like plugins.crown.alpha.optimise_conjunctions: per (box, disjunct) pair in
    `todo` [B, G], weights lam (zero off the disjunct's rows) and a sound, unwidened upper bound of
    sum_r lam_r C_r f(x) over box b; +inf off `todo`. bounds: {value name: (lo, hi) [B, *shape]} sound over each
    box, the network input's entry being the box itself; rule_for: the CROWN rule table (windowed)."""
    B = todo.shape[0]
    G, m = int(owner.max()) + 1, C.shape[0]
    dt = C.dtype
    upper = torch.full((B, G), float("inf"), dtype=dt)
    lam_out = torch.zeros(B, G, m, dtype=dt)
    pb, pg = todo.nonzero(as_tuple=True)
    if not len(pb):
        return upper, lam_out
    P = len(pb)
    mem = (owner[None, :] == torch.arange(G)[:, None])[pg]                  # [P, m]
    relus = sorted(set(_relu_inputs(network).values()))

    def gather(rep):
        return {k: (v[0][pb[rep]], v[1][pb[rep]]) for k, v in bounds.items()}

    def run(bnd, rows, const, alpha):
        """Upper bounds [D] of rows [D, n_out] . f(x) + const over the boxes of bnd (gather)."""
        p = _Pass(network, bnd, {}, alpha, {}, ops, rule_for, dt)
        return -p.lower(rows, const, point=False)

    with torch.no_grad():   # plain CROWN of every row on each pair's box: the starting point
        rep = torch.arange(P).repeat_interleave(m)
        init = {z: (bounds[z][1] >= -bounds[z][0]).to(dt)[pb[rep]] for z in relus}
        plain_u = run(gather(rep), C.repeat(P, 1), torch.zeros(P * m, dtype=dt), init).reshape(P, m)
    alpha = {z: (bounds[z][1] >= -bounds[z][0]).to(dt)[pb].requires_grad_(True) for z in relus}
    pairs = gather(torch.arange(P))   # each pair's box bounds, gathered once for every step
    with torch.enable_grad():
        best_u, best_lam = search_weights(lambda lam: run(pairs, lam @ C, torch.zeros(P, dtype=dt), alpha),
                                          plain_u, mem, d, list(alpha.values()), iters, lr)
    upper[pb, pg] = best_u
    lam_out[pb, pg] = best_lam
    return upper, lam_out
