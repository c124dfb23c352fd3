"""Gaussian randomized smoothing: exact oracles (linear classifiers), sample disjointness, reproducibility,
abstention, statistics parity with statsmodels/scipy, reports."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import binom, norm

from nncert.engine.errors import BadInput
from nncert.plugins.smoothing import GaussianSmoothing
from nncert.engine.report import certified_accuracy, plot_curve, summary, write_tsv
from nncert.plugins.smoothing.sampling import count_classes, gaussian_noise, sample_generator
from nncert.plugins.smoothing.stats import clopper_pearson_lower, clopper_pearson_upper, predict_test

torch.set_num_threads(1)


class Linear2:
    """f(x) = class 1 if w.x + b > 0 else class 0, as 2 logits [0, w.x + b]."""

    def __init__(self, w, b):
        self.w, self.b = torch.as_tensor(w, dtype=torch.float32), float(b)

    def __call__(self, x):
        z = x.reshape(len(x), -1) @ self.w + self.b
        return torch.stack([torch.zeros_like(z), z], 1)


def _linear_case(dim=8, margin_sigmas=1.2816, sigma=0.5, seed=0):
    """A linear classifier and a point whose true p_A = Phi(margin_sigmas); exact radius |w.x+b|/||w||."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=g, dtype=torch.float64)
    x = torch.randn(dim, generator=g, dtype=torch.float64)
    exact = margin_sigmas * sigma                       # distance to the decision boundary
    b = exact * w.norm() - w @ x                         # so that w.x + b = exact * ||w|| > 0
    return Linear2(w.float(), b), x.float().reshape(1, dim), exact, float(norm.cdf(margin_sigmas))


# ---------------------------------------------------------------------------------------------------------------
# statistics

@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (5, 10), (10, 10), (37, 100), (990, 1000), (99_999, 100_000)])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_clopper_pearson_matches_statsmodels_and_is_conservative(k, n, alpha):
    from statsmodels.stats.proportion import proportion_confint
    lo = clopper_pearson_lower(k, n, alpha)
    ref = proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]
    assert lo == pytest.approx(ref, rel=1e-10, abs=1e-15)
    # defining property: at p = lo, P(Bin(n, p) >= k) <= alpha (the bound is not above the exact quantile)
    if k > 0:
        assert binom.sf(k - 1, n, lo) <= alpha * (1 + 1e-9)
    assert 0.0 <= lo <= k / n <= clopper_pearson_upper(k, n, alpha) <= 1.0


def test_clopper_pearson_coverage_by_simulation():
    rng = np.random.default_rng(1)
    p, n, alpha, runs = 0.8, 50, 0.1, 2000
    ks = rng.binomial(n, p, size=runs)
    fails = sum(clopper_pearson_lower(int(k), n, alpha) > p for k in ks)
    assert fails <= binom.ppf(1 - 1e-6, runs, alpha)


def test_predict_test_decisions():
    rng = np.random.default_rng(0)
    for _ in range(50):
        c = rng.integers(0, 200, size=5)
        top2 = np.sort(c)[::-1][:2]
        from scipy.stats import binomtest
        p = binomtest(int(top2[0]), int(top2.sum()), 0.5).pvalue if top2.sum() else 1.0
        expected = int(np.argmax(c)) if p <= 0.01 else -1
        assert predict_test(c, 0.01) == expected
    assert predict_test([0, 0, 0], 0.01) == -1
    with pytest.raises(BadInput):
        predict_test([1, 2], 0.0)


# ---------------------------------------------------------------------------------------------------------------
# exact oracle: linear classifier

