"""Closed-form certificates of single resolvable transforms, from the Neyman-Pearson lemma.

All take p (a lower confidence bound of the smoothed top-class probability at the clean input, in (1/2, 1]) and
return the certified parameter set; the smoothed prediction is then the same for every attack parameter strictly
inside it. Derivations (resolving map -> pushforward of the smoothing distribution -> likelihood ratio ->
worst-case base classifier puts its mass where the ratio is smallest):

* Gaussian translation in a coordinate m (theta = m + sigma Z, gamma_beta: m -> m + m(beta)):
  worst case p(beta) = Phi(Phi^-1(p) - |m(beta)| / sigma) (Cohen, Rosenfeld & Kolter 2019, Thm 1), so
  |m(beta)| < sigma Phi^-1(p). Brightness: m = b; contrast: m = log c (log-normal smoothing); integer translation
  with continuous Gaussian shifts rounded to pixels: m = shift, l2 norm over the two axes.
* Gamma x -> x^g with Rayleigh(sigma) exponents: gamma_g(theta) = g theta maps Rayleigh(sigma) to Rayleigh(g sigma);
  the ratio is monotone in theta, giving p(g) >= 1 - (1-p)^(1/g^2) (g > 1) and p^(1/g^2) (g < 1), so
  sqrt(log2(1/p)) < g < sqrt(log2(1/(1-p))), independent of sigma (a scale family).
* Gaussian blur with kernel variance s, smoothing variance ~ Exponential(mean sigma): gamma_s(theta) = theta + s,
  the shifted density has ratio 0 on [0, s) and e^{s/sigma} beyond, so p(s) >= 1 - (1-p) e^{s/sigma} and
  0 <= s < sigma log(1 / (2 (1-p))) (the same radius as Li et al., "TSS", CCS 2021, for blur).
"""
from __future__ import annotations

import math


def gaussian_radius(p: float, sigma: float = 1.0) -> float:
    """sigma * Phi^-1(p), or 0 when p <= 1/2."""
    from scipy.special import ndtri  # lazy: scipy.special costs ~0.1 s at start-up
    return float(sigma) * float(ndtri(p)) * (1.0 - 1e-12) if p > 0.5 else 0.0  # rounded toward the safe side


def gamma_interval(p: float) -> tuple[float, float]:
    """Open interval of certified gamma exponents under Rayleigh smoothing; (1, 1) when p <= 1/2."""
    if p <= 0.5:
        return 1.0, 1.0
    lo = math.sqrt(math.log2(1.0 / p)) * (1.0 + 1e-12)            # shrunk inward for rounding
    hi = math.sqrt(math.log2(1.0 / (1.0 - p))) * (1.0 - 1e-12) if p < 1.0 else math.inf
    return lo, hi


def blur_radius(p: float, sigma: float) -> float:
    """Largest certified extra blur variance (exclusive) under Exponential(mean sigma) smoothing."""
    if p <= 0.5:
        return 0.0
    if p >= 1.0:
        return math.inf
    return float(sigma) * math.log(1.0 / (2.0 * (1.0 - p))) * (1.0 - 1e-12)  # rounded toward the safe side
