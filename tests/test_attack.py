"""Falsification: neuron-flip starts (search.attack.flip_points) reach what PGD on a flat objective cannot."""
import torch
from torch import nn

from nncert.engine.domain import Verdict
from nncert.engine.io.torch_import import from_torch
from nncert.engine.search.attack import flip_points, pgd_case
from nncert.engine.spec import Box, Case, Disjunct, Spec
from nncert.engine.verify import verify
from netgen import random_mlp

F64 = torch.float64


def _flat_net(n=30, threshold=25.0):
    """y0 = relu(1), y1 = relu(sum(x) - threshold): over [0, 1]^n, y1 >= y0 needs sum(x) >= threshold + 1, a
    corner region PGD cannot find (y1's gradient is 0 wherever that neuron is off, uniform starts almost never
    land on it: P(sum >= 26) ~ 1e-13 for n = 30)."""
    lin = nn.Linear(n, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[1] = 1.0
        lin.bias.copy_(torch.tensor([1.0, -threshold]))
    out = nn.Linear(2, 2)
    with torch.no_grad():
        out.weight.copy_(torch.eye(2))
        out.bias.zero_()
    net = from_torch(nn.Sequential(lin, nn.ReLU(), out).eval(), (n,))
    box = Box(torch.zeros(n, dtype=F64), torch.ones(n, dtype=F64))
    case = Case(box, [Disjunct(torch.tensor([[-1.0, 1.0]], dtype=F64), torch.zeros(1, dtype=F64))])
    return net, Spec([case], n, 2)


def test_flip_points_switch_every_first_layer_neuron_the_box_lets_switch():
    """First layer: z = W x + b is linear, so its range over the box is exact (centre +- |W| radius). With every
    neuron targeted, a neuron changes sign at some start exactly when the box lets it."""
    for seed in range(3):
        net = random_mlp((6, 12, 12, 3), seed=seed)
        g = torch.Generator().manual_seed(seed)
        centre = torch.rand(6, generator=g, dtype=F64) - 0.5
        rad = 0.05 + 0.3 * torch.rand(6, generator=g, dtype=F64)
        row = Disjunct(torch.eye(3, dtype=F64)[:1], torch.zeros(1, dtype=F64))
        case = Case(Box(centre - rad, centre + rad), [row])
        x = flip_points(net, case, per_layer=12)
        assert x.shape == (24, 6)
        assert bool(((x >= centre - rad) & (x <= centre + rad)).all())
        W, b = net.to(F64).nodes[0].params["W"], net.to(F64).nodes[0].params["b"]
        z0, zs = W @ centre + b, x @ W.T + b
        flipped = ((zs > 0) != (z0 > 0)).any(0)
        reach = W.abs() @ rad
        can = torch.where(z0 > 0, z0 - reach < 0, z0 + reach > 0)
        assert torch.equal(flipped, can), (seed, flipped, can)


def test_flat_objective_pgd_finds_nothing_flip_starts_find_the_counterexample():
    net, spec = _flat_net()
    case = spec.cases[0]
    assert len(pgd_case(net, case, restarts=64, steps=60, seed=0)) == 0     # what the construction promises
    x = flip_points(net, case)
    assert len(x) == 2
    hits = pgd_case(net, case, starts=x, steps=10)
    assert len(hits) and bool(spec.unsafe(hits, net.to(F64).forward_flat(hits)).all())


def test_verify_reports_the_flip_counterexample_rechecked():
    net, spec = _flat_net()
    r = verify(net, spec, timeout=30)
    assert r.verdict == Verdict.SAT and r.evidence["by"] == "pgd-flip"
    x = torch.tensor(r.counterexample["x"], dtype=F64)[None]
    assert bool(spec.unsafe(x, net.to(F64).forward_flat(x)).all())


def test_no_relu_no_starts():
    net = from_torch(nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).eval(), (4,))
    case = Case(Box(torch.zeros(4, dtype=F64), torch.ones(4, dtype=F64)),
                [Disjunct(torch.tensor([[1.0, -1.0]], dtype=F64), torch.zeros(1, dtype=F64))])
    x = flip_points(net, case)
    assert x.shape == (0, 4)
    assert len(pgd_case(net, case, starts=x)) == 0
