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
    a = (A * A).sum((1, 2)).sqrt()   # +inf when ||A||_F overflows (NaN for NaN entries): returned as it is
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
    return torch.where(torch.isfinite(a), a * (Uc + U * Fs[0]) * STEP, a)


def gram_bound(A: torch.Tensor, iters: int = 6) -> torch.Tensor:
    """Certified upper bound on sigma_1 of each matrix of A [B, m, n] (or one [m, n] -> scalar); float64.

    Dispatches to the native kernel (CPU, CUDA) when available, else the torch reference (same algorithm and
    the same proof; the native CPU kernel computes only the upper triangle of each symmetric Gram matrix).
    NaN or infinite entries raise BadInput; a matrix whose Frobenius norm overflows gets +inf.
    """
    single = A.dim() == 2
    if single:
        A = A.unsqueeze(0)
    if A.dim() != 3:
        raise ValueError(f"gram_bound wants [B, m, n] matrices, got shape {tuple(A.shape)}")
    A = A.detach()
    _check_finite(A, "gram_bound")
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


# ------------------------------------------------------------------------------ certified: dense, by Cholesky
# Proof of `cholesky_bound` (u = 2^-53, gamma_k = k u / (1 - k u), eta = 2^-1074 the underflow unit):
#  1. Scaling. A (m x n, m >= n, finite) is multiplied by 2^-e with amax = max|a_ij| in [2^(e-1), 2^e), i.e.
#     max|Â| in [1/2, 1). Powers of two are exact except where a result is subnormal; such entries are set to
#     0, so ||Â - 2^-e A||_2 <= ||.||_F <= sqrt(mn) 2^-1022 =: e0 and sigma_1(A) <= 2^e (sigma_1(Â) + e0).
#  2. Gram. Ĝ = fl(Â^T Â) (any summation order, FMA or not; the upper triangle is mirrored): Higham, Accuracy
#     and Stability of Numerical Algorithms, 2nd ed., (3.5) gives |Ĝ - Â^T Â| <= gamma_m |Â|^T |Â| (+ m eta per
#     entry for underflow), so ||Ĝ - Â^T Â||_2 <= gamma_m ||Â||_F^2 + slack.
#  3. Shift. For a float t, B̂ = fl(t I - Ĝ): off-diagonal entries -ĝ_ij are exact, the diagonal is rounded
#     once, so ||B̂ - (t I - Ĝ)||_2 <= u max_i |b̂_ii|.
#  4. Cholesky. If floating-point Cholesky of the symmetric B̂ runs to completion (every pivot > 0), the computed
#     R̂ satisfies R̂^T R̂ = B̂ + dB with |dB| <= gamma_{n+1} |R̂^T| |R̂| (Higham, Thm 10.3: the proof uses only
#     that the algorithm completes, in any ordering of the inner products; Rump, "Verification of positive
#     definiteness", BIT 46 (2006), Lemma 2.1, states it for any symmetric matrix, underflow included). Since
#     R̂^T R̂ >= 0: lambda_min(B̂) >= -gamma_{n+1} || |R̂| ||_2^2 >= -gamma_{n+1} ||R̂||_F^2.
#  5. Weyl: lambda_min(t I - Â^T Â) >= -delta with delta = gamma_{n+1} ||R̂||_F^2 + u max|b̂_ii|
#     + gamma_m ||Â||_F^2 + slack, i.e. sigma_1(Â)^2 <= t + delta. All quantities are O(1) after scaling
#     (t >= max_i ĝ_ii >= 1/4 - tiny). The underflow slack 2^-1000 (m + n + 2)^3 (1 + t) dominates every
#     absolute underflow term of steps 2-4 (each elementary operation adds at most 2^-1022 times an O(sqrt(t))
#     operand, flush-to-zero included); it is ~1e-295, far below u t.
#  6. Rounding of the bound itself: every norm is computed and then inflated by (1 + gamma_{N+1}) (N summands),
#     delta is doubled (covers the rounding of its own few operations), and sqrt and the sums are inflated by
#     (1 + 2u) each; the final 2^e scaling is exact or, if subnormal, bumped one ulp up.
# So sigma_1(A) <= 2^e (sqrt(t + delta) + e0) rounded up. t is chosen just above an *estimate* of
# lambda_max(Ĝ) (Lanczos, nothing certified rests on it): t = theta (1 + eps 4^k) for the first k = 0, 1, ...
# whose Cholesky completes; once t would exceed ||Â||_F^2 >= sigma_1(Â)^2 the Frobenius bound is returned.
# Looseness is therefore about eps / 2 (eps = 2e-3 -> ~0.1 %), plus ~1e-13 of rounding terms.
ETA_SLACK = 2.0 ** -1000
FLUSH = 2.0 ** -1022


def _check_finite(A: torch.Tensor, what: str):
    if not bool(torch.isfinite(A).all()):
        from nncert.engine.errors import BadInput
        raise BadInput(f"{what}: matrix has NaN or infinite entries")


