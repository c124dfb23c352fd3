"""Resolvable semantic transforms: parameter space, smoothing distribution, resolving map, certificate.

A transform T is a family x -> T.apply(x, beta). It is *resolvable* (Korzh et al., General Lipschitz, 2023) when
apply(apply(x, beta), theta) = apply(x, resolve(beta, theta)): the smoothed classifier at an attacked input is the
smoothed classifier at the clean input with the smoothing distribution pushed through gamma_beta = resolve(beta, .).
The smoothing of the (possibly attacked) input x is phi(x, theta) = apply(x, theta), theta ~ T.sample(...).

Images are tensors [B, *shape]; spatial transforms act on the last two axes. Parameters are float64 tensors
[B, n_params]. No transform clips to [0, 1]: clipping the *attack* breaks resolvability (clip(x + b) + b' is not
clip(x + b + b')), so the certificates cover the unclipped attacks psi_beta(x) only. The domain's `clip` option
clips the smoothed samples fed to the base model (that keeps resolvability: f o clip is just another classifier).

Subclasses of `Transform` registered through `nncert_register_transforms` are usable by the semantic-smoothing
domain. A one-parameter transform only has to declare its smoothing `family` ("gaussian", "rayleigh",
"exponential") and the smoothing coordinate `coord` (monotone in beta) in which the resolving map is a
translation (gaussian, exponential) or a scaling (rayleigh, coordinate = log scale); it then gets the numerical
path certificate of `rates.TimeTable` (and may override `closed_form`). `product(name, *classes)` composes
commuting transforms (built in: blur+translation, gamma+translation, brightness+translation); the non-commuting
contrast+brightness has its own group-path certificate.
"""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch

from nncert.engine.errors import BadInput

from . import closed_form as cf
from . import rates


def _col(theta: torch.Tensor, j: int, x: torch.Tensor) -> torch.Tensor:
    """Column j of theta shaped to broadcast against x [B, *shape], in x's dtype."""
    return theta[:, j].to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


