"""Backward linear-bound (CROWN) kernels for ReLU MLPs: torch references and native dispatch.

Notation (Zhang et al. 2018, "Efficient Neural Network Robustness Certification with General Activation
Functions"): a linear bound on an expression is Lam @ v + bias with Lam [B, R, n] (R bound rows per box) and
bias [B, R]. A *lower* bound is propagated; an upper bound on a @ v is minus the lower bound on (-a) @ v, so
callers stack [A; -A] as rows.

ReLU relaxation on a pre-activation z in [l, u] (per neuron):
  stable active (l >= 0): relu(z) = z;  stable inactive (u <= 0): relu(z) = 0;
  unstable: lower al * z with al = 1 if u >= -l else 0 (auto_LiRPA's "adaptive" lower slope),
            upper au * z + cu with au = u / (u - l), cu = -l * au (the chord).
A lower bound through h = relu(z) then reads Lam+ (al z) + Lam- (au z + cu).

Kernels (each batched over B boxes, computing in the dtype of its inputs):
  relu_relax(l, u)                      -> al, au, cu
  backward_relu_linear(Lam, W, b, al, au, cu, bias) -> (Lam', bias')   one fused step
        Lam on h = relu(z), z = x @ W.T + b:  Lz = Lam+ * al + Lam- * au;  Lam' = Lz @ W;
        bias' = bias + Lam- @ cu + Lz @ b
  concretize_box(Lam, bias, lo, hi)     -> min over the box of Lam @ x + bias   [B, R]
  crown_mlp(lo, hi, Ws, bs, C)          -> (lower, upper) of C @ f(x) over each box, whole CROWN pass
Everything is exact up to floating-point rounding; domains widen their final bounds (engine.numerics.widen).
Native: on the CPU one call does the whole crown_mlp pass (csrc/cpu); on a GPU crown_mlp runs the reference in
chunks that fit the device memory, its passes over the rows in CUDA kernels (csrc/cuda: relaxation with the bias
terms, concretisation) and its products Lz @ W in cuBLAS through torch.
"""
from __future__ import annotations

import functools

import torch

from . import _C, use_native

# ------------------------------------------------------------------------------------------------ references

MIN_SPARSITY = 0.9


def crown_rows(il: torch.Tensor, iu: torch.Tensor, min_sparsity: float = MIN_SPARSITY) -> torch.Tensor:
    """Which pre-activation neurons of a ReLU layer get CROWN bounds, per box ([B, n] bool).

    The neurons the interval pre-bound [il, iu] leaves unstable (the others keep the interval, on which their
    relaxation is exact); but all neurons, with CROWN bounds replacing the interval, when more than
    min_sparsity * n are unstable. This is auto_LiRPA's default rule ("sparse intermediate bounds",
    minimum_sparsity = 0.9). We keep it so that intermediate bounds, and hence the adaptive lower slopes, equal
    auto_LiRPA's: the adaptive slope makes the final bound non-monotone in the intermediate bounds, so tighter
    intermediate bounds (e.g. intersecting CROWN with the interval) can give a looser final bound.
    """
    unstable = (il < 0) & (iu > 0)
    dense = unstable.sum(1, keepdim=True) > min_sparsity * il.shape[1]
    return unstable | dense


def relu_relax(l: torch.Tensor, u: torch.Tensor):
    """ReLU relaxation slopes/intercept (al, au, cu) for pre-activation bounds l <= u (any shape)."""
    unstable = (l < 0) & (u > 0)
    active = l >= 0
    one = torch.ones_like(l)
    denom = torch.where(unstable, u - l, one)
    au = torch.where(unstable, u / denom, active.to(l.dtype))
    cu = torch.where(unstable, -l * au, torch.zeros_like(l))
    al = torch.where(unstable, (u >= -l).to(l.dtype), active.to(l.dtype))
    return al, au, cu


