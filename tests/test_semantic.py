"""Semantic-transform smoothing: resolvability, exact oracles, closed form vs numerical certificate, plugins.

Oracle: the base classifier f(z) = 1[mean(z) > t] has a closed-form smoothed probability p1(beta) at the attacked
input psi_beta(x) under brightness, contrast and gamma, and a one-dimensional integral under contrast+brightness;
p1 is monotone in each attack parameter, so the true smoothed prediction is constant on a range iff it is the
same at the range's extreme corners. A certified sample whose true smoothed prediction changes inside its range
would be a soundness failure (probability <= alpha per sample).
"""
import math

import numpy as np
import pytest
import torch
from scipy.special import ndtr, ndtri

from nncert.engine import hookimpl
from nncert.engine.errors import BadInput
from nncert.engine.registry import get_registry, registry_with
from nncert.plugins.semantic import closed_form as cf
from nncert.plugins.semantic import rates
from nncert.plugins.semantic import transforms as T
from nncert.plugins.semantic.domain import certificate

torch.set_num_threads(1)
ALPHA = 1e-3


class MeanClassifier:
    """Logits [t - mean, mean - t]: class 1 iff mean(z) > t."""

    def __init__(self, t):
        self.t = t

    def __call__(self, z):
        m = z.reshape(len(z), -1).to(torch.float64).mean(1)
        return torch.stack([self.t - m, m - self.t], 1)


def domain():
    return get_registry().domain("semantic-smoothing")


def run(x, tf, ranges, sigma, t, n=20000, seed=0):
    y = torch.zeros(len(x), dtype=torch.int64)
    return domain().certify(MeanClassifier(t), x, y, {"transform": tf, "ranges": ranges, "sigma": sigma, "n": n,
                                                      "n0": 64, "alpha": ALPHA, "batch": 20000, "seed": seed})


def hermite(n=200):
    z, w = np.polynomial.hermite_e.hermegauss(n)
    return z, w / w.sum()


# ------------------------------------------------------------------------------------------------ structure
@pytest.mark.parametrize("cls", T.BUILTIN, ids=lambda c: c.name)
def test_resolvable(cls):
    """apply(apply(x, beta), theta) == apply(x, resolve(beta, theta)) for the smoothing draws."""
    t = cls()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(64, 2, 6, 7, dtype=torch.float64)
    sig = [0.4] * len(t.params)
    theta, beta = t.sample(64, sig, g), t.sample(64, sig, g)
    if t.integer:
        beta = torch.round(beta * 3)
    lhs, rhs = t.apply(t.apply(x, beta), theta), t.apply(x, t.resolve(beta, theta))
    assert torch.allclose(lhs, rhs, atol=1e-12, rtol=1e-10)


def test_blur_is_a_discrete_gaussian_of_given_variance():
    x = torch.zeros(1, 1, 31, 31, dtype=torch.float64)
    x[0, 0, 15, 15] = 1.0
    k = T.Blur().apply(x, torch.tensor([[2.5]], dtype=torch.float64))[0, 0]
    i = torch.arange(31, dtype=torch.float64) - 15
    assert abs(float(k.sum()) - 1) < 1e-12 and float(k.min()) > -1e-15
    assert abs(float((k.sum(0) * i ** 2).sum()) - 2.5) < 1e-9   # variance per axis


def test_translation_is_a_cyclic_roll():
    x = torch.rand(3, 1, 5, 6)
    th = torch.tensor([[1.2, -2.4], [0.4, 0.0], [-7.0, 13.6]], dtype=torch.float64)
    out = T.Translation().apply(x, th)
    for j, (dy, dx) in enumerate([(1, -2), (0, 0), (-7, 14)]):
        assert torch.equal(out[j], torch.roll(x[j], (dy, dx), dims=(-2, -1)))


# ------------------------------------------------------------------------------------------------ oracles
def _images(n, seed, lo=0.05, hi=0.95):
    g = torch.Generator().manual_seed(seed)
    level = torch.rand(n, 1, 1, 1, generator=g) * (hi - lo) + lo
    return (level + 0.1 * (torch.rand(n, 1, 6, 6, generator=g) - 0.5)).clamp(0.001, 0.999)


