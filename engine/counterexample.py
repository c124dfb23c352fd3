"""Counterexamples on the real network: candidate inputs are rounded to the precision the model consumes and
re-run on the original model (onnxruntime for ONNX models); only points that then satisfy an unsafe disjunct
exactly are returned. Every `sat` verdict of nncert goes through `recheck`."""
from __future__ import annotations

import torch

from .spec import Box, Spec


def run_model(network, x: torch.Tensor) -> torch.Tensor:
    """The real network on flat inputs [N, n_inputs]: onnxruntime when the model came from ONNX, else float32 IR."""
    if network.onnx_bytes is not None:
        from .io.ort import run_onnx
        return torch.as_tensor(run_onnx(network, x.cpu().numpy()), dtype=torch.float64)
    with torch.no_grad():
        return network.to(torch.float32).forward_flat(x.to(torch.float32)).to(torch.float64)


def to_float32_inside(x: torch.Tensor, box: Box) -> torch.Tensor:
    """Round flat points to float32 (what the model consumes), nudged by one ulp back inside the box when
    rounding left it; returned as float64 holding float32 values."""
    x32 = x.to(torch.float32)
    up = torch.nextafter(x32, torch.full_like(x32, float("inf")))
    down = torch.nextafter(x32, torch.full_like(x32, -float("inf")))
    x32 = torch.where(x32.double() < box.lower, up, x32)
    x32 = torch.where(x32.double() > box.upper, down, x32)
    return x32.to(torch.float64)


def recheck(network, spec: Spec, x: torch.Tensor) -> dict | None:
    """The first of the candidate flat inputs x [N, n] that is a true counterexample on the real model, or None.

    x is rounded to float32 (the precision the model consumes, kept inside each region's box), then must lie in
    an input region and its real output (onnxruntime for ONNX models) must satisfy a disjunct exactly.
    """
    for case in spec.cases:
        x32 = to_float32_inside(x, case.input_set.bounding_box())
        y = run_model(network, x32)
        ok = Spec([case], spec.n_inputs, spec.n_outputs).unsafe(x32, y)
        idx = ok.nonzero().flatten()
        if len(idx):
            i = int(idx[0])
            return {"x": x32[i].tolist(), "y": y[i].tolist()}
    return None
