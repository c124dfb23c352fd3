"""Certified Lipschitz bounds (l2 -> l2) of IR networks: the naive product bound and LipLT.

LipLT (Fazlyab, Entesari, Roy, Chellappa, "Certified Robustness via Dynamic Margin Maximization and Improved
Lipschitz Regularization", NeurIPS 2023, Theorem 3). For x_{k+1} = H_k x_k + G_k phi_k(W_k x_k) with phi_k slope-
restricted in [alpha_k, beta_k], write phi_k(z) = c_k z + psi_k(z) for any real c_k (we use the float64 value of
(alpha_k + beta_k)/2); psi_k is elementwise with slopes in [alpha_k - c_k, beta_k - c_k], hence
delta_k-Lipschitz with delta_k = max(beta_k - c_k, c_k - alpha_k) (rounded up). Then x_{k+1} = Ĥ_k x_k +
G_k psi_k(W_k x_k) with Ĥ_k = H_k + c_k G_k W_k, and unrolling gives for the pre-activations z_k = W_k x_k:

    m_0 = ||W_0||,   m_{k+1} = ||W_{k+1} Ĥ_k ... Ĥ_0|| + sum_{j<=k} delta_j ||W_{k+1} Ĥ_k ... Ĥ_{j+1} G_j|| m_j

with m_k a Lipschitz constant of x_0 -> z_k, and m_L (W_L the last chain) one of the network. With c^T W_L for
c = e_i - e_j in place of W_L it bounds the Lipschitz constant L_ij of f_i - f_j.

Every norm here is certified: products are formed densely in float64 with a rounding-error bound (dense.py),
their spectral norms bounded by Gram iteration (engine.kernels.spectral.gram_bound, batched over all products of
one shape), errors added by Weyl's inequality, and the scalar recursion rounded upward.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict

import torch

from nncert.engine.errors import UnsupportedOp
from nncert.engine.kernels.spectral import conv2d_bound, gamma, gram_bound

from . import dense
from .structure import LayerForm, layer_form

GRAM_ITERS = 8


def _up(x: float) -> float:
    return dense.round_up(x, 4)


def _spectral_bounds(ops: list[dense.DOp]) -> list[float]:
    """Certified ||M||_2 of each exact operator (matrix + error) — one batched gram_bound call per shape."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, op in enumerate(ops):
        groups[tuple(op.M.shape)].append(i)
    out = [0.0] * len(ops)
    for shape, idx in groups.items():
        if 0 in shape:
            continue
        if min(shape) == 1:  # a vector: its 2-norm, rounded up
            for i in idx:
                v = ops[i].M.reshape(-1)
                out[i] = _up(float(torch.sqrt((v * v).sum())) * (1 + gamma(v.numel() + 2)) + ops[i].err)
            continue
        b = gram_bound(torch.stack([ops[i].M for i in idx]), GRAM_ITERS)
        for i, val in zip(idx, b.tolist()):
            out[i] = _up(val + ops[i].err)
    return out


def _mid_and_delta(alpha: float, beta: float) -> tuple[float, float]:
    c = (alpha + beta) / 2
    return c, _up(max(beta - c, c - alpha))


def _chain_op(chain, n_cache, source):
    key = id(chain)
    if key not in n_cache:
        n_cache[key] = dense.materialize(chain, source)
    return n_cache[key]


def _pair_rows(T: dense.DOp) -> torch.Tensor:
    """Certified ||T_i - T_j|| for all output pairs of T [n_out, n]: [n_out, n_out] float64 (upper bounds)."""
    M = T.M
    D = M[:, None, :] - M[None, :, :]
    n = M.shape[1]
    nrm = torch.sqrt((D * D).sum(-1)) * (1 + gamma(n + 2))
    rows = torch.sqrt((M * M).sum(1))
    rnd = U_ * (rows[:, None] + rows[None, :]) * (1 + 1e-9)   # rounding of the differences
    return (nrm + rnd + math.sqrt(2) * T.err) * (1 + 1e-12)


U_ = 2.0 ** -53


