"""The adjoint of a convolution on bound coefficients, the costliest step of CROWN on a CNN.

`conv_adjoint` computes it in the coefficients' own dtype. `conv_back` computes float64 coefficients in float32 on
the CPU (torch has no fast float64 convolution there: float32 runs about 5x faster) and returns a rounding
allowance that keeps the bound rigorous:

For a conv y = J x + b on the input x with |x| <= zmax elementwise (its interval bounds), the exact bound step is
Lam . y = (J^T Lam) . x + Lam . b. With G = fl32(J32^T fl32(Lam)) the float32 result, Lam . y >= G . x + Lam . b
- |J^T Lam - G| . zmax, and for any evaluation that sums the at most K = (Cout / groups) kh kw products of each
entry in some order (direct convolution, im2col + GEMM, with or without FMA), including the rounding of Lam and J
to float32, |J^T Lam - G| <= gamma(K + 3) |J|^T |Lam| + (2K + 4) eta elementwise, where gamma(n) = n u / (1 - n u),
u = 2^-24 and eta = 2^-149 (underflow) (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., 3.1 and
2.2). By the adjoint identity |J|^T |Lam| . zmax = |Lam| . (|J| zmax), so the allowance is
gamma(K + 3) sum(|Lam| * (|J| zmax)) + (2K + 4) eta sum(zmax), with |J| zmax one forward conv per node (cached),
evaluated in float64 and scaled up by 1 + 1e-6 (that evaluation's own relative error is below 1e-9).

Used only where that error model holds: CPU tensors and torch's float32 arithmetic at IEEE precision
(torch.backends' fp32_precision "none"/"ieee", matmul precision "highest"; on a GPU cuDNN may pick TF32 or
Winograd/FFT algorithms, so GPUs keep float64), and for convs of at least MIN_ROW_WORK multiply-adds per bound row
(below that the conversions cost more than they save; per row, so a box gets the same bound alone or in a batch).
A node whose input has an unbounded interval, whose float32 result could overflow, or whose sums are too long for
gamma (n u >= 1/64, n the terms of a sum) is computed in float64 as before. Assumed of torch: its CPU float32
convolutions (oneDNN direct deconvolution, or im2col + GEMM) and bmm sum products, with no Winograd/FFT transform.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

U32 = 2.0 ** -24      # unit roundoff of float32
ETA32 = 2.0 ** -149   # float32's smallest subnormal
MIN_ROW_WORK = 1 << 16  # multiply-adds per row below which a conv adjoint stays in float64 (conversions cost more)


def _flat(Lam):
    B, m = Lam.shape[:2]
    return Lam.reshape(B * m, *Lam.shape[2:])


def conv_adjoint(Lam, weight, in_shape, stride, pads, dilation, groups, at=(0, 0)):
    """Adjoint of conv2d(pad(x)) applied to Lam [B, m, Cout, h, w], the block of the conv's output that starts at
    row/column `at`: (coefficients [B, m, Cin, h', w'] on the block of x they reach, clipped to x, its start)."""
    B, m = Lam.shape[:2]
    t, l = pads[0], pads[1]
    C, H, W = in_shape
    x = F.conv_transpose2d(_flat(Lam), weight, None, stride=stride, groups=groups, dilation=dilation)
    r, c = at[0] * stride[0] - t, at[1] * stride[1] - l     # x's first row/column, in input coordinates
    r0, c0 = max(r, 0), max(c, 0)
    r1, c1 = max(r0, min(r + x.shape[-2], H)), max(c0, min(c + x.shape[-1], W))
    x = x[:, :, r0 - r:r1 - r, c0 - c:c1 - c]
    return x.reshape(B, m, C, r1 - r0, c1 - c0), (r0, c0)


def _ieee(module) -> bool:
    return getattr(module, "fp32_precision", "none") in ("none", "ieee")


def single_ok(Lam) -> bool:
    """Whether conv_back may compute Lam's adjoint in float32 (see the module docstring)."""
    mk = torch.backends.mkldnn
    return (Lam.dtype == torch.float64 and Lam.device.type == "cpu"
            and torch.get_float32_matmul_precision() == "highest"
            and _ieee(torch.backends) and _ieee(mk) and _ieee(getattr(mk, "conv", None)))


