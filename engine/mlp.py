"""The one MLP view of an IR network: a single path of linear layers with elementwise activations.

Fast paths (the fused IBP interval chain, MILP for ReLU MLPs) ask `mlp_layers` whether a network is such a chain;
anything else takes the general graph path. Reshapes keep element order (C-order flattening) and are free;
elementwise `affine` nodes (constant scale/shift) are folded into the adjacent linear map in float64, which
changes results only by rounding (callers widen their final bounds outward).
"""
from __future__ import annotations

import math

import numpy as np
import torch

ACTS = ("relu", "leaky_relu", "sigmoid", "tanh")


def _flat_param(p: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return p.to(torch.float64).expand(shape).reshape(-1)


def mlp_layers(network) -> list | None:
    """The (W, b, act, alpha) layers of an MLP-shaped network (float64, affines folded; act "none" when a linear
    layer has no activation), or None if it is not one."""
    prev = network.input_name
    shape = tuple(network.input_shape)
    layers: list[list] = []          # [W, b, act, alpha]
    pre_s = pre_t = None             # affine waiting for the next linear (flattened input features)
    consumers = network.consumers()
    for node in network.nodes:
        if node.inputs != [prev] or len(consumers.get(prev, [])) != 1:
            return None
        op = node.op
        if op == "reshape":
            pass
        elif op == "affine":
            n = int(torch.Size(shape).numel())
            s = _flat_param(node.params["scale"], shape) if "scale" in node.params else torch.ones(n, dtype=torch.float64)
            t = _flat_param(node.params["shift"], shape) if "shift" in node.params else torch.zeros(n, dtype=torch.float64)
            if layers and layers[-1][2] == "none" and pre_s is None:   # right after a linear: y -> s*y + t
                W, b = layers[-1][0], layers[-1][1]
                layers[-1][0] = s[:, None] * W
                layers[-1][1] = s * b + t
            else:                                                     # before the next linear: compose
                pre_s, pre_t = (s, t) if pre_s is None else (s * pre_s, s * pre_t + t)
        elif op == "linear":
            if math.prod(shape[:-1]) != 1:
                return None
            W = node.params["W"].to(torch.float64)
            b = node.params["b"].to(torch.float64) if "b" in node.params else torch.zeros(W.shape[0], dtype=torch.float64)
            if pre_s is not None:
                b = b + W @ pre_t
                W = W * pre_s[None, :]
                pre_s = pre_t = None
            layers.append([W, b, "none", 0.0])
        elif op in ACTS:
            if not layers or layers[-1][2] != "none" or pre_s is not None:
                return None
            layers[-1][2] = op
            layers[-1][3] = float(node.attrs.get("alpha", 0.0)) if op == "leaky_relu" else 0.0
        else:
            return None
        prev = node.name
        shape = tuple(node.shape)
    if not layers or pre_s is not None or prev != network.output:
        return None
    return [tuple(layer) for layer in layers]


def mlp_chain(network) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """The network as affine maps [(W_1, b_1), ..., (W_L, b_L)] (float64 numpy) with a ReLU between consecutive
    maps, on the flat input; None when it is not such a chain (consecutive linear maps are composed)."""
    layers = mlp_layers(network)
    if layers is None or any(act not in ("relu", "none") for _, _, act, _ in layers) or layers[-1][2] != "none":
        return None
    out, W, b = [], None, None
    for Wl, bl, act, _ in layers:
        Wl, bl = Wl.numpy(), bl.numpy()
        W, b = (Wl, bl) if W is None else (Wl @ W, Wl @ b + bl)
        if act == "relu":
            out.append((W, b))
            W = b = None
    out.append((W, b))
    return out
