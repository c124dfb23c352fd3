"""Kernel dispatch (one module per kernel family: interval, linear_bounds, spectral): native (nncert._C, C++ / CUDA) with a torch reference beside each kernel.

The torch reference is both the fallback and the oracle of the parity tests. `NNCERT_KERNELS=torch` forces the
reference, `NNCERT_KERNELS=native` requires the native path (error if unavailable), default `auto`.

Interval kernels take and return boxes as (lower, upper) pairs. They compute in the dtype of their inputs and
are exact up to floating-point rounding; domains widen their final bounds outward (`engine.numerics.widen`).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

try:  # the compiled extension; absent in a source checkout that was never built
    from nncert import _C  # type: ignore
except ImportError:  # pragma: no cover - depends on the build
    _C = None


def mode() -> str:
    m = os.environ.get("NNCERT_KERNELS", "auto").lower()
    if m not in ("auto", "native", "torch"):
        raise ValueError(f"NNCERT_KERNELS must be auto, native or torch, not {m!r}")
    return m


def native_available() -> bool:
    return _C is not None


def cuda_built() -> bool:
    return _C is not None and bool(_C.cuda_built())


def use_native(t: torch.Tensor) -> bool:
    m = mode()
    if m == "torch":
        return False
    ok = _C is not None and (t.device.type == "cpu" or (t.device.type == "cuda" and cuda_built()))
    if m == "native" and not ok:
        raise RuntimeError(f"NNCERT_KERNELS=native but no native kernel for device {t.device}")
    return ok


def info() -> dict:
    """What was built and which path runs."""
    from .. import __version__
    d = {"version": __version__, "native": native_available() and mode() != "torch", "native_built": native_available(),
         "cuda": cuda_built(), "cuda_available": torch.cuda.is_available(), "kernels_mode": mode(),
         "torch": torch.__version__}
    if _C is not None:
        d.update(_C.build_info())
    return d
