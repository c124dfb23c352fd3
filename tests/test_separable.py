"""Input splitting per output part (engine/search/separable.py) on y = a(x_A) - b(x_B): the targets add up
exactly, the parts are found, and verdicts agree with the maxima found by dense sampling (unsat never where a
sampled point violates; unsat where the sampled maxima leave a clear gap)."""
import time
from fractions import Fraction

import pytest
import torch

from nncert.engine.ir import Network, Node
from nncert.engine.registry import get_registry
from nncert.engine.search.separable import (attacked_max, output_parts, root_upper, separable, separable_search,
                                             targets)
from nncert.engine.spec import Box, Case, Disjunct, Spec
from nncert.engine.verify import verify

from netgen import random_mlp

F64 = torch.float64


def _two_part(n_each: int, seed: int, op: str = "sub") -> Network:
    """y = a(x[:n]) op b(x[n:2n]), a and b ReLU MLPs n -> 8 -> 8 -> 1."""
    g = torch.Generator().manual_seed(seed)
    nodes = []

    def mlp(tag, first):
        nodes.append(Node(f"{tag}x", "select", ["x"], attrs={"axis": 0, "index": tuple(range(first, first + n_each))}))
        prev, sizes = f"{tag}x", (n_each, 8, 8, 1)
        for k in range(3):
            W = torch.randn(sizes[k + 1], sizes[k], generator=g) / sizes[k] ** 0.5
            nodes.append(Node(f"{tag}l{k}", "linear", [prev], {"W": W, "b": 0.1 * torch.randn(sizes[k + 1], generator=g)}))
            prev = f"{tag}l{k}"
            if k < 2:
                nodes.append(Node(f"{tag}r{k}", "relu", [prev]))
                prev = f"{tag}r{k}"
        return prev

    a, b = mlp("a", 0), mlp("b", n_each)
    nodes.append(Node("y", op, [a, b]))
    return Network("x", (2 * n_each,), nodes, "y")


def _sampled_max(net, row, lo, hi, n=40000, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = lo + torch.rand(n, lo.numel(), generator=g, dtype=F64) * (hi - lo)
    return float((net.to(F64).forward_flat(x) @ row).max())


def test_targets_add_up_exactly():
    g = torch.Generator().manual_seed(0)
    for _ in range(500):
        m_a, m_b, d = (float(v) for v in torch.randn(3, generator=g, dtype=F64) * 10 ** torch.randint(-3, 6, (3,)))
        d = -(m_a + m_b) - 1e-9 * (1 + abs(m_a) + abs(m_b)) * (1 + abs(d))   # a gap, small or large
        u_a, u_b = m_a + float(torch.rand(1, generator=g)) * 5, m_b + float(torch.rand(1, generator=g)) * 5
        t = targets(m_a, m_b, u_a, u_b, d)
        assert t is not None
        assert Fraction(t[0]) + Fraction(t[1]) + Fraction(d) <= 0
    assert targets(1.0, 2.0, 5.0, 5.0, -3.0) is None and targets(1.0, 2.0, 5.0, 5.0, -2.5) is None
    t = targets(0.0, 0.0, 0.1, 9.0, -1.0)             # a's root bound is within its share: a gets just above it
    assert 0.1 < t[0] < 0.1 + 1e-6 and t[1] <= 0.9


def test_parts_are_found_and_add_up():
    net = _two_part(3, seed=0)
    a, b, s = output_parts(net)
    assert s == -1.0 and output_parts(_two_part(3, seed=0, op="add"))[2] == 1.0
    x = torch.rand(64, 6, dtype=F64)
    y = net.to(F64).forward_flat(x)
    assert torch.allclose(y, a.to(F64).forward_flat(x) + s * b.to(F64).forward_flat(x))
    assert output_parts(random_mlp()) is None
    box = Case(Box(torch.zeros(6), torch.ones(6)), [Disjunct(torch.tensor([[1.0]]), torch.tensor([0.0]))])
    spec = Spec([box], 6, 1)
    assert separable(net, spec, 3) is not None
    assert separable(net, spec, 2) is None            # a part reads 3 free inputs
    fixed = Spec([Case(Box(torch.tensor([0, 0, 0.5, 0, 0, 0.5]), torch.tensor([1, 1, 0.5, 1, 1, 0.5])),
                       box.disjuncts)], 6, 1)
    assert separable(net, fixed, 2) is not None       # inputs fixed by the box do not count


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_search_agrees_with_sampled_maxima(seed, sign):
    net = _two_part(2, seed)
    parts = output_parts(net)
    doms = [get_registry().domain(n) for n in ("ibp", "crown")]
    lo, hi = -torch.ones(4, dtype=F64), torch.ones(4, dtype=F64)
    row = torch.tensor([sign], dtype=F64)
    a, b, s = parts                             # the parts read disjoint inputs: the maximum is the sum of theirs
    top = _sampled_max(a, row, lo, hi) + _sampled_max(b, s * row, lo, hi)
    spread = top - float((net.to(F64).forward_flat(lo + torch.rand(2000, 4, dtype=F64) * 2) @ row).min())
    for offset, must in ((0.05 * spread, "unsat"), (-1e-3 * spread, None)):
        d = -top - offset                       # unsafe: row . y + d >= 0
        spec = Spec([Case(Box(lo, hi), [Disjunct(row[None], torch.tensor([d], dtype=F64))])], 4, 1)
        v, _ = separable_search(doms, parts, spec, time.perf_counter() + 60)
        if must == "unsat":
            assert v == "unsat"
        else:
            assert v != "unsat"                 # a sampled point violates


def test_verify_takes_the_part_search_above_the_input_splitting_limit():
    net = _two_part(9, seed=3)                  # 18 free inputs: more than BAB_MAX_INPUTS, 9 per part
    lo, hi = -0.5 * torch.ones(18, dtype=F64), 0.5 * torch.ones(18, dtype=F64)
    row = torch.tensor([-1.0], dtype=F64)
    a, b, s = output_parts(net)
    doms = [get_registry().domain(n) for n in ("ibp", "crown")]
    top = attacked_max(a, row, lo, hi) + attacked_max(b, s * row, lo, hi)        # attained: a lower bound
    root = root_upper(doms, a, row, lo, hi) + root_upper(doms, b, s * row, lo, hi)  # CROWN's bound of the whole
    spec = Spec([Case(Box(lo, hi), [Disjunct(row[None], torch.tensor([-(root - 0.3 * (root - top))],
                                                                     dtype=F64))])], 18, 1)
    res = verify(net, spec, timeout=120)
    assert res.verdict.value == "unsat" and res.evidence["by"].startswith("bab-parts")
    spec = Spec([Case(Box(lo, hi), [Disjunct(row[None], torch.tensor([-top], dtype=F64))])], 18, 1)
    assert verify(net, spec, timeout=30).verdict.value != "unsat"   # a point reaches the threshold
