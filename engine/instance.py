"""The one way from files to a verdict: load an ONNX model and a VNN-LIB spec, then verify within a time budget.
Used by the CLI (`verify`, `bounds`, `certify`), `nncert bench` and the VNN-COMP entry point (engine/vnncomp.py).
Bad files raise BadInput naming the file and the problem, before anything is bounded."""
from __future__ import annotations

import time
from pathlib import Path

from .errors import BadInput

# share of a time budget given to verify(): the rest covers loading, reporting and the stop of the last stage
BUDGET_SHARE = 0.95


def load_model(path):
    """An IR Network from an .onnx file."""
    p = Path(path)
    if not p.exists():
        raise BadInput("file not found", str(path))
    if p.suffix.lower() != ".onnx":
        raise BadInput("model must be an .onnx file", str(path))
    from .io.onnx_import import load_onnx
    return load_onnx(p)


def load_instance(model, spec, network=None):
    """(network, spec): the model (or the already loaded `network`) and its VNN-LIB spec checked against it."""
    from .io.vnnlib import read_vnnlib
    net = network if network is not None else load_model(model)
    return net, read_vnnlib(spec, n_inputs=net.n_inputs, n_outputs=net.n_outputs)


def verify_instance(model, spec, domain: str = "auto", timeout: float | None = None, started: float | None = None,
                    network=None):
    """Load and verify one instance; the Result arrives within `timeout` seconds counted from `started`
    (time.perf_counter(); default now), loading included."""
    from .verify import verify
    t0 = time.perf_counter() if started is None else started
    net, sp = load_instance(model, spec, network)
    budget = None if timeout is None else max(0.0, BUDGET_SHARE * timeout - (time.perf_counter() - t0))
    return verify(net, sp, domain=domain, timeout=budget)