def backward_relu_linear_torch(Lam, W, b, al, au, cu, bias):
    """Reference of one fused backward step (see module docstring). Lam [B, R, n], W [n, k], b [n] or None,
    al/au/cu [B, n], bias [B, R]; returns (Lam' [B, R, k], bias' [B, R])."""
    pos, neg = Lam.clamp(min=0), Lam.clamp(max=0)
    Lz = pos * al[:, None, :] + neg * au[:, None, :]
    bias = bias + (neg * cu[:, None, :]).sum(-1)
    if b is not None:
        bias = bias + Lz @ b
    return Lz @ W, bias


def concretize_box_torch(Lam, bias, lo, hi):
    """Reference: min over x in [lo, hi] ([B, n]) of Lam @ x + bias; Lam [B, R, n], bias [B, R] -> [B, R]."""
    mid, rad = (hi + lo) / 2, (hi - lo) / 2
    return (Lam @ mid[:, :, None])[..., 0] - (Lam.abs() @ rad[:, :, None])[..., 0] + bias


def _interval_linear(lo, hi, W, b):
    mid, rad = (hi + lo) / 2, (hi - lo) / 2
    c = mid @ W.T + (0 if b is None else b)
    r = rad @ W.abs().T
    return c - r, c + r


def hidden_sizes(dims) -> int:
    """Values per box of an MLP's hidden pre-activation bounds (layers 1..L-1, each l then u)."""
    return 2 * sum(dims[1:-1])


def _intersect(l, u, prior, off):
    if prior is None:
        return l, u
    n = l.shape[1]
    return torch.maximum(l, prior[:, off:off + n]), torch.minimum(u, prior[:, off + n:off + 2 * n])


def crown_mlp_torch(lo, hi, Ws, bs, C=None, min_sparsity: float = MIN_SPARSITY, prior=None, keep_inter=False):
    """Reference CROWN on a ReLU MLP z1 = W1 x + b1, z_k = W_k relu(z_{k-1}) + b_k, output z_L.

    lo, hi [B, n0]; Ws[k] [n_k, n_{k-1}]; bs[k] [n_k] or None; C None, [m, n_L] or [B, m, n_L].
    Intermediate bounds: z1 by interval arithmetic (exact for one affine layer); for k >= 2 an interval
    pre-bound from the previous layer's bounds, then CROWN (backward to the input) for the rows `crown_rows`
    selects; the other neurons keep the interval. A selected neuron that its CROWN upper bound proves inactive
    (u <= 0) keeps the interval lower bound: neither its relaxation (slope 0) nor the next layer's interval
    pre-bound depends on it, so the final bounds equal those of both sides computed, and the native kernel skips
    that row. Returns (lower, upper) [B, m], unwidened.

    Hidden pre-activation bounds [B, hidden_sizes(dims)] (layer by layer, l then u): `prior`, bounds valid on a
    box containing each box (e.g. from its parent in branch and bound), is intersected with the interval
    pre-bounds and with the CROWN rows (which then keep the interval too); keep_inter=True also returns the
    final hidden bounds, as a third value.
    """
    B, dt = lo.shape[0], lo.dtype
    Ws = [W.to(dtype=dt, device=lo.device) for W in Ws]
    bs = [None if b is None else b.to(dtype=dt, device=lo.device) for b in bs]
    L = len(Ws)
    l, u = _interval_linear(lo, hi, Ws[0], bs[0])
    if L > 1:
        l, u = _intersect(l, u, prior, 0)
    relax, inter, off = [], [], 0
    for k in range(1, L):
        inter += [l, u]
        off += 2 * l.shape[1]
        relax.append(relu_relax(l, u))
        if k == L - 1:
            break
        il, iu = _intersect(*_interval_linear(l.clamp(min=0), u.clamp(min=0), Ws[k], bs[k]), prior, off)
        use = crown_rows(il, iu, min_sparsity)
        idx = use.any(0).nonzero().flatten()
        if idx.numel():
            rows = torch.cat([Ws[k][idx], -Ws[k][idx]])                       # [2r, n_{k-1}]
            bk = torch.zeros(len(idx), dtype=dt, device=lo.device) if bs[k] is None else bs[k][idx]
            Lam = rows.expand(B, *rows.shape)
            bias = torch.cat([bk, -bk]).expand(B, -1)
            lb = _backward_to_input(Lam, bias, Ws, bs, relax, k - 1, lo, hi)
            r = len(idx)
            u_idx = use[:, idx]
            cl, cu = lb[:, :r], -lb[:, r:]
            if prior is not None:
                cl, cu = torch.maximum(cl, il[:, idx]), torch.minimum(cu, iu[:, idx])
            # a neuron proven inactive by its CROWN upper bound keeps the interval lower bound (the native
            # kernel skips that row)
            il, iu = il.clone(), iu.clone()
            il[:, idx] = torch.where(u_idx & (cu > 0), cl, il[:, idx])
            iu[:, idx] = torch.where(u_idx, cu, iu[:, idx])
        l, u = il, iu
    nL = Ws[-1].shape[0]
    if C is None:
        C = torch.eye(nL, dtype=dt, device=lo.device)
    C = C.to(dt)
    if C.dim() == 2:
        C = C.expand(B, *C.shape)
    m = C.shape[1]
    A = C @ Ws[-1]                                                             # [B, m, n_{L-1}]
    cb = torch.zeros(B, m, dtype=dt, device=lo.device) if bs[-1] is None else C @ bs[-1]
    if L == 1:
        res = concretize_box_torch(torch.cat([A, -A], 1), torch.cat([cb, -cb], 1), lo, hi)
    else:
        res = _backward_to_input(torch.cat([A, -A], 1), torch.cat([cb, -cb], 1), Ws, bs, relax, L - 2, lo, hi)
    out = res[:, :m], -res[:, m:]
    if keep_inter:
        out += (torch.cat(inter, 1) if inter else lo.new_zeros(B, 0),)
    return out


