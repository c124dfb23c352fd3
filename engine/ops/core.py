"""Semantics of the core IR ops (the first ones nncert had; their ONNX importers are OnnxContext methods).

With x the node's first input and every tensor [B, *shape]:
  linear      y = x @ W.T + b            params W [out, in], b [out] or absent; acts on the last axis
  conv2d      y = conv2d(pad(x), W, b)   params W [Cout, Cin/groups, kh, kw], b [Cout] or absent;
                                         attrs stride (2), pads (top, left, bottom, right), dilation (2), groups
  affine      y = x * scale + shift      params scale / shift (each optional), broadcast against one sample
  add, sub    y = a + b, y = a - b       two inputs; per-sample shapes broadcast (numpy rules)
  relu, sigmoid, tanh                    elementwise
  leaky_relu  y = max(x, alpha * x)      attrs alpha in [0, 1]
  reshape     y = x.reshape(B, *shape)   attrs shape (without batch); Flatten / Squeeze / Unsqueeze import to it
  avgpool2d   attrs kernel (2), stride (2), pads (t, l, b, r); divisor counts padded cells (count_include_pad)
  maxpool2d   attrs kernel (2), stride (2), pads (t, l, b, r); pads are -inf
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pad2d(x: torch.Tensor, pads, value: float = 0.0) -> torch.Tensor:
    t, l, b, r = pads
    if t == l == b == r == 0:
        return x
    return F.pad(x, (l, r, t, b), value=value)


def param(node, key, like: torch.Tensor):
    """node.params[key] in like's dtype and device, or None when absent."""
    p = node.params.get(key)
    return None if p is None else p.to(dtype=like.dtype, device=like.device)


def linear(node, args):
    x = args[0]
    return F.linear(x, param(node, "W", x), param(node, "b", x))


def linear_abs(node, args):
    x = args[0]
    return F.linear(x, param(node, "W", x).abs())


def conv2d(node, args, weight=None, bias=True):
    x, a = args[0], node.attrs
    W = param(node, "W", x) if weight is None else weight
    return F.conv2d(pad2d(x, a["pads"]), W, param(node, "b", x) if bias else None, stride=a["stride"],
                    dilation=a["dilation"], groups=a["groups"])


def conv2d_abs(node, args):
    return conv2d(node, args, param(node, "W", args[0]).abs(), bias=False)


def affine(node, args):
    x = args[0]
    if "scale" in node.params:
        x = x * param(node, "scale", x)
    if "shift" in node.params:
        x = x + param(node, "shift", x)
    return x


def affine_abs(node, args):
    x = args[0]
    return x * param(node, "scale", x).abs() if "scale" in node.params else x


def add(node, args):
    return args[0] + args[1]


def sub(node, args):
    return args[0] - args[1]


def relu(node, args):
    return torch.relu(args[0])


def sigmoid(node, args):
    return torch.sigmoid(args[0])


def tanh(node, args):
    return torch.tanh(args[0])


def leaky_relu(node, args):
    return F.leaky_relu(args[0], node.attrs["alpha"])


def reshape(node, args):
    x = args[0]
    return x.reshape(x.shape[0], *node.attrs["shape"])


def avgpool2d(node, args):
    a = node.attrs
    return F.avg_pool2d(pad2d(args[0], a["pads"]), a["kernel"], a["stride"])


def maxpool2d(node, args):
    a = node.attrs
    return F.max_pool2d(pad2d(args[0], a["pads"], float("-inf")), a["kernel"], a["stride"])
