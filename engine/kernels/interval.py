"""Interval propagation through affine layers: lower/upper in -> lower/upper out, batched over boxes.

Mid-radius form: for y = W x + b over [lower, upper], c = W mid + b and r = |W| rad with mid = (upper + lower) / 2,
rad = (upper - lower) / 2, and y lies in [c - r, c + r]. Exact in real arithmetic; computed in the dtype of the
inputs (float32 or float64), so callers that decide verdicts pass float64 and widen (engine.numerics.widen).

Torch references (`*_torch`) are the oracle of the parity tests; the dispatchers pick the native kernel
(nncert._C, CPU or CUDA) when `engine.kernels.use_native` says so and the extension has the function, and fall
back to the reference otherwise (other dtypes, mixed devices, an older build). Outputs have the input dtype.

`IntervalChain` is the fused fast path: a whole MLP of linear layers, each followed by an elementwise monotone
activation (relu, leaky_relu(alpha >= 0), sigmoid, tanh or none), prepared once (weights converted, packed, the
native plan built) and then run in one native call per batch of boxes.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from . import _C, threads, use_native

_DTYPES = {torch.float32: 0, torch.float64: 1}
ACTS = {"none": 0, "identity": 0, "relu": 1, "leaky_relu": 2, "sigmoid": 3, "tanh": 4}


# -- torch references ----------------------------------------------------------------------------------------------
def interval_linear_torch(lower: torch.Tensor, upper: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None):
    """Reference: y = x @ W.T + b over the box [lower, upper] ([B, in] each); returns ([B, out], [B, out])."""
    mid, rad = (upper + lower) / 2, (upper - lower) / 2
    c = F.linear(mid, W, b)
    r = F.linear(rad, W.abs())
    return c - r, c + r


def interval_conv2d_torch(lower, upper, W, b, stride, padding, dilation, groups):
    """Reference: conv2d over the box [lower, upper] ([B, C, H, W] each), zero padding (t, l, b, r) applied first."""
    t, l, bo, r = padding
    if t or l or bo or r:
        lower, upper = F.pad(lower, (l, r, t, bo)), F.pad(upper, (l, r, t, bo))
    mid, rad = (upper + lower) / 2, (upper - lower) / 2
    c = F.conv2d(mid, W, b, stride=stride, dilation=dilation, groups=groups)
    rr = F.conv2d(rad, W.abs(), None, stride=stride, dilation=dilation, groups=groups)
    return c - rr, c + rr


def interval_act_torch(lower: torch.Tensor, upper: torch.Tensor, act: str, alpha: float = 0.0):
    """Reference: an elementwise monotone non-decreasing activation maps the box bounds to bounds."""
    if act in ("none", "identity"):
        return lower, upper
    if act == "relu":
        return torch.relu(lower), torch.relu(upper)
    if act == "leaky_relu":
        return F.leaky_relu(lower, alpha), F.leaky_relu(upper, alpha)
    if act == "sigmoid":
        return torch.sigmoid(lower), torch.sigmoid(upper)
    if act == "tanh":
        return torch.tanh(lower), torch.tanh(upper)
    raise ValueError(f"unknown activation {act!r}; expected one of {sorted(ACTS)}")


def interval_chain_torch(lower, upper, layers):
    """Reference of the fused chain: layer by layer interval_linear_torch then interval_act_torch."""
    for W, b, act, alpha in _normalise_layers(layers):
        W = W.to(lower.dtype)
        lower, upper = interval_linear_torch(lower, upper, W, None if b is None else b.to(lower.dtype))
        lower, upper = interval_act_torch(lower, upper, act, alpha)
    return lower, upper


# -- helpers -------------------------------------------------------------------------------------------------------
def _native_ok(lower: torch.Tensor, fn: str, *others: torch.Tensor | None) -> bool:
    """Whether the native kernel `fn` (CPU name; "_cuda" appended on GPU) can run on these tensors."""
    if not use_native(lower) or lower.dtype not in _DTYPES:
        return False
    name = fn if lower.device.type == "cpu" else fn + "_cuda"
    if not hasattr(_C, name):
        return False
    return all(t is None or t.device == lower.device for t in others)


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


# -- interval linear -----------------------------------------------------------------------------------------------
def interval_linear(lower, upper, W, b=None):
    """Box [lower, upper] ([..., in]) through y = x W^T + b; returns (lower, upper) [..., out] in lower's dtype."""
    if _native_ok(lower, "interval_linear", upper, W, b):
        return _native_interval_linear(lower, upper, W, b)
    return interval_linear_torch(lower, upper, W, b)


