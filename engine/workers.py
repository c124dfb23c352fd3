"""Work in child processes under hard limits of time and memory.

A `Job` names a function ("module:function") and its arguments; `run_jobs` runs jobs on up to n worker processes
and reports each job exactly once with how it ended:
  "finished"  the function returned (its value);
  "raised"    the function raised (the exception, or a RuntimeError with its text when it cannot be pickled);
  "deadline"  the worker was still running GRACE seconds after the job's deadline and was killed;
  "memory"    the worker's resident memory passed the cap (polled every POLL seconds) and it was killed;
  "died"      the worker died on its own (a signal, e.g. SIGKILL from outside, or an exit) twice in a row:
              a job is retried once on a fresh worker, within its first deadline, before it is reported so.
The memory cap applies to a worker's resident memory now; the reported peak is the worker's over its lifetime.
A killed or dead worker is replaced; each worker gets its share of the cores (share_cores). Workers never outlive
the parent: they die with it (Linux PR_SET_PDEATHSIG) and are killed when the parent is ended by SIGTERM / SIGINT
or leaves `run_jobs` in any way.

Workers are forked while torch is not yet imported in the parent (the command line keeps its parent torch-free:
start-up costs nothing extra); otherwise they are spawned.
"""
from __future__ import annotations

import ctypes
import importlib
import multiprocessing as mp
import os
import pickle
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait

GRACE = 0.5    # seconds past a job's deadline before its worker is killed
POLL = 0.2     # seconds between checks of deadlines and memory


@dataclass
class Job:
    fn: str                              # "package.module:function"
    args: tuple = ()
    seconds: float | None = None         # time limit, counted from when a worker takes the job; None: no limit
    key: object = None                   # the caller's handle, reported back
    tries: int = field(default=0, repr=False)
    first_start: float | None = field(default=None, repr=False)   # a retried job keeps its first deadline


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):   # not Linux: SIGTERM/SIGINT handling in the parent still applies
        pass


def _resolve(name: str):
    mod, fn = name.split(":")
    return getattr(importlib.import_module(mod), fn)


def cores() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def share_cores(threads: int) -> None:
    """Give this process `threads` compute threads (torch intra-op, OpenMP, MKL), unless the user set
    OMP_NUM_THREADS. n workers of a machine's cores each would spin-wait on each other: measured on 2 cores, bench
    --jobs 2 ran ACAS Xu branch and bound 5x slower in total than --jobs 1 before workers shared the cores."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _serve(conn, parent: int, threads: int) -> None:
    """Worker loop: receive (fn, args), send ("ok", value, peak RSS) or ("raised", exception, peak RSS); None ends
    it. The peak is the worker's own (ru_maxrss, over its lifetime). threads: its share of the machine's cores."""
    _die_with_parent()
    share_cores(threads)
    if os.getppid() != parent:     # the parent died before prctl took effect
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent decides; Ctrl-C reaches the whole process group
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        fn, args = msg
        try:
            out = ("ok", _resolve(fn)(*args))
        except BaseException as e:  # noqa: BLE001 - handed to the parent, which decides what it means
            try:
                pickle.loads(pickle.dumps(e))
            except Exception:  # noqa: BLE001
                e = RuntimeError(f"{type(e).__name__}: {e}")
            out = ("raised", e)
        conn.send((*out, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc), 0 when unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class _Worker:
    def __init__(self, ctx, threads: int):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, os.getpid(), threads), daemon=True)
        self.proc.start()
        child.close()
        self.job: Job | None = None
        self.started = self.deadline = float("inf")
        self.peak = 0

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()
        self.conn.close()


def _context():
    return mp.get_context("fork" if "torch" not in sys.modules and sys.platform == "linux" else "spawn")


def run_jobs(jobs, n: int = 1, memory_cap: int | None = None):
    """Run jobs on up to n workers; yields (job, ended, value, peak_rss_bytes, seconds) as each job ends, in completion
    order (see the module docstring for `ended`; value is the return value, the exception for "raised", or a message
    for the kills).
    memory_cap: bytes of resident memory per worker (None: no cap); workers see it as NNCERT_MEMORY."""
    ctx = _context()
    pending = list(jobs)
    threads = max(1, cores() // max(1, n))
    env = os.environ.get("NNCERT_MEMORY")
    if memory_cap is not None:     # what engine.memory.budget() sizes a worker's passes to
        os.environ["NNCERT_MEMORY"] = str(memory_cap)
    workers: list[_Worker] = []
    old = {}

    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    if mp.current_process().name == "MainProcess":
        try:
            for s in (signal.SIGTERM,):
                old[s] = signal.signal(s, stop)
        except ValueError:   # not the main thread: the caller keeps its own handlers
            pass
    try:
        while pending or any(w.job for w in workers):
            while pending and (len(workers) < n or any(w.job is None for w in workers)):
                w = next((w for w in workers if w.job is None), None)
                if w is None:
                    w = _Worker(ctx, threads)
                    workers.append(w)
                w.job = pending.pop(0)
                w.started = time.perf_counter()
                if w.job.first_start is None:
                    w.job.first_start = w.started
                w.deadline = w.job.first_start + (float("inf") if w.job.seconds is None else w.job.seconds)
                w.conn.send((w.job.fn, w.job.args))
            busy = [w for w in workers if w.job]
            now = time.perf_counter()
            nxt = min([w.deadline + GRACE - now for w in busy] + [POLL])
            ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=max(0.0, nxt))
            for w in busy:
                job, ended, value = w.job, None, None
                if w.conn in ready:
                    try:
                        status, value, peak = w.conn.recv()
                        ended = "finished" if status == "ok" else "raised"
                        w.peak = max(w.peak, peak)
                    except (EOFError, OSError):
                        pass
                if ended is None and (w.proc.sentinel in ready or not w.proc.is_alive()):
                    w.kill()
                    workers.remove(w)
                    job.tries += 1
                    if job.tries < 2:
                        pending.insert(0, job)
                        continue
                    ended, value = "died", f"worker died ({_how(w.proc.exitcode)}) twice"
                if ended is None:
                    rss = rss_bytes(w.proc.pid)     # now: a worker's earlier jobs do not count against this one
                    w.peak = max(w.peak, rss)
                    if time.perf_counter() > w.deadline + GRACE:
                        ended, value = "deadline", "killed at the deadline"
                    elif memory_cap is not None and rss > memory_cap:
                        ended, value = "memory", f"resident memory passed the cap of {memory_cap / 2 ** 30:.2f} GiB"
                    else:
                        continue
                    w.kill()
                    workers.remove(w)
                else:
                    w.peak = max(w.peak, rss_bytes(w.proc.pid))
                    w.job = None
                yield job, ended, value, w.peak, time.perf_counter() - job.first_start
    finally:
        for w in workers:
            try:
                w.conn.send(None)
            except (OSError, ValueError):
                pass
        for w in workers:
            w.proc.join(timeout=0.2)
            w.kill()
        for s, h in old.items():
            signal.signal(s, h)
        if memory_cap is not None and env is None:
            del os.environ["NNCERT_MEMORY"]
        elif memory_cap is not None:
            os.environ["NNCERT_MEMORY"] = env


def _how(exitcode) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"
