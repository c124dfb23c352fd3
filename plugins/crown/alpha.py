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
    """Upper bound [B, G] of rows @ h_{L-1} + bias over each box, h the last hidden vector; rows [B, G, n_{L-1}],
    with lower slopes alphas[j] [B, G, n_j] on the unstable neurons of hidden layer j (and the plain slope elsewhere)."""
    Lam, b = -rows, -bias
    for j in range(len(relax) - 1, -1, -1):
        al, au, cu, unstable = relax[j]
        a = torch.where(unstable[:, None, :], alphas[j].clamp(0, 1), al[:, None, :])
        pos, neg = Lam.clamp(min=0), Lam.clamp(max=0)
        Lz = pos * a + neg * au[:, None, :]
        b = b + (neg * cu[:, None, :]).sum(-1)
        if bs[j] is not None:
            b = b + Lz @ bs[j]
        Lam = Lz @ Ws[j]
    return -concretize_box_torch(Lam, b, lo, hi)


def optimise_conjunctions(Ws, bs, lo, hi, inter, C, d, owner, iters: int = ITERS, lr: float = LR):
    """Per box and disjunct, weights lam and a sound upper bound of sum_r lam_r C_r f(x) over the box.

    Ws, bs: the MLP's layers (bs entries may be None); lo, hi [B, n0] boxes in the MLP's input coordinates;
    inter: their hidden pre-activation bounds (from linear_bounds.crown_mlp(..., keep_inter=True)); C [m, n_L],
    d [m], owner [m] (disjunct of each row, 0..G-1). Returns (upper [B, G], lam [B, G, m]) in float64,
    unwidened; lam is zero outside each disjunct's rows.
    """
    B, dt = lo.shape[0], lo.dtype
    G = int(owner.max()) + 1
    L = len(Ws)
    dims = [Ws[0].shape[1]] + [W.shape[0] for W in Ws]
    relax = []
    for l, u in split_hidden(inter, dims):
        al, au, cu = relu_relax(l, u)
        relax.append((al, au, cu, (l < 0) & (u > 0)))
    A = C.to(dt) @ Ws[-1]                                                   # [m, n_{L-1}]
    cb = C.to(dt) @ bs[-1] if bs[-1] is not None else torch.zeros(C.shape[0], dtype=dt)
    member = owner[None, :] == torch.arange(G)[:, None]                      # [G, m]
    d = d.to(dt)
    with torch.no_grad():   # plain CROWN per row (upper bound of C_r y), to start from each disjunct's best row
        plain_u = _upper(A.expand(B, -1, -1), cb.expand(B, -1), Ws, bs, relax,
                         [r[0][:, None, :].expand(B, A.shape[0], -1) for r in relax], lo, hi)
    plain = plain_u + d
    theta0 = torch.zeros(G, C.shape[0], dtype=dt).masked_fill(~member, -float("inf")).expand(B, G, -1).clone()
    start = torch.where(member, plain[:, None, :], float("inf")).argmin(2)  # [B, G]
    theta0.scatter_(2, start[..., None], 4.0)
    theta = theta0.requires_grad_(True)
    alphas = [r[0][:, None, :].expand(B, G, -1).clone().requires_grad_(True) for r in relax[:L - 1]]
    opt = Adam([theta, *alphas], lr)
    # the plain bound of each disjunct's best row is the first candidate: never looser than CROWN's rows
    best_obj = plain.gather(1, start)
    best_u = plain_u.gather(1, start)
    best_lam = torch.zeros(B, G, C.shape[0], dtype=dt).scatter_(2, start[..., None], 1.0)
    for it in range(iters + 1):
        lam = torch.softmax(theta, 2)                                       # [B, G, m], zero off the disjunct
        u = _upper(lam @ A, lam @ cb, Ws, bs, relax, alphas, lo, hi)        # bound of sum lam_r (C_r y)
        obj = u + lam @ d
        with torch.no_grad():
            better = obj < best_obj
            best_obj = torch.where(better, obj, best_obj)
            best_u = torch.where(better, u, best_u)
            best_lam = torch.where(better[..., None], lam, best_lam)
        if it == iters:
            break
        opt.step(torch.autograd.grad(obj.sum(), opt.params))  # -inf logits off a disjunct: NaN grads, ignored
    return best_u.detach(), best_lam.detach()

