"""Windowed bound coefficients: CROWN rows of a convolutional network that are zero outside a spatial window.

A bound row for one neuron of a [C, H, W] feature map depends, one conv back, only on the conv's receptive field
of it: a row for a neuron of the first layers of a 52x52 network touches a few rows and columns, not the whole
map. `Win` keeps such coefficients as the block that can be nonzero ([B, m, C, h, w] at row/column `at` of the
[C, H, W] map); the windowed rules below move a block through the spatially local ops (conv, average pool,
elementwise relaxations, residual adds, per-position affines) and grow it by each op's footprint, so that the
work of a row scales with its receptive field rather than with the map (auto_LiRPA's "patches" mode serves the same
purpose). Any other op, and a plugin's own rule for any op, gets the dense coefficients (`dense`).

The arithmetic is the dense rule's on the block: every coefficient outside the block is exactly zero, so the
bounds are the dense ones (same products; sums over zeros dropped).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import rules as R
from .adjoint import conv_back

TILE = 8  # neurons of a tile x tile spatial block are bounded together (their rows share a window)


class Win:
    """Coefficients [B, m, C, H, W] that are zero outside the block t [B, m, C, h, w] starting at row/column `at`."""

    __slots__ = ("t", "at", "full")

    def __init__(self, t, at, full):
        self.t, self.at, self.full = t, tuple(at), tuple(full)

    @property
    def shape(self):
        return (*self.t.shape[:2], *self.full)

    @property
    def dtype(self):
        return self.t.dtype

    @property
    def device(self):
        return self.t.device

    def dense(self) -> torch.Tensor:
        (r, c), (H, W) = self.at, self.full[1:]
        h, w = self.t.shape[-2:]
        return F.pad(self.t, (c, W - c - w, r, H - r - h))

    def crop(self, v):
        """The block of a per-element tensor v [..., H, W]."""
        (r, c), (h, w) = self.at, self.t.shape[-2:]
        return v[..., r:r + h, c:c + w]

    def __neg__(self):
        return Win(-self.t, self.at, self.full)

    def __add__(self, other):
        if not isinstance(other, Win) or other.full != self.full:
            return dense(self) + dense(other)
        if other.at == self.at and other.t.shape == self.t.shape:
            return Win(self.t + other.t, self.at, self.full)
        (r, c), (h, w) = self.at, self.t.shape[-2:]
        (r2, c2), (h2, w2) = other.at, other.t.shape[-2:]
        r0, c0 = min(r, r2), min(c, c2)
        r1, c1 = max(r + h, r2 + h2), max(c + w, c2 + w2)
        out = torch.zeros(*self.t.shape[:3], r1 - r0, c1 - c0, dtype=self.dtype, device=self.device)
        out[..., r - r0:r - r0 + h, c - c0:c - c0 + w] += self.t
        out[..., r2 - r0:r2 - r0 + h2, c2 - c0:c2 - c0 + w2] += other.t
        return window(out, (r0, c0), self.full)

    __radd__ = __add__


def window(t, at, full):
    """A Win, or the plain tensor when the block is the whole map."""
    return t if tuple(t.shape[-2:]) == tuple(full[1:]) else Win(t, at, full)


def dense(L):
    return L.dense() if isinstance(L, Win) else L


def unit_rows(shape, ids, B, dtype, device):
    """Rows +e_i and -e_i ([B, 2k, *shape]) of the neurons `ids` (flat indices into `shape`), windowed to their
    bounding box when that is smaller than the map."""
    k = ids.numel()
    if len(shape) != 3:
        E = torch.zeros(k, *shape, dtype=dtype, device=device)
        E.view(k, -1)[torch.arange(k), ids] = 1
        return torch.cat([E, -E]).expand(B, 2 * k, *shape)
    C, H, W = shape
    ch, pos = ids // (H * W), ids % (H * W)
    row, col = pos // W, pos % W
    r0, c0 = int(row.min()), int(col.min())
    h, w = int(row.max()) - r0 + 1, int(col.max()) - c0 + 1
    E = torch.zeros(k, C, h, w, dtype=dtype, device=device)
    E[torch.arange(k), ch, row - r0, col - c0] = 1
    return window(torch.cat([E, -E]).expand(B, 2 * k, C, h, w), (r0, c0), shape)


def by_tile(shape, ids, tile):
    """`ids` (flat indices into `shape`) grouped by tile x tile spatial block of a [C, H, W] map, in blocks order."""
    if len(shape) != 3 or shape[1] * shape[2] <= tile * tile:
        return [ids]
    _, H, W = shape
    pos = ids % (H * W)
    key = (pos // W // tile) * ((W + tile - 1) // tile) + (pos % W) // tile
    order = torch.argsort(key * ids.numel() + torch.arange(ids.numel(), device=ids.device))
    ids, key = ids[order], key[order]
    _, counts = torch.unique_consecutive(key, return_counts=True)
    return list(torch.split(ids, counts.tolist()))


# ---- windowed rules: (node, Win, ctx) -> (ins, bias), exactly the dense rule's result, blocks for coefficients


def _conv(node, L, ctx, weight, dilation, groups):
    x, at, allowance = conv_back(node, L.t, ctx, weight, dilation, groups, L.at)
    return window(x, at, ctx.shape(node.inputs[0])), allowance


def _conv2d(node, L, ctx):
    a = node.attrs
    x, allowance = _conv(node, L, ctx, ctx.param(node, "W"), a["dilation"], a["groups"])
    bias = (L.t.sum((-1, -2)) * ctx.param(node, "b")).sum(-1) if "b" in node.params else None
    return [x], R.minus(bias, allowance)


def _avgpool(node, L, ctx):
    C = ctx.shape(node.inputs[0])[0]
    x, allowance = _conv(node, L, ctx, R.avgpool_weight(node, C, L.dtype, L.device), (1, 1), C)
    return [x], R.minus(None, allowance)


def _elementwise(relax, nan_safe):
    def rule(node, L, ctx):
        ins, bias = R.relaxed(L.t, *(L.crop(v[:, None]) for v in relax(node, ctx)), nan_safe=nan_safe)
        return [Win(ins[0], L.at, L.full)], bias
    return rule


def _same_shape(node, ctx):
    return all(tuple(ctx.shape(i)) == tuple(node.shape) for i in node.inputs)


def _add(node, L, ctx):
    return ([L, L], None) if _same_shape(node, ctx) else R._add(node, L.dense(), ctx)


def _sub(node, L, ctx):
    return ([L, -L], None) if _same_shape(node, ctx) else R._sub(node, L.dense(), ctx)


def _affine(node, L, ctx):
    keys = [k for k in ("scale", "shift") if k in node.params]
    if not _same_shape(node, ctx) or any(node.params[k].dim() > len(node.shape) for k in keys):
        return R._affine(node, L.dense(), ctx)
    shape = tuple(node.shape)

    def part(key):
        return L.crop(ctx.param(node, key).expand(shape))

    bias = R._sum_rest(L.t * part("shift")) if "shift" in node.params else None
    x = L.t * part("scale") if "scale" in node.params else L.t
    return [Win(x, L.at, L.full)], bias


WINDOWED = {
    R._conv2d: _conv2d,
    R._avgpool: _avgpool,
    R._activation: _elementwise(R.activation_relax, False),
    R._curved: _elementwise(R.curved_relax, True),
    R._add: _add,
    R._sub: _sub,
    R._affine: _affine,
}


def windowed(rule_for):
    """rule_for with windowed coefficients: nncert's spatially local rules take blocks, every other rule (a plugin's
    own included) gets dense coefficients."""
    def wrapped(node):
        rule = rule_for(node)
        fast = WINDOWED.get(rule)

        def run(node, L, ctx):
            if not isinstance(L, Win):
                return rule(node, L, ctx)
            if fast is not None:
                return fast(node, L, ctx)
            return rule(node, L.dense(), ctx)
        return run
    return wrapped