def _check(records, p_true_at, ranges_of, boundary_ok):
    """Soundness at the range corners; returns (certified samples, samples whose pA_lower exceeds the true
    probability). Callers sum the second over all their images and check it once with `_coverage_ok`."""
    n_cert = over = 0
    for r in records:
        if r["predict"] == -1:
            continue
        p1 = p_true_at(r["idx"], None)
        p_pred = p1 if r["predict"] == 1 else 1 - p1
        over += r["pA_lower"] > p_pred
        if r["certified"]:
            n_cert += 1
            for corner in ranges_of(r):
                p1c = p_true_at(r["idx"], corner)
                assert (p1c > 0.5) == (r["predict"] == 1), (r, corner, p1c)
            boundary_ok(r)
    return n_cert, over


def _coverage_ok(over, n):
    """The lower confidence bounds hold (and what is sampled is the certified law): at level alpha = 0.001 over
    n images, more than max(1, n // 50) failures would be far outside chance."""
    assert over <= max(1, n // 50), (over, n)


@pytest.mark.parametrize("seed", range(3))
def test_brightness_oracle(seed):
    x, t, s = _images(40, seed), 0.5, 0.2
    m = x.reshape(len(x), -1).double().mean(1).numpy()
    rng = np.random.default_rng(seed)
    frac = rng.uniform(0.5, 1.3, len(x))   # ranges from half to 1.3x the true boundary |m - t|
    n_cert = over = 0
    for i in range(len(x)):
        R = float(frac[i] * abs(m[i] - t))
        recs = run(x[i:i + 1], "brightness", [(-R, R)], [s], t)
        recs[0]["idx"] = i
        _c, _o = _check(recs, lambda k, b: ndtr((m[k] + (b or [0])[0] - t) / s), lambda r: [[-R], [R]],
                         lambda r: None)
        n_cert, over = n_cert + _c, over + _o
        r = recs[0]
        if r["predict"] != -1 and 0.8 < ndtr(abs(m[i] - t) / s) < 0.995:   # reaches the exact boundary
            assert r["certified_ranges"][0][1] >= 0.95 * abs(m[i] - t)
            assert r["certified_ranges"][0][1] < abs(m[i] - t)
    _coverage_ok(over, len(x))
    assert n_cert >= 8


@pytest.mark.parametrize("seed", range(3))
def test_contrast_oracle(seed):
    x, t, s = _images(40, seed, 0.2, 0.9), 0.5, 0.3
    m = x.reshape(len(x), -1).double().mean(1).numpy()
    rng = np.random.default_rng(seed + 10)
    frac = rng.uniform(0.5, 1.3, len(x))
    n_cert = over = 0
    for i in range(len(x)):
        L = float(frac[i] * abs(math.log(m[i] / t)))
        recs = run(x[i:i + 1], "contrast", [(math.exp(-L), math.exp(L))], [s], t)
        recs[0]["idx"] = i
        _c, _o = _check(recs, lambda k, c: ndtr(math.log((c or [1])[0] * m[k] / t) / s),
                         lambda r: [[math.exp(-L)], [math.exp(L)]], lambda r: None)
        n_cert, over = n_cert + _c, over + _o
        r = recs[0]
        true = abs(math.log(m[i] / t))
        if r["predict"] != -1 and 0.8 < ndtr(true / s) < 0.995:
            assert 0.95 * true <= math.log(r["certified_ranges"][0][1]) < true
    _coverage_ok(over, len(x))
    assert n_cert >= 8


def _gamma_root(x, t):
    """theta* with mean(x^theta*) = t (mean(x^theta) decreases in theta for x in (0, 1))."""
    x = x.reshape(-1).double()
    lo, hi = 1e-6, 1e3
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if float((x ** mid).mean()) > t else (lo, mid)
    return math.sqrt(lo * hi)


@pytest.mark.parametrize("seed", range(3))
def test_gamma_oracle(seed):
    x, t, s = _images(40, seed, 0.2, 0.8), 0.5, 1.0
    roots = [_gamma_root(x[i], t) for i in range(len(x))]

    def p1(k, g):   # class 1 iff g * theta < theta*, theta ~ Rayleigh(s)
        g = (g or [1.0])[0]
        return 1 - math.exp(-((roots[k] / g) ** 2) / (2 * s * s))

    rng = np.random.default_rng(seed + 20)
    n_cert = over = 0
    for i in range(len(x)):
        pt = p1(i, None)
        if abs(pt - 0.5) < 0.02:
            continue
        lo_true, hi_true = cf.gamma_interval(max(pt, 1 - pt))   # where the true prediction flips (exact)
        f = rng.uniform(0.5, 1.3)
        lo, hi = math.exp(f * math.log(lo_true)), math.exp(f * math.log(hi_true))
        recs = run(x[i:i + 1], "gamma", [(lo, hi)], [s], t)
        recs[0]["idx"] = i
        _c, _o = _check(recs, p1, lambda r: [[lo], [hi]], lambda r: None)
        n_cert, over = n_cert + _c, over + _o
        r = recs[0]
        if r["predict"] != -1 and 0.8 < max(pt, 1 - pt) < 0.995:
            a, b = r["certified_ranges"][0]
            assert lo_true < a <= lo_true ** 0.95 and hi_true ** 0.95 <= b < hi_true
    _coverage_ok(over, len(x))
    assert n_cert >= 8


def cb_p1(m, c, b, t, sc, sb):
    """P(mean(c'' (c x + b) + b'') > t) for log c'' ~ N(0, sc^2), b'' ~ N(0, sb^2): a 1-D integral."""
    z, w = hermite()
    return float(w @ ndtr((np.exp(sc * z) * (c * m + b) - t) / sb))


@pytest.mark.parametrize("seed", range(3))
def test_contrast_brightness_oracle(seed):
    x, t, sc, sb = _images(20, seed, 0.2, 0.9), 0.5, 0.15, 0.15
    m = x.reshape(len(x), -1).double().mean(1).numpy()
    rng = np.random.default_rng(seed + 30)
    n_cert = over = 0
    for i in range(len(x)):
        c_lo, c_hi = math.exp(-rng.uniform(0, 0.15)), math.exp(rng.uniform(0, 0.15))
        B = rng.uniform(0, 0.12)
        ranges = [(c_lo, c_hi), (-B, B)]
        recs = run(x[i:i + 1], "contrast-brightness", ranges, [sc, sb], t, n=5000, seed=seed)
        recs[0]["idx"] = i
        # p1 increases in c * m + b: the extreme corners are (c_lo, -B) and (c_hi, B)
        _c, _o = _check(recs, lambda k, cb: cb_p1(m[k], *(cb or (1.0, 0.0)), t, sc, sb),
                         lambda r: [(c_lo, -B), (c_hi, B)], lambda r: None)
        n_cert, over = n_cert + _c, over + _o
    _coverage_ok(over, len(x))
    assert n_cert >= 4


# ------------------------------------------------------------------------------------------------ numerical
PS = [0.51, 0.6, 0.75, 0.9, 0.97, 0.99, 0.999]


@pytest.mark.parametrize("p", PS)
def test_numerical_matches_closed_form_from_below(p):
    s = 0.37
    r = cf.gaussian_radius(p, s)
    num = T.Brightness().numerical(p, [(-10, 10)], [s])["certified_ranges"][0]
    assert 0.98 * r <= num[1] <= r and num[0] == -num[1]
    num = T.Contrast().numerical(p, [(0.01, 100)], [s])["certified_ranges"][0]
    assert 0.98 * r <= math.log(num[1]) <= r and 0.98 * r <= -math.log(num[0]) <= r
    a, b = cf.gamma_interval(p)
    na, nb = T.Gamma().numerical(p, [(1e-6, 1e6)], [s])["certified_ranges"][0]
    assert a <= na <= a ** 0.98 and b ** 0.98 <= nb <= b
    rb = cf.blur_radius(p, s)
    nbl = T.Blur().numerical(p, [(0, 1e3)], [s])["certified_ranges"][0][1]
    assert 0.98 * rb <= nbl <= rb
    rt = T.Translation().numerical(p, [(0, 0), (0, 0)], [1, 1])["radius_sigma_units"]
    assert 0.98 * cf.gaussian_radius(p) <= rt <= cf.gaussian_radius(p)
    # the certified decision agrees except within 2% of the boundary, and never certifies beyond it
    for frac, expect in ((0.97, True), (1.0, False), (1.05, False)):
        for t in (T.Brightness(), T.Contrast()):
            R = frac * r
            rng = [(-R, R)] if t.name == "brightness" else [(math.exp(-R), math.exp(R))]
            assert t.numerical(p, rng, [s])["certified"] == expect == t.closed_form(p, rng, [s])["certified"]


@pytest.mark.parametrize("p", [0.6, 0.9, 0.99])
def test_contrast_brightness_reduces_to_closed_forms(p):
    cb = T.ContrastBrightness()
    s = 0.3
    r = float(ndtri(p))
    # no brightness: the contrast closed form
    for L in (0.1 * r * s, 0.5 * r * s, 0.9 * r * s):
        w = cb.numerical(p, [(math.exp(-L), math.exp(L)), (0, 0)], [s, 0.2])["p_worst_lower"]
        exact = ndtr(r - L / s)
        assert exact - 1e-6 <= w + 1e-6 and w <= exact
    # no contrast and (almost) no contrast noise: the brightness closed form
    for B in (0.1 * r * s, 0.5 * r * s, 0.9 * r * s):
        w = cb.numerical(p, [(1, 1), (-B, B)], [1e-9, s])["p_worst_lower"]
        exact = ndtr(r - B / s)
        assert exact - 0.02 * (exact - 0.5) <= w <= exact


def np_worst_brightness(p, k, sc):
    """Exact Neyman-Pearson worst case of a brightness shift B (k = |B|/sb) under contrast+brightness smoothing:
    minimise E_u Phi(Phi^-1(g(u)) - k e^u) s.t. E_u g(u) = p; stationarity gives Phi^-1 g = ln(mu)/c + c/2."""
    z, w = hermite()
    c = k * np.exp(sc * z)
    lo, hi = -200.0, 200.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if w @ ndtr(mid / c + c / 2) < p else (lo, mid)
    return float(w @ ndtr(lo / c - c / 2))


@pytest.mark.parametrize("sc", [0.1, 0.3, 0.6])
def test_brightness_leg_never_beats_neyman_pearson(sc):
    tab = rates.table("mixture", sc)
    for p in (0.6, 0.8, 0.95, 0.99):
        for k in (0.05, 0.3, 1.0):
            y, w = tab.lower_after(p, k), np_worst_brightness(p, k, sc)
            assert y <= max(w, 0.5) + 1e-9                   # 0.5 means "may fall to 1/2": not certified
            if sc <= 0.3:                                    # and the path bound is close to the optimum
                assert w - y < 0.05 * (p - 0.5) or w < 0.5


def test_mixture_rate_is_the_worst_derivative():
    """G(p) equals the Neyman-Pearson sup of -dp/dt (top-p mass of the score S Z2), estimated by sampling."""
    sc = 0.4
    g = np.random.default_rng(0)
    s = np.exp(sc * g.standard_normal(400000)) * g.standard_normal(400000)
    G, _, _ = rates.mixture_rates(sc)(np.array([0.7, 0.9]))
    for p, Gp in zip((0.7, 0.9), G):
        top = np.sort(s)[::-1][: int(p * len(s))]
        assert abs(top.sum() / len(s) - Gp) < 0.01


# ------------------------------------------------------------------------------------------------ plugins, input
class Offset(T.Transform):
    """A third-party transform: x + 2 beta with beta-smoothing N(0, sigma^2) (coordinate 2 beta)."""

    name = "offset2"
    params = ("beta",)
    identity = (0.0,)
    limits = ((-math.inf, math.inf),)
    family = "gaussian"

    def sample(self, n, sigma, generator, device="cpu"):
        return 0.5 * torch.randn(n, 1, generator=generator, device=device, dtype=torch.float64) * sigma[0]

    def apply(self, x, theta):
        return x + 2 * theta[:, :1].to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))

    def resolve(self, beta, theta):
        return theta + beta

    def coord(self, beta):
        return 2.0 * beta

    def coord_inv(self, m):
        return m / 2.0