def _abs_image(node, ctx, weight, dilation, groups):
    """(|J| zmax [B, Cout, Ho, Wo], sum(zmax) [B]) for node's conv, float64, cached per call; None when the input
    has no finite bounds."""
    key = ("abs-image", node.name)
    if key not in ctx.cache:
        box = ctx.bounds.get(node.inputs[0])
        out = None
        if box is not None:
            zmax = torch.maximum(box[0].abs(), box[1].abs()).to(torch.float64)
            if torch.isfinite(zmax).all():
                t, l, b, r = node.attrs["pads"]
                img = F.conv2d(F.pad(zmax, (l, r, t, b)), weight.abs().to(torch.float64), None,
                               stride=node.attrs["stride"], dilation=dilation, groups=groups)
                out = (img, zmax.reshape(zmax.shape[0], -1).sum(1))
        ctx.cache[key] = out
    return ctx.cache[key]


def conv_back(node, Lam, ctx, weight, dilation, groups, at=(0, 0)):
    """(coefficients, start, allowance [B, m] or None) of conv_adjoint for node's conv with this weight: in
    float32 with the rounding allowance to subtract from the bound's constant where single_ok, else exactly as
    conv_adjoint in Lam's dtype (allowance None)."""
    a = node.attrs
    in_shape = ctx.shape(node.inputs[0])
    K = (weight.shape[0] // groups) * weight.shape[2] * weight.shape[3]   # products summed per entry
    row = Lam[0, 0].numel() if Lam.numel() else 0
    # per row, so that the choice does not depend on how many boxes and rows a call carries; gamma(n) needs n u < 1
    # (and the allowance's own sums have n = row terms): keep a wide margin
    fits = row * K >= MIN_ROW_WORK and max(row, K + 3) * U32 < 1 / 64
    img = _abs_image(node, ctx, weight, dilation, groups) if fits and single_ok(Lam) else None
    if img is not None:
        L32 = Lam.float()
        A = L32.abs()
        # no entry of the result can overflow: each is a sum of products with distinct weights, at most
        # (1 + gamma) max|Lam| sum|W| (NaN or inf in Lam fails the test too)
        if float(A.detach().max()) * float(weight.abs().sum()) < 1e37:
            x, start = conv_adjoint(L32, weight.float(), in_shape, a["stride"], a["pads"], dilation, groups, at)
            return x.double(), start, _allowance(A, K, img, at)
    x, start = conv_adjoint(Lam, weight, in_shape, a["stride"], a["pads"], dilation, groups, at)
    return x, start, None


def _gamma(n: int) -> float:
    return n * U32 / (1 - n * U32)


def _allowance(A, K, img, at):
    """gamma(K + 3) sum(|Lam| * (|J| zmax)) + (2K + 4) eta sum(zmax), scaled by 1 + 1e-6 ([B, m], float64).

    A = |fl32(Lam)| [B, m, Cout, h, w]. sum(|Lam| * v) (v = |J| zmax on Lam's block) is bounded from float32 work:
    |Lam| <= (1 + u) A + eta; v32 = v rounded up to float32; the float32 sum s of n nonnegative products obeys
    sum(A * v32) <= (s + n eta) / (1 - gamma(n))."""
    B, m = A.shape[:2]
    (r, c), (h, w) = at, A.shape[-2:]
    v, zsum = img
    v = v[:, :, r:r + h, c:c + w].reshape(v.shape[0], -1, 1).expand(B, -1, -1)
    n = v.shape[1]
    v32 = torch.nextafter(v.float(), torch.tensor(float("inf")))
    s = torch.bmm(A.reshape(B, m, n), v32)[..., 0].double()
    total = (1 + U32) * (s + n * ETA32) / (1 - _gamma(n)) + ETA32 * v.sum((1, 2))[:, None]
    return (_gamma(K + 3) * total + (2 * K + 4) * ETA32 * zsum[:, None]) * (1 + 1e-6)
