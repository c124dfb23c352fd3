"""The one way from files to a verdict: load an ONNX model and a VNN-LIB spec, then verify within a time budget.
Used by the CLI (`verify`, `bounds`, `certify`), `nncert bench` and the VNN-COMP entry point (engine/vnncomp.py).
Bad files raise BadInput naming the file and the problem, before anything is bounded."""
from __future__ import annotations

import time
from pathlib import Path

from .errors import BadInput

# the part of a time budget kept back from the work for reporting and the stop of the last stage: 5%, at most
# MAX_RESERVE seconds (a worker is killed 0.5 s past the budget anyway, so a late stage costs its verdict only)
RESERVE_SHARE, MAX_RESERVE = 0.05, 5.0


def work_seconds(timeout: float) -> float:
    """Seconds of a `timeout` budget that the work itself may use (the rest is the reserve above)."""
    return timeout - min(RESERVE_SHARE * timeout, MAX_RESERVE)


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
    budget = None if timeout is None else max(0.0, work_seconds(timeout) - (time.perf_counter() - t0))
    return verify(net, sp, domain=domain, timeout=budget)


def verify_json(model, spec, domain: str, timeout: float | None, started: float) -> dict:
    """verify_instance(...).to_json(): what a worker process returns (engine/workers.py)."""
    return verify_instance(model, spec, domain, timeout, started=started).to_json()


FALLBACK_DOMAIN = "ibp"   # what `auto` retries with when a worker passes the memory cap (no hidden-layer state)


def verify_bounded(model, spec, domain: str = "auto", timeout: float | None = None,
                   started: float | None = None) -> dict:
    """verify_instance's JSON result, with the time and memory promises kept by a worker process: the work runs in
    a child killed GRACE (0.5 s) after `timeout` (from `started`) or when it passes the memory cap
    (engine.memory.process_cap). A run of `auto` killed for memory is retried once with FALLBACK_DOMAIN in the
    time left; otherwise the verdict is `timeout` or `unknown`, with `evidence.ended` saying why. Without a timeout
    (and with no NNCERT_MEMORY cap) it runs in this process. Bad input raises BadInput as verify_instance does."""
    import os
    t0 = time.perf_counter() if started is None else started
    if timeout is None and not os.environ.get("NNCERT_MEMORY"):
        return verify_json(model, spec, domain, timeout, t0)
    from .memory import process_cap
    from .workers import Job, run_jobs
    tried = []
    while True:
        left = None if timeout is None else max(0.0, timeout - (time.perf_counter() - t0))
        job = Job("nncert.engine.instance:verify_json", (str(model), str(spec), domain, timeout, t0), seconds=left)
        (_, ended, value, _, _), = run_jobs([job], 1, process_cap())
        if ended == "finished":
            if tried:
                value["evidence"] = {**value["evidence"], "ended": "memory, then " + domain, "reason": tried[0]}
            return value
        if ended == "raised":
            raise value
        if ended == "died":
            raise RuntimeError(value)
        if ended == "memory" and domain == "auto" and not tried and (left is None or left > 1.0):
            tried.append(value)
            domain = FALLBACK_DOMAIN
            continue
        verdict = "timeout" if ended == "deadline" else "unknown"
        return {"verdict": verdict, "domain": domain, "seconds": time.perf_counter() - t0, "counterexample": None,
                "guarantee": "sound", "certificate": None, "evidence": {"by": None, "ended": ended, "reason": value}}