def _native_interval_linear(lower, upper, W, b):
    dt = lower.dtype
    out_f, in_f = W.shape
    lead = lower.shape[:-1]
    lo = lower.reshape(-1, in_f).contiguous()
    hi = upper.to(dt).reshape(-1, in_f).contiguous()
    Wc = W.to(dt).contiguous()
    bc = None if b is None else b.to(dt).contiguous()
    B = lo.shape[0]
    olo = torch.empty((B, out_f), dtype=dt, device=lo.device)
    ohi = torch.empty((B, out_f), dtype=dt, device=lo.device)
    if B and out_f:
        if in_f == 0:  # empty sum: the box is the bias
            c = torch.zeros(out_f, dtype=dt, device=lo.device) if bc is None else bc
            olo.copy_(c.expand(B, out_f))
            ohi.copy_(c.expand(B, out_f))
        elif lo.device.type == "cpu":
            _C.interval_linear(_DTYPES[dt], lo.data_ptr(), hi.data_ptr(), Wc.data_ptr(), _ptr(bc), olo.data_ptr(),
                               ohi.data_ptr(), B, in_f, out_f, 0, 0.0, threads())
        else:
            with torch.cuda.device(lo.device):
                _C.interval_linear_cuda(_DTYPES[dt], lo.data_ptr(), hi.data_ptr(), Wc.data_ptr(), _ptr(bc),
                                        olo.data_ptr(), ohi.data_ptr(), B, in_f, out_f, 0, 0.0, _stream(lo.device))
    return olo.reshape(*lead, out_f), ohi.reshape(*lead, out_f)


# -- interval conv2d -----------------------------------------------------------------------------------------------
def interval_conv2d(lower, upper, W, b, stride, padding, dilation, groups):
    """Box [lower, upper] ([B, C, H, W]) through conv2d with zero padding (t, l, b, r); returns (lower, upper)."""
    if lower.dim() == 4 and _native_ok(lower, "interval_conv2d", upper, W, b):
        return _native_interval_conv2d(lower, upper, W, b, stride, padding, dilation, groups)
    return interval_conv2d_torch(lower, upper, W, b, stride, padding, dilation, groups)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _native_interval_conv2d(lower, upper, W, b, stride, padding, dilation, groups):
    dt = lower.dtype
    lo = lower.contiguous()
    hi = upper.to(dt).contiguous()
    Wc = W.to(dt).contiguous()
    bc = None if b is None else b.to(dt).contiguous()
    B, C, H, Wd = lo.shape
    Cout, _, kh, kw = Wc.shape
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    pt, pl, pb, pr = (int(p) for p in padding)
    OH, OW = _C.conv2d_out_shape(H, Wd, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw)
    olo = torch.empty((B, Cout, OH, OW), dtype=dt, device=lo.device)
    ohi = torch.empty((B, Cout, OH, OW), dtype=dt, device=lo.device)
    if olo.numel() == 0:
        return olo, ohi
    args = (_DTYPES[dt], lo.data_ptr(), hi.data_ptr(), Wc.data_ptr(), _ptr(bc), olo.data_ptr(), ohi.data_ptr(),
            B, C, H, Wd, Cout, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, int(groups))
    if lo.device.type == "cpu":
        _C.interval_conv2d(*args, threads())
    else:
        with torch.cuda.device(lo.device):
            _C.interval_conv2d_cuda(*args, _stream(lo.device))
    return olo, ohi


# -- fused chain ---------------------------------------------------------------------------------------------------
Layer = tuple  # (W [out, in], b [out] or None, act name, alpha)


