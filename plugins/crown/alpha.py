"""Optimised last backward pass of CROWN for ReLU MLPs: refuting conjunctions of output rows.

For a disjunct {x : C_r f(x) + d_r >= 0 for every row r} over a box, any weights lam_r >= 0 (sum 1) give
    max over the box of  sum_r lam_r (C_r f(x) + d_r)  <  0   =>   the disjunct is empty on the box,
and CROWN bounds that maximum for any lower ReLU slopes alpha in [0, 1] on the unstable neurons (every such
alpha gives a valid linear lower bound alpha z <= relu(z)). With the hidden pre-activation bounds held fixed, the
best (lam, alpha) make this bound the optimum of the triangle LP relaxation of the conjunction (Salman et al. 2019,
"A Convex Relaxation Barrier to Tight Robustness Verification of Neural Networks"; the alpha of Xu et al. 2021,
"Fast and Complete", alpha-CROWN). We search them by a few steps of Adam, starting from the plain CROWN slopes and
from lam concentrated on the row with the smallest plain bound, and keep the best bound seen: every iterate is a
sound bound, so the search quality affects tightness only.

Guarantee: the returned value u[b, k] satisfies, in exact arithmetic and after the domain's widening,
max over box b of sum_r lam_r (C_r f(x)) <= u[b, k] for the lam of disjunct k reported with it.
"""
from __future__ import annotations

import torch

from nncert.engine.kernels.linear_bounds import concretize_box_torch, relu_relax
from nncert.engine.optim import Adam

ITERS, LR = 8, 0.3


def split_hidden(inter: torch.Tensor, dims) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Hidden pre-activation bounds [B, 2 * sum(dims[1:-1])] (linear_bounds layout) -> [(l_k, u_k)]."""
    out, off = [], 0
    for n in dims[1:-1]:
        out.append((inter[:, off:off + n], inter[:, off + n:off + 2 * n]))
        off += 2 * n
    return out


def _upper(rows, bias, Ws, bs, relax, alphas, lo, hi):
    """Upper bound [P] of rows @ h_{L-1} + bias over each box, h the last hidden vector; rows [P, n_{L-1}], bias [P],
    with lower slopes alphas[j] [P, n_j] on the unstable neurons of hidden layer j (the plain slope elsewhere)."""
    Lam, b = -rows[:, None, :], -bias[:, None]
    for j in range(len(relax) - 1, -1, -1):
        al, au, cu, unstable = relax[j]
        a = torch.where(unstable, alphas[j].clamp(0, 1), al)[:, None, :]
        pos, neg = Lam.clamp(min=0), Lam.clamp(max=0)
        Lz = pos * a + neg * au[:, None, :]
        b = b + (neg * cu[:, None, :]).sum(-1)
        if bs[j] is not None:
            b = b + Lz @ bs[j]
        Lam = Lz @ Ws[j]
    return -concretize_box_torch(Lam, b, lo, hi)[:, 0]


def optimise_conjunctions(Ws, bs, lo, hi, inter, C, d, owner, todo=None, iters: int = ITERS, lr: float = LR):
    """Per box and disjunct, weights lam and a sound upper bound of sum_r lam_r C_r f(x) over the box.

    Ws, bs: the MLP's layers (bs entries may be None); lo, hi [B, n0] boxes in the MLP's input coordinates;
    inter: their hidden pre-activation bounds (from linear_bounds.crown_mlp(..., keep_inter=True)); C [m, n_L],
    d [m], owner [m] (disjunct of each row, 0..G-1); todo [B, G] bool: the (box, disjunct) pairs to work on
    (default all). Returns (upper [B, G], lam [B, G, m]) in float64, unwidened, upper = +inf off `todo`; lam is
    zero outside each disjunct's rows. Each pair starts from the plain CROWN bound of its best row, so upper is
    never above that row's CROWN bound.
    """
    B, dt = lo.shape[0], lo.dtype
    G, m = int(owner.max()) + 1, C.shape[0]
    member = owner[None, :] == torch.arange(G)[:, None]                      # [G, m]
    todo = torch.ones(B, G, dtype=torch.bool) if todo is None else todo
    upper = torch.full((B, G), float("inf"), dtype=dt)
    lam_out = torch.zeros(B, G, m, dtype=dt)
    pb, pg = todo.nonzero(as_tuple=True)                                     # the P pairs
    if not len(pb):
        return upper, lam_out
    dims = [Ws[0].shape[1]] + [W.shape[0] for W in Ws]
    relax = []
    for l, u in split_hidden(inter[pb], dims):
        al, au, cu = relu_relax(l, u)
        relax.append((al, au, cu, (l < 0) & (u > 0)))
    lo, hi, d = lo[pb], hi[pb], d.to(dt)
    A = C.to(dt) @ Ws[-1]                                                   # [m, n_{L-1}]
    cb = C.to(dt) @ bs[-1] if bs[-1] is not None else torch.zeros(m, dtype=dt)
    mem = member[pg]                                                         # [P, m]
    P = len(pb)
    with torch.no_grad():   # plain CROWN of every row of each pair's box (upper bound of C_r y)
        rows = torch.arange(m).repeat(P)
        rep = torch.arange(P).repeat_interleave(m)
        plain_u = _upper(A[rows], cb[rows], Ws, bs, [tuple(t[rep] for t in r) for r in relax],
                         [r[0][rep] for r in relax], lo[rep], hi[rep]).reshape(P, m)
    plain = torch.where(mem, plain_u + d, float("inf"))
    start = plain.argmin(1)                                                 # [P]
    best_obj = plain.gather(1, start[:, None])[:, 0]
    best_u = plain_u.gather(1, start[:, None])[:, 0]
    best_lam = torch.zeros(P, m, dtype=dt).scatter_(1, start[:, None], 1.0)
    theta = torch.zeros(P, m, dtype=dt).masked_fill(~mem, -float("inf"))
    theta.scatter_(1, start[:, None], 4.0)
    theta.requires_grad_(True)
    alphas = [r[0].clone().requires_grad_(True) for r in relax]
    opt = Adam([theta, *alphas], lr)
    for it in range(iters):
        lam = torch.softmax(theta, 1)                                       # [P, m], zero off the disjunct
        u = _upper(lam @ A, lam @ cb, Ws, bs, relax, alphas, lo, hi)        # bound of sum lam_r (C_r y)
        obj = u + lam @ d
        with torch.no_grad():
            better = obj < best_obj
            best_obj = torch.where(better, obj, best_obj)
            best_u = torch.where(better, u, best_u)
            best_lam = torch.where(better[:, None], lam, best_lam)
        if it + 1 < iters:
            opt.step(torch.autograd.grad(obj.sum(), opt.params))  # -inf logits off a disjunct: NaN grads, ignored
    upper[pb, pg] = best_u.detach()
    lam_out[pb, pg] = best_lam.detach()
    return upper, lam_out