def test_linear_oracle_radius_sound_and_tight():
    """Certified radii exceed the exact radius in at most ~alpha of the runs (binomial tolerance), and their mean
    is within 5% of sigma * Phi^-1(CP lower bound of the true p_A) at that n."""
    sigma, n, alpha, runs = 0.5, 1000, 0.1, 200
    f, x, exact, p_true = _linear_case(sigma=sigma)
    xs = x.repeat(runs, 1)
    recs = GaussianSmoothing().certify(f, xs, torch.ones(runs, dtype=torch.long),
                                       {"sigma": sigma, "n0": 20, "n": n, "alpha": alpha, "batch": 500, "seed": 7})
    radii = np.array([r["radius"] for r in recs])
    over = int(np.sum(radii > exact))
    assert over <= binom.ppf(1 - 1e-6, runs, alpha), (over, runs, alpha)
    # the test has power: the point estimate (no confidence bound) over-claims in about half the runs
    naive = np.array([sigma * norm.ppf(min(r["count"] / n, 1 - 1e-12)) for r in recs])
    assert np.sum(naive > exact) > 0.3 * runs
    expected = sigma * norm.ppf(clopper_pearson_lower(round(n * p_true), n, alpha))
    assert abs(radii.mean() - expected) <= 0.05 * expected
    assert all(r["predict"] == 1 and r["correct"] == 1 for r in recs)
    # the counts follow Bin(n, p_true): their mean lies within 5 standard errors
    counts = np.array([r["count"] for r in recs])
    assert abs(counts.mean() - n * p_true) <= 5 * math.sqrt(n * p_true * (1 - p_true) / runs)


def test_linear_oracle_far_from_boundary_gives_max_radius():
    """When every sample votes the top class, p_A_lower = alpha^(1/n), radius = sigma * Phi^-1(alpha^(1/n))."""
    sigma, n, alpha = 0.25, 500, 0.001
    f, x, exact, _ = _linear_case(sigma=sigma, margin_sigmas=12.0)
    r = GaussianSmoothing().certify(f, x, torch.tensor([1]), {"sigma": sigma, "n": n, "alpha": alpha})[0]
    assert r["count"] == n
    assert r["radius"] == pytest.approx(sigma * norm.ppf(alpha ** (1.0 / n)), rel=1e-9)
    assert r["radius"] < exact


def test_abstain_on_decision_boundary():
    """p_A = 1/2 exactly: CERTIFY abstains unless the bound fails (prob <= alpha); PREDICT likewise."""
    sigma, alpha, runs = 0.5, 0.01, 60
    f, x, _, _ = _linear_case(sigma=sigma, margin_sigmas=0.0)
    xs = x.repeat(runs, 1)
    y = torch.zeros(runs, dtype=torch.long)
    d = GaussianSmoothing()
    recs = d.certify(f, xs, y, {"sigma": sigma, "n0": 20, "n": 400, "alpha": alpha, "seed": 3})
    abst = sum(r["predict"] == -1 for r in recs)
    assert runs - abst <= binom.ppf(1 - 1e-6, runs, alpha)
    assert all(r["radius"] == 0.0 and r["correct"] == 0 for r in recs if r["predict"] == -1)
    preds = d.predict(f, xs, {"sigma": sigma, "n": 400, "alpha": alpha, "seed": 3})
    assert runs - sum(p["predict"] == -1 for p in preds) <= binom.ppf(1 - 1e-6, runs, alpha)


def test_predict_agrees_with_linear_classifier():
    sigma = 0.5
    f, x, _, _ = _linear_case(sigma=sigma, margin_sigmas=1.0)
    recs = GaussianSmoothing().predict(f, x.repeat(20, 1), {"sigma": sigma, "n": 1000, "alpha": 0.001},
                                       y=torch.ones(20, dtype=torch.long))
    assert all(r["predict"] == 1 and r["correct"] == 1 for r in recs)


# ---------------------------------------------------------------------------------------------------------------
# sampling discipline

class Recorder:
    """A 3-class model that records every batch it is called with."""

    def __init__(self):
        self.batches = []

    def __call__(self, x):
        self.batches.append(x.detach().clone())
        s = x.reshape(len(x), -1).sum(1)
        return torch.stack([s, -s, torch.zeros_like(s)], 1)


