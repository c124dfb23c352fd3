"""Batched spectral norms: certified bounds never below the exact sigma_1, parity native vs torch, estimates."""
import math

import pytest
import torch
import torch.nn.functional as F

from nncert.engine.kernels import _C, spectral as S

torch.set_num_threads(1)


def exact(A):
    return torch.linalg.matrix_norm(A.to(torch.float64), ord=2)


@pytest.mark.parametrize("shape", [(200, 16, 16), (40, 30, 70), (30, 90, 7), (10, 1, 13), (10, 13, 1), (3, 2, 2)])
def test_gram_bound_never_below_exact(shape):
    g = torch.Generator().manual_seed(hash(shape) % 1000)
    A = torch.randn(*shape, generator=g, dtype=torch.float64)
    # rank-deficient, scaled to extreme magnitudes, and repeated top singular values
    A[0] = torch.outer(torch.randn(shape[1], generator=g, dtype=torch.float64),
                       torch.randn(shape[2], generator=g, dtype=torch.float64))
    A[1] = A[1] * 1e150
    A[2] = A[2] * 1e-150
    for iters in (0, 1, 3, 6, 10):
        b = S.gram_bound(A, iters)
        b_ref = S.gram_bound_torch(A, iters)
        ex = exact(A)
        assert (b >= ex).all() and (b_ref >= ex).all()
    assert ((S.gram_bound(A, 10) - ex) / ex).max() < 1e-3


def test_gram_bound_identity_and_zero():
    eye = torch.eye(8, dtype=torch.float64).expand(4, 8, 8).clone()
    b = S.gram_bound(eye, 6)
    assert (b >= 1).all() and (b < 1 + 1e-12 + 8 ** (1 / 128)).all()  # multiplicity 8: rank^(1/2^(T+1)) at most
    assert (S.gram_bound(torch.zeros(3, 5, 4), 6) == 0).all()


