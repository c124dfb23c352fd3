"""Worst-case decay rates of a smoothed probability along a path of attack parameters, and their integration.

Setting (General Lipschitz, Korzh et al., "General Lipschitz: Certified Robustness Against Resolvable Semantic
Transformations via Transformation-Dependent Randomized Smoothing", 2023): the smoothing parameters theta have
density rho; a resolvable attack psi_beta satisfies phi(psi_beta(x), theta) = phi(x, gamma_beta(theta)), so the
smoothed probability of class A at the attacked input is p(beta) = E_{w ~ rho_beta}[h(w)] with
rho_beta = (gamma_beta)_# rho and h = 1[f(phi(x, .)) = A] in [0, 1]. Along a path beta(t),

    dp/dt = E_{rho_t}[h * s_t],    s_t = d/dt log rho_{beta(t)}   (the score of the path),

and over every base classifier with E_{rho_t}[h] = p the decrease is at most
    G_t(p) = sup_{0<=h<=1, E h = p} E[-s_t h] = E[-s_t ; the top-p mass of -s_t]      (Neyman-Pearson).
G_t is concave in p (an integral of the quantile function of -s_t) and positively homogeneous in the path
speed. For every family used here the score, in the right coordinate, is the speed times a fixed random
variable, so G_t(p) = speed(t) * G(p) with a *unit rate* G:

    gaussian      coordinate m with theta = m + sigma * Z:      G(p) = phi(Phi^-1(p))           (Salman et al. 2019)
    rayleigh      scale family, coordinate log(scale), both directions:
                  increasing scale  G(p) = -2 (1-p) log(1-p);   decreasing scale  G(p) = -2 p log p
    exponential   shift of an exponential of mean sigma (only increasing shifts): G(p) = 1 - p
    lognormal-mix brightness shift B under (log c ~ N(0, sc^2), b ~ N(0, sb^2)) smoothing of c*x + b, unit
                  time = |B| / sb: the score is S * Z2 with S = exp(sc * Z1); G(p) = E[S phi(q/S)] where
                  E[Phi(q/S)] = p (computed by quadrature, see `mixture_rates`).

Elapsed "smoothing time" along a path is the path length in the smoothing coordinate divided by sigma, i.e. the
time integral of the path speed |dm/dbeta| |dbeta/dt| / sigma. This speed factor is what some public code drops.

Integration (`TimeTable`): with y' = -G(y) the worst-case trajectory, the smoothing time needed to fall from y_hi
to y_lo is the integral of 1/G over [y_lo, y_hi] (p(tau) >= y(tau) by the comparison theorem). `TimeTable`
lower-bounds that integral on a grid uniform in Phi^-1(y) from 1/2 up: on each cell [a, b], G is below both
tangents (concavity; slopes from bracketed derivatives) and 1/G is integrated with the maximum of their minimum
over the cell, so the table never overstates a time. A start p0 off the grid and a target time inside a cell
are handled with the same line bounds on the partial cell. For the Gaussian, Rayleigh and exponential rates the exact integral is the
Neyman-Pearson closed form, so the numerical certificate converges to it from below (second order in the cell).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

# scipy.special is imported where it is used: it costs ~0.1 s, and this module loads at every start-up.
_SQRT2PI = math.sqrt(2.0 * math.pi)
SAFETY = 1e-12   # absolute slack on closed-form worst cases (float64 rounding of a few operations)


def _pdf(z):
    return np.exp(-0.5 * np.square(z)) / _SQRT2PI


@lru_cache(maxsize=8)
def _hermite(nodes: int):
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    return z, w / w.sum()


class TimeTable:
    """Cumulative lower bounds C[j] <= (smoothing time to fall from y_j to 1/2) on an ascending grid y_0 = 1/2 <
    ... < y_N = Phi(r_max). `rate(y_array)` returns (G_upper, dlo, dhi) with dlo <= G'(y) <= dhi."""

    def __init__(self, rate, cells: int = 2000, r_max: float = 7.0):
        from scipy.special import ndtr
        r = np.linspace(0.0, r_max, int(cells) + 1)
        self.rate = rate
        self.y = ndtr(r)
        G, dlo, dhi = rate(self.y)
        self.G, self.dlo, self.dhi = G, dlo, dhi
        dt, self.U = self._cell_time(self.y[:-1], self.y[1:], G[:-1], G[1:], dhi[:-1], dlo[1:])
        self.C = np.concatenate([[0.0], np.cumsum(dt)]) * (1.0 - 1e-12)   # summation rounding

    @staticmethod
    def _cell_time(a, b, Ga, Gb, sa, sb):
        """Lower bound of the integral of 1/G over [a, b]: G <= La(y) = Ga + sa (y - a) for y >= a (sa >= G'(a))
        and G <= Lb(y) = Gb + sb (y - b) for y <= b (sb <= G'(b)); U = max over the cell of min(La, Lb)."""
        cand = np.maximum(np.minimum(Ga, Gb + sb * (a - b)), np.minimum(Ga + sa * (b - a), Gb))
        with np.errstate(divide="ignore", invalid="ignore"):
            yx = (Gb - Ga + sa * a - sb * b) / (sa - sb)
            inside = (sa > sb) & (yx >= a) & (yx <= b)
            vx = np.where(inside, Ga + sa * (yx - a), -np.inf)
        U = np.maximum(cand, vx) * (1.0 + 1e-12) + 1e-300   # G >= 0; never divide by 0
        return (b - a) / U * (1.0 - 1e-12), U

    def _start(self, p0: float) -> tuple[int, float]:
        """(k, time from p0 down to grid point y_k <= p0), the partial cell bounded like the others."""
        k = self._floor(p0)
        if k >= len(self.y) - 1 or p0 <= self.y[k]:
            return k, 0.0
        G, dlo, dhi = self.rate(np.array([self.y[k], p0]))
        t, _ = self._cell_time(np.array([self.y[k]]), np.array([p0]), G[:1], G[1:], dhi[:1], dlo[1:])
        return k, max(float(t[0]), 0.0)

    def _floor(self, p0: float) -> int:
        return int(np.searchsorted(self.y, p0, side="right")) - 1

    def reach(self, p0: float) -> float:
        """Smoothing time over which p stays > 1/2 when p(0) >= p0 (a lower bound; 0 when p0 <= 1/2)."""
        if p0 <= 0.5:
            return 0.0
        k, extra = self._start(p0)
        return float(self.C[k] + extra)

    def lower_after(self, p0: float, t):
        """A lower bound of p after smoothing time t (a float or an array of times) when p(0) >= p0; 0.5 (not
        > 1/2) where it may fall below 1/2."""
        ts = np.atleast_1d(np.asarray(t, dtype=np.float64))
        if p0 <= 0.5:
            out = np.zeros_like(ts)
        else:
            k, extra = self._start(p0)
            # D_i = C[k] + extra - C[i] <= time from p0 down to y_i; find the cell with D_{i+1} < t <= D_i
            i = np.searchsorted(self.C, self.C[k] + extra - ts, side="right") - 1   # largest i with D_i >= t
            i = np.clip(i, 0, max(k - 1, 0))
            d_next = self.C[k] + extra - self.C[np.minimum(i + 1, len(self.C) - 1)]
            # inside cell i the line bound G <= U_i gives y >= y_{i+1} - (t - D_{i+1}) U_i
            y = self.y[np.minimum(i + 1, len(self.y) - 1)] - np.maximum(ts - d_next, 0.0) * self.U[i] * (1 + 1e-12)
            y = np.maximum(y, self.y[i])
            out = np.where(self.C[k] + extra - self.C[i] >= ts, y, 0.5)
            out = np.where(extra >= ts, self.y[k] if k > 0 else 0.5, out)   # inside the partial cell
            out = np.where(ts <= 0.0, p0, out)
        return float(out[0]) if np.ndim(t) == 0 else out


