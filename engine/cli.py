"""The `nncert` command line.

Exit codes: 0 a verdict, bounds or certificates were produced; 2 bad input or usage (one line on stderr, no
traceback, nothing on stdout); 3 internal error.
"""
from __future__ import annotations

import argparse
import enum
import json
import os
import sys
import time

_STARTED = time.perf_counter()   # budgets count from process start (as VNN-COMP measures)

from .errors import BadInput, NncertError


class Exit(enum.IntEnum):
    OK = 0
    BAD_INPUT = 2
    INTERNAL = 3


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        raise BadInput(f"usage: {message} (see `{self.prog} --help`)")


def _print_json(obj) -> None:
    print(json.dumps(obj))


# -- commands -----------------------------------------------------------------------------------------------------
def cmd_info(args) -> int:
    from .kernels import info
    d = info()
    if args.json:
        _print_json(d)
    else:
        for k, v in d.items():
            print(f"{k}: {v}")
    return Exit.OK


def cmd_domains(args) -> int:
    from .registry import get_registry
    reg = get_registry()
    rows = reg.describe()
    if args.json:
        _print_json({"domains": rows, "transforms": {k: reg.transform_plugin[k] for k in sorted(reg.transforms)}})
        return Exit.OK
    for r in rows:
        kind = "bounds" if r["bounds"] else "certify"
        print(f"{r['name']:<20} plugin={r['plugin']:<10} {r['guarantee']:<13} {kind:<8} "
              f"inputs={','.join(r['input_sets'])}  ops={','.join(r['ops']) or '-'}")
    if reg.transforms:
        print("transforms: " + ", ".join(f"{k} ({reg.transform_plugin[k]})" for k in sorted(reg.transforms)))
    return Exit.OK


def cmd_verify(args) -> int:
    from .instance import verify_bounded
    if args.verbose:   # engine/progress.py, in this process and its worker
        os.environ.update(NNCERT_VERBOSE="1", NNCERT_T0=repr(_STARTED))
    _executor(args)
    if args.executor == "ray":
        from .cluster import verify_shared
        res = verify_shared(args.model, args.spec, args.domain, args.timeout, _STARTED, args.address, args.jobs)
    else:
        res = verify_bounded(args.model, args.spec, domain=args.domain, timeout=args.timeout, started=_STARTED)
    if args.json:
        _print_json(res)
    else:
        print(res["verdict"])
        if res["counterexample"] is not None:
            from .io.vnnlib import format_result_counterexample
            print(format_result_counterexample(res["counterexample"], args.spec))
        print(f"domain={res['domain']} seconds={res['seconds']:.4f}")
    return Exit.OK


def _memory(s: str) -> str:
    """--memory: validated, then handed to every stage (and worker) as NNCERT_MEMORY."""
    from .memory import parse_size
    try:
        parse_size(s, "--memory")
    except BadInput as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    os.environ["NNCERT_MEMORY"] = s
    return s


def cmd_bounds(args) -> int:
    from .instance import load_instance
    from .verify import output_bounds
    net, spec = load_instance(args.model, args.spec)
    out = output_bounds(net, spec, args.domain)
    if args.json:
        _print_json(out)
    else:
        for i, r in enumerate(out["regions"]):
            print(f"region {i}:")
            for j, (lo, hi) in enumerate(zip(r["lower"], r["upper"])):
                print(f"  Y_{j}: [{lo:.6g}, {hi:.6g}]")
        print(f"domain={args.domain} seconds={out['seconds']:.6f}")
    return Exit.OK


def cmd_certify(args) -> int:
    from .certify import certify_dataset
    _executor(args)
    return certify_dataset(args)


def cmd_lipschitz(args) -> int:
    from .instance import load_model
    from .registry import get_registry
    net = load_model(args.model)
    dom = get_registry().domain("liplt")
    out = dom.lipschitz(net, method=args.method, pairwise=args.pairwise)
    if args.json:
        _print_json(out)
    else:
        print(f"method={out['method']} global={out['global']:.6g} seconds={out['seconds']:.4f}")
        if out.get("pairwise") is not None:
            for row in out["pairwise"]:
                print("  " + " ".join(f"{v:9.4g}" for v in row))
    return Exit.OK


