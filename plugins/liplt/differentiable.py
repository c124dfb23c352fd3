"""Differentiable LipLT bounds for training (power-iteration *estimates*, not certificates).

For a plain MLP f = W_L phi(W_{L-1} ... phi(W_0 x)) (each phi slope-restricted in [alpha_k, beta_k]) this
computes the LipLT recursion of bound.py with torch autograd: the spectral norms of the intermediate products
are power-iteration estimates (warm-started across calls through `state`, so a couple of iterations per step
track them), and the last layer's pairwise terms ||(e_i - e_j)^T W_L ...|| are exact vector norms. Use it as a
regulariser; certify only with the domain (`LipLT.certify`), which recomputes everything with certified norms.
"""
from __future__ import annotations

import torch
from torch import nn

from nncert.engine.kernels.spectral import power_iteration

from .structure import slope_bounds


def _row_pair_norms(T: torch.Tensor) -> torch.Tensor:
    D = T[:, None, :] - T[None, :, :]
    return torch.sqrt((D * D).sum(-1) + 1e-12)


def mlp_pairwise_lipschitz(weights: list[torch.Tensor], slopes: list[tuple[float, float]], state: dict,
                           iters: int = 2) -> torch.Tensor:
    """Differentiable estimate of the pairwise LipLT bounds L_ij [n_out, n_out] of an MLP.

    weights: [W_0, ..., W_L] (torch [out, in]); slopes: [(alpha_k, beta_k)] for the L activations; state: a dict
    the caller keeps between calls (warm-start vectors).
    """
    L = len(weights) - 1
    if len(slopes) != L:
        raise ValueError(f"{len(weights)} weight matrices need {len(weights) - 1} activations, got {len(slopes)}")
    cs = [(a + b) / 2 for a, b in slopes]
    ds = [(b - a) / 2 for a, b in slopes]

    def sigma(key, M):
        s, v = power_iteration(M, iters, state.get(key))
        state[key] = v.detach()
        return s

    m = [sigma((0, -1), weights[0])]
    for kp in range(1, L + 1):
        Q = weights[kp]
        terms = {}
        for j in range(kp - 1, -1, -1):
            terms[j] = Q
            Q = Q @ (cs[j] * weights[j])
        if kp < L:
            s = sigma((kp, -1), Q)
            for j in range(kp):
                s = s + ds[j] * sigma((kp, j), terms[j]) * m[j]
            m.append(s)
        else:
            P = _row_pair_norms(Q)
            for j in range(kp):
                P = P + ds[j] * _row_pair_norms(terms[j]) * m[j]
            return P * (1 - torch.eye(P.shape[0], dtype=P.dtype, device=P.device))
    raise AssertionError("unreachable")


def sequential_mlp_parts(model: nn.Sequential):
    """(linear modules, slopes) of an nn.Sequential of [Flatten], Linear, act, Linear, ..., Linear."""
    lins, slopes = [], []
    act_ops = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.LeakyReLU: "leaky_relu"}
    for mod in model:
        if isinstance(mod, nn.Linear):
            lins.append(mod)
        elif type(mod) in act_ops:
            from nncert.engine.ir import Node
            attrs = {"alpha": mod.negative_slope} if isinstance(mod, nn.LeakyReLU) else {}
            slopes.append(slope_bounds(Node("a", act_ops[type(mod)], [], attrs=attrs)))
        elif not isinstance(mod, (nn.Flatten, nn.Identity)):
            raise ValueError(f"{type(mod).__name__} is not part of a plain MLP")
    return lins, slopes


def crm_loss(logits: torch.Tensor, y: torch.Tensor, Lp: torch.Tensor, lam: float, r_max: float,
             tau: float = 0.1) -> torch.Tensor:
    """CRM loss (Fazlyab et al. 2023, eq. 6): cross-entropy (the margin surrogate) plus lam * g(soft-min over
    j != y of margin_yj / L_yj) on correctly classified points, with g(r) = relu(r_max - r) (a penalty that
    pushes the certified-radius surrogate up to r_max). tau is the soft-min temperature."""
    ce = nn.functional.cross_entropy(logits, y)
    fy = logits.gather(1, y[:, None])
    margins = fy - logits                                          # [B, n]
    Ly = Lp[y]                                                     # [B, n]
    ratio = margins / (Ly + torch.eye(Lp.shape[0], device=logits.device)[y])   # avoid 0/0 on j = y
    mask = torch.ones_like(ratio, dtype=torch.bool).scatter_(1, y[:, None], False)
    ratio = ratio.masked_fill(~mask, float("inf"))
    soft_min = -tau * torch.logsumexp(-ratio / tau, dim=1)
    correct = (logits.argmax(1) == y).float()
    reg = (torch.relu(r_max - soft_min) * correct).sum() / max(len(y), 1)
    return ce + lam * reg