def _pow2(e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two float64 powers of two whose product is 2^e (each factor representable for |e| <= 2100)."""
    e1 = torch.div(e, 2, rounding_mode="floor")
    one = torch.ones_like(e, dtype=torch.float64)
    return torch.ldexp(one, e1), torch.ldexp(one, e - e1)


def _scale(A: torch.Tensor):
    """(Â, e, F2hi, nonzero): Â = 2^-e A with max|Â| in [1/2, 1), subnormal results flushed to 0 (proof step
    1); F2hi >= ||Â||_F^2; nonzero marks matrices with an entry != 0 (the others get e = 0)."""
    amax = A.abs().amax((1, 2))
    _, e = torch.frexp(amax)
    e = torch.where(amax > 0, e.to(torch.int64), torch.zeros_like(e, dtype=torch.int64))
    s1, s2 = _pow2(-e)
    As = A * s1[:, None, None] * s2[:, None, None]
    As = torch.where(As.abs() < FLUSH, torch.zeros_like(As), As)
    mn = A.shape[1] * A.shape[2]
    F2 = (As * As).sum((1, 2)) * (1 + gamma(mn + 1)) + mn * FLUSH
    return As, e, F2, amax > 0


def _gram_sym(As: torch.Tensor) -> torch.Tensor:
    """fl(Â^T Â) with its upper triangle mirrored (every entry one computed dot product; exactly symmetric)."""
    G = torch.bmm(As.mT, As)
    up = torch.triu(G)
    return up + torch.triu(G, 1).mT


def lanczos_max(G: torch.Tensor, steps: int = 20) -> torch.Tensor:
    """Estimate lambda_max of each symmetric G [B, n, n] by `steps` Lanczos steps (three-term recurrence in
    float32, as the native kernel) from a fixed pseudo-random start; float64 [B]. An estimate only (no
    guarantee either way); nothing certified rests on it."""
    Bn, n, _ = G.shape
    k = max(1, min(steps, n))
    Gf = G.to(torch.float32)
    v = _start_vector(n, torch.float32, G.device).expand(Bn, n).clone()
    v = v / v.norm(dim=1, keepdim=True)
    vp = torch.zeros_like(v)
    al = torch.zeros(Bn, k, dtype=torch.float64, device=G.device)
    be = torch.zeros(Bn, k, dtype=torch.float64, device=G.device)
    live = torch.ones(Bn, dtype=torch.bool, device=G.device)
    scale = G.diagonal(dim1=1, dim2=2).amax(1)
    b = torch.zeros(Bn, dtype=torch.float32, device=G.device)
    for j in range(k):
        w = torch.bmm(Gf, v.unsqueeze(2)).squeeze(2)
        a = (w * v).sum(1)
        w = w - (a[:, None] * v + b[:, None] * vp)
        b = w.norm(dim=1)
        al[:, j] = torch.where(live, a.double(), al[:, j])
        if j + 1 == k:
            break
        live = live & (b.double() > 1e-6 * scale)
        be[:, j] = torch.where(live, b.double(), torch.zeros_like(be[:, j]))
        vp, v = v, torch.where(live[:, None], w / torch.where(b > 0, b, torch.ones_like(b))[:, None], v)
    T = torch.diag_embed(al) + torch.diag_embed(be[:, :-1], 1) + torch.diag_embed(be[:, :-1], -1)
    return torch.linalg.eigvalsh(T)[:, -1]


def _start_vector(n: int, dtype, device) -> torch.Tensor:
    """Fixed pseudo-random start in [-1, 1) (same values as the native kernel's LCG)."""
    x, out = 12345, []
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out.append(((x >> 11) * 2.0 ** -53) * 2 - 1)
    return torch.tensor(out, dtype=dtype, device=device)


def cholesky_certify_torch(Ghat: torch.Tensor, t: torch.Tensor, m: int, F2hi: torch.Tensor) -> torch.Tensor:
    """Steps 3-5 of the proof on the scaled Gram matrices Ghat [B, n, n] for shifts t [B]: an upper bound on
    sigma_1(Â)^2 (float64 [B]) where Cholesky of fl(t I - Ghat) completes, +inf where it fails."""
    n = Ghat.shape[1]
    Bm = -Ghat
    d = t[:, None] - Ghat.diagonal(dim1=1, dim2=2)
    Bm.diagonal(dim1=1, dim2=2).copy_(d)
    L, info = torch.linalg.cholesky_ex(Bm)
    ok = (info == 0) & torch.isfinite(L).all((1, 2))
    R2 = (L * L).sum((1, 2)) * (1 + gamma(n * n + 1))
    delta = gamma(n + 1) * R2 + U * d.abs().amax(1) + gamma(m) * F2hi + ETA_SLACK * (m + n + 2) ** 3 * (1 + t)
    lam = (t + 2 * delta) * (1 + 2 * U)
    return torch.where(ok, lam, torch.full_like(lam, math.inf))


def _finish(lam_hi: torch.Tensor, e: torch.Tensor, m: int, n: int) -> torch.Tensor:
    """2^e (sqrt(lam_hi) + e0), rounded up (proof steps 1 and 6)."""
    e0 = math.sqrt(m * n) * FLUSH * (1 + 1e-12)
    s = (torch.sqrt(lam_hi) * (1 + 2 * U) + e0) * (1 + 2 * U)
    s1, s2 = _pow2(e)
    out = s * s1 * s2
    return torch.nextafter(out, torch.full_like(out, math.inf))


def cholesky_bound_torch(A: torch.Tensor, steps: int = 20, eps: float = 2e-3, return_tries: bool = False):
    """Reference (CPU or CUDA): certified upper bound on sigma_1 of each matrix of A [B, m, n]; float64 [B].
    Same algorithm and proof as the native kernel (see the comment above); non-finite input raises BadInput."""
    A = A.detach().to(torch.float64)
    _check_finite(A, "cholesky_bound")
    if A.shape[1] < A.shape[2]:
        A = A.mT
    A = A.contiguous()
    Bn, m, n = A.shape
    tries = torch.zeros(Bn, dtype=torch.int32, device=A.device)
    if A.numel() == 0:
        out = torch.zeros(Bn, dtype=torch.float64, device=A.device)
        return (out, tries) if return_tries else out
    As, e, F2hi, nz = _scale(A)
    G = _gram_sym(As)
    theta = lanczos_max(G, steps).clamp_min(0)
    theta = torch.maximum(theta, G.diagonal(dim1=1, dim2=2).amax(1))
    lam = torch.full_like(theta, math.inf)
    todo = nz & (theta > 0)           # (theta >= max diag > 0 for a nonzero matrix; else the Frobenius bound)
    lam = torch.where(todo, lam, F2hi)
    f = eps
    while bool(todo.any()):
        t = theta * (1 + f)
        give_up = todo & (t >= F2hi)
        lam = torch.where(give_up, F2hi, lam)
        todo = todo & ~give_up
        idx = todo.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        tries[idx] += 1
        cand = cholesky_certify_torch(G[idx], t[idx], m, F2hi[idx])
        done = torch.isfinite(cand)
        lam[idx[done]] = cand[done]
        todo[idx[done]] = False
        f *= 4
    out = _finish(torch.minimum(lam, F2hi), e, m, n)
    out = torch.where(nz, out, torch.zeros_like(out))
    return (out, torch.where(nz, tries, torch.zeros_like(tries))) if return_tries else out


def cholesky_bound(A: torch.Tensor, steps: int = 20, eps: float = 2e-3, return_tries: bool = False):
    """Certified upper bound on sigma_1 of each matrix of A [B, m, n] (or one [m, n] -> scalar); float64.

    Shifted-Cholesky test (proof in the comment above `ETA_SLACK`): looseness ~eps / 2 when the Lanczos estimate
    (`steps` steps) has converged, at most ~4^k eps / 2 after k failed attempts (each retry multiplies the shift
    margin by 4), never above the Frobenius norm. Non-finite entries raise BadInput. Native CPU kernel for
    matrices up to NATIVE_MAX_N on the smaller side (one matrix per core, in cache), else the torch reference
    (any device). return_tries=True also returns the Cholesky attempts per matrix (int32 [B]; 0 means the
    Frobenius bound was the tighter certificate).
    """
    single = A.dim() == 2
    if single:
        A = A.unsqueeze(0)
    if A.dim() != 3:
        raise ValueError(f"cholesky_bound wants [B, m, n] matrices, got shape {tuple(A.shape)}")
    if steps < 1 or not 0 < eps < 1:
        raise ValueError(f"cholesky_bound wants steps >= 1 and 0 < eps < 1, got {steps}, {eps}")
    A = A.detach()
    out = tries = None
    if (use_native(A) and A.device.type == "cpu" and A.numel() > 0 and hasattr(_C, "spectral_chol_bound_f64")
            and (min(A.shape[1], A.shape[2]) <= NATIVE_MAX_N or os.environ.get("NNCERT_KERNELS", "").lower() == "native")):
        out, tries = _cholesky_bound_native(A, steps, eps)
    if out is None:
        out, tries = cholesky_bound_torch(A, steps, eps, return_tries=True)
    if single:
        out, tries = out[0], tries[0]
    return (out, tries) if return_tries else out


def _cholesky_bound_native(A: torch.Tensor, steps: int, eps: float, generic: bool = False):
    A64 = A.to(torch.float64)
    if A64.shape[1] < A64.shape[2]:
        A64 = A64.mT
    A64 = A64.contiguous()
    B, m, n = A64.shape
    out = torch.empty(B, dtype=torch.float64)
    tries = torch.empty(B, dtype=torch.int32)
    _C.spectral_chol_bound_f64(A64.data_ptr(), out.data_ptr(), tries.data_ptr(), B, m, n, int(steps), float(eps),
                               torch.get_num_threads(), bool(generic))
    if bool(torch.isnan(out).any()):
        _check_finite(A64, "cholesky_bound")
        raise RuntimeError("spectral_chol_bound_f64 returned NaN for finite input")  # pragma: no cover
    return out, tries


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