def _vec(fn):
    def rate(y):
        y = np.asarray(y, dtype=np.float64)
        return fn(y)
    return rate


@_vec
def gaussian_rates(y):
    from scipy.special import ndtri
    r = ndtri(y)
    return _pdf(r), -r, -r


@_vec
def rayleigh_up_rates(y):
    q = np.maximum(1.0 - y, 1e-300)
    d = 2.0 * (1.0 + np.log(q))
    return -2.0 * q * np.log(q), d, d


@_vec
def rayleigh_down_rates(y):
    d = -2.0 * (np.log(y) + 1.0)
    return -2.0 * y * np.log(y), d, d


@_vec
def exponential_rates(y):
    one = np.ones_like(y)
    return 1.0 - y, -one, -one


def mixture_rates(sc: float, nodes: int = 96):
    """Unit rate of a brightness shift under contrast+brightness smoothing (log c ~ N(0, sc^2)): the score is
    S Z2 with S = exp(sc Z1), and G(p) = E[S phi(q/S)] with E[Phi(q/S)] = p, G'(p) = -q.

    For any threshold q, weak duality gives G(p) <= E[S phi(q/S)] + q (E[Phi(q/S)] - p) (equality at the optimal
    q), so only the quadrature over Z1 ~ N(0,1) matters: Gauss-Hermite rules of `nodes` and 2*`nodes` points,
    the larger value plus 10x their difference (a deterministic error margin; the integrands are analytic).
    Returns (G_upper, -q_hi, -q_lo) with q bracketed by 80 bisection steps."""
    sc = float(sc)
    if sc == 0.0:
        return gaussian_rates

    def rate(y):
        from scipy.special import ndtr
        y = np.asarray(y, dtype=np.float64)
        z, w = _hermite(nodes)
        s = np.exp(sc * z)
        cdf = lambda q: ndtr(q[:, None] / s[None, :]) @ w   # noqa: E731
        lo = np.zeros_like(y)
        hi = np.full_like(y, 64.0 * max(1.0, math.exp(6 * sc)))
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            below = cdf(mid) < y
            lo = np.where(below, mid, lo)
            hi = np.where(below, hi, mid)
        vals = []
        for k in (nodes, 2 * nodes):
            zk, wk = _hermite(k)
            sk = np.exp(sc * zk)
            c = ndtr(hi[:, None] / sk[None, :]) @ wk
            g = (sk[None, :] * _pdf(hi[:, None] / sk[None, :])) @ wk
            vals.append(g + hi * (c - y))
        G = np.maximum(vals[0], vals[1]) + 10.0 * np.abs(vals[0] - vals[1]) + 1e-12
        return G, -hi * (1 + 1e-9) - 1e-12, -lo * (1 - 1e-9) + 1e-12

    return rate


@lru_cache(maxsize=32)
def table(kind: str, param: float = 0.0, cells: int = 2000) -> TimeTable:
    """Cached time tables: kind in gaussian, rayleigh-up, rayleigh-down, exponential, mixture (param = sc)."""
    fns = {"gaussian": gaussian_rates, "rayleigh-up": rayleigh_up_rates, "rayleigh-down": rayleigh_down_rates,
           "exponential": exponential_rates}
    rate = mixture_rates(param) if kind == "mixture" else fns[kind]
    return TimeTable(rate, cells)


def gaussian_drop(p: float, dist: float) -> float:
    """Exact worst case after a Gaussian-coordinate translation of length dist (in sigma units):
    Phi(Phi^-1(p) - dist) (Cohen et al. 2019, Thm 1; Salman et al. 2019, Lemma 1), widened down by 1e-12."""
    from scipy.special import ndtr, ndtri
    if p <= 0.0:
        return 0.0
    return float(ndtr(float(ndtri(p)) - dist)) - SAFETY
