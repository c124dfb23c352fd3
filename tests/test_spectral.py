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