def test_selection_and_estimation_samples_are_disjoint():
    n0, n, batch = 37, 250, 64
    m = Recorder()
    x = torch.full((1, 3, 4), 0.2)
    rec = GaussianSmoothing().certify(m, x, torch.tensor([0]),
                                      {"sigma": 0.3, "n0": n0, "n": n, "batch": batch})[0]
    probe, rest = m.batches[0], torch.cat(m.batches[1:])
    assert torch.equal(probe[0], x[0])                     # the class-count probe is the clean input
    assert len(rest) == n0 + n                              # no sample drawn twice or skipped
    sel, est = rest[:n0].reshape(n0, -1), rest[n0:].reshape(n, -1)
    assert torch.unique(torch.cat([sel, est]), dim=0).shape[0] == n0 + n   # no noise draw shared at all
    # the reported count comes from the estimation samples only
    votes = torch.stack([est.sum(1), -est.sum(1), torch.zeros(n)], 1).argmax(1)
    assert rec["count"] == int((votes == rec["predict"]).sum()) or rec["predict"] == -1
    if rec["predict"] == -1:
        c_a = int(torch.stack([sel.sum(1), -sel.sum(1), torch.zeros(n0)], 1).argmax(1).mode().values)
        assert rec["count"] == int((votes == c_a).sum())


def test_noise_is_gaussian_with_sigma():
    m = Recorder()
    x = torch.zeros(1, 50)
    GaussianSmoothing().certify(m, x, torch.tensor([0]), {"sigma": 0.7, "n0": 10, "n": 400, "batch": 128})
    noise = torch.cat(m.batches[1:]).double()
    assert abs(noise.mean()) < 5 * 0.7 / math.sqrt(noise.numel())
    assert noise.std().item() == pytest.approx(0.7, rel=0.02)


def test_reproducible_and_independent_of_order():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 4))
    x = torch.randn(5, 6)
    y = torch.arange(5) % 4
    d = GaussianSmoothing()
    opts = {"sigma": 0.5, "n0": 30, "n": 300, "batch": 77, "seed": 11}
    strip = lambda rs: [{k: v for k, v in r.items() if k != "time"} for r in rs]  # noqa: E731
    a, b = strip(d.certify(model, x, y, opts)), strip(d.certify(model, x, y, opts))
    assert a == b
    sub = strip(d.certify(model, x[3:5], y[3:5], {**opts, "indices": [3, 4]}))
    assert sub == a[3:5]                                   # seeded per (seed, idx), not by position in the run
    c = strip(d.certify(model, x, y, {**opts, "seed": 12}))
    assert [r["count"] for r in c] != [r["count"] for r in a]


def test_count_classes_memory_is_batched():
    m = Recorder()
    g = sample_generator(0, 0)
    counts = count_classes(m, torch.zeros(2, 2), gaussian_noise(1.0), 1000, 300, 3, g)
    assert counts.sum() == 1000 and counts.dtype == np.int64
    assert [len(b) for b in m.batches] == [300, 300, 300, 100]


def test_network_and_torch_module_agree():
    """An IR Network and the torch module it came from give the same certificates (noise before normalisation)."""
    from nncert.engine.io.torch_import import from_torch
    torch.manual_seed(1)
    seq = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 3 * 3, 5))
    net = from_torch(seq, (1, 7, 7))
    x = torch.rand(4, 1, 7, 7)
    y = torch.arange(4)
    opts = {"sigma": 0.25, "n0": 20, "n": 200, "batch": 64}
    d = GaussianSmoothing()
    a = [(r["predict"], r["count"]) for r in d.certify(net, x, y, opts)]
    b = [(r["predict"], r["count"]) for r in d.certify(seq, x, y, opts)]
    assert a == b
    flat = [(r["predict"], r["count"]) for r in d.certify(net, x.reshape(4, -1), y, opts)]
    assert flat == a