def _normalise_layers(layers: Sequence) -> list[tuple[torch.Tensor, torch.Tensor | None, str, float]]:
    out = []
    prev = None
    for k, layer in enumerate(layers):
        W, b = layer[0], layer[1]
        act = layer[2] if len(layer) > 2 and layer[2] is not None else "none"
        alpha = float(layer[3]) if len(layer) > 3 and layer[3] is not None else 0.0
        if act not in ACTS:
            raise ValueError(f"layer {k}: unknown activation {act!r}; expected one of {sorted(ACTS)}")
        if act == "leaky_relu" and not alpha >= 0:
            raise ValueError(f"layer {k}: leaky_relu alpha {alpha} < 0 is not monotone")
        if W.dim() != 2 or (b is not None and tuple(b.shape) != (W.shape[0],)):
            raise ValueError(f"layer {k}: W must be [out, in] and b [out], got {list(W.shape)} and "
                             f"{None if b is None else list(b.shape)}")
        if prev is not None and W.shape[1] != prev:
            raise ValueError(f"layer {k} takes {W.shape[1]} inputs but layer {k - 1} gives {prev}")
        prev = W.shape[0]
        out.append((W, b, act, alpha))
    if not out:
        raise ValueError("a chain needs at least one layer")
    return out


class IntervalChain:
    """A fused MLP of (linear, monotone activation) layers for interval propagation, prepared once.

    `layers` is a sequence of (W [out, in], b [out] or None, act, alpha) with act in ACTS. Calling the plan on
    boxes lower/upper [B, in] returns ([B, out], [B, out]) in lower's dtype, equal (up to rounding) to
    `interval_chain_torch`. Native plans are built lazily per (dtype, device) and cached on the object, so keep
    one IntervalChain per network (e.g. in a dict keyed by the network) to pay the preparation once.
    """

    def __init__(self, layers: Sequence):
        self.layers = _normalise_layers(layers)
        self.in_features = int(self.layers[0][0].shape[1])
        self.out_features = int(self.layers[-1][0].shape[0])
        self._plans: dict = {}   # (dtype, device) -> (native plan or None, tensors kept alive)
        self._torch: dict = {}   # (dtype, device) -> converted layers for the reference path

    def _converted(self, dtype, device):
        key = (dtype, device)
        if key not in self._torch:
            self._torch[key] = [(W.to(dtype=dtype, device=device).contiguous(),
                                 None if b is None else b.to(dtype=dtype, device=device).contiguous(), act, alpha)
                                for W, b, act, alpha in self.layers]
        return self._torch[key]

    def _plan(self, dtype, device):
        key = (dtype, device)
        plan = self._plans.get(key)
        if plan is None:
            conv = self._converted(dtype, device)
            native = _C.IntervalChain(_DTYPES[dtype], device.type == "cuda",
                                      [(W.data_ptr(), _ptr(b)) for W, b, _, _ in conv],
                                      [tuple(W.shape) for W, _, _, _ in conv], [ACTS[a] for _, _, a, _ in conv],
                                      [al for _, _, _, al in conv])
            plan = self._plans[key] = native
        return plan

    def __call__(self, lower: torch.Tensor, upper: torch.Tensor):
        if lower.dim() != 2 or lower.shape[1] != self.in_features or upper.shape != lower.shape:
            raise ValueError(f"IntervalChain expects lower/upper [B, {self.in_features}], got {list(lower.shape)} "
                             f"and {list(upper.shape)}")
        dt, dev = lower.dtype, lower.device
        cpu = dev.type == "cpu"
        if not (dt in _DTYPES and use_native(lower) and hasattr(_C, "IntervalChain")
                and (cpu or hasattr(_C, "interval_linear_cuda"))):
            return interval_chain_torch(lower, upper, self._converted(dt, dev))
        plan = self._plans.get((dt, dev)) or self._plan(dt, dev)
        if not lower.is_contiguous():
            lower = lower.contiguous()
        if upper.dtype != dt or upper.device != dev or not upper.is_contiguous():
            upper = upper.to(device=dev, dtype=dt).contiguous()
        B = lower.shape[0]
        olo = torch.empty((B, self.out_features), dtype=dt, device=dev)
        ohi = torch.empty((B, self.out_features), dtype=dt, device=dev)
        if B == 0:
            return olo, ohi
        if cpu:
            plan.run(lower.data_ptr(), upper.data_ptr(), olo.data_ptr(), ohi.data_ptr(), B, threads())
        else:
            ws = torch.empty(max(plan.workspace_size(B), 1), dtype=dt, device=dev)
            with torch.cuda.device(dev):
                plan.run(lower.data_ptr(), upper.data_ptr(), olo.data_ptr(), ohi.data_ptr(), B, 0,
                         _stream(dev), ws.data_ptr())
        return olo, ohi


def interval_chain(lower, upper, layers):
    """One-shot fused chain (builds the plan each call; keep an IntervalChain for repeated calls)."""
    return IntervalChain(layers)(lower, upper)
