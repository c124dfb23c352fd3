"""Import torch.nn.Sequential-style modules into the IR.

Supported modules: Linear, Conv2d, ReLU, LeakyReLU, Sigmoid, Tanh, Flatten, Unflatten, BatchNorm1d/2d (eval
statistics), AvgPool2d, MaxPool2d, Identity, Dropout (identity: import is for inference), nested Sequential, and
`Residual(block)` (y = x + block(x)). Anything else raises UnsupportedOp naming the module.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UnsupportedOp
from ..ir import Network, Node


class Residual(nn.Module):
    """y = x + block(x): a residual connection that `from_torch` imports as an IR `add`."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x):
        return x + self.block(x)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _pads(p):
    ph, pw = _pair(p)
    return (ph, pw, ph, pw)


class _Builder:
    def __init__(self):
        self.nodes: list[Node] = []

    def add(self, op, inputs, params=None, attrs=None) -> str:
        name = f"n{len(self.nodes)}_{op}"
        self.nodes.append(Node(name, op, list(inputs),
                               {k: v.detach().clone() for k, v in (params or {}).items()}, attrs or {}))
        return name

    def module(self, m: nn.Module, x: str, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
        """Append the nodes of module m applied to value x of (non-batch) shape; return new value and shape."""
        if isinstance(m, nn.Sequential):
            for sub in m:
                x, shape = self.module(sub, x, shape)
            return x, shape
        if isinstance(m, Residual):
            y, yshape = self.module(m.block, x, shape)
            return self.add("add", [x, y]), yshape
        if isinstance(m, (nn.Identity, nn.Dropout)):
            return x, shape
        if isinstance(m, nn.Linear):
            p = {"W": m.weight} | ({"b": m.bias} if m.bias is not None else {})
            out = self.add("linear", [x], p)
        elif isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise UnsupportedOp(f"Conv2d with padding {m.padding!r}/{m.padding_mode!r} is not supported")
            p = {"W": m.weight} | ({"b": m.bias} if m.bias is not None else {})
            out = self.add("conv2d", [x], p, {"stride": _pair(m.stride), "pads": _pads(m.padding),
                                              "dilation": _pair(m.dilation), "groups": m.groups})
        elif isinstance(m, nn.ReLU):
            out = self.add("relu", [x])
        elif isinstance(m, nn.LeakyReLU):
            if not 0.0 <= m.negative_slope <= 1.0:
                raise UnsupportedOp(f"LeakyReLU with negative_slope {m.negative_slope} (only [0, 1] is supported)")
            out = self.add("leaky_relu", [x], attrs={"alpha": float(m.negative_slope)})
        elif isinstance(m, nn.Sigmoid):
            out = self.add("sigmoid", [x])
        elif isinstance(m, nn.Tanh):
            out = self.add("tanh", [x])
        elif isinstance(m, (nn.Flatten, nn.Unflatten)):
            y = m(torch.zeros((1, *shape)))
            return self.add("reshape", [x], attrs={"shape": tuple(y.shape[1:])}), tuple(y.shape[1:])
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            # derived in float64 (kept: the IR then computes the module's function without an extra rounding)
            var, mean = m.running_var.double(), m.running_mean.double()
            scale = 1 / torch.sqrt(var + m.eps) * (m.weight.detach().double() if m.affine else 1)
            shift = (m.bias.detach().double() if m.affine else 0) - mean * scale
            view = (-1,) + (1,) * (len(shape) - 1)
            out = self.add("affine", [x], {"scale": scale.reshape(view), "shift": shift.reshape(view)})
        elif isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
            if m.ceil_mode or (isinstance(m, nn.MaxPool2d) and _pair(m.dilation) != (1, 1)) or \
                    (isinstance(m, nn.AvgPool2d) and (not m.count_include_pad or m.divisor_override)):
                raise UnsupportedOp(f"{type(m).__name__} with these options is not supported: {m}")
            op = "avgpool2d" if isinstance(m, nn.AvgPool2d) else "maxpool2d"
            out = self.add(op, [x], attrs={"kernel": _pair(m.kernel_size), "stride": _pair(m.stride or m.kernel_size),
                                           "pads": _pads(m.padding)})
        else:
            raise UnsupportedOp(f"torch module {type(m).__name__} has no IR import rule")
        y = self.nodes[-1]
        from ..ops import apply_op
        return out, tuple(apply_op(y, [torch.zeros((1, *shape))] * len(y.inputs)).shape[1:])


def from_torch(module: nn.Module, input_shape: tuple[int, ...], source: str | None = None) -> Network:
    """IR of `module` for inputs of shape [B, *input_shape]. The module should be in eval mode."""
    b = _Builder()
    out, _ = b.module(module, "input", tuple(input_shape))
    if out == "input":  # an empty or all-identity module: keep one explicit node
        out = b.add("reshape", ["input"], attrs={"shape": tuple(input_shape)})
    return Network("input", tuple(input_shape), b.nodes, out, source=source or type(module).__name__)
