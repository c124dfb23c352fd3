"""ReLU-split branch and bound on general graphs (plugins/crown/bab.py) against an exact oracle: the maximum of
a . f(x) over the box by enumerating the phases of the unstable ReLUs, one LP (HiGHS) per phase pattern."""
import itertools
import time

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from torch import nn

from nncert.engine.registry import get_registry
from nncert.engine.io.torch_import import Residual, from_torch

F64 = torch.float64


def _cnn(seed):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(),
                      Residual(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 1))),
                      nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3)).double().eval()
    return m


def _exact_max(module, net, row, lo, hi, root):
    """max over [lo, hi] of row . module(x): every pattern of the unstable ReLUs (root bounds) is an LP."""
    relus = [n for n in net.nodes if n.op == "relu"]
    unstable = [((root[n.inputs[0]][0] < 0) & (root[n.inputs[0]][1] > 0))[0].flatten() for n in relus]
    idx = [(j, int(i)) for j, u in enumerate(unstable) for i in u.nonzero().flatten()]
    assert len(idx) <= 12, "oracle too slow: shrink the box"
    best = -np.inf
    for pattern in itertools.product([0.0, 1.0], repeat=len(idx)):
        masks = [(root[n.inputs[0]][0][0] >= 0).to(F64).flatten().clone() for n in relus]
        for (j, i), p in zip(idx, pattern):
            masks[j][i] = p
        from nncert.engine.ops import op_table
        ops = op_table()

        def fwd(x):  # [output, every ReLU input] of the network with each ReLU a fixed mask: affine in x
            vals = {net.input_name: x.reshape(1, *net.input_shape)}
            pre, k = [], 0
            for n in net.nodes:
                if n.op == "relu":
                    z = vals[n.inputs[0]]
                    pre.append(z.flatten())
                    vals[n.name] = z * masks[k].reshape(z.shape[1:])
                    k += 1
                else:
                    vals[n.name] = ops[n.op].forward(n, [vals[i] for i in n.inputs])
            return torch.cat([vals[net.output].flatten(), *pre])

        x0 = torch.zeros(net.n_inputs, dtype=F64)
        J = torch.autograd.functional.jacobian(fwd, x0)
        c0 = fwd(x0).detach()
        m = net.n_outputs
        s = 2 * torch.cat(masks) - 1              # active z >= 0, inactive z <= 0, as -s z <= 0
        A_ub, b_ub = (-s[:, None] * J[m:]).numpy(), (s * c0[m:]).numpy()
        J, c0 = J[:m], c0[:m]
        res = linprog(-(row @ J).numpy(), A_ub=A_ub, b_ub=b_ub,
                      bounds=list(zip(lo.numpy(), hi.numpy())), method="highs")
        if res.status == 0:
            best = max(best, float(-res.fun + row @ c0))
    return best


@pytest.mark.parametrize("seed,eps", [(0, 0.25), (1, 0.1), (2, 0.2), (3, 0.1)])
def test_graph_bab_decides_like_enumeration(seed, eps):
    module = _cnn(seed)
    net = from_torch(module, (1, 4, 4)).to(F64)
    crown = get_registry().domain("crown")
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(net.n_inputs, generator=g, dtype=F64)
    lo, hi = (centre - eps)[None], (centre + eps)[None]
    state = crown.bab_root(net, lo, hi)
    row = torch.tensor([1.0, -1.0, 0.0], dtype=F64)
    top = _exact_max(module, net, row, lo[0], hi[0], state["ctx"].bounds)
    _, crown_hi = crown.bounds(net, lo, hi, row[None])
    gap = float(crown_hi[0, 0]) - top
    assert gap >= -1e-9                      # CROWN is sound

    def is_cex(x):
        y = net.forward_flat(x)
        hit = (y @ row + const) >= 0
        return {"x": x[hit][0], "y": y[hit][0]} if bool(hit.any()) else None

    for margin, want in ((0.2, "unsat"), (-0.2, "sat")):
        const = -top - margin * max(gap, 1e-3)   # max of row . f + const is -margin * gap
        C, d = row[None], torch.tensor([const], dtype=F64)
        v, cex, st = crown.branch_and_bound(state, C, d, time.perf_counter() + 60, is_cex)
        assert v == want, (v, st, gap)
        if v == "sat":
            assert float(cex["x"].sub(lo[0]).min()) >= 0 and float(hi[0].sub(cex["x"]).min()) >= 0
            assert float(net.forward_flat(cex["x"][None])[0] @ row) + const >= 0


def test_verify_completes_on_a_cnn_by_relu_splits():
    """A property CROWN alone leaves open is decided by verify's complete search on a non-MLP graph, and the
    verdict agrees with the enumeration oracle."""
    from nncert.engine.spec import Box, Case, Disjunct, Spec
    from nncert.engine.verify import verify
    module = _cnn(2)
    net = from_torch(module, (1, 5, 5)).to(F64)   # 25 inputs: past input splitting
    crown = get_registry().domain("crown")
    centre = torch.rand(net.n_inputs, generator=torch.Generator().manual_seed(2), dtype=F64)
    lo, hi = (centre - 0.1)[None], (centre + 0.1)[None]
    row = torch.tensor([1.0, -1.0, 0.0], dtype=F64)
    top = _exact_max(module, net, row, lo[0], hi[0], crown.bab_root(net, lo, hi)["ctx"].bounds)
    _, crown_hi = crown.bounds(net, lo, hi, row[None])
    const = -(top + 0.2 * (float(crown_hi[0, 0]) - top))     # true max -0.2 gap: CROWN cannot refute, BaB can
    spec = Spec([Case(Box(lo[0], hi[0]), [Disjunct(row[None], torch.tensor([const], dtype=F64))])], 25, 3)
    res = verify(net, spec, domain="crown", timeout=60)
    assert res.verdict == "unsat" and res.evidence["by"] == "relu-bab", res.to_json()
    res = verify(net, spec, domain="ibp", timeout=60)          # --domain takes effect: IBP offers no BaB
    assert res.verdict in ("unknown", "timeout")


def test_bab_root_reuses_the_bounding_pass(monkeypatch):
    """verify bounds a box and then starts branch and bound on it: the hidden bounds are computed once, and are the
    ones a fresh pass gives; another box gets its own pass."""
    from nncert.plugins.crown import domain as crown_domain
    net = from_torch(_cnn(0), (1, 4, 4)).to(F64)
    crown = get_registry().domain("crown")
    calls = []
    real = crown_domain.hidden_bounds
    monkeypatch.setattr(crown_domain, "hidden_bounds", lambda *a: calls.append(1) or real(*a))
    lo = torch.rand(1, net.n_inputs, dtype=F64, generator=torch.Generator().manual_seed(0))
    hi = lo + 0.1
    crown.bounds(net, lo, hi, torch.eye(3, dtype=F64))
    state = crown.bab_root(net, lo, hi)
    assert len(calls) == 1
    fresh = crown_domain.Crown().bab_root(net, lo, hi)["ctx"].bounds
    assert set(fresh) == set(state["ctx"].bounds)
    for k, (l, u) in fresh.items():
        assert torch.equal(l, state["ctx"].bounds[k][0]) and torch.equal(u, state["ctx"].bounds[k][1])
    crown.bab_root(net, lo, hi + 0.01)
    assert len(calls) == 3
