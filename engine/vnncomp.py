"""VNN-COMP tool interface: `python -m nncert.engine.vnncomp ONNX VNNLIB RESULTS_FILE TIMEOUT`.

Writes the results file: first line `sat`, `unsat`, `timeout`, `unknown` or `error`; a `sat` is followed by the
counterexample `((X_0 v) ... (Y_0 v) ...)`, re-checked on the model with onnxruntime before it is written.
With a resident server running (engine/server.py, started by prepare_instance.sh) the instance is handed to it
and starts without import costs; otherwise it runs here. Either way the work runs in a process ended 0.5 s past
TIMEOUT (counted from this process's start), so the file is written in time even when a stage cannot be
interrupted.
"""
from __future__ import annotations

import sys
import time


def write_result(onnx_path, spec_path, results, timeout, started: float, bounded: bool = True) -> int:
    """Verify one instance and write its results file; the exit code (0, 2 bad input, 3 internal error).
    bounded: run the work in a worker killed at the deadline (engine.instance.verify_bounded); False when the
    caller enforces the deadline itself (the server's child)."""
    from .errors import BadInput
    try:
        budget = float(timeout)
        from .instance import verify_bounded, verify_instance
        res = (verify_bounded(onnx_path, spec_path, "auto", budget, started=started) if bounded
               else verify_instance(onnx_path, spec_path, "auto", budget, started=started).to_json())
        text = res["verdict"]
        if res["counterexample"] is not None:
            from .io.vnnlib import format_result_counterexample
            text += "\n" + format_result_counterexample(res["counterexample"], spec_path)
    except (BadInput, ValueError) as e:
        print(f"nncert: error: {e}", file=sys.stderr)
        with open(results, "w") as f:
            f.write("error\n")
        return 2
    except Exception as e:  # an internal error still leaves a well-formed results file, never a verdict
        print(f"nncert: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        with open(results, "w") as f:
            f.write("error\n")
        return 3
    with open(results, "w") as f:
        f.write(text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    t0 = time.perf_counter()
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 4:
        print("usage: python -m nncert.engine.vnncomp ONNX VNNLIB RESULTS_FILE TIMEOUT", file=sys.stderr)
        return 2
    onnx_path, spec_path, results, timeout = argv
    try:
        budget = float(timeout)
    except ValueError:
        budget = None
    if budget is not None:
        import os
        from .server import submit
        code = submit(os.path.abspath(onnx_path), os.path.abspath(spec_path), os.path.abspath(results), budget, t0)
        if code is not None:
            return code
    return write_result(onnx_path, spec_path, results, timeout, t0)


if __name__ == "__main__":
    sys.exit(main())
