"""Optimised CROWN slopes for ReLU MLPs (alpha-CROWN, Xu et al. 2021, "Fast and Complete"), torch only.

Every lower ReLU slope alpha in [0, 1] on an unstable neuron gives a valid linear lower bound alpha z <= relu(z),
so CROWN with any such slopes is sound; optimising them per bound row by a few steps of Adam tightens the
bounds, and since every iterate is a sound bound, the search quality affects tightness only. Two uses:

* `alpha_hidden_bounds`: the hidden pre-activation bounds, layer by layer, each neuron's lower and upper bound
  with slopes of its own (the bounds found are intersected with the given ones);
* `optimise_conjunctions`: refuting conjunctions of output rows (below).

For a disjunct {x : C_r f(x) + d_r >= 0 for every row r} over a box, any weights lam_r >= 0 (sum 1) give
    max over the box of  sum_r lam_r (C_r f(x) + d_r)  <  0   =>   the disjunct is empty on the box,
and CROWN bounds that maximum for any lower ReLU slopes alpha in [0, 1] on the unstable neurons (every such
alpha gives a valid linear lower bound alpha z <= relu(z)). With the hidden pre-activation bounds held fixed, the
best (lam, alpha) make this bound the optimum of the triangle LP relaxation of the conjunction (Salman et al. 2019,
"A Convex Relaxation Barrier to Tight Robustness Verification of Neural Networks"; the alpha of Xu et al. 2021,
"Fast and Complete", alpha-CROWN). We search them by a few steps of Adam, starting from the plain CROWN slopes and
from lam concentrated on the row with the smallest plain bound, and keep the best bound seen: every iterate is a
sound bound, so the search quality affects tightness only.

Guarantees hold in exact arithmetic for the computed bounds (float64 rounding is left to the caller's widening,
as for every CROWN kernel): hidden bounds contain every pre-activation over the box, and for conjunctions
max over box b of sum_r lam_r (C_r f(x)) <= u[b, k] for the lam of disjunct k reported with it.
"""
from __future__ import annotations

import torch

from nncert.engine import deadline
from nncert.engine.search.optim import Adam
from nncert.engine.kernels.linear_bounds import concretize_box_torch, relu_relax

ITERS, LR = 8, 0.3              # conjunctions (box-splitting search: many boxes, cheap steps)
HIDDEN_ITERS, HIDDEN_LR = 20, 0.1