class OffsetPlugin:
    @hookimpl
    def nncert_register_transforms(self, register):
        register(Offset)


def test_third_party_transform():
    reg = registry_with({"offset-plugin": OffsetPlugin()})
    assert reg.transform("offset2") is Offset and reg.transform_plugin["offset2"] == "offset-plugin"
    x = torch.full((1, 1, 4, 4), 0.7)
    dom = reg.domain("semantic-smoothing")
    r = dom.certify(MeanClassifier(0.5), x, torch.tensor([1]),
                    {"transform": "offset2", "registry": reg, "ranges": [(-0.05, 0.05)], "sigma": [0.2], "n": 20000})
    assert r[0]["predict"] == 1 and r[0]["certified"] and r[0]["method"] == "numerical"
    # the true boundary is beta = -0.1 (mean 0.7 + 2 beta = 0.5): never certified beyond it
    hi = r[0]["certified_ranges"][0][1]
    assert 0.09 < hi < 0.1


def test_bad_input():
    x = torch.rand(2, 1, 4, 4)
    y = torch.tensor([0, 1])
    f = MeanClassifier(0.5)
    with pytest.raises(BadInput, match="unknown transform"):
        domain().certify(f, x, y, {"transform": "nope", "ranges": [(0, 1)], "sigma": [1]})
    with pytest.raises(BadInput, match="parameter"):
        domain().certify(f, x, y, {"transform": "contrast-brightness", "ranges": [(0.9, 1.1)], "sigma": [1, 1]})
    with pytest.raises(BadInput, match=r"\[0, 1\]"):
        domain().certify(f, x + 1, y, {"transform": "gamma", "ranges": [(0.9, 1.1)], "sigma": [1]})
    with pytest.raises(BadInput, match="must lie in"):
        domain().certify(f, x, y, {"transform": "blur", "ranges": [(-1, 1)], "sigma": [1]})
    with pytest.raises(BadInput, match="no integer"):
        domain().certify(f, x, y, {"transform": "translation", "ranges": [(0.2, 0.8), (0, 0)], "sigma": [1, 1]})


