"""Counterexample re-check: points are judged as the model sees them (rounded to the precision it consumes)."""
import numpy as np
import torch
from torch import nn

from nncert.engine.counterexample import recheck, to_model_precision
from nncert.engine.io.torch_import import from_torch
from nncert.engine.spec import Box, Case, Disjunct, LpBall, Spec

F64 = torch.float64


def _net():
    torch.manual_seed(0)
    return from_torch(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval(), (3,))


def test_fixed_decimal_inputs_have_their_float32_counterexample():
    """Inputs fixed at decimals no float32 holds (lo = hi = 0.1) are consumed as fl(0.1): a float32 point there
    is a true counterexample of the deployed model, and the re-check finds it."""
    net = _net()
    lo = torch.tensor([0.1, 0.3, -0.7], dtype=F64)
    hi = torch.tensor([0.1, 0.3, 0.9], dtype=F64)
    y = net.to(F64).forward_flat(torch.stack([lo, hi]))
    # unsafe: y0 >= a value every point reaches (the smaller of the two ends' outputs, minus a margin)
    d = torch.tensor([-float(y[:, 0].min()) + 1.0], dtype=F64)
    spec = Spec([Case(Box(lo, hi), [Disjunct(torch.tensor([[1.0, 0.0]], dtype=F64), d)])], 3, 2)
    cex = recheck(net, spec, ((lo + hi) / 2)[None])
    assert cex is not None
    x = torch.tensor(cex["x"], dtype=F64)
    assert x[0] == np.float32(0.1) and x[1] == np.float32(0.3) and x[0] != 0.1   # what the model consumes
    assert float(net.to(torch.float32).forward_flat(x[None].float())[0, 0]) + float(d) >= 0


def test_points_outside_the_rounded_box_are_pulled_in_and_other_sets_keep_exact_membership():
    lo, hi = torch.tensor([0.1, -1.0], dtype=F64), torch.tensor([0.2, 1.0], dtype=F64)
    x, region = to_model_precision(torch.tensor([[0.05, 3.0], [0.15, 0.5]], dtype=F64), Box(lo, hi))
    assert region.contains(x).all()
    assert x[0, 0] == np.float32(0.1) and x[0, 1] == 1.0 and x[1, 0] == np.float32(0.15)
    ball = LpBall(torch.zeros(2, dtype=F64), 1.0, p=2.0)
    x, region = to_model_precision(torch.tensor([[0.9, 0.9]], dtype=F64), ball)
    assert region is ball and not bool(ball.contains(x).any())     # outside the l2 ball: never accepted
    x64, _ = to_model_precision(torch.tensor([[0.05, 3.0]], dtype=F64), Box(lo, hi), torch.float64)
    assert x64[0, 0] == 0.1                                          # a float64 model sees the box exactly
