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


def certify_dataset(args) -> int:
    from .instance import load_model
    from .io.data import load_dataset
    from .registry import get_registry
    from .report import certified_accuracy, plot_curve, summary, write_tsv

    dom = get_registry().domain(args.domain)
    if not dom.can_certify():
        raise BadInput(f"domain {args.domain!r} issues no dataset certificates; use `nncert verify` or `bounds`")
    net = load_model(args.model)
    x, y = load_dataset(args.data)
    if args.limit is not None:
        x, y = x[: args.limit], y[: args.limit]
    if tuple(x.shape[1:]) != tuple(net.input_shape):
        if x[0].numel() != net.n_inputs:
            raise BadInput(f"data samples have shape {tuple(x.shape[1:])} but the model takes {net.input_shape}",
                           args.data)
        x = x.reshape(len(x), *net.input_shape)
    opts = _options(args)
    t0 = time.perf_counter()
    records = dom.certify(net, x, y, opts)
    seconds = time.perf_counter() - t0
    if args.out:
        write_tsv(records, args.out)
    if args.plot:
        plot_curve(records, args.plot)
    result = {"domain": dom.name, "guarantee": dom.guarantee, "samples": records,
              "certified_accuracy": certified_accuracy(records), "summary": summary(records), "seconds": seconds}
    if dom.guarantee == "probabilistic":
        result["statement"] = f"each certificate holds with probability >= 1 - alpha = {1 - opts['alpha']}"
    if args.json:
        print(json.dumps(result))
    else:
        print(f"domain={dom.name} samples={len(records)} seconds={seconds:.2f}")
        for k, v in result["summary"].items():
            print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")
        for r, acc in result["certified_accuracy"].items():
            print(f"  certified accuracy at radius {r}: {acc:.4f}")
        if "statement" in result:
            print("  " + result["statement"])
    return 0