def _backward_to_input(Lam, bias, Ws, bs, relax, top, lo, hi):
    """Lam on h_{top+1} = relu(z_{top+1}) (0-based: relu of layer `top`'s output) back to the input box."""
    for j in range(top, -1, -1):
        al, au, cu = relax[j]
        Lam, bias = backward_relu_linear(Lam, Ws[j], bs[j], al, au, cu, bias)
    return concretize_box(Lam, bias, lo, hi)


# ------------------------------------------------------------------------------------------------ dispatch

def _has(name: str) -> bool:
    return _C is not None and hasattr(_C, name)


def _dtype_code(t: torch.Tensor) -> int:
    return {torch.float64: 0, torch.float32: 1}.get(t.dtype, -1)


def _native_ok(t: torch.Tensor, name: str, cuda_name: str | None = None) -> bool:
    """Whether the native kernel `name` (`cuda_name`, default name + "_cuda", for tensors on a GPU) runs on t."""
    if t.device.type == "cuda":
        name = cuda_name or name + "_cuda"
    return use_native(t) and _has(name) and _dtype_code(t) >= 0


def _c(t):
    return t.contiguous()


def _stream(t):
    return torch.cuda.current_stream(t.device).cuda_stream if t.device.type == "cuda" else 0


def _threads() -> int:
    return max(1, torch.get_num_threads())


def backward_relu_linear(Lam, W, b, al, au, cu, bias):
    """Fused backward step through ReLU + linear layer; native when available (see module docstring). On a GPU
    the native kernel forms the relaxed rows Lz and the new biases in one pass, and the product Lz @ W goes to the
    BLAS (cuBLAS, through torch)."""
    if not _native_ok(Lam, "lb_backward_relu_linear", "lb_relax_rows_cuda"):
        return backward_relu_linear_torch(Lam, W, b, al, au, cu, bias)
    dt = Lam.dtype
    B, R, n = Lam.shape
    if Lam.device.type == "cuda":
        return _backward_cuda(Lam, W.to(dt), b, al, au, cu, bias)
    k = W.shape[1]
    Lam, W = _c(Lam.to(dt).expand(B, R, n)), _c(W.to(dt))
    al, au, cu = (_c(t.to(dt).expand(B, n)) for t in (al, au, cu))   # [B, n] or one row [1, n] for all boxes
    bias = _c(bias.to(dt).expand(B, R))
    bb = None if b is None else _c(b.to(dt))
    out = torch.empty(B, R, k, dtype=dt, device=Lam.device)
    bout = torch.empty(B, R, dtype=dt, device=Lam.device)
    _C.lb_backward_relu_linear(_dtype_code(Lam), Lam.data_ptr(), W.data_ptr(), 0 if bb is None else bb.data_ptr(),
                               al.data_ptr(), au.data_ptr(), cu.data_ptr(), bias.data_ptr(), out.data_ptr(),
                               bout.data_ptr(), B, R, n, k, _threads())
    return out, bout


