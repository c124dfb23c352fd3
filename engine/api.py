"""nncert's Python API, also importable from the package top level (`import nncert`).

    import nncert
    model = nncert.load(torch_module, input_shape=(1, 28, 28))      # or a path to an .onnx file
    spec = nncert.robustness(x, eps=0.02, label=7)                   # or nncert.read_vnnlib(path, model)
    result = nncert.verify(model, spec, timeout=60)                  # result.verdict: sat / unsat / unknown / timeout
    lo, hi = nncert.bounds(model, x - 0.02, x + 0.02, domain="crown")

Guarantees are those of the command line (engine/verify.py): `unsat` only from sound bounds, `sat` only with a
counterexample re-checked on the model (onnxruntime for ONNX files and exported modules).
"""
from __future__ import annotations

import io

import torch

from .domain import Result
from .errors import BadInput
from .ir import Network
from .spec import Box, Case, Disjunct, LpBall, Spec

CHECK_POINTS = 8            # random inputs an imported torch module must reproduce
CHECK_RTOL, CHECK_ATOL = 1e-4, 1e-5


def load(model, input_shape=None) -> Network:
    """A Network from an .onnx path or a torch.nn.Module (input_shape without the batch axis required then).

    Modules that engine.io.torch_import does not know are exported with torch's ONNX exporter in memory and
    imported like a file. Either way the imported graph must reproduce the module's outputs on CHECK_POINTS random
    inputs (float32, rtol 1e-4), else BadInput."""
    if isinstance(model, Network):
        return model
    if not isinstance(model, torch.nn.Module):
        from .instance import load_model
        return load_model(model)
    if input_shape is None:
        raise BadInput("load(module) needs input_shape, the shape of one input without the batch axis")
    module = model.eval()
    shape = tuple(int(s) for s in input_shape)
    from .errors import UnsupportedOp
    from .io.torch_import import from_torch
    try:
        net = from_torch(module, shape)
    except UnsupportedOp:
        net = _exported(module, shape)
    x = torch.rand(CHECK_POINTS, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = module(x).reshape(CHECK_POINTS, -1)
        got = net.forward(x.to(torch.float64)).reshape(CHECK_POINTS, -1)
    if want.shape != got.shape or not torch.allclose(got, want.to(got.dtype), rtol=CHECK_RTOL, atol=CHECK_ATOL):
        raise BadInput(f"the imported graph of {type(module).__name__} does not reproduce the module's outputs")
    return net


def _exported(module, shape) -> Network:
    from .io.onnx_import import load_onnx_bytes
    import warnings
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():   # the exporter's notices about its own future, not the user's module
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(module, (torch.zeros(1, *shape),), buf, dynamo=False, opset_version=13,
                              input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    except Exception as e:  # noqa: BLE001 - the exporter's own message names the construct
        raise BadInput(f"torch's ONNX exporter cannot export {type(module).__name__}: {type(e).__name__}: {e}") \
            from None
    return load_onnx_bytes(buf.getvalue(), source=f"<{type(module).__name__}>")


def read_vnnlib(path, model=None) -> Spec:
    """A VNN-LIB spec, checked against the model's input and output sizes when a model is given."""
    from .io.vnnlib import read_vnnlib as _read
    net = None if model is None else load(model)
    return _read(path, None if net is None else net.n_inputs, None if net is None else net.n_outputs)


def write_vnnlib(spec: Spec, path, model=None, version: str = "2.0") -> None:
    """Write a spec with box input sets as a VNN-LIB file (2.0: the model's input shape when a model is given, else
    flat; or 1.0); read_vnnlib reads it back to the same spec (input bounds are written exactly)."""
    from pathlib import Path
    if version == "2.0":
        from .io.vnnlib2 import format_vnnlib2
        shape = [spec.n_inputs]
        if model is not None:
            net = load(model)
            shape = [1, *net.input_shape]
            spec = spec.padded(max(net.n_outputs, spec.n_outputs))
        text = format_vnnlib2(spec, shape)
    elif version == "1.0":
        from .io.vnnlib import format_vnnlib
        text = format_vnnlib(spec)
    else:
        raise BadInput(f"VNN-LIB version must be '1.0' or '2.0', got {version!r}")
    Path(path).write_text(text)


def robustness(x, eps: float, label: int, norm: str = "linf", n_classes: int | None = None,
               clip=(None, None)) -> Spec:
    """Local robustness of one input as a spec: the unsafe set is "some class j != label scores >= label's", over
    the l_inf (a box, intersected with clip=(lo, hi) when given) or l2 ball of radius eps around x (any shape,
    flattened). n_classes defaults to label + 1 and is padded to the model's outputs by verify."""
    x = torch.as_tensor(x, dtype=torch.float64).flatten()
    if not eps >= 0:
        raise BadInput(f"eps must be >= 0, got {eps}")
    k = int(n_classes) if n_classes is not None else int(label) + 1
    if not 0 <= int(label) < k:
        raise BadInput(f"label {label} is not one of {k} classes")
    if norm == "linf":
        lo, hi = x - eps, x + eps
        if clip[0] is not None:
            lo = lo.clamp(min=float(clip[0]))
        if clip[1] is not None:
            hi = hi.clamp(max=float(clip[1]))
        region = Box(lo, hi)
    elif norm == "l2":
        region = LpBall(x, float(eps), 2.0)
    else:
        raise BadInput(f"norm must be 'linf' or 'l2', got {norm!r}")
    rows = []
    for j in range(k):
        if j != int(label):
            C = torch.zeros(1, k, dtype=torch.float64)
            C[0, j], C[0, int(label)] = 1.0, -1.0
            rows.append(Disjunct(C, torch.zeros(1)))
    if not rows:
        raise BadInput("robustness needs at least two classes (pass n_classes)")
    return Spec([Case(region, rows)], x.numel(), k, source="<robustness>")


def verify(model, spec: Spec, domain: str = "auto", timeout: float | None = None) -> Result:
    """Decide the spec on the model (see engine.verify.verify; in this process, the deadline checked between
    units of work). Result has verdict, domain, seconds, counterexample ({"x", "y"} or None), evidence, to_json()."""
    from .verify import verify as _verify
    return _verify(load(model), spec, domain=domain, timeout=timeout)


def bounds(model, lower, upper, domain: str = "crown", C=None):
    """Sound (lo, hi) of C @ f(x) (C None: every output) over each box lower <= x <= upper: lower/upper [n] or
    [B, n] (flattened inputs), returns [m] or [B, m] in float64."""
    from .registry import get_registry
    net = load(model).to(torch.float64)
    d = get_registry().domain(domain)
    if not d.can_bound():
        raise BadInput(f"domain {domain!r} computes no bounds")
    d.check_network(net)
    lower, upper = torch.as_tensor(lower, dtype=torch.float64), torch.as_tensor(upper, dtype=torch.float64)
    single = lower.dim() == 1 or (lower.dim() == len(net.input_shape) and tuple(lower.shape) == net.input_shape)
    lo_in, hi_in = lower.reshape(-1, net.n_inputs), upper.reshape(-1, net.n_inputs)
    if bool((lo_in > hi_in).any()):
        raise BadInput("lower > upper in some input")
    lo, hi = d.bounds(net, lo_in, hi_in, None if C is None else torch.as_tensor(C, dtype=torch.float64))
    return (lo[0], hi[0]) if single else (lo, hi)


def certify(model, x, y, domain: str = "gaussian-smoothing", executor: str = "local", address: str | None = None,
            jobs: int = 1, **options):
    """Per-sample certificates of a certificate domain (gaussian-smoothing, semantic-smoothing, liplt) with the
    options of `nncert certify` (sigma (a list: one run per level), n0, n, alpha, batch, seed, transform, ranges,
    eps, ...); executor="ray" spreads the samples over Ray tasks (a cluster at `address`, or a local runtime of
    `jobs` CPUs) with the same numbers. Returns a list of records (dicts: label, predict, radius, ...) whose `to_json()` is what
    `nncert certify --json` prints; x may be flat or in the model's input shape."""
    from .certify import certify_data
    from .registry import get_registry
    d = get_registry().domain(domain)
    if not d.can_certify():
        raise BadInput(f"domain {domain!r} issues no dataset certificates")
    net = load(model)
    x = torch.as_tensor(x)
    if x[0].numel() != net.n_inputs:
        raise BadInput(f"samples have {x[0].numel()} values but the model takes {net.n_inputs}")
    if executor not in ("local", "ray"):
        raise BadInput(f"executor must be 'local' or 'ray', got {executor!r}")
    return certify_data(d, net, x.reshape(len(x), *net.input_shape), torch.as_tensor(y), options, executor,
                        address, jobs)


def certified_accuracy(records, radii=(0.0, 0.25, 0.5, 0.75, 1.0)) -> dict:
    """{radius: fraction of records correct with certified radius > radius} (engine.report.certified_accuracy)."""
    from .report import certified_accuracy as _acc
    return _acc(records, radii)


def plot_certificates(records, path, domain: str):
    """A titled, annotated PNG of certify records: certified accuracy vs radius, one curve per sigma
    (engine.report.plot_certificates); returns the path."""
    from .report import plot_certificates as _plot
    return _plot(records, path, domain)


def lipschitz(model, method: str = "liplt", pairwise: bool = False) -> dict:
    """Guaranteed l2 Lipschitz upper bounds (plugins/liplt): {"global", "pairwise" (L_ij or None), ...}."""
    from .registry import get_registry
    return get_registry().domain("liplt").lipschitz(load(model), method=method, pairwise=pairwise)


__all__ = ["load", "read_vnnlib", "write_vnnlib", "robustness", "verify", "bounds", "certify", "certified_accuracy",
           "plot_certificates", "lipschitz", "Result", "Spec", "Network"]
