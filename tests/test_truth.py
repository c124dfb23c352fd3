"""Ground truth: no verdict on the shared benchmarks contradicts truth.csv (a wrong sat/unsat is a release blocker)."""
import csv

import pytest
import torch

from nncert.engine.counterexample import to_model_precision

from nncert.engine.io.data import shared_dir
from nncert.engine.verify import verify


def _instances(bench):
    root = shared_dir()
    if root is None:
        pytest.skip("../shared is absent: no benchmarks")
    folder = root / "benchmarks" / bench
    with open(folder / "truth.csv") as f:
        return folder, list(csv.DictReader(f))


@pytest.mark.parametrize("bench", ["acasxu", "mnist_fc"])
def test_no_wrong_verdict(bench):
    onnx_import = pytest.importorskip("nncert.engine.io.onnx_import")
    vnnlib = pytest.importorskip("nncert.engine.io.vnnlib")
    folder, rows = _instances(bench)
    nets, specs, tally = {}, {}, {"sat": 0, "unsat": 0, "unknown": 0, "timeout": 0}
    for r in rows:
        if r["onnx"] not in nets:
            nets[r["onnx"]] = onnx_import.load_onnx(folder / r["onnx"])
        net = nets[r["onnx"]]
        spec = vnnlib.read_vnnlib(folder / r["vnnlib"], n_inputs=net.n_inputs, n_outputs=net.n_outputs)
        res = verify(net, spec, domain="auto", timeout=1.0)
        tally[str(res.verdict)] += 1
        if str(res.verdict) in ("sat", "unsat"):
            assert str(res.verdict) == r["answer"], f"{r['onnx']} {r['vnnlib']}: {res.verdict} but truth is {r['answer']}"
        if str(res.verdict) == "sat":
            x = res.counterexample["x"]
            xt = torch.tensor([x], dtype=torch.float64)
            # inside a region as the model sees it (its box rounded to the float32 the model consumes)
            assert any(bool(to_model_precision(xt, c.input_set)[1].contains(xt)[0]) for c in spec.cases)
    print(f"{bench}: {tally}")
    assert tally["sat"] + tally["unsat"] > 0, "no instance decided: the check would be vacuous"
