"""Run bench instances and certify samples as Ray tasks: on a Ray cluster (`--address`), or on a local Ray runtime.

`run_jobs_ray` keeps the contract of engine.workers.run_jobs (each job reported exactly once, in completion order,
with how it ended), so `bench` writes, resumes and summarises the same way with either executor:
  - a task holds one CPU; at most as many run as the cluster has CPUs, so a job's clock starts when it is submitted
    (not while it waits in a queue);
  - the deadline is hard: a task still running GRACE seconds past it is cancelled with force (its worker process is
    killed; Ray starts another) and reported "deadline";
  - a worker that dies (killed from outside, out of memory) is retried once by Ray; a second death is reported
    "died" (bench records it as `error`);
  - the memory cap reaches each task as NNCERT_MEMORY, which sizes its passes (engine.memory.budget); Ray's own
    memory monitor is the backstop on each node.
Workers are Ray's long-lived processes: a network loaded by one instance is reused by the next on that worker.

`certify_ray` spreads the samples of a certification over tasks in chunks. Every certificate domain seeds its noise
per dataset index (option `indices`), so the numbers are identical to a local run with the same seed.
"""
from __future__ import annotations

import math
import os
import resource
import sys
import time

from .errors import BadInput
from .workers import GRACE, _resolve

POLL = 0.2          # seconds between deadline checks
CHUNKS_PER_SLOT = 4  # certify: chunks per task slot (small enough to balance, large enough to amortise)
HINT = "Ray is not installed: pip install 'nncert[ray]' (or pip install ray)"


def ray_module():
    try:
        import ray
    except ImportError:
        raise BadInput(HINT) from None
    return ray


