"""Kernel dispatch (one module per kernel family: interval, linear_bounds, spectral): native (nncert._C, C++ / CUDA) with a torch reference beside each kernel.

The torch reference is both the fallback and the oracle of the parity tests. `NNCERT_KERNELS=torch` forces the
reference, `NNCERT_KERNELS=native` requires the native path (error if unavailable), default `auto`.
`NNCERT_SIMD=generic|avx2|avx512` caps the instruction set of the native CROWN kernels (default: the best the CPU
has); every copy computes the same bounds up to rounding.

Interval kernels take and return boxes as (lower, upper) pairs. They compute in the dtype of their inputs and
are exact up to floating-point rounding; domains widen their final bounds outward (`engine.numerics.widen`).
"""
from __future__ import annotations

import os
import threading

import torch

from ..errors import BadSetting

try:  # the compiled extension; absent in a source checkout that was never built
    from nncert import _C  # type: ignore
except ImportError:  # pragma: no cover - depends on the build
    _C = None


def mode() -> str:
    """NNCERT_KERNELS (auto, native or torch); also applies NNCERT_SIMD, read at the same moments."""
    m = os.environ.get("NNCERT_KERNELS", "auto").lower()
    if m not in ("auto", "native", "torch"):
        raise BadSetting(f"NNCERT_KERNELS must be auto, native or torch, not {m!r}")
    _cap_simd()
    return m


SIMD = ("generic", "avx2", "avx512")   # the native CROWN kernels' copies, by _C.lb_isa level


def _cap_simd() -> None:
    v = os.environ.get("NNCERT_SIMD")
    if v is None or _C is None or not hasattr(_C, "lb_isa"):
        return
    if v.lower() not in SIMD:
        raise BadSetting(f"NNCERT_SIMD must be one of {', '.join(SIMD)}, not {v!r}")
    _C.lb_isa(SIMD.index(v.lower()))


def native_available() -> bool:
    return _C is not None


def cuda_built() -> bool:
    return _C is not None and bool(_C.cuda_built())


def use_native(t: torch.Tensor) -> bool:
    """Whether t's kernels run native. The CUDA kernels carry their own (static) CUDA runtime, whose current device
    need not follow torch's: tensors on a GPU other than device 0 take the torch path (untested on several GPUs).
    On a GPU they run only once they have matched their torch references there (`cuda_check`, once per process)."""
    m = mode()
    if m == "torch":
        return False
    ok = _C is not None and (t.device.type == "cpu" or (t.device.type == "cuda" and t.device.index in (None, 0)
                                                       and cuda_built() and cuda_checked(m)))
    if m == "native" and not ok:
        raise RuntimeError(f"NNCERT_KERNELS=native but no native kernel for device {t.device}")
    return ok


_cuda_state: str | None = None   # None: not checked; "checking"; "ok"; else the failure
_cuda_lock = threading.RLock()   # other threads wait for a check in progress; the checking thread re-enters


def cuda_checked(m: str = "auto") -> bool:
    """Whether the native CUDA kernels passed `cuda_check.check` on GPU 0, running it on first call (native kernels
    are enabled for the checking thread while it runs). A failure warns once and keeps the torch path; under
    NNCERT_KERNELS=native (m == "native") it raises instead."""
    global _cuda_state
    with _cuda_lock:
        if _cuda_state is None:
            from . import cuda_check

            _cuda_state = "checking"
            try:
                _cuda_state = cuda_check.check(torch.device("cuda", 0)) or "ok"
            finally:
                if _cuda_state == "checking":   # interrupted: check again next time
                    _cuda_state = None
            if _cuda_state != "ok":
                import warnings

                warnings.warn(f"nncert: native CUDA kernels disabled, the torch path runs on the GPU: {_cuda_state}")
        state = _cuda_state
    if state not in ("ok", "checking") and m == "native":
        raise RuntimeError(f"NNCERT_KERNELS=native but the native CUDA kernels failed their check: {state}")
    return state in ("ok", "checking")


_threads: int | None = None


def threads() -> int:
    """Threads the native CPU kernels use: set_threads(n), else env NNCERT_THREADS, else hardware_concurrency."""
    if _threads is not None:
        return _threads
    env = os.environ.get("NNCERT_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise BadSetting(f"NNCERT_THREADS must be a positive integer, not {env!r}") from None
        if n < 1:
            raise BadSetting(f"NNCERT_THREADS must be a positive integer, not {env!r}")
        return n
    return _hardware_threads()


_hw: int | None = None


def _hardware_threads() -> int:
    global _hw
    if _hw is None:
        _hw = int(_C.hardware_threads()) if _C is not None and hasattr(_C, "hardware_threads") else (os.cpu_count() or 1)
    return _hw


def set_threads(n: int | None) -> None:
    """Fix the native CPU kernels' thread count (None: back to NNCERT_THREADS / hardware_concurrency)."""
    global _threads
    if n is not None and int(n) < 1:
        raise ValueError(f"thread count must be >= 1, not {n}")
    _threads = None if n is None else int(n)


def info() -> dict:
    """What was built and which path runs: native (bool, native kernels in use), cuda_built (bool, CUDA kernels
    compiled in; they run only where cuda_available, a GPU torch can use, is true),
    cuda_check (the CUDA kernels' first-use check, run here when a GPU is present: "not run", "ok" or what
    failed), version, threads (native CPU kernel threads), and build details."""
    from .. import __version__
    if mode() != "torch" and cuda_built() and torch.cuda.is_available():
        cuda_checked()
    d = {"version": __version__, "native": native_available() and mode() != "torch", "native_built": native_available(),
         "cuda_built": cuda_built(), "cuda_available": torch.cuda.is_available(), "kernels_mode": mode(),
         "torch": torch.__version__, "threads": threads(), "cuda_check": _cuda_state or "not run"}
    if _C is not None:
        d.update(_C.build_info())
        if hasattr(_C, "interval_simd"):
            d["cpu_simd"] = _C.interval_simd()
        if hasattr(_C, "lb_isa"):   # the CROWN kernels' instruction set on this CPU
            d["crown_simd"] = SIMD[_C.lb_isa()]
    return d