def test_bad_options_raise_badinput():
    d = GaussianSmoothing()
    f, x, _, _ = _linear_case()
    y = torch.tensor([1])
    for bad in ({}, {"sigma": -1.0}, {"sigma": float("nan")}, {"sigma": 0.5, "alpha": 0.0},
                {"sigma": 0.5, "n": 0}, {"sigma": 0.5, "batch": 1.5}, {"sigma": 0.5, "device": "nope"},
                {"sigma": [0.5, 0.25]}, {"sigma": "x"}):
        with pytest.raises(BadInput):
            d.certify(f, x, y, bad)
    with pytest.raises(BadInput):
        d.certify(f, x, torch.tensor([1, 0]), {"sigma": 0.5})
    # the CLI passes --sigma as a list and unused options as None
    a = d.certify(f, x, y, {"sigma": [0.5], "eps": None, "transform": None, "ranges": None, "n": 100})
    b = d.certify(f, x, y, {"sigma": 0.5, "n": 100})
    assert [r["radius"] for r in a] == [r["radius"] for r in b]
    with pytest.raises(BadInput):
        d.certify(f, torch.tensor([[float("nan")] * 8]), y, {"sigma": 0.5})


def test_registered_domain():
    from nncert.engine.registry import get_registry
    d = get_registry().domain("gaussian-smoothing")
    assert isinstance(d, GaussianSmoothing) and d.guarantee == "probabilistic" and d.input_sets == ("l2",)
    assert d.can_certify() and not d.can_bound()


# ---------------------------------------------------------------------------------------------------------------
# reports

def test_reports(tmp_path):
    rng = np.random.default_rng(0)
    recs = [{"idx": i, "label": int(rng.integers(3)), "predict": int(rng.integers(-1, 3)),
             "radius": float(rng.random()) * 1.5, "time": 0.01, "pA_lower": 0.9} for i in range(40)]
    for r in recs:
        r["correct"] = int(r["predict"] == r["label"])
        if r["predict"] == -1:
            r["radius"] = 0.0
    acc = certified_accuracy(recs, radii=(0.0, 0.5, 1.0))
    for rad, v in acc.items():
        assert v == sum(r["correct"] and r["radius"] >= rad for r in recs) / len(recs)
    assert acc[0.0] >= acc[0.5] >= acc[1.0]
    path = write_tsv(recs, tmp_path / "c.tsv")
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == ["idx", "label", "predict", "radius", "correct", "time", "pA_lower"]
    back = [float(l.split("\t")[3]) for l in lines[1:]]
    assert back == [r["radius"] for r in recs]             # radii written exactly (never rounded up)
    assert plot_curve(recs, tmp_path / "c.png").stat().st_size > 1000
    sem = [{"idx": 0, "label": 1, "predict": 1, "correct": 1, "certified": 1, "time": 0.1},
           {"idx": 1, "label": 0, "predict": -1, "correct": 0, "certified": 0, "time": 0.1}]
    assert certified_accuracy(sem) == {}
    assert plot_curve(sem, tmp_path / "s.png") is None and not (tmp_path / "s.png").exists()
    assert summary(sem)["certified"] == 0.5 and summary(sem)["abstain"] == 0.5
    assert write_tsv(sem, tmp_path / "s.tsv").read_text().splitlines()[0] == \
        "idx\tlabel\tpredict\tcorrect\ttime\tcertified"


# ---------------------------------------------------------------------------------------------------------------
# end to end and devices