def _shared_or_contiguous(t):
    """(t, batch stride) without copying when t is one [R, ...] block expanded over the batch (stride 0), else
    (contiguous t, its batch stride)."""
    if t.stride(0) == 0 and t[0].is_contiguous():
        return t, 0
    t = t.contiguous()
    return t, t.stride(0)


def _backward_cuda(Lam, W, b, al, au, cu, bias):
    dt = Lam.dtype
    B, R, n = Lam.shape
    lam, ls = _shared_or_contiguous(Lam)
    bias, bst = _shared_or_contiguous(bias.to(dt).expand(B, R))
    al, au, cu = (_c(t.to(dt).expand(B, n)) for t in (al, au, cu))
    bb = None if b is None else _c(b.to(dt))
    lz = torch.empty(B, R, n, dtype=dt, device=Lam.device)
    bout = torch.empty(B, R, dtype=dt, device=Lam.device)
    _C.lb_relax_rows_cuda(_dtype_code(Lam), lam.data_ptr(), ls, 0 if bb is None else bb.data_ptr(), al.data_ptr(),
                          au.data_ptr(), cu.data_ptr(), bias.data_ptr(), bst, lz.data_ptr(), bout.data_ptr(), B, R,
                          n, _stream(Lam))
    return lz @ W, bout


def concretize_box(Lam, bias, lo, hi):
    """min over each box of Lam @ x + bias; native when available."""
    if not _native_ok(Lam, "lb_concretize_box"):
        return concretize_box_torch(Lam, bias, lo, hi)
    dt = Lam.dtype
    _, R, n = Lam.shape
    B = torch.broadcast_shapes(Lam.shape[:1], lo.shape[:1], hi.shape[:1])[0]   # as the reference broadcasts
    Lam, lo, hi = _c(Lam.expand(B, R, n)), _c(lo.to(dt).expand(B, n)), _c(hi.to(dt).expand(B, n))
    bias = _c(bias.to(dt).expand(B, R))
    out = torch.empty(B, R, dtype=dt, device=Lam.device)
    args = (_dtype_code(Lam), Lam.data_ptr(), bias.data_ptr(), lo.data_ptr(), hi.data_ptr(), out.data_ptr(), B, R, n)
    if Lam.device.type == "cuda":
        _C.lb_concretize_box_cuda(*args, _stream(Lam))
    else:
        _C.lb_concretize_box(*args, _threads())
    return out


def pack_mlp(Ws, bs, dtype, device=None):
    """Weights of an MLP in one contiguous buffer + layer widths: W1, b1, W2, b2, ... (absent biases as zeros), then
    W1^T, W2^T, ... (the native CPU kernel reads columns of W from them)."""
    parts, dims = [], [int(Ws[0].shape[1])]
    for W, b in zip(Ws, bs):
        parts += [W.reshape(-1), torch.zeros(W.shape[0]) if b is None else b.reshape(-1)]
        dims.append(int(W.shape[0]))
    parts += [W.T.reshape(-1) for W in Ws]
    buf = torch.cat([p.to(dtype=dtype, device=device) for p in parts]).contiguous()
    return buf, dims


@functools.lru_cache(maxsize=16)
def _eye(n, dtype, device):
    return torch.eye(n, dtype=dtype, device=device)


def native_madds():
    """Multiply-adds of the matrix products the native CPU crown_mlp did since the last call (R rows x active
    neurons x width, per product; padding excluded), or None without the native counter. Resets the count."""
    return _C.lb_crown_mlp_madds() if _has("lb_crown_mlp_madds") else None


