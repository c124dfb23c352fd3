"""VNN-COMP scripts: right first line, and a well-formed counterexample that really violates the property."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nncert.engine.io.data import shared_dir
from nncert.engine.io.ort import run_onnx
from nncert.engine.io.vnnlib import read_counterexample, read_vnnlib

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def own_server(tmp_path, monkeypatch):
    """prepare_instance.sh starts a resident worker: each test gets its own socket, and it is stopped after."""
    monkeypatch.setenv("NNCERT_SERVER", str(tmp_path / "nncert.sock"))
    yield tmp_path / "nncert.sock"
    subprocess.run([sys.executable, "-m", "nncert.engine.server", "stop"], capture_output=True)


def _acas():
    root = shared_dir()
    if root is None:
        pytest.skip("../shared is absent: no ACAS Xu instances")
    return root / "benchmarks" / "acasxu"


@pytest.mark.parametrize("net,prop,truth", [("1_2", "prop_2", "sat"), ("1_1", "prop_1", "unsat")])
def test_run_instance(tmp_path, net, prop, truth):
    acas = _acas()
    onnx = acas / "onnx" / f"ACASXU_run2a_{net}_batch_2000.onnx"
    spec_path = acas / "vnnlib" / f"{prop}.vnnlib"
    out = tmp_path / "result.txt"
    prep = subprocess.run(["bash", str(ROOT / "vnncomp" / "prepare_instance.sh"), "v1", "acasxu", str(onnx),
                           str(spec_path)], capture_output=True, text=True)
    assert prep.returncode == 0, prep.stderr
    from nncert.engine.server import _ask
    assert _ask({"cmd": "ping"}) is not None, "prepare_instance.sh leaves a resident worker listening"
    r = subprocess.run(["bash", str(ROOT / "vnncomp" / "run_instance.sh"), "v1", "acasxu", str(onnx), str(spec_path),
                        str(out), "100"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == truth
    if truth == "sat":
        x, y = read_counterexample(out)
        spec = read_vnnlib(spec_path, n_inputs=5, n_outputs=5)
        y_real = run_onnx(onnx.read_bytes(), x[None].astype(np.float32))
        np.testing.assert_allclose(y, y_real[0], rtol=1e-5, atol=1e-6)
        assert bool(spec.unsafe(torch.tensor(x[None]), torch.tensor(y_real))[0])


@pytest.mark.parametrize("server", [False, True])
def test_run_instance_bad_model(tmp_path, server):
    acas = _acas()
    bad = ROOT / "tests" / "bad_inputs" / "onnx_truncated.onnx"
    out = tmp_path / "result.txt"
    if server:   # the resident worker writes the client's error line on the client's stderr
        assert subprocess.run([sys.executable, "-m", "nncert.engine.server", "restart"]).returncode == 0
    r = subprocess.run(["bash", str(ROOT / "vnncomp" / "run_instance.sh"), "v1", "acasxu", str(bad),
                        str(acas / "vnnlib" / "prop_1.vnnlib"), str(out), "10"], capture_output=True, text=True)
    assert r.returncode == 2 and out.read_text().strip() == "error"
    assert len(r.stderr.strip().splitlines()) == 1
