"""`nncert bench`: verify every instance of a VNN-COMP-style CSV (onnx,vnnlib,timeout), appending one JSON line
per finished instance, resumable, with an optional comparison against a truth.csv (column `answer`).

Instances run in worker processes (engine/workers.py) under hard limits: a worker still running 0.5 s after its
instance's timeout, or past the memory cap, is killed and the instance recorded as `timeout` / `unknown`; a worker
that dies is replaced and its instance retried once, then recorded as `error`. Each record's `ended` says which
("finished", "deadline", "memory", "died", "raised"). A crash of bench itself loses at most the instances in
flight: each result is written and flushed as soon as it is known, and `--resume` drops a last line cut short.
"""
from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

from .errors import BadInput


def read_instances(csv_path: Path, root: Path | None) -> list[dict]:
    """Rows of onnx,vnnlib,timeout (an optional header line is skipped); paths resolved against root or the CSV's folder."""
    if not csv_path.exists():
        raise BadInput("file not found", str(csv_path))
    base = root or csv_path.parent
    rows = []
    with open(csv_path, newline="") as f:
        for lineno, r in enumerate(csv.reader(f), 1):
            if not r or not "".join(r).strip() or r[0].strip().startswith("#"):
                continue
            if lineno == 1 and r[0].strip().lower() == "onnx":
                continue
            if len(r) < 3:
                raise BadInput("expected onnx,vnnlib,timeout", str(csv_path), lineno)
            try:
                timeout = float(r[2])
            except ValueError:
                raise BadInput(f"timeout {r[2]!r} is not a number", str(csv_path), lineno) from None
            onnx, spec = r[0].strip(), r[1].strip()
            rows.append({"onnx": onnx, "vnnlib": spec, "timeout": timeout,
                         "onnx_path": str(Path(onnx) if Path(onnx).is_absolute() else base / onnx),
                         "vnnlib_path": str(Path(spec) if Path(spec).is_absolute() else base / spec)})
    return rows


def read_truth(path: Path) -> dict[tuple[str, str], str]:
    with open(path, newline="") as f:
        return {(r["onnx"], r["vnnlib"]): r["answer"] for r in csv.DictReader(f)}


_NETS: dict = {}


def run_one(row: dict, domain: str) -> dict:
    """Verify one instance; never raises (a bad instance is recorded as `error` with its message)."""
    from .instance import load_model, verify_instance
    t0 = time.perf_counter()
    out = {"onnx": row["onnx"], "vnnlib": row["vnnlib"], "timeout": row["timeout"]}
    try:
        net = _NETS.get(row["onnx_path"])
        if net is None:
            net = _NETS[row["onnx_path"]] = load_model(row["onnx_path"])
        res = verify_instance(row["onnx_path"], row["vnnlib_path"], domain, row["timeout"], started=t0, network=net)
        out.update(verdict=str(res.verdict), by=res.evidence.get("by"))
        if res.counterexample is not None:
            out["counterexample"] = res.counterexample
    except BadInput as e:
        out.update(verdict="error", error=str(e))
    except Exception as e:  # an internal error on one instance is recorded (never a verdict); the run goes on
        out.update(verdict="error", error=f"internal: {type(e).__name__}: {e}")
    out["seconds"] = time.perf_counter() - t0
    return out