class Transform:
    """Base class. Class attributes describe the family; methods are batched over the leading axis."""

    name: ClassVar[str] = ""
    params: ClassVar[tuple[str, ...]] = ()            # attack parameter names, in the order of `ranges`
    identity: ClassVar[tuple[float, ...]] = ()        # parameter of the identity map
    limits: ClassVar[tuple[tuple[float, float], ...]] = ()   # admissible attack parameters (closed), per param
    smoothing: ClassVar[str] = ""                     # the smoothing distribution, in words
    family: ClassVar[str | None] = None               # one-parameter transforms: "gaussian"|"rayleigh"|"exponential"
    unit_inputs: ClassVar[bool] = False               # inputs must lie in [0, 1]
    integer: ClassVar[bool] = False                   # attack parameters are integers

    # -- the family ------------------------------------------------------------------------------------------
    def sample(self, n: int, sigma, generator: torch.Generator, device="cpu") -> torch.Tensor:
        raise NotImplementedError

    def apply(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def resolve(self, beta: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def attack(self, x: torch.Tensor, beta) -> torch.Tensor:
        """psi_beta(x) for one parameter vector beta and a batch x."""
        b = torch.as_tensor(beta, dtype=torch.float64, device=x.device).reshape(1, -1).expand(len(x), -1)
        return self.apply(x, b)

    # -- certificates ----------------------------------------------------------------------------------------
    def coord(self, beta: float) -> float:
        """Smoothing coordinate of a one-parameter attack (monotone in beta)."""
        raise NotImplementedError

    def coord_inv(self, m: float) -> float:
        raise NotImplementedError

    def time_scale(self, sigma: list[float]) -> float:
        """Coordinate units per unit of smoothing time (sigma for translations, 1 for a Rayleigh scale)."""
        return float(sigma[0])

    def rate_kind(self, direction: int) -> str:
        """`rates.table` kind of the worst-case rate when the parameter moves in `direction` (+1 / -1)."""
        if self.family == "gaussian":
            return "gaussian"
        if self.family == "rayleigh":
            return "rayleigh-up" if direction > 0 else "rayleigh-down"
        if self.family == "exponential":
            if direction < 0:
                raise BadInput(f"transform {self.name!r}: only increasing parameters are certifiable")
            return "exponential"
        raise NotImplementedError(f"transform {self.name!r} declares no smoothing family")

    def closed_form(self, p: float, ranges, sigma) -> dict | None:
        """Exact certificate where one exists, else None."""
        return None

    def numerical(self, p: float, ranges, sigma, steps: int = 2000) -> dict:
        """Path certificate for one-parameter transforms. The straight path from the identity to each end of the
        range sweeps the whole interval; its smoothing time is the integral of the path speed
        |d coord/d beta| |d beta/dt| / time_scale, i.e. |coord(end) - coord(identity)| / time_scale (coord is
        monotone). Certified when that time is below the worst-case reach of p (`rates.TimeTable`, `steps`
        grid cells); certified_ranges is the reachable interval."""
        if len(self.params) != 1:
            raise NotImplementedError(f"transform {self.name!r} has no numerical certificate")
        (lo, hi), = ranges
        ident = self.identity[0]
        m0, scale = self.coord(ident), self.time_scale(sigma)
        ok, cert = p > 0.5, [ident, ident]
        for end, direction, slot in ((hi, +1, 1), (lo, -1, 0)):
            if direction > 0 and self.family == "exponential" or (end - ident) * direction > 0:
                tau = rates.table(self.rate_kind(direction), 0.0, int(steps)).reach(p)
                cert[slot] = self.coord_inv(m0 + direction * tau * scale)
                if (end - ident) * direction > 0:
                    ok = ok and abs(self.coord(end) - m0) / scale < tau
        return {"certified": bool(ok), "certified_ranges": [cert], "method": "numerical"}

    # -- validation ------------------------------------------------------------------------------------------
    def check(self, ranges, sigma) -> tuple[list[tuple[float, float]], list[float]]:
        d = len(self.params)
        try:
            ranges = [(float(lo), float(hi)) for lo, hi in ranges]
        except (TypeError, ValueError):
            raise BadInput(f"transform {self.name!r}: ranges must be a list of (lo, hi) pairs, got {ranges!r}") from None
        if isinstance(sigma, (int, float)):
            sigma = [sigma]
        try:
            sigma = [float(s) for s in sigma]
        except (TypeError, ValueError):
            raise BadInput(f"transform {self.name!r}: sigma must be a list of numbers, got {sigma!r}") from None
        if len(ranges) != d:
            raise BadInput(f"transform {self.name!r} has {d} parameter(s) {self.params}, got {len(ranges)} range(s)")
        if len(sigma) != d:
            raise BadInput(f"transform {self.name!r} has {d} parameter(s) {self.params}, got {len(sigma)} sigma(s)")
        for s in sigma:
            if not (math.isfinite(s) and s > 0):
                raise BadInput(f"transform {self.name!r}: every sigma must be finite and > 0, got {sigma}")
        for (lo, hi), name, (a, b) in zip(ranges, self.params, self.limits):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise BadInput(f"transform {self.name!r}: range of {name!r} must be finite with lo <= hi, got {(lo, hi)}")
            if lo < a or hi > b:
                raise BadInput(f"transform {self.name!r}: range of {name!r} must lie in [{a}, {b}], got {(lo, hi)}")
        return ranges, sigma


# ---------------------------------------------------------------------------------------------------------------
class Additive(Transform):
    """A family whose parameters compose by addition (gamma_beta(theta) = theta + beta) and whose smoothing
    coordinate is the parameter itself."""

    def resolve(self, beta, theta):
        return theta + beta

    def coord(self, beta):
        return float(beta)

    def coord_inv(self, m):
        return float(m)


class Brightness(Additive):
    """psi_b(x) = x + b; smoothing b ~ N(0, sigma^2); gamma_b(theta) = theta + b."""

    name = "brightness"
    params = ("b",)
    identity = (0.0,)
    limits = ((-math.inf, math.inf),)
    smoothing = "b ~ N(0, sigma^2)"
    family = "gaussian"

    def sample(self, n, sigma, generator, device="cpu"):
        return torch.randn(n, 1, generator=generator, device=device, dtype=torch.float64) * float(sigma[0])

    def apply(self, x, theta):
        return x + _col(theta, 0, x)

    def closed_form(self, p, ranges, sigma):
        (lo, hi), = ranges
        r = cf.gaussian_radius(p, sigma[0])
        return {"certified": bool(p > 0.5 and max(abs(lo), abs(hi)) < r), "certified_ranges": [[-r, r]],
                "method": "closed-form"}


class Contrast(Transform):
    """psi_c(x) = c x (c > 0); smoothing log c ~ N(0, sigma^2); gamma_c(theta) = c theta."""

    name = "contrast"
    params = ("c",)
    identity = (1.0,)
    limits = ((1e-300, math.inf),)
    smoothing = "log c ~ N(0, sigma^2)"
    family = "gaussian"

    def sample(self, n, sigma, generator, device="cpu"):
        return torch.exp(torch.randn(n, 1, generator=generator, device=device, dtype=torch.float64) * float(sigma[0]))

    def apply(self, x, theta):
        return x * _col(theta, 0, x)

    def resolve(self, beta, theta):
        return theta * beta

    def coord(self, beta):
        return math.log(beta)

    def coord_inv(self, m):
        return math.exp(m)

    def closed_form(self, p, ranges, sigma):
        (lo, hi), = ranges
        r = cf.gaussian_radius(p, sigma[0])
        ok = p > 0.5 and max(abs(math.log(lo)), abs(math.log(hi))) < r
        return {"certified": bool(ok), "certified_ranges": [[math.exp(-r), math.exp(r)]], "method": "closed-form"}


class Gamma(Transform):
    """psi_g(x) = x^g for x in [0, 1], g > 0; smoothing exponent ~ Rayleigh(sigma); gamma_g(theta) = g theta."""

    name = "gamma"
    params = ("g",)
    identity = (1.0,)
    limits = ((1e-300, math.inf),)
    smoothing = "exponent ~ Rayleigh(sigma)"
    family = "rayleigh"
    unit_inputs = True

    def sample(self, n, sigma, generator, device="cpu"):
        z = torch.randn(n, 2, generator=generator, device=device, dtype=torch.float64)
        return z.norm(dim=1, keepdim=True) * float(sigma[0])

    def apply(self, x, theta):
        return torch.pow(x, _col(theta, 0, x))

    def resolve(self, beta, theta):
        return theta * beta

    def coord(self, beta):
        return math.log(beta)

    def coord_inv(self, m):
        return math.exp(m)

    def time_scale(self, sigma):
        return 1.0

    def closed_form(self, p, ranges, sigma):
        (lo, hi), = ranges
        a, b = cf.gamma_interval(p)
        return {"certified": bool(p > 0.5 and a < lo and hi < b), "certified_ranges": [[a, b]],
                "method": "closed-form"}


def _blur_multiplier(s: torch.Tensor, h: int, w: int, device) -> torch.Tensor:
    """rfft2 multipliers [B, h, w//2+1] of the discrete Gaussian kernel of variance s per axis (Lindeberg's
    T(n; s) = e^-s I_n(s), cyclic): exp(s (cos w_h - 1) + s (cos w_w - 1)). exp(s..) exp(t..) = exp((s+t)..), so
    blur(blur(x, s), t) = blur(x, s + t) exactly (up to rounding)."""
    wh = torch.cos(2 * math.pi * torch.fft.fftfreq(h, device=device, dtype=torch.float64)) - 1.0
    ww = torch.cos(2 * math.pi * torch.fft.rfftfreq(w, device=device, dtype=torch.float64)) - 1.0
    return torch.exp(s.reshape(-1, 1, 1) * (wh[:, None] + ww[None, :]))


class Blur(Additive):
    """Gaussian blur of kernel variance s >= 0 (pixels^2, discrete Gaussian kernel, cyclic boundary, last two
    axes); smoothing variance ~ Exponential(mean sigma); gamma_s(theta) = theta + s (semigroup)."""

    name = "blur"
    params = ("s",)
    identity = (0.0,)
    limits = ((0.0, math.inf),)
    smoothing = "kernel variance ~ Exponential(mean sigma)"
    family = "exponential"

    def sample(self, n, sigma, generator, device="cpu"):
        e = torch.empty(n, 1, device=device, dtype=torch.float64).exponential_(1.0, generator=generator)
        return e * float(sigma[0])

    def apply(self, x, theta):
        if x.dim() < 3:
            raise BadInput(f"blur needs inputs [B, ..., H, W], got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        mult = _blur_multiplier(theta[:, 0], h, w, x.device)
        mult = mult.reshape(len(theta), *([1] * (x.dim() - 3)), h, w // 2 + 1)
        if x.stride(0) == 0:   # an expanded single input: transform it once
            fx = torch.fft.rfft2(x[:1].to(torch.float64))
        else:
            fx = torch.fft.rfft2(x.to(torch.float64))
        return torch.fft.irfft2(fx * mult, s=(h, w)).to(x.dtype)

    def closed_form(self, p, ranges, sigma):
        (lo, hi), = ranges
        r = cf.blur_radius(p, sigma[0])
        return {"certified": bool(p > 0.5 and hi < r), "certified_ranges": [[0.0, r]], "method": "closed-form"}


class Translation(Transform):
    """Integer cyclic shift (dy, dx) of the last two axes; smoothing (dy, dx) ~ N(0, diag(sigma^2)) rounded to the
    nearest integers. For integer attacks round(theta + beta) = round(theta) + beta, so gamma_beta(theta) =
    theta + beta on the continuous draws (a Gaussian translation). Continuous sub-pixel shifts are not offered:
    interpolation is not resolvable."""

    name = "translation"
    params = ("dy", "dx")
    identity = (0.0, 0.0)
    limits = ((-math.inf, math.inf), (-math.inf, math.inf))
    smoothing = "(dy, dx) ~ N(0, diag(sigma^2)), rounded to integers"
    integer = True

    def sample(self, n, sigma, generator, device="cpu"):
        z = torch.randn(n, 2, generator=generator, device=device, dtype=torch.float64)
        return z * torch.tensor([float(s) for s in sigma], device=device, dtype=torch.float64)

    def apply(self, x, theta):
        if x.dim() < 3:
            raise BadInput(f"translation needs inputs [B, ..., H, W], got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        sh = torch.round(theta).to(torch.int64)
        ih = torch.remainder(torch.arange(h, device=x.device)[None, :] - sh[:, :1], h)   # [B, h]
        iw = torch.remainder(torch.arange(w, device=x.device)[None, :] - sh[:, 1:2], w)  # [B, w]
        mid = [1] * (x.dim() - 3)
        ih = ih.reshape(len(x), *mid, h, 1).expand(x.shape)
        out = torch.gather(x, x.dim() - 2, ih)
        iw = iw.reshape(len(x), *mid, 1, w).expand(x.shape)
        return torch.gather(out, x.dim() - 1, iw)

    def resolve(self, beta, theta):
        return theta + beta

    def check(self, ranges, sigma):
        ranges, sigma = super().check(ranges, sigma)
        out = []
        for lo, hi in ranges:   # the attack set is the integers in [lo, hi]
            lo_i, hi_i = math.ceil(lo - 1e-9), math.floor(hi + 1e-9)
            if lo_i > hi_i:
                raise BadInput(f"translation range {(lo, hi)} contains no integer shift")
            out.append((float(lo_i), float(hi_i)))
        return out, sigma

    def _norm(self, ranges, sigma):
        return math.sqrt(sum((max(abs(lo), abs(hi)) / s) ** 2 for (lo, hi), s in zip(ranges, sigma)))

    def closed_form(self, p, ranges, sigma):
        r = cf.gaussian_radius(p, 1.0)   # in units of sigma: ||beta / sigma||_2 < Phi^-1(p)
        return {"certified": bool(p > 0.5 and self._norm(ranges, sigma) < r), "radius_sigma_units": r,
                "method": "closed-form"}

    def numerical(self, p, ranges, sigma, steps=2000):
        """Every integer shift beta in the box is reached by a straight path of smoothing time ||beta/sigma||_2
        (the sigma-scaled path length) <= the corner norm, along which the Gaussian rate applies."""
        tau = rates.table("gaussian", 0.0, int(steps)).reach(p)
        return {"certified": bool(p > 0.5 and self._norm(ranges, sigma) < tau), "radius_sigma_units": tau,
                "method": "numerical"}


class ContrastBrightness(Transform):
    """psi_(c,b)(x) = c x + b; smoothing phi(x, (c, b)) = c x + b with log c ~ N(0, sc^2), b ~ N(0, sb^2)
    (sigma = [sc, sb]). Resolving map (c, b) -> (c c', b + c b') for the attack (c', b'): not a translation in
    any coordinates (the affine group is not commutative), so only the numerical certificate applies."""

    name = "contrast-brightness"
    params = ("c", "b")
    identity = (1.0, 0.0)
    limits = ((1e-300, math.inf), (-math.inf, math.inf))
    smoothing = "log c ~ N(0, sc^2), b ~ N(0, sb^2)"

    def sample(self, n, sigma, generator, device="cpu"):
        z = torch.randn(n, 2, generator=generator, device=device, dtype=torch.float64)
        return torch.stack([torch.exp(z[:, 0] * float(sigma[0])), z[:, 1] * float(sigma[1])], dim=1)

    def apply(self, x, theta):
        return x * _col(theta, 0, x) + _col(theta, 1, x)

    def resolve(self, beta, theta):
        beta = torch.as_tensor(beta, dtype=theta.dtype, device=theta.device).reshape(-1, 2)
        return torch.stack([theta[:, 0] * beta[:, 0], theta[:, 1] + theta[:, 0] * beta[:, 1]], dim=1)

    def numerical(self, p, ranges, sigma, steps=2000, cells: int = 64) -> dict:
        """Certificate over the whole box [c_lo, c_hi] x [b_lo, b_hi], from paths in the group.

        With a = log c' and the smoothing coordinates (u = log c, b), the attack (a, B) pushes (u, b) to
        (u + a, b + e^u B); its score along a path is (a'/sc) Z1 + ((B' - a' B)/sb) exp(sc Z1) Z2. Two kinds of
        leg have a time-homogeneous score:
          contrast leg  (B' = a' B, i.e. B moves as B e^(a - a0)): a pure Gaussian translation of u with speed
                        |a'|/sc, so Phi^-1 p drops by at most |da| / sc (`rates.gaussian_drop`, exact);
          brightness leg (a fixed): speed |B'|/sb times the unit rate `rates.mixture_rates(sc)`, for every a.
        Order 1: contrast to (a, 0), then brightness to (a, B): p >= Y(Phi(Phi^-1 p - |a|/sc), |B|/sb).
        Order 2: brightness to (0, B e^-a), then contrast: p >= Phi(Phi^-1 Y(p, |B| e^-a / sb) - |a|/sc).
        Y(p0, t) (the worst case after brightness time t) decreases in t and increases in p0, so each bound holds
        on a whole a-cell when evaluated at the cell's largest |a|, |B| and |B| e^-a; the box is certified when,
        in every one of `cells` a-cells, the larger of the two bounds exceeds 1/2. With B = 0 this is the
        contrast closed form; with sc -> 0 and a = 0 the brightness one.
        """
        (clo, chi), (blo, bhi) = ranges
        sc, sb = sigma
        a_lo, a_hi = math.log(clo), math.log(chi)
        amax, bmax = max(abs(a_lo), abs(a_hi)), max(abs(blo), abs(bhi))
        if p <= 0.5:
            return {"certified": False, "p_worst_lower": 0.0, "method": "numerical"}
        tab = rates.table("mixture", float(sc), int(steps)) if bmax > 0 else None

        def bright(p0, t):
            if p0 <= 0.5:
                return np.zeros_like(np.asarray(t, dtype=np.float64))
            return np.where(np.asarray(t) == 0, p0, tab.lower_after(p0, t)) if tab is not None else \
                np.full_like(np.asarray(t, dtype=np.float64), p0)

        order1 = float(bright(rates.gaussian_drop(p, amax / sc), bmax / sb))
        edges = np.linspace(a_lo, a_hi, cells + 1) if a_hi > a_lo else np.array([a_lo, a_hi])
        ys = np.atleast_1d(bright(p, bmax * np.exp(-edges[:-1]) / sb))
        amaxs = np.maximum(np.abs(edges[:-1]), np.abs(edges[1:]))
        worst = math.inf
        for y, a in zip(ys, amaxs):
            order2 = rates.gaussian_drop(float(y), a / sc) if y > 0.5 else 0.0
            worst = min(worst, max(order1, order2))
        return {"certified": bool(worst > 0.5), "p_worst_lower": float(max(worst, 0.0)), "method": "numerical"}


class Product(Transform):
    """Composition of commuting transforms (apply part 1, then part 2, ...), each with its own smoothing law,
    drawn independently. Commuting parts keep resolvability: resolve acts part by part. Use `product(...)`."""

    parts: ClassVar[tuple[type, ...]] = ()

    def __init__(self):
        self._parts = [c() for c in self.parts]
        self._cuts = np.cumsum([0] + [len(c.params) for c in self.parts]).tolist()

    def _slices(self):
        return [slice(a, b) for a, b in zip(self._cuts[:-1], self._cuts[1:])]

    def sample(self, n, sigma, generator, device="cpu"):
        return torch.cat([t.sample(n, list(sigma[sl]), generator, device) for t, sl in zip(self._parts, self._slices())], 1)

    def apply(self, x, theta):
        for t, sl in zip(self._parts, self._slices()):
            x = t.apply(x, theta[:, sl])
        return x

    def resolve(self, beta, theta):
        beta = torch.as_tensor(beta, dtype=theta.dtype, device=theta.device).reshape(-1, theta.shape[1])
        return torch.cat([t.resolve(beta[:, sl], theta[:, sl]) for t, sl in zip(self._parts, self._slices())], 1)

    def check(self, ranges, sigma):
        ranges, sigma = super().check(ranges, sigma)
        out_r, out_s = [], []
        for t, sl in zip(self._parts, self._slices()):
            r, s_ = t.check(ranges[sl], sigma[sl])
            out_r += r
            out_s += s_
        return out_r, out_s

    def numerical(self, p, ranges, sigma, steps=2000):
        """Every beta in the box is reached by legs moving one part at a time. A leg moving only part j changes
        only its independent smoothing coordinates, so its score is part j's and it runs at part j's unit rate
        for that part's smoothing time (the path-speed integral: |coord(end) - coord(identity)| / time_scale for
        one-parameter parts, the sigma-scaled l2 norm for translation). The worst case after a leg increases
        with its start and decreases with its time, so the box is covered by taking, leg after leg, the worst
        direction at the largest time."""
        cur = p
        for t, sl in zip(self._parts, self._slices()):
            rg, sg = ranges[sl], sigma[sl]
            if cur <= 0.5:
                break
            if isinstance(t, Translation):
                cur = rates.table("gaussian", 0.0, int(steps)).lower_after(cur, t._norm(rg, sg))
                continue
            (lo, hi), = rg
            ident, scale = t.identity[0], t.time_scale(sg)
            worst = cur
            for end, direction in ((hi, +1), (lo, -1)):
                if (end - ident) * direction > 0:
                    tab = rates.table(t.rate_kind(direction), 0.0, int(steps))
                    worst = min(worst, tab.lower_after(cur, abs(t.coord(end) - t.coord(ident)) / scale))
            cur = worst
        return {"certified": bool(cur > 0.5), "p_worst_lower": float(cur), "method": "numerical"}


def product(name: str, *classes) -> type:
    """A Product transform class named `name` of the given commuting Transform classes (in application order)."""
    attrs = {"name": name, "parts": tuple(classes), "params": sum((c.params for c in classes), ()),
             "identity": sum((c.identity for c in classes), ()), "limits": sum((c.limits for c in classes), ()),
             "smoothing": "; ".join(c.smoothing for c in classes), "unit_inputs": any(c.unit_inputs for c in classes),
             "integer": any(c.integer for c in classes),
             "__doc__": f"Composition {' then '.join(c.name for c in classes)} (commuting parts)."}
    return type("".join(c.__name__ for c in classes), (Product,), attrs)


BlurTranslation = product("blur+translation", Blur, Translation)
GammaTranslation = product("gamma+translation", Gamma, Translation)
BrightnessTranslation = product("brightness+translation", Brightness, Translation)

BUILTIN = (Brightness, Contrast, ContrastBrightness, Gamma, Blur, Translation, BlurTranslation, GammaTranslation,
           BrightnessTranslation)
