"""Interval propagation through affine layers: lower/upper in -> lower/upper out, batched over boxes.

Torch references (`*_torch`) are the oracle of the parity tests; the dispatchers pick the native kernel when
`engine.kernels.use_native` says so.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _C, use_native


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


def interval_linear(lower, upper, W, b=None):
    if use_native(lower):
        return _native_interval_linear(lower, upper, W, b)
    return interval_linear_torch(lower, upper, W, b)


def interval_conv2d(lower, upper, W, b, stride, padding, dilation, groups):
    if use_native(lower):
        return _native_interval_conv2d(lower, upper, W, b, stride, padding, dilation, groups)
    return interval_conv2d_torch(lower, upper, W, b, stride, padding, dilation, groups)


def _native_interval_linear(lower, upper, W, b):  # filled in by the native-kernel work
    return interval_linear_torch(lower, upper, W, b)


def _native_interval_conv2d(lower, upper, W, b, stride, padding, dilation, groups):
    return interval_conv2d_torch(lower, upper, W, b, stride, padding, dilation, groups)
