"""Per-sample certificate records -> certified accuracy, TSV and plot.

A record holds at least idx, label, predict (-1 = abstain), correct (0/1) and time (seconds), and either
`radius` (certified l2 radius; 0 or less means none) or `certified` (bool: the prediction provably holds on the
whole requested set), or both.
"""
from __future__ import annotations

import csv

RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.58, 2.0)
COLUMNS = ("idx", "label", "predict", "radius", "certified", "correct", "time")


def certified_accuracy(records: list[dict], radii=RADII) -> dict[str, float]:
    """Fraction of samples that are correct and certified: at each radius when records carry `radius`,
    else under the key "certified"."""
    n = max(len(records), 1)
    if records and "radius" in records[0]:
        return {str(r): sum(1 for s in records if s["correct"] and s["predict"] != -1 and s["radius"] >= r) / n
                for r in radii}
    return {"certified": sum(1 for s in records if s["correct"] and s.get("certified")) / n}


def write_tsv(records: list[dict], path) -> None:
    """Tab-separated, header line; the known columns first (those present), then any extra keys."""
    keys = [c for c in COLUMNS if records and c in records[0]]
    keys += [k for k in (records[0] if records else {}) if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(keys)
        for r in records:
            w.writerow([(f"{r[k]:.6g}" if isinstance(r.get(k), float) else r.get(k, "")) for k in keys])


def plot_curve(records: list[dict], path, title: str | None = None) -> None:
    """PNG of certified accuracy vs radius (records with `radius`); a bar of the certified fraction otherwise."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    if records and "radius" in records[0]:
        top = max([s["radius"] for s in records if s["predict"] != -1] + [0.0])
        grid = [top * i / 200 for i in range(201)] if top > 0 else [0.0]
        acc = certified_accuracy(records, grid)
        ax.plot(grid, list(acc.values()))
        ax.set_xlabel("radius")
    else:
        ax.bar(["certified"], list(certified_accuracy(records).values()))
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0, 1)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