def test_cli_certify_onnx_end_to_end(tmp_path, capsys):
    """ONNX model -> CLI `certify --domain gaussian-smoothing` -> TSV whose rows match the domain's own records."""
    import json

    from nncert.engine.cli import main
    from nncert.engine.io.onnx_import import load_onnx
    from nncert.engine.io.ort import export_onnx
    torch.manual_seed(3)
    seq = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    onnx_path = export_onnx(seq, (1, 3, 4), tmp_path / "m.onnx")
    x = torch.rand(6, 1, 3, 4)
    y = seq(x).argmax(1).detach()
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    rc = main(["certify", str(onnx_path), "--data", str(tmp_path / "d.npz"), "--domain", "gaussian-smoothing",
               "--sigma", "0.25", "--n", "500", "--n0", "50", "--alpha", "0.01", "--out", str(tmp_path / "o.tsv"),
               "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ours = GaussianSmoothing().certify(load_onnx(onnx_path), x, y, {"sigma": 0.25, "n": 500, "n0": 50,
                                                                     "alpha": 0.01})
    assert [(s["predict"], s["count"]) for s in out["samples"]] == [(r["predict"], r["count"]) for r in ours]
    rows = (tmp_path / "o.tsv").read_text().splitlines()
    assert rows[0].split("\t")[:3] == ["idx", "label", "predict"] and len(rows) == 7


def test_cli_certify_several_sigmas_plots_and_normalises(tmp_path, capsys):
    """--sigma a,b,c certifies once per level (each level's records equal a run with that sigma alone) and the
    plot overlays them; --mean/--std certify the model that normalises its input, in the data's units."""
    import json

    from nncert.engine.certify import with_normalisation
    from nncert.engine.cli import main
    from nncert.engine.io.onnx_import import load_onnx
    from nncert.engine.io.ort import export_onnx
    from nncert.engine.report import plot_certificates
    torch.manual_seed(4)
    seq = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    onnx_path = export_onnx(seq, (3, 2, 2), tmp_path / "m.onnx")
    x = torch.rand(5, 3, 2, 2)
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=seq(x).argmax(1).detach().numpy())
    args = ["certify", str(onnx_path), "--data", str(tmp_path / "d.npz"), "--domain", "gaussian-smoothing",
            "--n", "300", "--n0", "30", "--json"]
    assert main(args + ["--sigma", "0.1,0.3", "--plot", str(tmp_path / "g.png")]) == 0
    both = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [b["sigma"] for b in both["by_sigma"]] == [0.1, 0.3] and (tmp_path / "g.png").stat().st_size > 1000
    assert main(args + ["--sigma", "0.3"]) == 0
    alone = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["count"] for r in both["samples"] if r["sigma"] == 0.3] == [r["count"] for r in alone["samples"]]
    # normalisation: an exact oracle on the network, then end to end
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.5]
    net = with_normalisation(load_onnx(onnx_path), mean, std)
    m, sd = torch.tensor(mean).reshape(3, 1, 1), torch.tensor(std).reshape(3, 1, 1)
    torch.testing.assert_close(net.forward(x.double()), seq((x - m) / sd).double().detach(), rtol=1e-5, atol=1e-6)
    assert main(args + ["--sigma", "0.3", "--mean", "0.4,0.5,0.6", "--std", "0.2,0.25,0.5"]) == 0
    assert main(args + ["--sigma", "0.3", "--std", "0.2,0.25"]) == 2       # 2 values for 3 channels
    assert "--std takes 1 or 3 values" in capsys.readouterr().err
    # a certificate without radius (semantic smoothing) still gets a titled plot
    sem = [{"idx": 0, "label": 1, "predict": 1, "correct": 1, "certified": True, "transform": "brightness",
            "sigma": [0.2], "n": 100, "alpha": 0.001}]
    assert plot_certificates(sem, tmp_path / "s.png", "semantic-smoothing").stat().st_size > 1000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
def test_cuda_matches_cpu_statistically():
    sigma, n = 0.5, 20_000
    f, x, exact, p_true = _linear_case(sigma=sigma, margin_sigmas=1.0)
    f.w = f.w.cuda()
    recs = GaussianSmoothing().certify(f, x.repeat(4, 1), torch.ones(4, dtype=torch.long),
                                       {"sigma": sigma, "n": n, "alpha": 0.001, "device": "cuda"})
    for r in recs:
        assert r["predict"] == 1 and r["radius"] <= exact
        assert abs(r["count"] - n * p_true) <= 5 * math.sqrt(n * p_true * (1 - p_true))
