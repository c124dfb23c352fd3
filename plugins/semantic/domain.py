"""Semantic-transform smoothing (domain "semantic-smoothing"): certify a prediction against a whole set of
resolvable semantic transforms (brightness, contrast, contrast+brightness, gamma, blur, translation, plugins').

CERTIFY per input (Cohen et al. 2019's protocol with the transform's smoothing distribution): n0 selection draws
pick the top class c_A, n fresh draws give k votes for it, p_A_lower = one-sided Clopper-Pearson bound at level
alpha (the only Monte-Carlo estimate; every other step is deterministic). Predict c_A when p_A_lower > 1/2, else
abstain (-1). The certificate (closed form where one exists, else the numerical path certificate of
`rates`/`transforms`) then says whether the smoothed classifier predicts c_A at psi_beta(x) for every beta in the
ranges. Guarantee: with probability >= 1 - alpha over the draws, a `certified` answer is right for the whole set.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from nncert.engine.domain import Domain
from nncert.engine.errors import BadInput
from nncert.plugins.smoothing.model import as_classifier, check_inputs, num_classes, reshape_inputs, resolve_device
from nncert.plugins.smoothing.sampling import count_classes, progress, sample_generator
from nncert.plugins.smoothing.stats import clopper_pearson_lower

from .transforms import Transform

DEFAULTS = {"n0": 100, "n": 10_000, "alpha": 0.001, "batch": 1000, "seed": 0, "device": "cpu", "progress": False,
            "clip": False, "method": "auto", "steps": 2000}
METHODS = ("auto", "closed-form", "numerical")


def get_transform(spec, registry=None) -> Transform:
    """A Transform instance from a name (looked up in `registry`, default the process registry), a Transform
    subclass or an instance."""
    if isinstance(spec, Transform):
        return spec
    if isinstance(spec, type) and issubclass(spec, Transform):
        return spec()
    if not isinstance(spec, str):
        raise BadInput(f"option 'transform' must be a transform name, got {spec!r}")
    if registry is None:
        from nncert.engine.registry import get_registry
        registry = get_registry()
    cls = registry.transform(spec)
    return cls() if isinstance(cls, type) else cls


def parse_options(options: dict | None) -> dict:
    opts = dict(DEFAULTS)
    opts.update({k: v for k, v in (options or {}).items() if v is not None})
    if "transform" not in opts:
        raise BadInput("option 'transform' (a registered transform name) is required")
    t = get_transform(opts["transform"], opts.get("registry"))
    if "ranges" not in opts or "sigma" not in opts:
        raise BadInput(f"options 'ranges' (one (lo, hi) per parameter {t.params}) and 'sigma' are required")
    opts["ranges"], opts["sigma"] = t.check(opts["ranges"], opts["sigma"])
    opts["tf"] = t
    for key in ("n0", "n", "batch", "steps"):
        v = opts[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer, float)) or v != int(v) or int(v) < 1:
            raise BadInput(f"option {key!r} must be a positive integer, got {v!r}")
        opts[key] = int(v)
    try:
        opts["alpha"] = float(opts["alpha"])
    except (TypeError, ValueError):
        raise BadInput(f"option 'alpha' must be a number, got {opts['alpha']!r}") from None
    if not (0.0 < opts["alpha"] < 1.0):
        raise BadInput(f"option 'alpha' must lie in (0, 1), got {opts['alpha']!r}")
    if opts["method"] not in METHODS:
        raise BadInput(f"option 'method' must be one of {METHODS}, got {opts['method']!r}")
    opts["seed"] = int(opts["seed"])
    opts["clip"] = bool(opts["clip"])
    opts["device"] = resolve_device(opts["device"])
    return opts


def certificate(t: Transform, p_lower: float, ranges, sigma, method: str = "auto", steps: int = 2000) -> dict:
    """The certificate for a given p_A lower bound: closed form if asked or available (auto), else numerical."""
    if method in ("auto", "closed-form"):
        c = t.closed_form(p_lower, ranges, sigma)
        if c is not None:
            return c
        if method == "closed-form":
            raise BadInput(f"transform {t.name!r} has no closed-form certificate; use method 'numerical'")
    try:
        return t.numerical(p_lower, ranges, sigma, steps)
    except NotImplementedError as e:
        raise BadInput(str(e)) from None


def noise_fn(t: Transform, sigma, clip: bool):
    """count_classes noise function: phi(x, theta) with theta drawn from the transform's smoothing law."""
    def fn(xb: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        theta = t.sample(len(xb), sigma, generator, xb.device)
        out = t.apply(xb, theta)
        return out.clamp_(0.0, 1.0) if clip else out
    return fn


class SemanticSmoothing(Domain):
    """Transformation-dependent randomized smoothing against resolvable semantic transforms."""

    name = "semantic-smoothing"
    guarantee = "probabilistic"
    forward_only = True
    input_sets = ("transform",)
    description = ("semantic-transform smoothing (General Lipschitz, Korzh et al.): certifies a prediction for "
                   "every transform parameter in given ranges; holds with probability >= 1 - alpha")


    def certify(self, model, x: torch.Tensor, y: torch.Tensor, options: dict) -> list[dict]:
        """options: transform (name), ranges [(lo, hi)] per parameter, sigma [float] per parameter, n0=100,
        n=10000, alpha=0.001, batch=1000, seed=0, device="cpu", progress=False, clip=False,
        method="auto"|"closed-form"|"numerical", steps=2000, indices=None, registry=None.

        Returns per sample {idx, label, predict (-1 abstain), certified, correct, time, pA_lower, count,
        transform, ranges, sigma, method, n0, n, alpha, guarantee} plus the certificate's fields
        (certified_ranges for one-parameter transforms, p_worst_lower or radius_sigma_units otherwise).
        """
        opts = parse_options(options)
        t: Transform = opts["tf"]
        y = torch.as_tensor(y).reshape(-1)
        if len(y) != len(x):
            raise BadInput(f"{len(x)} inputs but {len(y)} labels")
        check_inputs(model, x)
        x = reshape_inputs(model, x)
        if t.unit_inputs and len(x) and (x.min() < 0 or x.max() > 1):
            raise BadInput(f"transform {t.name!r} needs inputs in [0, 1]")
        dev = opts["device"]
        f = as_classifier(model, dev)
        xs = x.to(device=dev, dtype=torch.float32)
        k = num_classes(f, xs[0]) if len(xs) else 0
        idxs = opts.get("indices")
        idxs = list(range(len(xs))) if idxs is None else [int(i) for i in idxs]
        if len(idxs) != len(xs):
            raise BadInput(f"option 'indices' has {len(idxs)} entries for {len(xs)} inputs")
        noise = noise_fn(t, opts["sigma"], opts["clip"])
        a = opts["alpha"]
        text = f"holds with probability >= {1 - a:.6g} over the smoothing draws (alpha={a:g})"
        out = []
        for i in progress(range(len(xs)), opts["progress"]):
            t0 = time.perf_counter()
            g = sample_generator(opts["seed"], idxs[i], dev)
            sel = count_classes(f, xs[i], noise, opts["n0"], opts["batch"], k, g)
            c_a = int(np.argmax(sel))
            est = count_classes(f, xs[i], noise, opts["n"], opts["batch"], k, g)
            n_a = int(est[c_a])
            p = clopper_pearson_lower(n_a, opts["n"], a)
            predict = c_a if p > 0.5 else -1
            cert = certificate(t, p, opts["ranges"], opts["sigma"], opts["method"], opts["steps"])
            label = int(y[i])
            rec = {"idx": idxs[i], "label": label, "predict": predict,
                   "certified": bool(predict != -1 and cert["certified"]), "correct": int(predict == label),
                   "time": time.perf_counter() - t0, "pA_lower": p, "count": n_a, "transform": t.name,
                   "ranges": [list(r) for r in opts["ranges"]], "sigma": list(opts["sigma"]),
                   "n0": opts["n0"], "n": opts["n"], "alpha": a, "clip": opts["clip"], "guarantee": text}
            rec.update({key: v for key, v in cert.items() if key != "certified"})
            out.append(rec)
        return out