def _drop_partial_line(out: Path) -> None:
    """Cut a last line that a crash left without its newline (its instance runs again)."""
    if not out.exists():
        return
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(out, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _killed_record(row: dict, ended: str, message: str, seconds: float) -> dict:
    verdict = {"deadline": "timeout", "memory": "unknown"}.get(ended, "error")
    return {"onnx": row["onnx"], "vnnlib": row["vnnlib"], "timeout": row["timeout"], "verdict": verdict,
            "by": None, "error" if verdict == "error" else "reason": message, "seconds": seconds}


def _done_keys(out: Path) -> set[tuple[str, str]]:
    keys = set()
    if out.exists():
        for line in out.read_text().splitlines():
            try:
                r = json.loads(line)
                keys.add((r["onnx"], r["vnnlib"]))
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut by a crash: that instance runs again
    return keys


def bench(args) -> int:
    from tqdm import tqdm

    csv_path = Path(args.instances)
    rows = read_instances(csv_path, Path(args.root) if args.root else None)
    truth_path = Path(args.truth) if args.truth else csv_path.parent / "truth.csv"
    truth = read_truth(truth_path) if truth_path.exists() else None
    out = Path(args.out)
    if out.exists() and not args.resume:
        out.unlink()
    _drop_partial_line(out)
    done = _done_keys(out) if args.resume else set()
    todo = [r for r in rows if (r["onnx"], r["vnnlib"]) not in done]
    cap = getattr(args, "max_timeout", None)
    if cap is not None:
        if not cap > 0:
            raise BadInput(f"--max-timeout must be positive, got {cap}")
        todo = [{**r, "timeout": min(r["timeout"], cap)} for r in todo]
    results = []
    if out.exists():
        results = [json.loads(line) for line in out.read_text().splitlines() if line.strip().endswith("}")]
    with open(out, "a") as f, tqdm(total=len(rows), initial=len(rows) - len(todo), file=sys.stderr,
                                   disable=args.json, desc="bench") as bar:
        from .memory import process_cap
        from .workers import Job, run_jobs
        jobs = [Job("nncert.engine.bench:run_one", (row, args.domain), seconds=row["timeout"], key=row) for row in todo]
        if getattr(args, "executor", "local") == "ray":
            from .cluster import run_jobs_ray
            ran = run_jobs_ray(jobs, args.jobs, process_cap() // args.jobs, args.address)
        else:
            ran = run_jobs(jobs, args.jobs, process_cap() // args.jobs)
        t0, tally = time.perf_counter(), {"correct": 0, "wrong": 0}
        for k, (job, ended, value, peak, seconds) in enumerate(ran, 1):
            r = value if ended == "finished" else _killed_record(job.key, ended, str(value), seconds)
            r.update(ended=ended, peak_rss_mb=round(peak / 2 ** 20, 1))
            f.write(json.dumps(r) + "\n")
            f.flush()
            results.append(r)
            bar.update(1)
            bar.set_postfix(_progress(r, truth, tally, k / max(time.perf_counter() - t0, 1e-9) * 60))
    return summarize(results, truth, args.json)


def _progress(r: dict, truth: dict | None, tally: dict, per_minute: float) -> dict:
    """The live line's fields after record r: correct / wrong so far (where truth is known), instances per minute
    (tqdm adds done / total and the ETA)."""
    want = truth.get((r["onnx"], r["vnnlib"])) if truth else None
    if want in ("sat", "unsat") and r["verdict"] in ("sat", "unsat"):
        tally["correct" if r["verdict"] == want else "wrong"] += 1
    fields = dict(tally) if truth else {}
    fields["per_min"] = f"{per_minute:.1f}"
    return fields


def summarize(results: list[dict], truth: dict | None, as_json: bool) -> int:
    counts: dict[str, int] = {}
    for r in results:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    summary = {"instances": len(results), "verdicts": counts,
               "seconds": round(sum(r["seconds"] for r in results), 3)}
    wrong = []
    if truth is not None:
        correct = unsolved = 0
        for r in results:
            t = truth.get((r["onnx"], r["vnnlib"]))
            if r["verdict"] in ("sat", "unsat") and t in ("sat", "unsat"):
                if r["verdict"] == t:
                    correct += 1
                else:
                    wrong.append(r)
            else:
                unsolved += 1
        summary.update(correct=correct, wrong=len(wrong), unsolved=unsolved)
    if as_json:
        print(json.dumps(summary))
    else:
        print(f"{'verdict':<10}{'count':>7}")
        for k in sorted(counts):
            print(f"{k:<10}{counts[k]:>7}")
        print(f"instances {len(results)}, total seconds {summary['seconds']:.1f}")
        if truth is not None:
            print(f"correct {summary['correct']}  wrong {summary['wrong']}  unsolved {summary['unsolved']}")
            for r in wrong:
                print(f"WRONG: {r['onnx']} {r['vnnlib']}: {r['verdict']}")
    return 1 if wrong else 0