GPU_MEMORY_FRACTION = 0.25


def gpu_chunk(dims, m, dtype, device) -> int:
    """Boxes per chunk of a CROWN pass on a GPU: its bound-row tensors (two rows for every neuron of the widest hidden
    layer, or the 2m output rows, by the widest layer; at most 8 such alive at once, torch path included) within
    GPU_MEMORY_FRACTION of the memory the device and torch's cache have free."""
    rows = 2 * max(max(dims[1:-1], default=0), m)
    per_box = 8 * rows * max(dims) * (torch.finfo(dtype).bits // 8)
    free = torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return max(1, int(free * GPU_MEMORY_FRACTION) // per_box)


def _crown_mlp_gpu(lo, hi, Ws, bs, C, prior, keep_inter):
    """crown_mlp_torch in chunks of gpu_chunk boxes (its native steps: relaxation and concretisation kernels,
    products by cuBLAS)."""
    B = lo.shape[0]
    dims = [int(Ws[0].shape[1])] + [int(W.shape[0]) for W in Ws]
    step = gpu_chunk(dims, dims[-1] if C is None else C.shape[-2], lo.dtype, lo.device)
    if B <= step:
        return crown_mlp_torch(lo, hi, Ws, bs, C, prior=prior, keep_inter=keep_inter)
    parts = []
    for s in range(0, B, step):
        part = slice(s, s + step)
        Cp = C[part] if C is not None and C.dim() == 3 else C
        parts.append(crown_mlp_torch(lo[part], hi[part], Ws, bs, Cp, prior=None if prior is None else prior[part],
                                     keep_inter=keep_inter))
    return tuple(torch.cat(t) for t in zip(*parts))


def crown_mlp(lo, hi, Ws, bs, C=None, packed=None, prior=None, keep_inter=False):
    """CROWN bounds of C @ f(x) on a ReLU MLP over each box (semantics of crown_mlp_torch, including `prior` and
    `keep_inter`). CPU: one native call for the whole pass when available. GPU: crown_mlp_torch in chunks that fit
    the device memory, with the native CUDA relaxation and concretisation kernels when built.

    packed: optional cached pack_mlp(Ws, bs, lo.dtype, lo.device) result (CPU kernel).
    """
    if lo.device.type == "cuda":
        return _crown_mlp_gpu(lo, hi, Ws, bs, C, prior, keep_inter)
    if not _native_ok(lo, "lb_crown_mlp"):
        return crown_mlp_torch(lo, hi, Ws, bs, C, prior=prior, keep_inter=keep_inter)
    dt, dev = lo.dtype, lo.device
    B = lo.shape[0]
    buf, dims = packed if packed is not None else pack_mlp(Ws, bs, dt, dev)
    nL = dims[-1]
    C = _eye(nL, dt, dev) if C is None else _c(C.to(dt))
    batched = C.dim() == 3
    m = C.shape[-2]
    lo, hi = _c(lo), _c(hi.to(dt))
    out_lo = torch.empty(B, m, dtype=dt, device=dev)
    out_hi = torch.empty(B, m, dtype=dt, device=dev)
    args = (_dtype_code(lo), lo.data_ptr(), hi.data_ptr(), B, buf.data_ptr(), dims, C.data_ptr(), int(batched), m,
            out_lo.data_ptr(), out_hi.data_ptr())
    H = hidden_sizes(dims)
    if prior is not None:
        prior = _c(prior.to(dt))
        if prior.shape != (B, H):
            raise ValueError(f"prior hidden bounds must be [{B}, {H}], got {list(prior.shape)}")
    inter = torch.empty(B, H, dtype=dt) if keep_inter else None
    _C.lb_crown_mlp(*args, _threads(), MIN_SPARSITY, 0 if prior is None else prior.data_ptr(),
                    0 if inter is None else inter.data_ptr())
    return (out_lo, out_hi) + ((inter,) if keep_inter else ())
