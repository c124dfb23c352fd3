"""Statistics of randomized smoothing: Clopper-Pearson bounds and the abstaining binomial test.

References: Clopper & Pearson (1934) for the exact binomial interval; Cohen, Rosenfeld & Kolter, "Certified
Adversarial Robustness via Randomized Smoothing", ICML 2019, Algorithms PREDICT and CERTIFY.
All computations are in float64 (Python floats / numpy float64).
"""
from __future__ import annotations

import math

import numpy as np

from nncert.engine.errors import BadInput


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not (0.0 < alpha < 1.0) or math.isnan(alpha):
        raise BadInput(f"alpha must lie in (0, 1), got {alpha!r}")
    return alpha


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson lower confidence bound of a binomial proportion at level alpha.

    With k successes out of n i.i.d. Bernoulli(p) trials, P(returned bound <= p) >= 1 - alpha for every p.
    It is the alpha-quantile of Beta(k, n - k + 1) (0 when k = 0), i.e. the lower end of the two-sided
    interval `proportion_confint(k, n, alpha=2*alpha, method="beta")`. The value is then stepped down, ulp by
    ulp, until the Beta CDF at it is <= alpha, so the quantile routine's rounding cannot make it too large.
    """
    alpha = _check_alpha(alpha)
    k, n = int(k), int(n)
    if n <= 0 or k < 0 or k > n:
        raise BadInput(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    if k == 0:
        return 0.0
    a, b = float(k), float(n - k + 1)
    from scipy.stats import beta  # scipy.stats costs ~0.5 s to import: only when certifying
    p = float(beta.ppf(alpha, a, b))
    if not math.isfinite(p):
        return 0.0
    for _ in range(64):  # guard against rounding in the quantile: make sure P(Beta <= p) <= alpha
        if p <= 0.0 or beta.cdf(p, a, b) <= alpha:
            break
        p = float(np.nextafter(p, 0.0)) * (1.0 - 1e-15)
    else:
        return 0.0  # the quantile could not be confirmed: claim nothing
    return max(p, 0.0)


def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson upper confidence bound at level alpha (1 - lower bound of the failures)."""
    return 1.0 - clopper_pearson_lower(int(n) - int(k), n, alpha)


def predict_test(counts, alpha: float) -> int:
    """Cohen et al.'s PREDICT decision: the top class, or -1 (abstain).

    counts: per-class counts from n noisy samples. With nA, nB the two largest counts, returns the class of nA
    when the two-sided binomial test of nA ~ Bin(nA + nB, 1/2) rejects at level alpha, else -1. The returned
    class differs from the smoothed classifier's class with probability at most alpha (Cohen et al., Thm 2).
    """
    alpha = _check_alpha(alpha)
    c = np.asarray(counts, dtype=np.int64).reshape(-1)
    if c.size == 0 or c.sum() <= 0:
        return -1
    order = np.argsort(-c, kind="stable")
    top = int(order[0])
    n_a = int(c[top])
    n_b = int(c[order[1]]) if c.size > 1 else 0
    from scipy.stats import binomtest
    if binomtest(n_a, n_a + n_b, 0.5).pvalue > alpha:
        return -1
    return top


def radius_from_lower(p_lower: float, sigma: float) -> float:
    """Certified l2 radius sigma * Phi^{-1}(p_lower) (Cohen et al., Thm 1); 0.0 when p_lower <= 1/2."""
    if p_lower <= 0.5:
        return 0.0
    from scipy.special import ndtri
    return float(sigma) * float(ndtri(p_lower)) * (1.0 - 1e-12)  # rounded toward the safe side
