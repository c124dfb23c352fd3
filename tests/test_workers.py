"""engine.workers: hard time and memory limits on worker processes, crashes, and errors handed back."""
import os
import signal
import time

import pytest

from nncert.engine.errors import BadInput
from nncert.engine.workers import GRACE, Job, run_jobs

# job functions, imported by name in the workers (this module is importable there: same sys.path)
def nap(seconds):
    time.sleep(seconds)
    return seconds


def hog(megabytes):
    block = bytearray(megabytes * 2 ** 20)
    for i in range(0, len(block), 4096):   # touch every page so it is resident
        block[i] = 1
    time.sleep(30)
    return len(block)


def threads():
    import torch
    return torch.get_num_threads()


def suicide():
    os.kill(os.getpid(), signal.SIGKILL)


def bad():
    raise BadInput("no such thing", "model.onnx", 3)


def _run(jobs, **kw):
    return {j.key: (ended, value, seconds) for j, ended, value, _, seconds in run_jobs(jobs, **kw)}


def test_deadline_kills_a_job_that_never_checks_the_clock():
    t0 = time.perf_counter()
    out = _run([Job("test_workers:nap", (60,), seconds=1.0, key="slow"),
                Job("test_workers:nap", (0.1,), seconds=10.0, key="quick")], n=2)
    assert out["slow"][0] == "deadline" and out["slow"][2] <= 1.0 + GRACE + 0.5
    assert out["quick"][:2] == ("finished", 0.1)
    assert time.perf_counter() - t0 < 10


def test_memory_cap_kills_a_job_that_passes_it():
    out = _run([Job("test_workers:hog", (600,), seconds=60, key="hog")], n=1, memory_cap=300 * 2 ** 20)
    assert out["hog"][0] == "memory" and out["hog"][2] < 30


def test_a_dying_worker_is_retried_once_then_reported_and_replaced():
    out = _run([Job("test_workers:suicide", key="dies"), Job("test_workers:nap", (0.0,), key="after")], n=1)
    assert out["dies"][0] == "died" and "SIGKILL" in out["dies"][1]
    assert out["after"][0] == "finished"


def test_exceptions_come_back_with_their_type_and_message():
    (ended, value, _), = _run([Job("test_workers:bad", key=0)]).values()
    assert ended == "raised" and isinstance(value, BadInput) and str(value) == "model.onnx:3: no such thing"


def test_every_job_is_reported_exactly_once():
    jobs = [Job("test_workers:nap", (0.01 * (i % 3),), key=i) for i in range(12)]
    out = _run(jobs, n=3)
    assert sorted(out) == list(range(12)) and all(v[0] == "finished" for v in out.values())


def test_auto_falls_back_to_ibp_after_the_memory_cap(monkeypatch):
    """verify_bounded: a worker of `auto` killed for memory is retried once with the cheaper domain; a second kill
    answers unknown with the reason."""
    from nncert.engine import instance, workers
    seen = []

    def fake(outcomes):
        def run_jobs(jobs, n, cap):
            (job,) = jobs
            seen.append(job.args[2])
            ended, value = outcomes[len(seen) - 1]
            yield job, ended, value, 0, 0.1
        return run_jobs

    ok = {"verdict": "unsat", "domain": "ibp", "seconds": 0.1, "counterexample": None, "evidence": {"by": "ibp"}}
    monkeypatch.setattr(workers, "run_jobs", fake([("memory", "over the cap"), ("finished", ok)]))
    out = instance.verify_bounded("m.onnx", "s.vnnlib", "auto", timeout=30)
    assert seen == ["auto", "ibp"] and out["verdict"] == "unsat"
    assert out["evidence"]["ended"] == "memory, then ibp" and out["evidence"]["reason"] == "over the cap"
    seen.clear()
    monkeypatch.setattr(workers, "run_jobs", fake([("memory", "over"), ("memory", "still over")]))
    out = instance.verify_bounded("m.onnx", "s.vnnlib", "auto", timeout=30)
    assert seen == ["auto", "ibp"] and out["verdict"] == "unknown" and out["evidence"]["ended"] == "memory"
    seen.clear()
    monkeypatch.setattr(workers, "run_jobs", fake([("memory", "over")]))
    out = instance.verify_bounded("m.onnx", "s.vnnlib", "crown", timeout=30)   # a named domain is not swapped
    assert seen == ["crown"] and out["verdict"] == "unknown"


@pytest.mark.skipif("OMP_NUM_THREADS" in os.environ, reason="OMP_NUM_THREADS set: the user's choice wins")
def test_workers_share_the_cores():
    """n workers get cores // n compute threads each (all of them spinning on every core made bench --jobs 2 5x
    slower than --jobs 1 on ACAS Xu)."""
    from nncert.engine.workers import cores
    out = _run([Job("test_workers:threads", key=i) for i in range(2)], n=2)
    assert {v[:2] for v in out.values()} == {("finished", max(1, cores() // 2))}
