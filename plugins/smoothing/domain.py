"""Gaussian randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019): PREDICT and CERTIFY.

The smoothed classifier is g(x) = argmax_c P(f(x + eta) = c), eta ~ N(0, sigma^2 I), with the noise added in the
model's input space (before any normalisation layer the model contains). CERTIFY draws n0 selection samples to
guess the top class c_A, then n fresh estimation samples (the same per-sample generator continues, so no draw is
reused); p_A_lower is the one-sided Clopper-Pearson lower bound of P(f(x + eta) = c_A) at level alpha, and the
result is c_A with l2 radius sigma * Phi^{-1}(p_A_lower), or abstain (-1, radius 0) when p_A_lower <= 1/2.
Guarantee (Cohen et al., Thm 1 and Prop. 2): with probability >= 1 - alpha over the noise draws, a non-abstaining
CERTIFY answer equals g(x') for every x' with ||x' - x||_2 < radius. PREDICT (two-sided binomial test on the top
two counts) returns a class different from g(x) with probability <= alpha.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from nncert.engine.domain import Domain
from nncert.engine.errors import BadInput

from .model import as_classifier, check_inputs, num_classes, reshape_inputs, resolve_device
from .sampling import count_classes, gaussian_noise, progress, sample_generator
from .stats import clopper_pearson_lower, predict_test, radius_from_lower

DEFAULTS = {"n0": 100, "n": 100_000, "alpha": 0.001, "batch": 1000, "seed": 0, "device": "cpu", "progress": False}


def guarantee_text(alpha: float) -> str:
    return f"holds with probability >= 1 - alpha = {1.0 - alpha:.6g} over the noise draws (alpha={alpha:g})"


def _positive_int(opts: dict, key: str) -> int:
    v = opts[key]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer, float)) or v != int(v) or int(v) < 1:
        raise BadInput(f"option {key!r} must be a positive integer, got {v!r}")
    return int(v)


def parse_options(options: dict | None, need_sigma: bool = True) -> dict:
    """Options with defaults filled in and checked (BadInput naming the bad key)."""
    opts = dict(DEFAULTS)
    opts.update({k: v for k, v in (options or {}).items() if v is not None})
    if need_sigma or "sigma" in opts:
        if "sigma" not in opts:
            raise BadInput("option 'sigma' (noise standard deviation, > 0) is required")
        sigma = opts["sigma"]
        if isinstance(sigma, (list, tuple)) or (isinstance(sigma, torch.Tensor) and sigma.dim() > 0):
            if len(sigma) != 1:
                raise BadInput(f"option 'sigma': gaussian-smoothing takes one noise level, got {list(sigma)!r}")
            sigma = sigma[0]
        try:
            sigma = float(sigma)
        except (TypeError, ValueError):
            raise BadInput(f"option 'sigma' must be a number, got {opts['sigma']!r}") from None
        if not (math.isfinite(sigma) and sigma > 0):
            raise BadInput(f"option 'sigma' must be finite and > 0, got {opts['sigma']!r}")
        opts["sigma"] = sigma
    for key in ("n0", "n", "batch"):
        opts[key] = _positive_int(opts, key)
    try:
        alpha = float(opts["alpha"])
    except (TypeError, ValueError):
        raise BadInput(f"option 'alpha' must be a number, got {opts['alpha']!r}") from None
    if not (0.0 < alpha < 1.0):
        raise BadInput(f"option 'alpha' must lie in (0, 1), got {opts['alpha']!r}")
    opts["alpha"] = alpha
    try:
        opts["seed"] = int(opts["seed"])
    except (TypeError, ValueError):
        raise BadInput(f"option 'seed' must be an integer, got {opts['seed']!r}") from None
    opts["device"] = resolve_device(opts["device"])
    return opts


def _prepare(model, x, opts):
    check_inputs(model, x)
    x = reshape_inputs(model, x)
    dev = opts["device"]
    f = as_classifier(model, dev)
    x = x.to(device=dev, dtype=torch.float32)
    k = num_classes(f, x[0]) if len(x) else 0
    return f, x, k


def _indices(opts, n_samples):
    idx = opts.get("indices")
    if idx is None:
        return list(range(n_samples))
    idx = [int(i) for i in idx]
    if len(idx) != n_samples:
        raise BadInput(f"option 'indices' has {len(idx)} entries for {n_samples} inputs")
    return idx


def certify_one(f, x: torch.Tensor, num_classes_: int, idx: int, opts: dict) -> dict:
    """CERTIFY for one input x [*input_shape] (already on the device): predict, radius, nA, pA_lower, time."""
    sigma, alpha = opts["sigma"], opts["alpha"]
    noise = gaussian_noise(sigma)
    t0 = time.perf_counter()
    g = sample_generator(opts["seed"], idx, x.device)
    sel = count_classes(f, x, noise, opts["n0"], opts["batch"], num_classes_, g)
    c_a = int(np.argmax(sel))
    est = count_classes(f, x, noise, opts["n"], opts["batch"], num_classes_, g)  # fresh draws: g continues
    n_a = int(est[c_a])
    p_lower = clopper_pearson_lower(n_a, opts["n"], alpha)
    if p_lower <= 0.5:
        predict, radius = -1, 0.0
    else:
        predict, radius = c_a, radius_from_lower(p_lower, sigma)
    return {"predict": predict, "radius": radius, "count": n_a, "pA_lower": p_lower,
            "time": time.perf_counter() - t0}


class GaussianSmoothing(Domain):
    """Certified l2 radii of the Gaussian-smoothed classifier (probabilistic guarantee, level alpha)."""

    name = "gaussian-smoothing"
    guarantee = "probabilistic"
    forward_only = True
    input_sets = ("l2",)
    description = ("Gaussian randomized smoothing (Cohen et al. 2019): certified l2 radius "
                   "sigma*Phi^-1(pA_lower); holds with probability >= 1 - alpha")


    def certify(self, model, x: torch.Tensor, y: torch.Tensor, options: dict) -> list[dict]:
        """CERTIFY every input. options: sigma (required), n0=100, n=100000, alpha=0.001, batch=1000, seed=0,
        device="cpu", progress=False, indices=None (dataset indices for records and seeding; default 0..N-1).

        Returns per sample {idx, label, predict (-1 abstain), radius, correct (0/1), time (s), count, pA_lower,
        sigma, n0, n, alpha, guarantee}; the certificate holds with probability >= 1 - alpha per sample.
        """
        opts = parse_options(options)
        y = torch.as_tensor(y).reshape(-1)
        if len(y) != len(x):
            raise BadInput(f"{len(x)} inputs but {len(y)} labels")
        f, xs, k = _prepare(model, x, opts)
        idxs = _indices(opts, len(xs))
        text = guarantee_text(opts["alpha"])
        out = []
        for i in progress(range(len(xs)), opts["progress"], "certify"):
            r = certify_one(f, xs[i], k, idxs[i], opts)
            label = int(y[i])
            out.append({"idx": idxs[i], "label": label, "predict": r["predict"], "radius": r["radius"],
                        "correct": int(r["predict"] == label), "time": r["time"], "count": r["count"],
                        "pA_lower": r["pA_lower"], "sigma": opts["sigma"], "n0": opts["n0"], "n": opts["n"],
                        "alpha": opts["alpha"], "guarantee": text})
        return out

    def predict(self, model, x: torch.Tensor, options: dict, y: torch.Tensor | None = None) -> list[dict]:
        """PREDICT every input with n noisy samples (options as in certify; n0 unused).

        Returns per sample {idx, predict (-1 abstain), time, sigma, n, alpha, guarantee} plus label and correct
        when y is given. A non-abstaining answer differs from g(x) with probability <= alpha.
        """
        opts = parse_options(options)
        f, xs, k = _prepare(model, x, opts)
        idxs = _indices(opts, len(xs))
        if y is not None:
            y = torch.as_tensor(y).reshape(-1)
            if len(y) != len(xs):
                raise BadInput(f"{len(xs)} inputs but {len(y)} labels")
        noise = gaussian_noise(opts["sigma"])
        text = guarantee_text(opts["alpha"])
        out = []
        for i in progress(range(len(xs)), opts["progress"], "predict"):
            t0 = time.perf_counter()
            g = sample_generator(opts["seed"], idxs[i], xs.device)
            counts = count_classes(f, xs[i], noise, opts["n"], opts["batch"], k, g)
            rec = {"idx": idxs[i], "predict": predict_test(counts, opts["alpha"]),
                   "time": time.perf_counter() - t0}
            if y is not None:
                rec = {"idx": idxs[i], "label": int(y[i]), "predict": rec["predict"],
                       "correct": int(rec["predict"] == int(y[i])), "time": rec["time"]}
            rec.update({"sigma": opts["sigma"], "n": opts["n"], "alpha": opts["alpha"], "guarantee": text})
            out.append(rec)
        return out
