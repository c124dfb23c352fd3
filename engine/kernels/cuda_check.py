"""First-use check of the native CUDA kernels on a device, against their torch references.

The CUDA kernels are compiled wherever nvcc is found, but only a GPU can run them, and a kernel that misbehaves on
some device (architecture, driver, a bug no test reached) must not produce bounds. So before a process first runs
native kernels on a GPU, `check(device)` runs every family there on small random inputs (float64 and float32) and
compares it with its torch reference: interval linear, interval conv2d and the fused interval chain, the CROWN
backward step (relaxation rows) and box concretisation, and the Gram spectral bound (which must also be at least
the exact sigma_1). `engine.kernels.use_native` sends a device's tensors to the native kernels only when the check
passed; otherwise the torch path runs (a warning names the kernel), or, with NNCERT_KERNELS=native, it is an error.
The check is a smoke test of the build on this device, not a proof: the parity tests (`pytest -k cuda`) go further.
"""
from __future__ import annotations

import torch

RTOL = {torch.float64: 1e-9, torch.float32: 1e-4}   # rounding: the native sums run in another order


def _close(what: str, got, want, dtype) -> str | None:
    if len(got) != len(want):
        return f"{what} ({dtype}): {len(got)} outputs, the reference has {len(want)}"
    for g, w in zip(got, want):
        g, w = g.detach().cpu().to(torch.float64), w.detach().cpu().to(torch.float64)
        if g.shape != w.shape or not bool(torch.isfinite(g).all()):
            return f"{what} ({dtype}): shape or non-finite values"
        err = float(((g - w).abs() / (1 + w.abs())).max()) if g.numel() else 0.0
        if err > RTOL[dtype]:
            return f"{what} ({dtype}): differs from the torch reference by {err:.3g} (relative)"
    return None


def _families(device: torch.device, dtype):
    """(name, native call, reference call) for each kernel family, on random inputs with a fixed seed."""
    from . import interval as I
    from . import linear_bounds as lb
    from . import spectral as S

    g = torch.Generator().manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)

    lo = rnd(5, 37)
    hi = lo + rnd(5, 37).abs()
    W, b, W2 = rnd(19, 37), rnd(19), rnd(7, 19)
    layers = [(W, b, "relu", 0.0), (W2, None, "tanh", 0.0)]
    clo = rnd(2, 3, 9, 8)
    chi = clo + rnd(2, 3, 9, 8).abs()
    K, kb = rnd(4, 3, 3, 2), rnd(4)
    conv = (K, kb, (2, 1), (1, 0, 1, 1), (1, 2), 1)
    B, R, n, k = 3, 6, 19, 37
    Lam, bias = rnd(B, R, n), rnd(B, R)
    l = rnd(B, n)
    u = l + rnd(B, n).abs()
    al, au, cu = lb.relu_relax(l, u)
    Wb, bb = rnd(n, k), rnd(n)
    A = rnd(4, 9, 6)
    yield ("interval_linear", lambda: I.interval_linear(lo, hi, W, b), lambda: I.interval_linear_torch(lo, hi, W, b))
    yield ("interval_chain", lambda: I.IntervalChain(layers)(lo, hi), lambda: I.interval_chain_torch(lo, hi, layers))
    yield ("interval_conv2d", lambda: I.interval_conv2d(clo, chi, *conv), lambda: I.interval_conv2d_torch(clo, chi, *conv))
    yield ("crown backward_relu_linear", lambda: lb.backward_relu_linear(Lam, Wb, bb, al, au, cu, bias),
           lambda: lb.backward_relu_linear_torch(Lam, Wb, bb, al, au, cu, bias))
    yield ("crown concretize_box", lambda: (lb.concretize_box(Lam, bias, l, u),),
           lambda: (lb.concretize_box_torch(Lam, bias, l, u),))
    if dtype == torch.float64:   # the spectral kernels are float64 only
        yield ("gram_bound", lambda: (S.gram_bound(A),), lambda: (S.gram_bound_torch(A),))


def check(device: torch.device) -> str | None:
    """None when every native kernel family matches its torch reference on `device`, else what failed.

    Call it with native kernels enabled for the device (use_native true); it runs each family natively and by
    its reference, synchronising the device, and reports the first mismatch, error or non-finite output."""
    for dtype in (torch.float64, torch.float32):
        for name, native, ref in _families(device, dtype):
            try:
                got = native()
                want = ref()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
            except Exception as e:  # noqa: BLE001 - any failure disqualifies the kernels
                return f"{name} ({dtype}) raised {type(e).__name__}: {e}"
            bad = _close(name, got, want, dtype)
            if bad:
                return bad
    try:
        return _gram_sound(device)
    except Exception as e:  # noqa: BLE001
        return f"gram_bound raised {type(e).__name__}: {e}"


def _gram_sound(device: torch.device) -> str | None:
    """The native Gram bound is an upper bound on sigma_1 (exact, by an SVD on the CPU)."""
    from . import spectral as S

    A = torch.randn(8, 12, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = S.gram_bound(A.to(device)).cpu()
    if not bool((got >= torch.linalg.matrix_norm(A, ord=2)).all()):
        return "gram_bound: below the exact sigma_1"
    return None
