"""Dense float64 matrices of linear chains and their products, each with a guaranteed rounding-error bound.

A `DOp` holds the computed matrix M̂ [out, in] and `err` >= ||M̂ - M||_2 for the exact real operator M (tracked
as a Frobenius-norm bound). Error rules, with u = 2^-53, gamma_k the dot-product bound of
engine.kernels.spectral.gamma, |.| entrywise and S(L) >= || |L| ||_2 (Schur test):
  * apply a node L (reduction length k) to P̂:  ||fl(L P̂) - L P||_F <= gamma_k S(L) ||P̂||_F + S(L) err
  * product Â B̂ (k = inner dim):  gamma_k ||Â||_F ||B̂||_F + ||Â||_F err_B + err_A (||B̂||_F + err_B)
  * sum Â + B̂:  err_A + err_B + u (||Â||_F + ||B̂||_F);  scaling c Â:  |c| err_A + u |c| ||Â||_F
Every computed Frobenius norm (N entries) is inflated by (1 + gamma_{N+2}), which dominates its own rounding,
and every error bound by a factor 2 for the rounding of the bound arithmetic itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nncert.engine.errors import UnsupportedOp
from nncert.engine.ir import Node, apply_op
from nncert.engine.kernels.spectral import U, gamma, schur_abs_bound

MAX_ENTRIES = 1 << 24   # dense materialisation limit (128 MiB of float64)


def _fro(M: torch.Tensor) -> float:
    return float(torch.sqrt((M * M).sum())) * (1 + gamma(M.numel() + 2)) * (1 + 1e-15)


@dataclass
class DOp:
    M: torch.Tensor     # [out, in] float64
    err: float

    @property
    def fro(self) -> float:
        return _fro(self.M)


def _linear_part(node: Node) -> Node:
    """The node without its bias / shift (the Lipschitz-relevant linear part)."""
    params = {k: v.to(torch.float64) for k, v in node.params.items() if k not in ("b", "shift")}
    return Node(node.name, node.op, list(node.inputs), params, dict(node.attrs), node.shape)


def _reduction_len(node: Node) -> int:
    if node.op == "linear":
        return int(node.params["W"].shape[1])
    if node.op == "conv2d":
        W = node.params["W"]
        return int(W.shape[1] * W.shape[2] * W.shape[3])
    if node.op == "affine":
        return 1
    if node.op == "avgpool2d":
        kh, kw = node.attrs["kernel"]
        return kh * kw + 1
    return 0  # reshape: exact


def materialize(chain, source=None) -> DOp:
    """Dense matrix [prod(out_shape), prod(in_shape)] of a structure.Chain (identity when empty)."""
    n_in = int(torch.Size(chain.in_shape).numel())
    n_out = int(torch.Size(chain.out_shape).numel())
    if n_in * max(n_out, n_in) > MAX_ENTRIES:
        raise UnsupportedOp(f"a linear chain of {n_out} x {n_in} is too large for dense LipLT products "
                            f"(limit {MAX_ENTRIES} entries); use method 'naive'", source)
    X = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *chain.in_shape)
    err = 0.0
    for node in chain.nodes:
        k = _reduction_len(node)
        s = schur_abs_bound(node)
        fro = _fro(X)
        X = apply_op(_linear_part(node), [X])
        if k:
            err = 2 * (gamma(k) * s * fro + s * err)
    return DOp(X.reshape(n_in, -1).T.contiguous(), err)


def matmul(A: DOp, B: DOp) -> DOp:
    fa, fb = A.fro, B.fro
    M = A.M @ B.M
    err = 2 * (gamma(A.M.shape[1]) * fa * fb + fa * B.err + A.err * (fb + B.err))
    return DOp(M, err)


def add(A: DOp, B: DOp) -> DOp:
    return DOp(A.M + B.M, 2 * (A.err + B.err + U * (A.fro + B.fro)))


def scale(c: float, A: DOp) -> DOp:
    return DOp(c * A.M, 2 * (abs(c) * A.err + U * abs(c) * A.fro))


def identity(n: int) -> DOp:
    return DOp(torch.eye(n, dtype=torch.float64), 0.0)


def round_up(x: float, times: int = 2) -> float:
    for _ in range(times):
        x = math.nextafter(x, math.inf)
    return x


def round_down(x: float, times: int = 2) -> float:
    for _ in range(times):
        x = math.nextafter(x, -math.inf)
    return x
