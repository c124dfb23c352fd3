"""The Python API (`import nncert`): torch modules in, verdicts and bounds out, with the guarantees of the CLI."""
import subprocess
import sys

import pytest
import torch
from torch import nn

import nncert
from nncert.engine.errors import BadInput


class ResidualCNN(nn.Module):
    """conv -> relu -> (residual conv block written in forward) -> avgpool -> linear: not an nn.Sequential."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.block = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        h = h + torch.relu(self.block(h))
        return self.fc(self.pool(h).flatten(1))


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    m = ResidualCNN().eval()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.1, 0.1)
        m.bn.running_var.uniform_(0.5, 1.5)
    return m


def test_top_level_is_light_and_versioned():
    code = "import sys, nncert; print(nncert.__version__, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split()
    assert out == [nncert.__version__, "False"]   # the API loads torch on first use only


def test_load_reproduces_a_general_module(cnn):
    net = nncert.load(cnn, input_shape=(1, 8, 8))
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(net.forward(x.double()).float(), cnn(x).detach(), rtol=1e-5, atol=1e-5)
    with pytest.raises(BadInput, match="input_shape"):
        nncert.load(cnn)


def test_verify_a_torch_cnn_both_ways(cnn):
    x = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(1))
    label = int(cnn(x[None]).argmax())
    model = nncert.load(cnn, input_shape=(1, 8, 8))
    safe = nncert.verify(model, nncert.robustness(x, 1e-5, label, n_classes=5), timeout=60)
    assert safe.verdict == "unsat"
    bad = nncert.verify(model, nncert.robustness(x, 1.0, label, n_classes=5, clip=(0, 1)), timeout=60)
    assert bad.verdict == "sat"
    cex = torch.tensor(bad.counterexample["x"], dtype=torch.float32).reshape(1, 1, 8, 8)
    assert float((cex - x).abs().max()) <= 1.0 and 0 <= float(cex.min()) and float(cex.max()) <= 1
    with torch.no_grad():
        scores = cnn(cex)[0]    # checked on the module itself
    assert any(float(scores[j]) >= float(scores[label]) for j in range(5) if j != label)
    assert bad.to_json()["verdict"] == "sat"


def test_verify_a_torch_cnn_through_a_vnnlib2_file(cnn, tmp_path):
    x = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(1))
    label = int(cnn(x[None]).argmax())
    model = nncert.load(cnn, input_shape=(1, 8, 8))
    path = tmp_path / "robust.vnnlib"
    nncert.write_vnnlib(nncert.robustness(x, 1.0, label, n_classes=5, clip=(0, 1)), path, model)
    assert path.read_text().splitlines()[1] == "(vnnlib-version <2.0>)" and "X[0,0,7,7]" in path.read_text()
    spec = nncert.read_vnnlib(path, model)
    assert spec.meta["input"]["shape"] == [1, 1, 8, 8]
    bad = nncert.verify(model, spec, timeout=60)
    assert bad.verdict == "sat"
    cex = torch.tensor(bad.counterexample["x"], dtype=torch.float32).reshape(1, 1, 8, 8)
    with torch.no_grad():
        scores = cnn(cex)[0]    # checked on the module itself
    assert 0 <= float(cex.min()) and float(cex.max()) <= 1
    assert any(float(scores[j]) >= float(scores[label]) for j in range(5) if j != label)


def test_bounds_contain_sampled_outputs(cnn):
    x = torch.rand(64)
    lo, hi = nncert.bounds(cnn_net := nncert.load(cnn, input_shape=(1, 8, 8)), x - 0.05, x + 0.05, domain="crown")
    pts = (x + (torch.rand(500, 64) * 2 - 1) * 0.05).double()
    y = cnn_net.forward_flat(pts)
    assert bool((y >= lo - 1e-9).all() and (y <= hi + 1e-9).all())
    with pytest.raises(BadInput, match="lower > upper"):
        nncert.bounds(cnn_net, x + 0.1, x - 0.1)


def test_robustness_rejects_bad_arguments():
    with pytest.raises(BadInput, match="eps"):
        nncert.robustness(torch.zeros(4), -1.0, 0, n_classes=3)
    with pytest.raises(BadInput, match="norm"):
        nncert.robustness(torch.zeros(4), 0.1, 0, n_classes=3, norm="l1")


def test_certify_result_is_the_clis_json(tmp_path):
    import json
    import numpy as np
    from pathlib import Path
    onnx = Path(__file__).parent.parent / "examples" / "digits" / "mlp.onnx"
    x = np.random.default_rng(0).random((6, 64), dtype=np.float32)
    y = np.arange(6)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    cli = subprocess.run([sys.executable, "-m", "nncert.engine.cli", "certify", str(onnx), "--data",
                          str(tmp_path / "d.npz"), "--domain", "gaussian-smoothing", "--sigma", "0.1,0.3", "--n0", "50",
                          "--n", "300", "--json"], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    want = json.loads(cli.stdout)
    got = nncert.certify(onnx, x, y, sigma=[0.1, 0.3], n0=50, n=300).to_json()
    assert set(got) == set(want)
    for key in ("certified_accuracy", "statement", "domain", "guarantee"):
        assert json.loads(json.dumps(got[key])) == want[key], key
    timeless = lambda s: {k: v for k, v in s.items() if "time" not in k}   # noqa: E731
    assert timeless(got["summary"]) == timeless(want["summary"])
    assert [s["sigma"] for s in got["by_sigma"]] == [0.1, 0.3]
    assert [(r["idx"], r["predict"], r["radius"]) for r in got["samples"]] == \
        [(r["idx"], r["predict"], r["radius"]) for r in want["samples"]]