def _executor_options(s, executor_help: str = "local worker processes (default), or Ray tasks",
                      jobs: bool = True) -> None:
    """--executor and --address (and --jobs, unless the command has its own) of verify, certify and bench."""
    if jobs:
        s.add_argument("--jobs", type=int, default=1, help="with --executor ray and no --address: CPUs of the local "
                                                           "Ray runtime")
    s.add_argument("--executor", choices=("local", "ray"), default="local",
                   help=executor_help + " (pip install 'nncert[ray]')")
    s.add_argument("--address", help="with --executor ray: the Ray cluster to join (e.g. auto or ray://HOST:10001); "
                                     "default: start a local Ray runtime of --jobs CPUs")


def _executor(args) -> None:
    if args.jobs < 1:
        raise BadInput("--jobs must be >= 1")
    if args.address and args.executor != "ray":
        raise BadInput("--address needs --executor ray")


def cmd_bench(args) -> int:
    from .bench import bench
    _executor(args)
    return bench(args)


def _nonneg(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {s}")
    return v


def _numbers(s: str) -> list[float]:
    try:
        return [float(v) for v in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {s!r}") from None


def _floats(s: str) -> list[float]:
    vals = _numbers(s)
    if any(not v > 0 for v in vals):
        raise argparse.ArgumentTypeError(f"sigmas must be > 0, got {s}")
    return vals


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    p = _Parser(prog="nncert", description="Certify the robustness of neural networks.")
    p.add_argument("--version", action="version", version=f"nncert {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("info", help="what was built and which kernels run")
    s.add_argument("--json", action="store_true", help="one JSON object on stdout")
    s.set_defaults(fn=cmd_info)

    s = sub.add_parser("domains", help="registered domains and the plugins that provide them")
    s.add_argument("--json", action="store_true", help="one JSON object on stdout")
    s.set_defaults(fn=cmd_domains)

    s = sub.add_parser("verify", help="decide an ONNX network against a VNN-LIB property: sat / unsat / unknown")
    s.add_argument("model")
    s.add_argument("spec")
    s.add_argument("--domain", default="auto", help="a bound domain, or auto (cheap domains first)")
    s.add_argument("--timeout", type=_nonneg, default=None,
                   help="seconds from process start; the verdict (timeout when nothing was decided) comes within "
                        "timeout + 1 s. Without it bounding runs to the end and complete search stops after 60 s")
    s.add_argument("--memory", type=_memory, metavar="SIZE",
                   help="resident memory the work may use, e.g. 4G (default: 80%% of what is available); past it "
                        "the answer is unknown")
    s.add_argument("--json", action="store_true", help="one JSON object on stdout")
    s.add_argument("-v", "--verbose", action="store_true",
                   help="stage progress on stderr (stage, open subdomains, best bound, elapsed seconds)")
    _executor_options(s, "local worker process (default), or share one instance's search over Ray tasks: its input "
                         "box split into pieces, unsat only when every piece is")
    s.set_defaults(fn=cmd_verify)

    s = sub.add_parser("bounds", help="sound bounds of the network outputs over each input region of a spec")
    s.add_argument("model")
    s.add_argument("spec")
    s.add_argument("--domain", default="ibp", help="a bound domain (default: ibp; see `nncert domains`)")
    s.add_argument("--json", action="store_true", help="one JSON object on stdout")
    s.set_defaults(fn=cmd_bounds)

    s = sub.add_parser("certify", help="per-sample certificates on a dataset (liplt, gaussian/semantic smoothing)")
    s.add_argument("model")
    s.add_argument("--data", required=True, help=".npz with x, y; or MNIST idx files / their folder")
    s.add_argument("--domain", required=True, help="liplt, gaussian-smoothing or semantic-smoothing")
    s.add_argument("--eps", type=_nonneg, help="radius to certify (liplt: l2)")
    s.add_argument("--sigma", type=_floats,
                   help="noise level(s): semantic-smoothing one per transform parameter; gaussian-smoothing one, or "
                        "several (0.12,0.25,0.5) to certify once per level and overlay the curves")
    s.add_argument("--transform", help="semantic transform name (semantic-smoothing)")
    s.add_argument("--range", nargs=2, type=float, action="append", metavar=("LO", "HI"), dest="ranges",
                   help="parameter range, once per transform parameter in its order")
    s.add_argument("--n0", type=int, default=100, help="smoothing: noise samples to select the top class (default 100)")
    s.add_argument("--n", type=int, default=100000,
                   help="smoothing: noise samples to estimate its probability (default 100000)")
    s.add_argument("--alpha", type=float, default=0.001,
                   help="smoothing: failure probability of each certificate (default 0.001)")
    s.add_argument("--batch", type=int, default=1000, help="noise samples per forward pass (default 1000)")
    s.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same numbers")
    s.add_argument("--limit", type=int, default=None, help="certify only the first N samples")
    s.add_argument("--mean", type=_numbers, metavar="M[,M...]",
                   help="input normalisation (x - mean) / std the model expects, one value or one per channel; "
                        "certificates stay in the units of the data (e.g. pixels in [0, 1])")
    s.add_argument("--std", type=_numbers, metavar="S[,S...]", help="see --mean")
    s.add_argument("--device", default="cpu", help="torch device for the forward passes, e.g. cuda (default cpu)")
    _executor_options(s)
    s.add_argument("--out", help="per-sample TSV file")
    s.add_argument("--plot", help="PNG of certified accuracy vs radius")
    s.add_argument("--json", action="store_true", help="one JSON object on stdout")
    s.set_defaults(fn=cmd_certify)

    s = sub.add_parser("bench", help="verify every instance of an instances.csv (onnx,vnnlib,timeout)")
    s.add_argument("instances")
    s.add_argument("--root", help="folder the CSV's paths are relative to (default: the CSV's folder)")
    s.add_argument("--out", default="results.jsonl", help="JSON lines, appended as instances finish")
    s.add_argument("--resume", action="store_true", help="skip instances already in --out")
    s.add_argument("--jobs", type=int, default=1, help="instances run in parallel, one worker process each")
    s.add_argument("--memory", type=_memory, metavar="SIZE",
                   help="resident memory for all workers together, e.g. 8G (default: 80%% of what is available)")
    _executor_options(s, jobs=False)
    s.add_argument("--truth", help="truth.csv (default: the one beside the CSV, if any)")
    s.add_argument("--domain", default="auto", help="a bound domain, or auto (cheap domains first)")
    s.add_argument("--max-timeout", type=float, metavar="S",
                   help="cap every instance's timeout at S seconds (the CSV's timeout where lower)")
    s.add_argument("--json", action="store_true", help="summary as one JSON object on stdout, no progress bar")
    s.set_defaults(fn=cmd_bench)

    s = sub.add_parser("lipschitz", help="guaranteed Lipschitz upper bounds (l2) of an ONNX network")
    s.add_argument("model")
    s.add_argument("--method", choices=("naive", "liplt"), default="liplt",
                   help="liplt: loop transformation (tighter, default); naive: product of layer norms")
    s.add_argument("--pairwise", action="store_true", help="also the bounds L_ij of every logit difference")
    s.add_argument("--json", action="store_true", help="one JSON object on stdout")
    s.set_defaults(fn=cmd_lipschitz)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.fn(args))
    except BadInput as e:
        print(f"nncert: error: {e}".replace("\n", " "), file=sys.stderr)
        return Exit.BAD_INPUT
    except NncertError as e:
        print(f"nncert: error: {e}".replace("\n", " "), file=sys.stderr)
        return Exit.BAD_INPUT
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
        return Exit.OK
    except KeyboardInterrupt:
        print("nncert: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an internal error: one line, and the traceback only on request
        import os
        if os.environ.get("NNCERT_DEBUG"):
            raise
        print(f"nncert: internal error: {type(e).__name__}: {e} (set NNCERT_DEBUG=1 for a traceback)".replace("\n", " "),
              file=sys.stderr)
        return Exit.INTERNAL


if __name__ == "__main__":
    sys.exit(main())