def test_gram_bound_tight_on_dense_batch():
    A = torch.randn(200, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    r = S.gram_bound(A, 6) / exact(A) - 1
    assert (r >= 0).all() and r.max() < 0.01


def test_float32_input_is_exact_matrix():
    A = torch.randn(20, 12, 9, generator=torch.Generator().manual_seed(2))
    assert (S.gram_bound(A, 6) >= exact(A)).all()


@pytest.mark.skipif(_C is None or not hasattr(_C, "spectral_gram_bound_f64"), reason="native spectral kernel not built")
def test_native_torch_parity(monkeypatch):
    for shape in [(64, 17, 33), (40, 24, 16)]:   # generic and register-blocked (n % 8 == 0) native paths
        B = torch.randn(*shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        monkeypatch.setenv("NNCERT_KERNELS", "native")
        nat = S.gram_bound(B, 6)
        monkeypatch.setenv("NNCERT_KERNELS", "torch")
        ref = S.gram_bound(B, 6)
        assert torch.allclose(nat, ref, rtol=1e-12, atol=0)
        assert (nat >= exact(B)).all()
    A = torch.randn(64, 33, 17, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    v0 = torch.randn(64, 17, dtype=torch.float64)
    monkeypatch.setenv("NNCERT_KERNELS", "native")
    sn, vn = S.power_iteration(A, 30, v0)
    monkeypatch.setenv("NNCERT_KERNELS", "torch")
    st, vt = S.power_iteration(A, 30, v0)
    assert torch.allclose(sn, st, rtol=1e-10)


@pytest.mark.parametrize("kernels", ["native", "torch"])
def test_gram_bound_non_finite(monkeypatch, kernels):
    """NaN or infinite entries are refused (a NaN matrix once bounded to 0, certifying anything); a finite matrix
    whose Frobenius norm overflows gets the trivial bound +inf."""
    from nncert.engine.errors import BadInput
    monkeypatch.setenv("NNCERT_KERNELS", kernels)
    for bad in (math.nan, math.inf, -math.inf):
        A = torch.randn(3, 6, 5, dtype=torch.float64)
        A[1, 2, 3] = bad
        with pytest.raises(BadInput, match="NaN or infinite"):
            S.gram_bound(A, 6)
    A = torch.randn(3, 6, 5, dtype=torch.float64)
    A[2] *= 1e200
    b = S.gram_bound(A, 6)
    assert math.isinf(b[2]) and b[2] > 0 and torch.isfinite(b[:2]).all() and (b[:2] >= exact(A[:2])).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_parity():
    if not (_C is not None and hasattr(_C, "spectral_gram_bound_f64_cuda")):
        pytest.skip("CUDA spectral kernel not built")
    A = torch.randn(64, 40, 24, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ref = S.gram_bound_torch(A, 6)
    gpu = S.gram_bound(A.cuda(), 6).cpu()
    assert torch.allclose(gpu, ref, rtol=1e-12, atol=0)
    assert (gpu >= exact(A)).all()


def test_power_iteration_lower_bound_and_warm_start():
    A = torch.randn(50, 20, 30, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ex = exact(A)
    s, v = S.power_iteration(A, 3)
    assert (s <= ex * (1 + 1e-12)).all()
    s2, v2 = S.power_iteration(A, 200, v)
    assert torch.allclose(s2, ex, rtol=1e-6)
    s3, _ = S.power_iteration(A, 1, v2)   # warm start: one more step stays converged
    assert torch.allclose(s3, ex, rtol=1e-6)
    A.requires_grad_(True)
    s4, _ = S.power_iteration(A, 5, v2)
    s4.sum().backward()
    assert A.grad is not None and torch.isfinite(A.grad).all()


def _dense_conv(W, in_shape, stride, pads, dilation, groups):
    fwd, _, out_shape = S.conv2d_operator(W.double(), in_shape, stride, pads, dilation, groups)
    n = math.prod(in_shape)
    return fwd(torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)).reshape(n, -1).T


CONVS = [((4, 3, 3, 3), (3, 8, 8), (1, 1), (1, 1, 1, 1), (1, 1), 1),
         ((6, 2, 3, 3), (4, 9, 7), (2, 2), (1, 1, 1, 1), (1, 1), 2),
         ((4, 2, 2, 3), (2, 7, 7), (1, 2), (0, 1, 2, 0), (2, 1), 1),
         ((8, 3, 4, 4), (3, 10, 10), (2, 2), (1, 1, 1, 1), (1, 1), 1)]


@pytest.mark.parametrize("wshape,in_shape,stride,pads,dilation,groups", CONVS)
def test_conv_operator_adjoint_power_and_bound(wshape, in_shape, stride, pads, dilation, groups):
    g = torch.Generator().manual_seed(6)
    W = torch.randn(*wshape, generator=g, dtype=torch.float64)
    fwd, adj, out_shape = S.conv2d_operator(W, in_shape, stride, pads, dilation, groups)
    x = torch.randn(2, *in_shape, generator=g, dtype=torch.float64)
    yv = torch.randn(2, *out_shape, generator=g, dtype=torch.float64)
    assert torch.allclose((fwd(x) * yv).sum((1, 2, 3)), (x * adj(yv)).sum((1, 2, 3)), rtol=1e-10)
    D = _dense_conv(W, in_shape, stride, pads, dilation, groups)
    ex = float(torch.linalg.matrix_norm(D, ord=2))
    s, _ = S.power_iteration_op(fwd, adj, torch.randn(3, *in_shape, generator=g, dtype=torch.float64), 300)
    assert (s <= ex * (1 + 1e-9)).all() and (s >= ex * (1 - 1e-3)).any()
    assert S.conv2d_bound(W, in_shape, stride, pads, dilation, groups) >= ex
    assert float(S.gram_bound(D, 10)) >= ex


# ------------------------------------------------------------------------ certified dense bound by Cholesky
from nncert.engine.errors import BadInput  # noqa: E402

HAS_CHOL = _C is not None and hasattr(_C, "spectral_chol_bound_f64")
IMPLS = ["torch"] + (["native", "generic"] if HAS_CHOL else [])
# the exact reference (LAPACK SVD in float64) is itself accurate to ~1e-15 relative only
REF_TOL = 1e-13


def chol(A, impl, **kw):
    if impl == "torch":
        return S.cholesky_bound_torch(A, **kw)
    if impl == "generic":
        return S._cholesky_bound_native(A, kw.get("steps", 20), kw.get("eps", 2e-3), generic=True)[0]
    return S.cholesky_bound(A, **kw)


def svd_top(A):
    return torch.linalg.svdvals(A.to(torch.float64))[..., 0]


def with_singular_values(B, m, n, sv, g):
    """[B, m, n] float64 matrices U diag(sv) V^T with random orthogonal U, V."""
    U = torch.linalg.qr(torch.randn(B, m, m, generator=g, dtype=torch.float64))[0][:, :, :len(sv)]
    V = torch.linalg.qr(torch.randn(B, n, n, generator=g, dtype=torch.float64))[0][:, :, :len(sv)]
    return U @ torch.diag(torch.tensor(sv, dtype=torch.float64)) @ V.mT


def hard_cases():
    g = torch.Generator().manual_seed(11)
    cases = {
        "gauss64": torch.randn(60, 64, 64, generator=g, dtype=torch.float64),
        "tall": torch.randn(20, 90, 13, generator=g, dtype=torch.float64),
        "wide": torch.randn(20, 7, 50, generator=g, dtype=torch.float64),
        "vector_row": torch.randn(5, 1, 17, generator=g, dtype=torch.float64),
        "tiny_2x2": torch.randn(10, 2, 2, generator=g, dtype=torch.float64),
        "rank1": torch.randn(10, 30, 1, generator=g, dtype=torch.float64) @ torch.randn(10, 1, 20, generator=g,
                                                                                       dtype=torch.float64),
        "rank3": torch.randn(10, 40, 3, generator=g, dtype=torch.float64) @ torch.randn(10, 3, 40, generator=g,
                                                                                       dtype=torch.float64),
        "repeated_top": with_singular_values(10, 24, 24, [3.0] * 5 + [1.0] * 3, g),
        "clustered_top": with_singular_values(10, 32, 20, [2.0, 2.0 - 1e-9, 2.0 - 2e-9, 1.9, 0.5], g),
        "identity": torch.eye(33, dtype=torch.float64).expand(3, 33, 33).clone(),
    }
    base = torch.randn(10, 20, 16, generator=g, dtype=torch.float64)
    cases["scaled_1e-150"] = base * 1e-150
    cases["scaled_1e+150"] = base * 1e150
    cases["scaled_1e+300"] = base * 1e300
    cases["subnormal"] = base * 2.0 ** -1060
    mixed = base.clone()
    mixed[:, :10] *= 1e150
    mixed[:, 10:] *= 1e-150
    cases["mixed_1e+-150"] = mixed
    return cases


@pytest.mark.parametrize("impl", IMPLS)
def test_cholesky_bound_sound_and_tight(impl):
    for name, A in hard_cases().items():
        b = chol(A, impl)
        ex = svd_top(A)
        assert torch.isfinite(b).all(), name
        assert (b >= ex * (1 - REF_TOL)).all(), (name, (b / ex - 1).min().item())
        assert (b <= ex * 1.01).all(), (name, (b / ex - 1).max().item())


@pytest.mark.parametrize("impl", IMPLS)
def test_cholesky_bound_extremes(impl):
    assert (chol(torch.zeros(3, 6, 5, dtype=torch.float64), impl) == 0).all()
    z = torch.zeros(2, 4, 4, dtype=torch.float64)
    z[0, 1, 2] = 5e-324                      # the smallest subnormal: never rounded to 0
    b = chol(z, impl)
    assert b[0] >= 5e-324 and b[1] == 0
    huge = torch.full((1, 8, 8), 1.7e308, dtype=torch.float64)     # sigma_1 = 8 * 1.7e308 overflows
    assert chol(huge, impl)[0] == math.inf
    big = torch.full((1, 8, 8), 1e307, dtype=torch.float64)        # sigma_1 = 8e307 is representable
    assert 8e307 <= chol(big, impl)[0] <= 8e307 * 1.01


@pytest.mark.parametrize("impl", IMPLS)
def test_cholesky_bound_float32_input_is_exact_matrix(impl):
    A = torch.randn(30, 12, 9, generator=torch.Generator().manual_seed(12))
    b = chol(A, impl)
    ex = svd_top(A)
    assert b.dtype == torch.float64 and (b >= ex * (1 - REF_TOL)).all() and (b <= ex * 1.01).all()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_cholesky_bound_rejects_non_finite(impl, bad):
    A = torch.randn(4, 9, 9, dtype=torch.float64)
    A[2, 3, 4] = bad
    with pytest.raises(BadInput, match="NaN or infinite"):
        chol(A, impl)


def test_cholesky_bound_retries_stay_sound():
    # a single Lanczos step gives a poor estimate: several Cholesky attempts, still sound
    A = torch.randn(40, 30, 30, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    for impl in IMPLS:
        b = chol(A, impl, steps=1, eps=1e-4)
        assert (b >= svd_top(A) * (1 - REF_TOL)).all()
    b, tries = S.cholesky_bound(A, steps=1, eps=1e-4, return_tries=True)
    assert tries.max() > 1
    b1, t1 = S.cholesky_bound(A[0], return_tries=True)
    assert b1.dim() == 0 and t1 >= 1


@pytest.mark.skipif(not HAS_CHOL, reason="native Cholesky kernel not built")
def test_cholesky_native_torch_parity():
    g = torch.Generator().manual_seed(14)
    for shape in [(200, 64, 64), (50, 37, 21), (30, 5, 70)]:
        A = torch.randn(*shape, generator=g, dtype=torch.float64)
        ref, tr = S.cholesky_bound_torch(A, return_tries=True)
        nat, tn = S._cholesky_bound_native(A, 20, 2e-3)
        gen, tg = S._cholesky_bound_native(A, 20, 2e-3, generic=True)
        # same algorithm; only the float32 Lanczos estimate differs by summation order
        assert torch.allclose(nat, ref, rtol=1e-5, atol=0)
        assert torch.allclose(gen, ref, rtol=1e-5, atol=0)
        assert (tn == tr).float().mean() > 0.98 and (tg == tr).float().mean() > 0.98


def test_cholesky_bound_dense_batch_looseness():
    A = torch.randn(300, 64, 64, generator=torch.Generator().manual_seed(15), dtype=torch.float64)
    r = S.cholesky_bound(A) / svd_top(A) - 1
    assert (r >= -REF_TOL).all() and r.max() < 0.005
