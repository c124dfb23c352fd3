"""`nncert certify`: run a certificate domain over a dataset and report per-sample results.

The domain returns one record per sample (idx, label, predict, correct, time and its certificate fields such as
radius or certified); this module writes them as a TSV, a JSON object with certified accuracy, and a plot.
"""
from __future__ import annotations

import json
import time

from .errors import BadInput


def _options(args) -> dict:
    opts = {k: getattr(args, k) for k in ("eps", "sigma", "transform", "ranges", "n0", "n", "alpha", "batch", "seed",
                                          "device")}
    if opts["n0"] < 1 or opts["n"] < 1:
        raise BadInput("--n0 and --n must be >= 1")
    if not 0 < opts["alpha"] < 1:
        raise BadInput(f"--alpha must be in (0, 1), got {opts['alpha']}")
    if opts["batch"] < 1:
        raise BadInput("--batch must be >= 1")
    opts["progress"] = not args.json
    opts = {k: v for k, v in opts.items() if v is not None}
    return opts


def with_normalisation(net, mean, std):
    """The network x -> net((x - mean) / std): one value, or one per channel (the input's first axis), each std > 0.
    Certificates of the result are in the units of the un-normalised input (e.g. pixels in [0, 1])."""
    import torch
    from .ir import Network, Node
    if mean is None and std is None:
        return net
    C = net.input_shape[0] if net.input_shape else 1
    vals = []
    for name, v, default in (("--mean", mean, 0.0), ("--std", std, 1.0)):
        v = [default] if v is None else list(v)
        if len(v) not in (1, C):
            raise BadInput(f"{name} takes 1 or {C} values (one per input channel), got {len(v)}")
        vals.append(torch.tensor(v, dtype=torch.float64).reshape(-1, *[1] * (len(net.input_shape) - 1)))
    m, sd = vals
    if not bool((sd > 0).all()):
        raise BadInput("--std values must be > 0")
    name = net.input_name + "/normalised"
    norm = Node(name, "affine", [net.input_name], {"scale": 1 / sd, "shift": -m / sd}, {})
    nodes = [norm] + [Node(n.name, n.op, [name if i == net.input_name else i for i in n.inputs], n.params, n.attrs)
                      for n in net.nodes]
    return Network(net.input_name, net.input_shape, nodes, net.output, net.source, None, net.input_dtype)


class Certificates(list):
    """The records of a certification (one dict per sample and noise level), with what `nncert certify --json`
    prints around them: `domain`, `guarantee`, `seconds`, `options`, and `to_json()`."""

    def __init__(self, records, domain, options: dict, seconds: float, levels: list):
        super().__init__(records)
        self.domain, self.guarantee, self.options, self.seconds = domain.name, domain.guarantee, options, seconds
        self.levels = levels

    def to_json(self) -> dict:
        from .report import certified_accuracy, summary
        records = list(self)
        out = {"domain": self.domain, "guarantee": self.guarantee, "samples": records,
               "certified_accuracy": certified_accuracy(records), "summary": summary(records), "seconds": self.seconds}
        if len(self.levels) > 1:
            out["by_sigma"] = [{"sigma": lv[0], "summary": summary([r for r in records if r["sigma"] == lv[0]]),
                                "certified_accuracy": certified_accuracy([r for r in records if r["sigma"] == lv[0]])}
                               for lv in self.levels]
        alpha = self.options.get("alpha", next((r["alpha"] for r in records if "alpha" in r), None))
        if self.guarantee == "probabilistic" and alpha is not None:
            out["statement"] = f"each certificate holds with probability >= 1 - alpha = {1 - alpha}"
        return out


def certify_data(dom, net, x, y, opts: dict, executor: str = "local", address: str | None = None,
                 jobs: int = 1) -> Certificates:
    """Run certificate domain `dom` over samples x (in the network's input shape) with labels y, in this process or
    spread over Ray tasks (executor "ray": engine/cluster.py; the same numbers).
    gaussian-smoothing takes one noise level: several (sigma=[0.12, 0.25, 0.5]) certify the data once per level, as
    Cohen et al.'s tables compare them (the plot overlays their curves)."""
    if executor == "ray":
        from .cluster import certify_ray

        def run(o):
            return certify_ray(dom, net, x, y, o, address, jobs)
    else:
        def run(o):
            return dom.certify(net, x, y, o)
    sigma = opts.get("sigma")
    several = dom.name == "gaussian-smoothing" and isinstance(sigma, (list, tuple)) and len(sigma) > 1
    levels = [[s] for s in sigma] if several else [sigma]
    t0 = time.perf_counter()
    records = [r for lv in levels for r in run({**opts, **({"sigma": lv} if lv else {})})]
    return Certificates(records, dom, opts, time.perf_counter() - t0, levels)


def certify_dataset(args) -> int:
    from .instance import load_model
    from .io.data import load_dataset
    from .registry import get_registry
    from .report import plot_certificates, write_tsv

    dom = get_registry().domain(args.domain)
    if not dom.can_certify():
        raise BadInput(f"domain {args.domain!r} issues no dataset certificates; use `nncert verify` or `bounds`")
    net = with_normalisation(load_model(args.model), getattr(args, "mean", None), getattr(args, "std", None))
    x, y = load_dataset(args.data)
    if args.limit is not None:
        x, y = x[: args.limit], y[: args.limit]
    if tuple(x.shape[1:]) != tuple(net.input_shape):
        if x[0].numel() != net.n_inputs:
            raise BadInput(f"data samples have shape {tuple(x.shape[1:])} but the model takes {net.input_shape}",
                           args.data)
        x = x.reshape(len(x), *net.input_shape)
    opts = _options(args)
    result = certify_data(dom, net, x, y, opts, getattr(args, "executor", "local"), getattr(args, "address", None),
                          getattr(args, "jobs", 1))
    records = list(result)
    if args.out:
        write_tsv(records, args.out)
    if args.plot and plot_certificates(records, args.plot, dom.name) is None:
        raise BadInput("nothing to plot: no certificate was issued", args.plot)
    result = result.to_json()
    if args.json:
        print(json.dumps(result))
    else:
        print(f"domain={dom.name} samples={len(records)} seconds={result['seconds']:.2f}")
        for k, v in result["summary"].items():
            print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")
        for part in result.get("by_sigma") or [result]:
            if "sigma" in part:
                print(f"  sigma={part['sigma']}:")
            for r, acc in part["certified_accuracy"].items():
                print(f"  certified accuracy at radius {r}: {acc:.4f}")
        if "statement" in result:
            print("  " + result["statement"])
    return 0