def start(address: str | None = None, n: int | None = None):
    """The ray module, connected to the cluster at `address` or to a local runtime of n CPUs it starts (once)."""
    ray = ray_module()
    if not ray.is_initialized():
        env = {"env_vars": {k: v for k, v in os.environ.items() if k.startswith("NNCERT_")}}
        try:
            if address:
                ray.init(address=address, runtime_env=env, log_to_driver=False)
            else:
                ray.init(num_cpus=n, include_dashboard=False, runtime_env=env, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise BadInput(f"cannot start or reach Ray{f' at {address}' if address else ''}: {e}") from None
    return ray


def slots(ray, n: int | None) -> int:
    """How many tasks run at once: the cluster's CPUs (a local runtime has n)."""
    return max(1, int(ray.cluster_resources().get("CPU", n or 1)))


def _run(fn: str, args: tuple, memory_cap: int | None):
    """A Ray task: call fn(*args); (value, peak resident bytes of this worker)."""
    if memory_cap:
        os.environ["NNCERT_MEMORY"] = str(memory_cap)
    value = _resolve(fn)(*args)
    return value, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_jobs_ray(jobs, n: int | None = None, memory_cap: int | None = None, address: str | None = None):
    """Like engine.workers.run_jobs, as Ray tasks: yields (job, ended, value, peak_rss_bytes, seconds)."""
    ray = start(address, n)
    from ray.exceptions import RayTaskError, TaskCancelledError
    task = ray.remote(num_cpus=1, max_retries=1, retry_exceptions=False)(_run)
    pending, running = list(jobs), {}
    width = slots(ray, n)
    try:
        while pending or running:
            while pending and len(running) < width:
                job = pending.pop(0)
                running[task.remote(job.fn, job.args, memory_cap)] = (job, time.perf_counter())
            now = time.perf_counter()
            due = [t0 + job.seconds + GRACE - now for job, t0 in running.values() if job.seconds is not None]
            done, _ = ray.wait(list(running), num_returns=1, timeout=max(0.0, min(due + [POLL])))
            for ref in done:
                job, t0 = running.pop(ref)
                peak = 0
                try:
                    (value, peak), ended = ray.get(ref), "finished"
                except RayTaskError as e:
                    ended, value = "raised", e.cause if e.cause is not None else RuntimeError(str(e))
                except TaskCancelledError:
                    ended, value = "deadline", "killed at the deadline"
                except Exception as e:  # noqa: BLE001 - WorkerCrashedError and kin: the worker died twice
                    ended, value = "died", f"Ray worker died twice: {type(e).__name__}"
                yield job, ended, value, peak, time.perf_counter() - t0
            now = time.perf_counter()
            for ref, (job, t0) in list(running.items()):
                if job.seconds is not None and now > t0 + job.seconds + GRACE:
                    ray.cancel(ref, force=True)
                    del running[ref]
                    yield job, "deadline", "killed at the deadline", 0, now - t0
    finally:
        for ref in running:
            ray.cancel(ref, force=True)


def _certify_chunk(domain: str, net, x, y, opts: dict) -> list[dict]:
    from .registry import get_registry
    return get_registry().domain(domain).certify(net, x, y, opts)


def certify_ray(dom, net, x, y, opts: dict, address: str | None = None, n: int | None = None) -> list[dict]:
    """dom.certify(net, x, y, opts) with the samples spread over Ray tasks; the records in dataset order, equal to a
    local run's (the noise of sample i is seeded by (seed, indices[i]))."""
    ray = start(address, n)
    from tqdm import tqdm
    idx = list(opts.get("indices") or range(len(x)))
    if len(idx) != len(x):
        raise BadInput(f"option 'indices' has {len(idx)} entries for {len(x)} inputs")
    size = max(1, math.ceil(len(x) / (CHUNKS_PER_SLOT * slots(ray, n))))
    task = ray.remote(num_cpus=1, max_retries=1)(_certify_chunk)
    net_ref = ray.put(net)
    local = {k: v for k, v in opts.items() if k != "progress"}
    refs = [task.remote(dom.name, net_ref, x[i:i + size], y[i:i + size], {**local, "indices": idx[i:i + size]})
            for i in range(0, len(x), size)]
    order = {ref: k for k, ref in enumerate(refs)}
    chunks: dict[int, list] = {}
    with tqdm(total=len(x), desc="certify", file=sys.stderr, disable=not opts.get("progress")) as bar:
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            recs = ray.get(done[0])
            chunks[order[done[0]]] = recs
            bar.update(len(recs))
    return [r for k in range(len(refs)) for r in chunks[k]]


PIECES_PER_SLOT = 4   # verify: pieces of each input region per task slot (balance: pieces differ in difficulty)


def _verify_piece(net, spec, domain: str, until: float):
    """verify() of one piece, its budget running to `until` (time.time(), so that a piece that waited in the queue
    still stops with the instance)."""
    from .verify import verify
    return verify(net, spec, domain=domain, timeout=max(0.0, until - time.time())).to_json()


def verify_shared(model, spec, domain: str = "auto", timeout: float | None = None, started: float | None = None,
                  address: str | None = None, n: int | None = None) -> dict:
    """verify_instance's JSON result with the work of one instance shared over Ray tasks.

    What is shared: when the spec's regions have at most BAB_MAX_INPUTS free inputs (where input splitting is the
    complete search), each box region is split into PIECES_PER_SLOT pieces per task slot (engine.search.partition:
    the pieces cover it exactly) and each piece is verified by a task (attack, bounds, branch and bound), the pieces
    of all regions queued together. Soundness: `unsat` only when every piece came back `unsat`; `sat` only with a
    piece's counterexample re-checked here on the real model against the whole spec; anything else (a piece
    unknown, timed out, failed, or cancelled at the deadline) leaves the instance `unknown` / `timeout`. Other
    instances (high-dimensional inputs, where ReLU-split branch and bound decides) run whole, as one task.
    Budget: `timeout` counts from `started`, Ray's start-up included (a few seconds for a local runtime, so a
    budget below that ends in `timeout`, late by the start-up); without a timeout the whole search gets
    DEFAULT_BAB_SECONDS."""
    from .counterexample import recheck
    from .instance import load_instance, work_seconds
    from .search.partition import split_spec
    from .verify import BAB_MAX_INPUTS, DEFAULT_BAB_SECONDS, free_inputs
    t0 = time.perf_counter() if started is None else started
    net, sp = load_instance(model, spec)
    ray = start(address, n)
    width = slots(ray, n)
    pieces = split_spec(sp, PIECES_PER_SLOT * width) if free_inputs(sp) <= BAB_MAX_INPUTS else [sp]
    budget = DEFAULT_BAB_SECONDS if timeout is None else timeout
    end = t0 + work_seconds(budget)
    task = ray.remote(num_cpus=1, max_retries=1)(_verify_piece)
    net_ref = ray.put(net)
    until = time.time() + (end - time.perf_counter())
    refs = [task.remote(net_ref, p, domain, until) for p in pieces]
    closed, verdict, cex, why = 0, None, None, []
    pending = list(refs)
    try:
        while pending and verdict is None:
            left = end + GRACE - time.perf_counter()
            if left <= 0:
                why.append(f"{len(pending)} pieces cancelled at the deadline")
                break
            done, pending = ray.wait(pending, num_returns=1, timeout=left)
            for ref in done:
                try:
                    out = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - a failed piece decides nothing
                    why.append(f"a piece failed: {type(e).__name__}")
                    continue
                if out["verdict"] == "unsat":
                    closed += 1
                elif out["verdict"] == "sat" and out["counterexample"] is not None:
                    import torch
                    cex = recheck(net, sp, torch.tensor([out["counterexample"]["x"]], dtype=torch.float64))
                    if cex is not None:
                        verdict = "sat"
                else:
                    why.append(f"a piece ended {out['verdict']}")
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
    if verdict is None:
        verdict = "unsat" if closed == len(pieces) else (
            "timeout" if timeout is not None and time.perf_counter() >= end else "unknown")
    return {"verdict": verdict, "domain": domain, "seconds": time.perf_counter() - t0, "counterexample": cex,
            "guarantee": "sound", "certificate": None,
            "evidence": {"by": "shared-bab", "pieces": len(pieces), "closed": closed, "tasks": width,
                         **({"reason": why[0]} if why and verdict not in ("sat", "unsat") else {})}}