def test_clip_flag_and_record_fields():
    x = torch.full((2, 1, 4, 4), 0.9)
    r = domain().certify(MeanClassifier(0.5), x, torch.tensor([1, 0]),
                         {"transform": "brightness", "ranges": [(-0.1, 0.1)], "sigma": [0.2], "n": 2000,
                          "clip": True})
    for rec in r:
        for key in ("idx", "label", "predict", "certified", "correct", "time", "pA_lower", "certified_ranges"):
            assert key in rec
    assert r[0]["correct"] == 1 and r[1]["correct"] == 0 and r[0]["clip"] is True


@pytest.mark.parametrize("p", [0.7, 0.9, 0.99])
def test_products_reduce_to_their_parts(p):
    """A product certificate with all but one part at the identity is that part's worst case (from below)."""
    s = 0.8
    blur_only = T.BlurTranslation().numerical(p, [(0, 0.15), (0, 0), (0, 0)], [s, 1, 1])["p_worst_lower"]
    exact = 1 - (1 - p) * math.exp(0.15 / s)
    assert exact - 0.01 * (p - 0.5) <= blur_only <= exact
    shift_only = T.BlurTranslation().numerical(p, [(0, 0), (-1, 1), (0, 2)], [s, 4, 12])["p_worst_lower"]
    exact = ndtr(ndtri(p) - math.hypot(1 / 4, 2 / 12))
    assert exact - 0.01 * (p - 0.5) <= shift_only <= exact
    gamma_only = T.GammaTranslation().numerical(p, [(0.9, 1.1), (0, 0), (0, 0)], [s, 1, 1])["p_worst_lower"]
    exact = min(1 - (1 - p) ** (1 / 1.1 ** 2), p ** (1 / 0.9 ** 2))
    assert exact - 0.01 * (p - 0.5) <= gamma_only <= exact
    # both parts: the worst case composes (never above either part alone)
    both = T.BlurTranslation().numerical(p, [(0, 0.15), (-1, 1), (0, 2)], [s, 4, 12])["p_worst_lower"]
    assert both <= min(blur_only, shift_only)


def test_brightness_translation_oracle():
    """The mean classifier ignores cyclic shifts: p1 = Phi((m + b - t) / sigma_b) on the whole box."""
    x, t, s = _images(30, 5), 0.5, 0.2
    m = x.reshape(len(x), -1).double().mean(1).numpy()
    n_cert = over = 0
    for i in range(len(x)):
        R = 0.6 * abs(m[i] - t) if i % 2 else 1.2 * abs(m[i] - t)
        ranges = [(-R, R), (-1, 1), (0, 0)]
        recs = run(x[i:i + 1], "brightness+translation", ranges, [s, 4.0, 4.0], t, n=5000)
        recs[0]["idx"] = i
        _c, _o = _check(recs, lambda k, b: ndtr((m[k] + (b or [0])[0] - t) / s), lambda r: [[-R], [R]],
                         lambda r: None)
        n_cert, over = n_cert + _c, over + _o
    _coverage_ok(over, len(x))
    assert n_cert >= 3
