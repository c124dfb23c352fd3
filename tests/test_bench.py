"""`nncert bench`: results appended per instance, truth comparison, and --resume after a kill."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

EX = Path(__file__).resolve().parents[1] / "examples" / "digits"
PROPS = sorted(p.name for p in EX.glob("prop_*.vnnlib"))


def _csv(tmp_path, truth=None):
    rows = [f"{EX / 'mlp.onnx'},{EX / p},60" for p in PROPS]
    (tmp_path / "instances.csv").write_text("\n".join(rows) + "\n")
    if truth is not None:
        (tmp_path / "truth.csv").write_text("onnx,vnnlib,timeout,answer\n" + "".join(
            f"{EX / 'mlp.onnx'},{EX / p},60,{truth[p]}\n" for p in PROPS))
    return tmp_path / "instances.csv"


def _bench(*args, **kw):
    return subprocess.run([sys.executable, "-m", "nncert.engine.cli", "bench", *map(str, args)],
                          capture_output=True, text=True, **kw)


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_bench_runs_subset_and_checks_truth(tmp_path):
    csv = _csv(tmp_path)
    out = tmp_path / "r.jsonl"
    r = _bench(csv, "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    res = _lines(out)
    assert sorted(x["vnnlib"].split("/")[-1] for x in res) == PROPS
    for x in res:
        assert {"onnx", "vnnlib", "verdict", "seconds"} <= set(x)
        assert (x["verdict"] == "sat") == ("counterexample" in x)
    # a truth file that contradicts a decided verdict makes bench fail
    decided = {x["vnnlib"].split("/")[-1]: x["verdict"] for x in res}
    flip = {p: {"sat": "unsat", "unsat": "sat"}.get(v, "unsat") for p, v in decided.items()}
    _csv(tmp_path, truth=flip)
    r2 = _bench(csv, "--out", tmp_path / "r2.jsonl", "--json")
    summary = json.loads(r2.stdout.splitlines()[-1])
    if any(v in ("sat", "unsat") for v in decided.values()):
        assert r2.returncode == 1 and summary["wrong"] >= 1
    _csv(tmp_path, truth={p: (v if v in ("sat", "unsat") else "unsat") for p, v in decided.items()})
    r3 = _bench(csv, "--out", tmp_path / "r3.jsonl", "--json")
    assert r3.returncode == 0 and json.loads(r3.stdout.splitlines()[-1])["wrong"] == 0


def _copies(tmp_path, n):
    """A CSV of n copies of each digits property (distinct files): more instances than finish before a kill."""
    rows = []
    for i in range(n):
        for prop in PROPS:
            copy = tmp_path / f"c{i}_{prop}"
            copy.write_text((EX / prop).read_text())
            rows.append(f"{EX / 'mlp.onnx'},{copy},60")
    csv = tmp_path / "instances.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv, rows


def test_bench_resume_after_kill(tmp_path):
    csv, rows = _copies(tmp_path, 8)
    out = tmp_path / "r.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "nncert.engine.cli", "bench", str(csv), "--out", str(out)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while time.time() - t0 < 300 and (not out.exists() or len(out.read_text().splitlines()) < 2):
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    before = _lines(out)
    if len(before) >= len(rows):
        pytest.skip("the run finished before it could be killed")
    assert len(before) >= 2
    r = _bench(csv, "--out", out, "--resume", "--json")
    assert r.returncode == 0, r.stderr
    after = _lines(out)
    keys = [(x["onnx"], x["vnnlib"]) for x in after]
    assert len(keys) == len(set(keys)) == len(rows)    # nothing done twice, nothing missing
    assert after[:len(before)] == before               # finished instances were not redone


def test_bench_caps_timeouts(tmp_path):
    csv = _csv(tmp_path)
    out = tmp_path / "r.jsonl"
    r = _bench(csv, "--out", out, "--json", "--max-timeout", 7)
    assert r.returncode == 0, r.stderr
    assert {x["timeout"] for x in _lines(out)} == {7.0}       # the CSV says 60
    r = _bench(csv, "--out", tmp_path / "bad.jsonl", "--max-timeout", 0)
    assert r.returncode == 2 and "--max-timeout" in r.stderr


def _children(pid):
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d.name))
    return kids


def _alive(pid):
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc to find the workers")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_bench_killed_leaves_no_workers_and_resumes_exactly_once(tmp_path, sig):
    csv, rows = _copies(tmp_path, 6)
    out = tmp_path / "r.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "nncert.engine.cli", "bench", str(csv), "--out", str(out),
                          "--jobs", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while time.time() - t0 < 300 and (not out.exists() or len(out.read_text().splitlines()) < 1):
        time.sleep(0.05)
    workers = _children(p.pid)
    assert workers, "bench runs its instances in worker processes"
    p.send_signal(sig)
    p.wait(timeout=30)
    t1 = time.time()
    while time.time() - t1 < 10 and any(_alive(w) for w in workers):
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "a worker outlived bench"
    if len(_lines(out)) >= len(rows):
        pytest.skip("the run finished before it could be killed")
    with open(out, "a") as f:          # a crash in the middle of writing a record
        f.write('{"onnx": "cut sho')
    r = _bench(csv, "--out", out, "--resume", "--json")
    assert r.returncode == 0, r.stderr
    after = _lines(out)                # every line valid JSON
    keys = [(x["onnx"], x["vnnlib"]) for x in after]
    assert len(keys) == len(set(keys)) == len(rows)
    assert all(x["ended"] == "finished" for x in after if "ended" in x)
