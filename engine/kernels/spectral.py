"""Batched spectral norms: fast power-iteration estimates and certified (guaranteed) upper bounds.

Estimates (`power_iteration`, `power_iteration_op`) return ||A v|| / ||v|| for a converged-ish unit vector v: a
*lower* bound on sigma_1 in exact arithmetic, differentiable in A (v is detached), warm-startable through `v0`.
They are for training only; nothing certified may rest on them.

Certified bounds (`gram_bound`, `conv2d_bound`) are guaranteed upper bounds on sigma_1 of the exact real matrix
whose entries are the given floating-point numbers, floating-point rounding included.

Gram iteration (Delattre, Barthelemy, Araujo, Allauzen, "Efficient Bound of Lipschitz Constant for Convolutional
Layers by Gram Iteration", ICML 2023). Proof of `gram_bound`, with u = 2^-53 and gamma_k = k u / (1 - k u):
  * sigma_1(G)^2 = sigma_1(G^T G) and sigma_1(G) <= ||G||_F, hence sigma_1(A) <= ||G_T||_F^(1 / 2^T) for
    G_0 = A, G_{t+1} = G_t^T G_t. To avoid overflow every iterate is rescaled to unit Frobenius norm.
  * In floating point, let Ĝ_t be the stored (rescaled) iterate and s_t = sigma_1(Ĝ_t) (exact singular value
    of the stored matrix). With M̂_t = fl(Ĝ_t^T Ĝ_t) the standard dot-product error bound (any summation order,
    FMA or not) gives |M̂_t - Ĝ_t^T Ĝ_t| <= gamma_k |Ĝ_t|^T |Ĝ_t| entrywise, so the error has Frobenius norm
    e_t <= gamma_k F_t^2 with F_t >= ||Ĝ_t||_F (k = number of rows of Ĝ_t). With f_t = fl||M̂_t||_F (any
    positive number works here) and Ĝ_{t+1} = fl(M̂_t / f_t), ||M̂_t / f_t - Ĝ_{t+1}||_F <= u F_{t+1}. Weyl's
    inequality then gives  s_t^2 <= f_t (s_{t+1} + u F_{t+1}) + e_t,  and s_T <= F_T.
  * Likewise Ĝ_0 = fl(A / a) with a = fl||A||_F gives sigma_1(A) <= a (s_0 + u F_0).
  * The backward recursion U_T = F_T, U_t = sqrt(f_t (U_{t+1} + u F_{t+1}) + e_t) is evaluated with every step
    inflated by (1 + 32 u), which dominates the rounding of its own four correctly rounded operations; F_t is
    the computed Frobenius norm times (1 + gamma_{N+2}) (N entries). The result a (U_0 + u F_0) (1 + 32 u) is
    a guaranteed upper bound on sigma_1(A). All U_t are O(1), so nothing overflows.
Looseness: at most rank^(1 / 2^(T+1)) in exact arithmetic, far less when sigma_1 is separated (T = 6: <= 0.5 %
on 1000 Gaussian 64x64 matrices, see benchmarks/bench_spectral.py).

Conv layers (`conv2d_bound`): a zero-padded, dilated, grouped stride-1 conv2d equals R C P where P embeds the
input into the padded grid (isometry), C is the circular convolution on that grid with the dense (dilation and
groups expanded) kernel and R restricts to valid positions (norm <= 1); strides are first removed exactly by the
polyphase rewrite (see `conv2d_bound`). So
||conv|| <= ||C|| = max over the grid's frequencies w of sigma_1(K̂(w)) (Sedghi, Gupta, Long, "The Singular
Values of Convolutional Layers", ICLR 2019), each certified with `gram_bound` on the real 2Cout x 2Cin
embedding [[Re, -Im], [Im, Re]] (same singular values). K̂ is summed directly from cos/sin with exact integer
phase reduction; its entrywise error is <= (gamma_{kh kw + 1} + 1e-13) sum_pq |K[o, i, p, q]| and is added by Weyl.
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from . import _C, use_native

U = 2.0 ** -53
NATIVE_MAX_N = 128   # Gram side up to which gram_bound prefers the native CPU kernel
STEP = 1.0 + 32 * U


def gamma(k: int) -> float:
    """gamma_k = k u / (1 - k u) for float64 (Higham, Accuracy and Stability of Numerical Algorithms, 3.1)."""
    ku = k * U
    if ku >= 0.5:
        raise ValueError(f"reduction length {k} too long for the float64 error bound")
    return ku / (1 - ku)


# --------------------------------------------------------------------------------------------------- estimates
def power_iteration(A: torch.Tensor, iters: int = 20, v0: torch.Tensor | None = None):
    """Estimate sigma_1 of each matrix of A [B, m, n] (or one [m, n]) by power iteration on A^T A.

    Returns (sigma [B], v [B, n]): sigma = ||A v|| with v unit and detached (differentiable in A; a lower bound on
    sigma_1 in exact arithmetic). Pass the returned v as v0 to warm-start the next call.
    """
    single = A.dim() == 2
    if single:
        A = A.unsqueeze(0)
        v0 = None if v0 is None else v0.reshape(1, -1)
    with torch.no_grad():
        Ad = A.detach()
        v = torch.randn(Ad.shape[0], Ad.shape[2], dtype=Ad.dtype, device=Ad.device) if v0 is None else \
            v0.detach().to(Ad.dtype).clone()
        v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-300)
        if use_native(Ad) and Ad.device.type == "cpu" and hasattr(_C, "spectral_power_f64") and Ad.dtype == torch.float64:
            Ac = Ad.contiguous()
            v = v.contiguous()
            sig = torch.empty(Ad.shape[0], dtype=torch.float64)
            _C.spectral_power_f64(Ac.data_ptr(), v.data_ptr(), sig.data_ptr(), Ad.shape[0], Ad.shape[1], Ad.shape[2],
                                  int(iters), torch.get_num_threads())
        else:
            for _ in range(iters):
                u = torch.bmm(Ad, v.unsqueeze(2))
                v = torch.bmm(Ad.mT, u).squeeze(2)
                v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-300)
    sigma = torch.bmm(A, v.unsqueeze(2)).squeeze(2).norm(dim=1)
    return (sigma[0], v[0]) if single else (sigma, v)


def power_iteration_op(fwd, adj, v0: torch.Tensor, iters: int = 20):
    """Estimate ||L|| of a linear operator given as fwd (x -> L x) and adj (y -> L^T y), batched over v0's first
    axis (each row an independent start, e.g. one per layer copy). Returns (sigma [B], v) as `power_iteration`.

    For conv2d, fwd = conv2d (no bias) and adj = conv_transpose2d with the matching output_padding (see
    `conv2d_operator`), so the operator never becomes dense.
    """
    with torch.no_grad():
        v = v0.detach().clone()
        flat = lambda t: t.reshape(t.shape[0], -1)  # noqa: E731
        v = v / flat(v).norm(dim=1).clamp_min(1e-300).reshape(-1, *([1] * (v.dim() - 1)))
        for _ in range(iters):
            v = adj(fwd(v))
            v = v / flat(v).norm(dim=1).clamp_min(1e-300).reshape(-1, *([1] * (v.dim() - 1)))
    sigma = flat(fwd(v)).norm(dim=1)
    return sigma, v


def conv2d_operator(W, in_shape, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """(fwd, adj, out_shape) of the bias-free conv2d with IR attributes on inputs [B, *in_shape] (NCHW)."""
    t, l, b, r = pads
    C, H, Wd = in_shape

    def fwd(x):
        return F.conv2d(F.pad(x, (l, r, t, b)), W.to(x.dtype), None, stride=stride, dilation=dilation, groups=groups)

    out_shape = tuple(fwd(torch.zeros(1, *in_shape, dtype=W.dtype)).shape[1:])
    Hp, Wp = H + t + b, Wd + l + r
    kh, kw = W.shape[2], W.shape[3]
    oph = Hp - ((out_shape[1] - 1) * stride[0] + dilation[0] * (kh - 1) + 1)
    opw = Wp - ((out_shape[2] - 1) * stride[1] + dilation[1] * (kw - 1) + 1)

    def adj(y):
        z = F.conv_transpose2d(y, W.to(y.dtype), None, stride=stride, output_padding=(oph, opw), groups=groups,
                               dilation=dilation)
        return z[:, :, t:t + H, l:l + Wd]

    return fwd, adj, out_shape


# --------------------------------------------------------------------------------------------- certified: dense
def _frob_hi(G: torch.Tensor) -> torch.Tensor:
    """Upper bound on ||G||_F per matrix of G [B, m, n] (float64)."""
    n = G.shape[1] * G.shape[2]
    return (G * G).sum((1, 2)).sqrt() * (1 + gamma(n + 2))


def gram_bound_torch(A: torch.Tensor, iters: int = 6) -> torch.Tensor:
    """Reference: certified upper bound on sigma_1 of each matrix of A [B, m, n]; float64 [B]. See module doc."""
    A = A.detach().to(torch.float64)
    if A.shape[1] < A.shape[2]:  # Gram matrices on the smaller side: sigma_1(A) = sigma_1(A^T)
        A = A.mT
    A = A.contiguous()
    Bn = A.shape[0]
    if A.numel() == 0:
        return torch.zeros(Bn, dtype=torch.float64, device=A.device)
    a = (A * A).sum((1, 2)).sqrt()
    safe = lambda x: torch.where(x > 0, x, torch.ones_like(x))  # noqa: E731  (zero matrices stay zero)
    G = A / safe(a)[:, None, None]
    Fs, fs, es = [_frob_hi(G)], [], []
    for _ in range(iters):
        k = G.shape[1]
        M = torch.bmm(G.mT, G)
        f = (M * M).sum((1, 2)).sqrt()
        es.append(gamma(k) * Fs[-1] ** 2)
        fs.append(f)
        G = M / safe(f)[:, None, None]
        Fs.append(_frob_hi(G))
    Uc = Fs[-1]
    for t in range(iters - 1, -1, -1):
        Uc = torch.sqrt(fs[t] * (Uc + U * Fs[t + 1]) + es[t]) * STEP
    return a * (Uc + U * Fs[0]) * STEP


def gram_bound(A: torch.Tensor, iters: int = 6) -> torch.Tensor:
    """Certified upper bound on sigma_1 of each matrix of A [B, m, n] (or one [m, n] -> scalar); float64.

    Dispatches to the native kernel (CPU, CUDA) when available, else the torch reference (same algorithm and
    the same proof; the native CPU kernel computes only the upper triangle of each symmetric Gram matrix).
    """
    single = A.dim() == 2
    if single:
        A = A.unsqueeze(0)
    if A.dim() != 3:
        raise ValueError(f"gram_bound wants [B, m, n] matrices, got shape {tuple(A.shape)}")
    A = A.detach()
    # the native kernels win on batches of small matrices; large ones go to torch's BLAS (same proof)
    if use_native(A) and A.numel() > 0 and (min(A.shape[1], A.shape[2]) <= NATIVE_MAX_N or A.device.type == "cuda"
                                            or os.environ.get("NNCERT_KERNELS", "").lower() == "native"):
        out = _gram_bound_native(A, iters)
        if out is not None:
            return out[0] if single else out
    out = gram_bound_torch(A, iters)
    return out[0] if single else out


def _gram_bound_native(A: torch.Tensor, iters: int):
    A64 = A.to(torch.float64)
    if A64.shape[1] < A64.shape[2]:
        A64 = A64.mT
    A64 = A64.contiguous()
    B, m, n = A64.shape
    out = torch.empty(B, dtype=torch.float64, device=A.device)
    if A.device.type == "cpu":
        if not hasattr(_C, "spectral_gram_bound_f64"):
            return None
        _C.spectral_gram_bound_f64(A64.data_ptr(), out.data_ptr(), B, m, n, int(iters), torch.get_num_threads())
        return out
    if not hasattr(_C, "spectral_gram_bound_f64_cuda"):
        return None
    work = torch.empty(B, 2, n, n, dtype=torch.float64, device=A.device)
    stream = torch.cuda.current_stream(A.device).cuda_stream
    err = _C.spectral_gram_bound_f64_cuda(A64.data_ptr(), out.data_ptr(), work.data_ptr(), B, m, n, int(iters),
                                          int(stream))
    if err:
        raise RuntimeError(f"spectral_gram_bound_f64_cuda: {err}")
    return out


# ---------------------------------------------------------------------------------------------- certified: conv
def dense_conv_kernel(W: torch.Tensor, dilation=(1, 1), groups: int = 1) -> torch.Tensor:
    """The equivalent dense kernel [Cout, Cin, dh(kh-1)+1, dw(kw-1)+1] of a dilated, grouped conv (exact copy)."""
    Cout, cin_g, kh, kw = W.shape
    dh, dw = dilation
    K = torch.zeros(Cout, cin_g * groups, dh * (kh - 1) + 1, dw * (kw - 1) + 1, dtype=torch.float64)
    og = Cout // groups
    for g in range(groups):
        K[g * og:(g + 1) * og, g * cin_g:(g + 1) * cin_g, ::dh, ::dw] = W[g * og:(g + 1) * og].to(torch.float64)
    return K


def polyphase_kernel(K: torch.Tensor, stride) -> torch.Tensor:
    """Stride-1 kernel [Cout, Cin sh sw, ceil(kh/sh), ceil(kw/sw)] of the polyphase form of a strided conv:
    y = sum_ab conv_1(X_ab, K[:, :, a::sh, b::sw]) with X_ab[c, r, s] = x[c, sh r + a, sw s + b]."""
    sh, sw = stride
    Cout, Cin, kh, kw = K.shape
    k1, k2 = -(-kh // sh), -(-kw // sw)
    Kp = torch.zeros(Cout, Cin * sh * sw, k1, k2, dtype=K.dtype)
    for a in range(sh):
        for b in range(sw):
            blk = K[:, :, a::sh, b::sw]
            c0 = (a * sw + b) * Cin
            Kp[:, c0:c0 + Cin, :blk.shape[2], :blk.shape[3]] = blk
    return Kp


def conv2d_bound(W: torch.Tensor, in_shape, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups: int = 1,
                 iters: int = 6) -> float:
    """Certified upper bound on the l2 operator norm of the bias-free conv2d (IR attributes) on inputs of shape
    in_shape = (C, H, W). Returns a float.

    Proof: the conv is S R C P (module docstring). A stride (sh, sw) > 1 is first rewritten exactly in polyphase
    form: zero-extend the padded input to multiples of the stride (isometry), split it into the sh sw phases
    X_ab (a permutation), and the strided conv becomes a stride-1 valid conv with Cin sh sw channels and kernel
    `polyphase_kernel` on the ceil(Hp/sh) x ceil(Wp/sw) grid, where no valid output wraps around; its norm is
    bounded by the circulant's max_w sigma_1(K̂(w)) (each certified by Gram iteration, DFT error added)."""
    K = dense_conv_kernel(W.detach().cpu(), dilation, groups)
    _, H, Wd = in_shape
    Hp, Wp = H + pads[0] + pads[2], Wd + pads[1] + pads[3]
    sh, sw = stride
    if (sh, sw) != (1, 1):
        K = polyphase_kernel(K, stride)
        Hp, Wp = -(-Hp // sh), -(-Wp // sw)
    Cout, Cin, kh, kw = K.shape
    N1, N2 = max(Hp, kh), max(Wp, kw)
    u = torch.arange(N1).reshape(N1, 1, 1, 1)
    v = torch.arange(N2).reshape(1, N2, 1, 1)
    p = torch.arange(kh).reshape(1, 1, kh, 1)
    q = torch.arange(kw).reshape(1, 1, 1, kw)
    # exact integer phase reduction, then one rounding for the fraction and one for the angle
    frac = (p * u % N1).to(torch.float64) / N1 + (q * v % N2).to(torch.float64) / N2       # [N1, N2, kh, kw]
    ang = (2 * math.pi) * frac
    cos, sin = torch.cos(ang).reshape(N1 * N2, kh * kw), torch.sin(ang).reshape(N1 * N2, kh * kw)
    Kf = K.reshape(Cout * Cin, kh * kw)
    Re = (cos @ Kf.T).reshape(-1, Cout, Cin)
    Im = (sin @ Kf.T).reshape(-1, Cout, Cin)
    M = torch.cat([torch.cat([Re, -Im], 2), torch.cat([Im, Re], 2)], 1)       # [N1 N2, 2 Cout, 2 Cin]
    # entrywise error of Re and Im; the embedding holds each twice: ||dM||_F^2 <= 4 sum_oi err_oi^2
    err = (gamma(kh * kw + 1) + 1e-13) * Kf.abs().sum(1)
    dM = 2.0 * float(torch.sqrt((err * err).sum())) * (1 + 1e-12)
    bounds = []
    for chunk in torch.split(M, 256):
        bounds.append(gram_bound(chunk, iters))
    return float(torch.cat(bounds).max()) * STEP + dM


def schur_abs_bound(node) -> float:
    """Upper bound on || |L| ||_2 for the linear part L of an IR node (entrywise absolute values), by the Schur
    test sqrt(max row sum * max column sum); used to bound rounding errors of products. Exact inputs -> float."""
    op, p, a = node.op, node.params, node.attrs
    if op == "linear":
        Wa = p["W"].detach().abs().to(torch.float64)
        return math.sqrt(float(Wa.sum(1).max()) * float(Wa.sum(0).max())) * (1 + 1e-12)
    if op == "conv2d":
        Wa = p["W"].detach().abs().to(torch.float64)
        row = float(Wa.sum((1, 2, 3)).max())                  # one output sums over its receptive field
        col = float(Wa.sum((0, 2, 3)).max())                  # one input feeds at most kh*kw positions per Cout
        return math.sqrt(row * col) * (1 + 1e-12)
    if op == "affine":
        return float(p["scale"].detach().abs().max()) * (1 + 1e-12) if "scale" in p else 1.0
    if op == "reshape":
        return 1.0
    if op == "avgpool2d":
        (kh, kw), (sh, sw) = a["kernel"], a["stride"]
        return math.sqrt(math.ceil(kh / sh) * math.ceil(kw / sw) / (kh * kw)) * (1 + 1e-12)
    raise ValueError(f"no linear part for op {op!r}")
