"""Refuting conjunctions of output rows on general graphs (plugins/crown/conjunctions.py, used by input-splitting
branch and bound through CROWN's `refute_conjunctions`): the combined bound is sound by sampling, never worse than
the best single row, and refutes a conjunction that no single row refutes."""
import torch
from torch import nn

from nncert.engine.io.torch_import import Residual, from_torch
from nncert.engine.registry import get_registry
from nncert.plugins.crown.conjunctions import optimise_conjunctions_graph
from nncert.plugins.crown.propagate import concretize_box, hidden_bounds
from nncert.plugins.crown.window import windowed

F64 = torch.float64


def _net(seed):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(3, 12), nn.ReLU(),
                      Residual(nn.Sequential(nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 12))), nn.ReLU(),
                      nn.Linear(12, 3)).double().eval()
    return m, from_torch(m, (3,)).to(F64)


def _boxes(B, seed, r=0.3):
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(B, 3, generator=g, dtype=F64) * 2 - 1
    return c - r, c + r


def _optimise(net, lo, hi, C, d, owner):
    crown = get_registry().domain("crown")
    rule_for, interval_for = crown._rule_tables()
    ctx = hidden_bounds(net, rule_for, interval_for, crown.ops, lo, hi, concretize_box(lo, hi))
    todo = torch.ones(lo.shape[0], int(owner.max()) + 1, dtype=torch.bool)
    with torch.enable_grad():
        return optimise_conjunctions_graph(net, ctx.bounds, C, d, owner, todo, crown.ops, windowed(rule_for))


def test_combined_bound_is_sound_and_no_worse_than_the_best_row():
    for seed in range(4):
        module, net = _net(seed)
        lo, hi = _boxes(6, seed)
        C = torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0], [-1.0, 0.0, 1.0], [0.5, 0.5, -1.0]], dtype=F64)
        d = torch.tensor([0.1, -0.2, 0.05, 0.0], dtype=F64)
        owner = torch.tensor([0, 0, 1, 1])
        upper, lam = _optimise(net, lo, hi, C, d, owner)
        x = lo[:, None] + torch.rand(6, 4000, 3, dtype=F64) * (hi - lo)[:, None]
        with torch.no_grad():
            y = module(x.reshape(-1, 3)).reshape(6, 4000, 3)
        combo = torch.einsum("bgm,mo,bno->bgn", lam, C, y)               # sum_r lam_r C_r f(x)
        assert bool((combo <= upper[..., None] + 1e-9).all())
        assert torch.allclose(lam.sum(-1), torch.ones_like(upper)) and bool((lam >= 0).all())
        _, row_hi = get_registry().domain("crown").bounds(net, lo, hi, C)
        best_row = torch.stack([(row_hi + d)[:, owner == k].min(1).values for k in range(2)], 1)
        assert bool((upper + torch.einsum("bgm,m->bg", lam, d) <= best_row + 1e-9).all())


def test_a_contradictory_conjunction_is_refuted_where_no_single_row_is():
    module, net = _net(7)
    lo, hi = _boxes(4, 7, r=0.5)
    crown = get_registry().domain("crown")
    C = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]], dtype=F64)    # y0 >= 0 and y0 <= -0.1: empty
    d = torch.tensor([0.0, -0.1], dtype=F64)
    _, row_hi = crown.bounds(net, lo, hi, C)
    assert bool(((row_hi + d) >= 0).all()), "each row alone must be open for this test to mean anything"
    refuted, value = crown.refute_conjunctions(net, lo, hi, C, d, torch.tensor([0, 0]), None)
    assert bool(refuted.all()) and bool((value < 0).all())


def test_graph_state_is_sound_and_tightens_sub_boxes():
    """bounds_refine on a graph keeps the boxes' hidden bounds as state; given the parent's state, a sub-box's
    output bounds stay sound (sampling) and its hidden bounds lie within the parent's (CROWN is not monotone in
    its hidden bounds, so the output bounds may move either way; the search keeps the smaller upper bound)."""
    crown = get_registry().domain("crown")
    C = torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]], dtype=F64)
    for seed in range(3):
        module, net = _net(seed)
        lo, hi = _boxes(5, seed, r=0.6)
        _, _, state = crown.bounds_refine(net, lo, hi, C)
        assert state is not None and state.shape[0] == 5
        mid = (lo + hi) / 2
        for clo, chi in ((lo, mid), (mid, hi)):          # two sub-boxes of each box
            s_lo, s_hi, child = crown.bounds_refine(net, clo, chi, C, state)
            n = state.shape[1] // 2
            assert bool((child[:, :n] >= state[:, :n]).all()) and bool((child[:, n:] <= state[:, n:]).all())
            x = clo[:, None] + torch.rand(5, 3000, 3, dtype=F64) * (chi - clo)[:, None]
            with torch.no_grad():
                y = module(x.reshape(-1, 3)).reshape(5, 3000, 3) @ C.T
            assert bool((y >= s_lo[:, None]).all()) and bool((y <= s_hi[:, None]).all())


def test_conjunctions_from_the_state_equal_a_fresh_pass():
    """refute_conjunctions given bounds_refine's state on the same boxes (no prior) reads the same hidden bounds a
    fresh CROWN pass computes: the same refutations and values."""
    module, net = _net(7)
    lo, hi = _boxes(4, 7, r=0.5)
    crown = get_registry().domain("crown")
    C = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]], dtype=F64)
    d = torch.tensor([0.0, -0.1], dtype=F64)
    _, _, state = crown.bounds_refine(net, lo, hi, C)
    owner = torch.tensor([0, 0])
    fresh = crown.refute_conjunctions(net, lo, hi, C, d, owner, None)
    kept = crown.refute_conjunctions(net, lo, hi, C, d, owner, state)
    assert torch.equal(fresh[0], kept[0]) and torch.allclose(fresh[1], kept[1], rtol=1e-12, atol=1e-12)
