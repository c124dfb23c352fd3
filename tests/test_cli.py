"""CLI contract: verdict on the first stdout line, JSON fields, exit codes, one-line errors on broken inputs."""
import json
import os
import time
import subprocess
import sys
from pathlib import Path

import pytest

from nncert.engine.cli import main

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples" / "digits"
BAD = Path(__file__).resolve().parent / "bad_inputs"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_unsat_example(capsys):
    code, out, err = run(capsys, "verify", EX / "mlp.onnx", EX / "prop_0_0.01.vnnlib")
    assert code == 0 and out.splitlines()[0] == "unsat"


def test_verify_sat_json_counterexample_is_real(capsys):
    code, out, err = run(capsys, "verify", EX / "mlp.onnx", EX / "prop_0_0.1.vnnlib", "--json")
    assert code == 0
    res = json.loads(out)
    assert {"verdict", "domain", "seconds", "counterexample"} <= set(res)
    if res["verdict"] == "sat":  # re-check the counterexample independently with onnxruntime
        import numpy as np
        import onnxruntime as ort
        from nncert.engine.io.vnnlib import read_vnnlib
        import torch
        sess = ort.InferenceSession(str(EX / "mlp.onnx"), providers=["CPUExecutionProvider"])
        x = np.asarray(res["counterexample"]["x"], dtype=np.float32)[None]
        y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        spec = read_vnnlib(EX / "prop_0_0.1.vnnlib")
        assert bool(spec.unsafe(torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64))[0])
    else:
        assert res["counterexample"] is None


def test_bounds_json(capsys):
    code, out, err = run(capsys, "bounds", EX / "mlp.onnx", EX / "prop_0_0.01.vnnlib", "--domain", "ibp", "--json")
    res = json.loads(out)
    assert code == 0 and len(res["regions"]) == 1 and res["seconds"] >= 0
    r = res["regions"][0]
    assert len(r["lower"]) == 10 and all(lo <= hi for lo, hi in zip(r["lower"], r["upper"]))


def test_info_json(capsys):
    code, out, err = run(capsys, "info", "--json")
    d = json.loads(out)
    assert code == 0 and {"native", "cuda_built", "cuda_available", "version"} <= set(d)


def _bad_cases():
    model, spec = EX / "mlp.onnx", EX / "prop_0_0.01.vnnlib"
    cases = [("missing model", ["verify", ROOT / "nope.onnx", spec]),
             ("missing spec", ["verify", model, ROOT / "nope.vnnlib"]),
             ("unknown domain", ["verify", model, spec, "--domain", "nope"]),
             ("negative timeout", ["verify", model, spec, "--timeout", "-1"]),
             ("no args", ["verify"])]
    cases += [(p.name, ["verify", p, spec]) for p in sorted(BAD.glob("*.onnx"))]
    cases += [(p.name, ["verify", model, p]) for p in sorted(BAD.glob("*.vnnlib"))]
    return cases


@pytest.mark.parametrize("name,argv", _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_bad_input_one_line_exit_2(capsys, name, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nncert: error:") and "Traceback" not in err


@pytest.mark.parametrize("var,value", [("NNCERT_KERNELS", "gpu"), ("NNCERT_THREADS", "0"), ("NNCERT_SIMD", "sse9")])
def test_bad_setting_one_line_exit_2(capsys, monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    code, out, err = run(capsys, "verify", EX / "mlp.onnx", EX / "prop_0_0.01.vnnlib")
    assert code == 2, err
    assert out == "" and len(err.strip().splitlines()) == 1 and var in err and "Traceback" not in err


def test_entry_point_process():
    r = subprocess.run([sys.executable, "-m", "nncert.engine.cli", "verify", str(EX / "mlp.onnx"),
                        str(EX / "prop_1_0.01.vnnlib")], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.splitlines()[0] in ("unsat", "sat", "unknown")


SLEEPY = '''
import time
from nncert.engine import hookimpl
from nncert.engine.domain import Domain

class Sleepy(Domain):
    """A domain whose bounding pass never checks the clock."""
    name = "sleepy"
    input_sets = ("box",)
    default_rules = {"linear": lambda node, boxes: boxes[0], "relu": lambda node, boxes: boxes[0]}

    def bounds(self, network, lower, upper, C=None):
        time.sleep(120)
        raise AssertionError("not reached")

@hookimpl
def nncert_register_domains(register):
    register(Sleepy)
'''


def test_verify_keeps_its_deadline_when_a_stage_cannot_be_interrupted(tmp_path, monkeypatch):
    from plugin_dist import install_plugin
    install_plugin(tmp_path, monkeypatch, "nncert_sleepy", "sleepy", SLEEPY)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    ex = Path(__file__).resolve().parents[1] / "examples" / "digits"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "nncert.engine.cli", "verify", str(ex / "mlp.onnx"),
                        str(ex / "prop_0_0.01.vnnlib"), "--domain", "sleepy", "--timeout", "10", "--json"],
                       capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["verdict"] == "timeout" and out["evidence"]["ended"] == "deadline"
    assert wall <= 10 + 1
