"""Reports over certificate records (any certificate domain): certified accuracy, TSV, certified-accuracy plot.

A record is a dict with at least idx, label, predict, correct; radius-type domains add `radius` (l2, same units
as the inputs), others may add `certified` (0/1). Functions here only read the keys they need and skip records
that lack them, so they work for every certificate domain.
"""
from __future__ import annotations

import math
from pathlib import Path

DEFAULT_RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
FIRST_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")


def _is_correct(r: dict) -> bool:
    if "correct" in r:
        return bool(int(r["correct"]))
    return "label" in r and "predict" in r and int(r["predict"]) == int(r["label"]) and int(r["predict"]) != -1


def certified_accuracy(records, radii=DEFAULT_RADII) -> dict:
    """{radius: fraction of records that are correct with certified radius > radius} for each given radius
    (strict: a certified radius R guarantees the open ball, and radius 0 certifies nothing).

    Uses only records with a `radius` key (the denominator counts those); {} when none has one. An abstention
    (predict -1) is never correct, so it counts as not certified at every radius, radius 0 included.
    """
    rs = [r for r in records if r.get("radius") is not None]
    if not rs:
        return {}
    out = {}
    for rad in radii:
        ok = sum(1 for r in rs if _is_correct(r) and int(r.get("predict", 0)) != -1 and float(r["radius"]) > rad)
        out[float(rad)] = ok / len(rs)
    return out


def summary(records) -> dict:
    """Generic counts for any certificate domain: n, accuracy (correct), abstain, and certified (correct and
    certified; records with `certified` use it, records with `radius` count radius > 0)."""
    records = list(records)
    n = len(records)
    if n == 0:
        return {"n": 0}
    out = {"n": n, "accuracy": sum(_is_correct(r) for r in records) / n,
           "abstain": sum(1 for r in records if int(r.get("predict", 0)) == -1) / n}
    cert = [r for r in records if "certified" in r or r.get("radius") is not None]
    if cert:
        def ok(r):
            if "certified" in r:
                return bool(int(r["certified"]))
            return float(r["radius"]) > 0
        out["certified"] = sum(1 for r in cert if _is_correct(r) and ok(r)) / len(cert)
    times = [float(r["time"]) for r in records if r.get("time") is not None]
    if times:
        out["mean_time"] = sum(times) / len(times)
    return out


def _fmt(key, v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, float):
        if key == "time":
            return f"{v:.4f}"
        return repr(v)  # shortest round-trip form: a radius is never rounded up
    return str(v).replace("\t", " ").replace("\n", " ")


def columns(records) -> list[str]:
    """idx label predict radius correct time (those present in any record, in that order), then the other keys
    in first-seen order."""
    seen: list[str] = []
    for r in records:
        for k in r:
            if k not in seen:
                seen.append(k)
    return [c for c in FIRST_COLUMNS if c in seen] + [k for k in seen if k not in FIRST_COLUMNS]


def write_tsv(records, path) -> Path:
    """Tab-separated file with a header line; a record lacking a column leaves it empty."""
    records = list(records)
    cols = columns(records)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fh.write("\t".join(cols) + "\n")
        for r in records:
            fh.write("\t".join(_fmt(c, r.get(c)) for c in cols) + "\n")
    return path


def _curve(records):
    rs = [r for r in records if r.get("radius") is not None]
    if not rs:
        return None
    good = sorted(float(r["radius"]) for r in rs if _is_correct(r) and int(r.get("predict", 0)) != -1)
    n = len(rs)
    # step function: accuracy(t) = #{radius > t} / n, drops just after each certified radius
    xs, ys = [0.0], [len(good) / n]
    for i, rad in enumerate(good):
        xs += [rad, rad]
        ys += [(len(good) - i) / n, (len(good) - i - 1) / n]
    top = max(good[-1] if good else 0.0, 1e-9)
    xs.append(top * 1.05 if math.isfinite(top) else 1.0)
    ys.append(0.0)
    return xs, ys


def plot_curve(records, path, title: str | None = None, note: str | None = None):
    """PNG of certified accuracy vs radius (l2 unless the records name their `norm`). `records` is a list of
    records or {label: records} for several curves; `note` is printed in the plot's corner. Returns the path, or
    None (and writes nothing) when no record has a radius."""
    groups = records if isinstance(records, dict) else {None: records}
    curves = {k: _curve(list(v)) for k, v in groups.items()}
    curves = {k: c for k, c in curves.items() if c is not None}
    if not curves:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, (xs, ys) in curves.items():
        ax.plot(xs, ys, label=label)
    norms = {r.get("norm", "l2") for v in groups.values() for r in v}
    ax.set_xlabel(f"{'/'.join(sorted(norms))} radius")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0, 1)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    if note:
        ax.text(0.98, 0.97, note, transform=ax.transAxes, ha="right", va="top", fontsize=7,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
    if any(k is not None for k in curves):
        ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def _save(fig, path) -> Path:
    import matplotlib.pyplot as plt
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


NOTE_KEYS = ("transform", "ranges", "sigma", "eps", "n0", "n", "alpha", "method")


def _note(records, skip=()) -> str:
    """What the certificates depend on, from the records: `key=value` for each of NOTE_KEYS they carry (values
    that differ between records are listed)."""
    parts = []
    for k in NOTE_KEYS:
        if k in skip:
            continue
        vals = []
        for r in records:
            v = r.get(k)
            if v is not None and v not in vals:
                vals.append(v)
        if vals:
            text = "/".join(str(v) for v in vals)
            parts.append(f"{k}={text}")
    return "\n".join(parts)


def plot_certificates(records, path, domain: str) -> Path:
    """The PNG of `certify --plot`, titled with the domain and the sample count and annotated with what the
    certificates depend on (_note): certified accuracy vs radius for records with a radius (one curve per noise
    level when they differ); vs radius in noise units for semantic certificates that give one; otherwise bars of
    the smoothed accuracy, the certified accuracy and the abstentions."""
    records = list(records)
    title = f"{domain}: {len({r.get('idx', i) for i, r in enumerate(records)})} samples"
    key = lambda r: str(r.get("sigma"))   # noqa: E731
    if any(r.get("radius") is not None for r in records):
        groups: dict = {}
        for r in records:
            groups.setdefault(key(r), []).append(r)
        if len(groups) > 1:
            return plot_curve({f"sigma={k}": v for k, v in groups.items()}, path, title, _note(records, ("sigma",)))
        return plot_curve(records, path, title, _note(records))
    if any(r.get("radius_sigma_units") is not None for r in records):
        units = [{**r, "radius": r.get("radius_sigma_units") or 0.0, "norm": "parameter (sigma units)"}
                 for r in records]
        return plot_curve(units, path, title, _note(records))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    s = summary(records)
    names = ["accuracy", "certified", "abstain"]
    vals = [s.get(k, 0.0) for k in names]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bars = ax.bar(["smoothed\naccuracy", "certified\naccuracy", "abstained"], vals,
                  color=["tab:blue", "tab:green", "tab:gray"])
    for b, v in zip(bars, vals):
        ax.text(b.get_x() + b.get_width() / 2, v + 0.02, f"{v:.3f}", ha="center", fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("fraction of samples")
    ax.set_title(title, fontsize=10)
    ax.text(0.98, 0.97, _note(records), transform=ax.transAxes, ha="right", va="top", fontsize=7,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
    return _save(fig, path)