def liplt(form: LayerForm, pairwise: bool = False, source=None):
    """(global L, pairwise [n_out, n_out] or None, m list) by the LipLT recursion, all certified."""
    cache: dict = {}
    L = len(form.layers)
    Ws = [_chain_op(l.W, cache, source) for l in form.layers] + [_chain_op(form.final, cache, source)]
    Gs = [None if (l.G is None or l.G.identity) else _chain_op(l.G, cache, source) for l in form.layers]
    cd = [_mid_and_delta(l.alpha, l.beta) for l in form.layers]
    Hh = []
    for k, l in enumerate(form.layers):
        GW = Ws[k] if Gs[k] is None else dense.matmul(Gs[k], Ws[k])
        h = dense.scale(cd[k][0], GW)
        if l.H is not None:
            h = dense.add(_chain_op(l.H, cache, source), h)
        Hh.append(h)
    # all products, then all norms in one batched phase
    prods: list[dense.DOp] = [Ws[0]]
    terms = {}  # (k+1, j) -> index into prods; j = -1 is the Ĥ_k...Ĥ_0 term
    finals = {}
    for kp in range(1, L + 1):
        Q = Ws[kp]
        for j in range(kp - 1, -1, -1):
            T = Q if Gs[j] is None else dense.matmul(Q, Gs[j])
            terms[(kp, j)] = len(prods)
            prods.append(T)
            if kp == L:
                finals[j] = T
            Q = dense.matmul(Q, Hh[j])
        terms[(kp, -1)] = len(prods)
        prods.append(Q)
        if kp == L:
            finals[-1] = Q
    if L == 0:
        finals[-1] = Ws[0]
    norms = _spectral_bounds(prods)
    m = [norms[0]]
    for kp in range(1, L + 1):
        s = norms[terms[(kp, -1)]]
        for j in range(kp):
            s = _up(s + _up(cd[j][1] * _up(norms[terms[(kp, j)]] * m[j])))
        m.append(s)
    pw = None
    if pairwise:
        P = _pair_rows(finals[-1])
        for j in range(L):
            P = P + cd[j][1] * _pair_rows(finals[j]) * m[j]
        P = P * (1 + 1e-12) * (1 + 4 * U_ * (L + 1))
        P.fill_diagonal_(0.0)
        pw = P
    return m[-1], pw, m


def naive(form: LayerForm, pairwise: bool = False, source=None):
    """(global L, pairwise or None): product of per-layer certified bounds, ||H|| + max|slope| ||G|| ||W|| for a
    block. A chain too large to materialise is bounded by the product of its nodes' certified norms."""
    def chain_norm(chain):
        if chain is None or chain.identity:
            return 1.0
        try:
            return _spectral_bounds([dense.materialize(chain, source)])[0]
        except UnsupportedOp:
            return _node_product_bound(chain)

    lip = 1.0
    for l in form.layers:
        s = max(abs(l.alpha), abs(l.beta))
        layer = _up(_up(chain_norm(l.G) * s) * chain_norm(l.W))
        if l.H is not None:
            layer = _up(layer + chain_norm(l.H))
        lip = _up(lip * layer)
    glob = _up(lip * chain_norm(form.final))
    pw = None
    if pairwise:
        try:
            Wl = dense.materialize(form.final, source)
        except UnsupportedOp:
            Wl = None
        if Wl is not None:
            pw = _pair_rows(Wl) * lip * (1 + 1e-12)
            pw.fill_diagonal_(0.0)
        else:
            n = int(torch.Size(form.output_shape).numel())
            pw = torch.full((n, n), math.sqrt(2) * glob)
            pw.fill_diagonal_(0.0)
    return glob, pw


def _node_product_bound(chain) -> float:
    b = 1.0
    shape = chain.in_shape
    for node in chain.nodes:
        if node.op == "conv2d":
            a = node.attrs
            nb = conv2d_bound(node.params["W"], shape, a["stride"], a["pads"], a["dilation"], a["groups"])
        elif node.op == "linear":
            nb = float(gram_bound(node.params["W"].to(torch.float64), GRAM_ITERS))
        elif node.op in ("affine", "avgpool2d"):
            from nncert.engine.kernels.spectral import schur_abs_bound
            nb = schur_abs_bound(node)
        else:
            nb = 1.0
        b = _up(b * _up(nb))
        shape = node.shape
    return b


def lipschitz(network, method: str = "liplt", pairwise: bool = False) -> dict:
    """dict(method, global, pairwise (list of lists or None), seconds) — see the module docstring."""
    t0 = time.perf_counter()
    form = layer_form(network)
    if method == "liplt":
        g, pw, _ = liplt(form, pairwise, network.source)
    elif method == "naive":
        g, pw = naive(form, pairwise, network.source)
    else:
        from nncert.engine.errors import BadInput
        raise BadInput(f"unknown Lipschitz method {method!r} (liplt or naive)")
    return {"method": method, "global": float(g), "pairwise": None if pw is None else pw.tolist(),
            "seconds": time.perf_counter() - t0}