def split_hidden(inter: torch.Tensor, dims) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Hidden pre-activation bounds [B, 2 * sum(dims[1:-1])] (linear_bounds layout) -> [(l_k, u_k)]."""
    out, off = [], 0
    for n in dims[1:-1]:
        out.append((inter[:, off:off + n], inter[:, off + n:off + 2 * n]))
        off += 2 * n
    return out


def _relaxations(bounds):
    """(al, au, cu, unstable) of each hidden layer from its pre-activation bounds [(l, u)]."""
    return [(*relu_relax(l, u), (l < 0) & (u > 0)) for l, u in bounds]


def _lower(Lam, bias, Ws, bs, relax, alphas, lo, hi):
    """Lower bound [B, R] over each box of Lam @ h + bias, h = relu(z_t) the output of hidden layer t = len(relax)-1
    (z_j = W_j h_{j-1} + b_j, h_{-1} = x); Lam [B, R, n_t], bias [B, R]; alphas[j] [B, R, n_j] (or None: the
    plain adaptive slopes) are the lower slopes on the unstable neurons of layer j."""
    for j in range(len(relax) - 1, -1, -1):
        al, au, cu, unstable = relax[j]
        a = al[:, None, :] if alphas is None else torch.where(unstable[:, None, :], alphas[j].clamp(0, 1),
                                                               al[:, None, :])
        pos, neg = Lam.clamp(min=0), Lam.clamp(max=0)
        Lz = pos * a + neg * au[:, None, :]
        bias = bias + (neg * cu[:, None, :]).sum(-1)
        if bs[j] is not None:
            bias = bias + Lz @ bs[j]
        Lam = Lz @ Ws[j]
    return concretize_box_torch(Lam, bias, lo, hi)


def _upper(rows, bias, Ws, bs, relax, alphas, lo, hi):
    """Upper bound [P] of rows @ h_{L-1} + bias over each box (rows [P, n_{L-1}], bias [P]; alphas[j] [P, n_j])."""
    return -_lower(-rows[:, None, :], -bias[:, None], Ws, bs, relax,
                   None if alphas is None else [a[:, None, :] for a in alphas], lo, hi)[:, 0]


def alpha_hidden_bounds(lo, hi, Ws, bs, inter, iters: int = HIDDEN_ITERS, lr: float = HIDDEN_LR):
    """Hidden pre-activation bounds [B, H] (linear_bounds layout) tightened by alpha-CROWN, layer by layer.

    lo, hi [B, n0]: boxes; inter: bounds valid on them (e.g. crown_mlp(..., keep_inter=True)); layer 1 is exact
    already. For each later layer, the neurons unstable in some box get a lower and an upper bound row, each
    with its own slopes on every earlier layer, optimised with the earlier layers' bounds as tightened so far.
    Returns the intersection of the given bounds and the best bounds found (never looser)."""
    dims = [Ws[0].shape[1]] + [W.shape[0] for W in Ws]
    bounds = [(l.clone(), u.clone()) for l, u in split_hidden(inter, dims)]
    B = lo.shape[0]
    for k in range(1, len(bounds)):
        l, u = bounds[k]
        unstable = (l < 0) & (u > 0)
        idx = unstable.any(0).nonzero().flatten()
        if not len(idx):
            continue
        relax = _relaxations(bounds[:k])
        W, b = Ws[k][idx], (torch.zeros(len(idx), dtype=lo.dtype) if bs[k] is None else bs[k][idx])
        Lam = torch.cat([W, -W]).expand(B, -1, -1)
        bias = torch.cat([b, -b]).expand(B, -1)
        R = Lam.shape[1]
        alphas = [r[0][:, None, :].expand(B, R, -1).clone().requires_grad_(True) for r in relax]
        opt = Adam(alphas, lr)
        best = torch.full((B, R), -float("inf"), dtype=lo.dtype)
        for it in range(iters):
            v = _lower(Lam, bias, Ws, bs, relax, alphas, lo, hi)
            best = torch.maximum(best, v.detach())
            if it + 1 < iters:
                opt.step([-g for g in torch.autograd.grad(v.sum(), alphas)])
        r = len(idx)
        use = unstable[:, idx]
        l[:, idx] = torch.where(use, torch.maximum(l[:, idx], best[:, :r]), l[:, idx])
        u[:, idx] = torch.where(use, torch.minimum(u[:, idx], -best[:, r:]), u[:, idx])
    return torch.cat([t for lu in bounds for t in lu], 1)


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
    relax = _relaxations(split_hidden(inter[pb], dims))
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
    alphas = [r[0].clone().requires_grad_(True) for r in relax]
    best_u, best_lam = search_weights(lambda lam: _upper(lam @ A, lam @ cb, Ws, bs, relax, alphas, lo, hi),
                                      plain_u, mem, d, alphas, iters, lr)
    upper[pb, pg] = best_u
    lam_out[pb, pg] = best_lam
    return upper, lam_out


def search_weights(upper_of, plain_u, mem, d, params, iters: int = ITERS, lr: float = LR):
    """The weights search of a conjunction, shared by MLPs and graphs (plugins/crown/conjunctions.py): per pair,
    lam = softmax(theta) over the disjunct's rows (mem [P, m]), started on the row with the smallest plain bound
    (plain_u [P, m], upper bounds of C_r y), and the slopes `params`, by Adam on upper_of(lam) + lam @ d, where
    upper_of(lam) [P] is a sound upper bound of sum_r lam_r C_r y. Returns the best (upper [P], lam [P, m]) seen,
    never worse than the starting row. Checks the deadline of engine.deadline before each step."""
    P, m = plain_u.shape
    dt = plain_u.dtype
    plain = torch.where(mem, plain_u + d, float("inf"))
    start = plain.argmin(1)
    best_obj = plain.gather(1, start[:, None])[:, 0]
    best_u = plain_u.gather(1, start[:, None])[:, 0]
    best_lam = torch.zeros(P, m, dtype=dt).scatter_(1, start[:, None], 1.0)
    theta = torch.zeros(P, m, dtype=dt).masked_fill(~mem, -float("inf"))
    theta.scatter_(1, start[:, None], 4.0)
    theta.requires_grad_(True)
    opt = Adam([theta, *params], lr)
    for it in range(iters):
        deadline.check()
        lam = torch.softmax(theta, 1)                                       # [P, m], zero off the disjunct
        u = upper_of(lam)
        obj = u + lam @ d
        with torch.no_grad():
            better = obj < best_obj
            best_obj = torch.where(better, obj, best_obj)
            best_u = torch.where(better, u, best_u)
            best_lam = torch.where(better[:, None], lam, best_lam)
        if it + 1 < iters:   # -inf logits off a disjunct: NaN grads, ignored by Adam
            grads = torch.autograd.grad(obj.sum(), opt.params, allow_unused=True)
            opt.step([torch.zeros_like(q) if g is None else g for q, g in zip(opt.params, grads)])
    return best_u.detach(), best_lam.detach()
