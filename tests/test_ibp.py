"""IBP: soundness by sampling on random networks, equality with auto_LiRPA's IBP on the shared benchmarks."""
import json

import pytest
import torch

from nncert.engine.io.data import shared_dir
from nncert.engine.registry import get_registry

from netgen import NETS, box_samples


@pytest.fixture(scope="module")
def ibp():
    return get_registry().domain("ibp")


@pytest.mark.parametrize("kind", sorted(NETS))
@pytest.mark.parametrize("seed", [0, 1])
def test_ibp_sound_by_sampling(ibp, kind, seed):
    net = NETS[kind](seed).to(torch.float64)
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn(net.n_inputs, generator=g, dtype=torch.float64)
    eps = 0.1 + 0.2 * seed
    lo, hi = ibp.bounds(net, (centre - eps)[None], (centre + eps)[None])
    x = box_samples(centre - eps, centre + eps, 2000, seed)
    y = net.forward_flat(x)
    assert (y >= lo).all() and (y <= hi).all()
    # bounds on C @ y as well
    C = torch.randn(3, net.n_outputs, generator=g, dtype=torch.float64)
    clo, chi = ibp.bounds(net, (centre - eps)[None], (centre + eps)[None], C)
    cy = y @ C.T
    assert (cy >= clo).all() and (cy <= chi).all()


def test_ibp_batched_equals_single(ibp):
    net = NETS["cnn"](3).to(torch.float64)
    lo = torch.randn(5, net.n_inputs, dtype=torch.float64)
    hi = lo + torch.rand(5, net.n_inputs, dtype=torch.float64)
    blo, bhi = ibp.bounds(net, lo, hi)
    for i in range(5):
        slo, shi = ibp.bounds(net, lo[i:i + 1], hi[i:i + 1])
        torch.testing.assert_close(blo[i:i + 1], slo)
        torch.testing.assert_close(bhi[i:i + 1], shi)


def test_ibp_point_box_is_forward(ibp):
    net = NETS["mlp_tanh"](0).to(torch.float64)
    x = torch.randn(4, net.n_inputs, dtype=torch.float64)
    lo, hi = ibp.bounds(net, x, x)
    y = net.forward_flat(x)
    assert torch.allclose(lo, y, atol=1e-8) and torch.allclose(hi, y, atol=1e-8)


@pytest.mark.parametrize("bench", ["acasxu", "mnist_fc"])
def test_ibp_matches_auto_lirpa(ibp, bench):
    root = shared_dir()
    if root is None:
        pytest.skip("../shared is absent: no auto_LiRPA reference")
    onnx_import = pytest.importorskip("nncert.engine.io.onnx_import")
    recs = json.loads((root / "reference" / "auto_lirpa" / f"{bench}.json").read_text())["records"]
    nets = {}
    worst = 0.0
    for r in recs:
        path = root / "benchmarks" / bench / r["onnx"]
        if path not in nets:
            nets[path] = onnx_import.load_onnx(path).to(torch.float64)
        net = nets[path]
        lo, hi = ibp.bounds(net, torch.tensor([r["lower_in"]], dtype=torch.float64),
                            torch.tensor([r["upper_in"]], dtype=torch.float64))
        for ours, ref in ((lo[0], r["IBP"]["lower"]), (hi[0], r["IBP"]["upper"])):
            ref = torch.tensor(ref, dtype=torch.float64)
            rel = ((ours - ref).abs() / (1 + ref.abs())).max().item()
            worst = max(worst, rel)
    assert worst <= 1e-4, f"IBP differs from auto_LiRPA by {worst:.2e} relative"
