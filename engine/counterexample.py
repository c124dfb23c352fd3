"""Counterexamples on the real network: candidate inputs are rounded to the precision the model consumes and
re-run on the original model (onnxruntime for ONNX models); only points that then satisfy an unsafe disjunct
exactly are returned. Every `sat` verdict of nncert goes through `recheck`."""
from __future__ import annotations

import torch

from .spec import Box, Case, Spec


def run_model(network, x: torch.Tensor) -> torch.Tensor:
    """The real network on flat inputs [N, n_inputs]: onnxruntime when the model came from ONNX, else float32 IR."""
    if network.onnx_bytes is not None:
        from .io.ort import run_onnx
        return torch.as_tensor(run_onnx(network, x.cpu().numpy()), dtype=torch.float64)
    with torch.no_grad():
        return network.to(torch.float32).forward_flat(x.to(torch.float32)).to(torch.float64)


def to_model_precision(x: torch.Tensor, region, dtype: torch.dtype = torch.float32):
    """(points, region): flat points x [N, n] rounded to the precision `dtype` the model consumes, and the region
    they are checked against.

    A model that consumes `dtype` computes f(round(x)) for every real input x. Rounding to nearest is monotone, so
    for a box [lo, hi] the rounded inputs fill exactly [round(lo), round(hi)]: a point there is what the model sees
    for some real point of the box, and the points are clamped into it (a box narrower than one ulp, e.g. a
    fixed input given in decimal, has no representable point of its own). Other regions keep their exact
    membership; points are only nudged back into their bounding box. Returned as float64."""
    xr = x.to(dtype)
    if isinstance(region, Box):
        lo, hi = region.lower.to(dtype), region.upper.to(dtype)
        region = Box(lo.to(torch.float64), hi.to(torch.float64))
        return torch.minimum(torch.maximum(xr, lo), hi).to(torch.float64), region
    box = region.bounding_box()
    up = torch.nextafter(xr, torch.full_like(xr, float("inf")))
    down = torch.nextafter(xr, torch.full_like(xr, -float("inf")))
    xr = torch.where(xr.double() < box.lower, up, xr)
    xr = torch.where(xr.double() > box.upper, down, xr)
    return xr.to(torch.float64), region


def recheck(network, spec: Spec, x: torch.Tensor) -> dict | None:
    """The first of the candidate flat inputs x [N, n] that is a true counterexample on the real model, or None.

    x is rounded to the precision the model consumes (to_model_precision), must then lie in an input region (as
    the model sees it) and its real output (onnxruntime for ONNX models) must satisfy a disjunct exactly.
    """
    for case in spec.cases:
        xr, region = to_model_precision(x, case.input_set, getattr(network, "input_dtype", torch.float32))
        y = run_model(network, xr)
        ok = Spec([Case(region, case.disjuncts)], spec.n_inputs, spec.n_outputs).unsafe(xr, y)
        idx = ok.nonzero().flatten()
        if len(idx):
            i = int(idx[0])
            return {"x": xr[i].tolist(), "y": y[i].tolist()}
    return None
