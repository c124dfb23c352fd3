"""The README works as written: its domain table matches `nncert domains`, every subcommand it shows answers
--help, and its Python example and command lines run (the plugin example lives in docs/: tests/test_docs.py)."""
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
EX = ROOT / "examples" / "digits"


def _block(first_line: str) -> str:
    """The fenced code block of the README whose first line is `first_line`."""
    for body in re.findall(r"```[a-z]*\n(.*?)```", README, re.S):
        if body.startswith(first_line + "\n"):
            return body
    raise AssertionError(f"README has no code block starting with {first_line!r}")


def _nncert(*args, env=None):
    return subprocess.run([sys.executable, "-m", "nncert.engine.cli", *map(str, args)], capture_output=True,
                          text=True, env=env)


def test_readme_domain_table_matches_nncert_domains():
    table = {}
    for line in README.splitlines():
        m = re.match(r"\| `([a-z0-9-]+)` \| (\w+) \| ([^|]+) \|", line)
        if m:
            table[m[1]] = (m[2], {s.strip().replace("l_inf", "linf") for s in m[3].split(",")})
    rows = json.loads(_nncert("domains", "--json").stdout)["domains"]
    assert {r["name"] for r in rows} == set(table)
    for r in rows:
        assert table[r["name"]] == (r["guarantee"], set(r["input_sets"])), r["name"]


def test_readme_commands_answer_help():
    assert _nncert("--version").stdout.startswith("nncert ")
    shown = set(re.findall(r"^nncert (\w+)", README, re.M))
    assert {"verify", "bounds", "certify", "bench", "domains", "info", "lipschitz"} <= shown
    from nncert.engine.cli import build_parser
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for cmd in shown:
        r = _nncert(cmd, "--help")
        assert r.returncode == 0 and "usage: nncert " + cmd in r.stdout, cmd
        for action in sub.choices[cmd]._actions:   # every option explains itself
            assert action.help or not action.option_strings, (cmd, action.option_strings)


def test_readme_python_example_runs():
    code = _block("import nncert")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["unsat"]


def test_readme_command_lines_run_on_the_shipped_example(tmp_path):
    """Each line of the README's command-line block, required arguments only, on examples/digits (certify on a
    small .npz of its inputs)."""
    import numpy as np
    data = tmp_path / "d.npz"
    np.savez(data, x=np.random.default_rng(0).random((3, 64), dtype=np.float32), y=np.array([0, 1, 2]))
    subst = {"MODEL.onnx": str(EX / "mlp.onnx"), "SPEC.vnnlib": str(EX / "prop_0_0.01.vnnlib"), "DATA.npz": str(data),
             "NAME": "liplt"}
    ran = 0
    for line in _block("nncert --version").splitlines():
        cmd = line.split("#")[0].split("[")[0].split()
        if not cmd or cmd[0] != "nncert":
            continue
        args = [subst.get(a, a.split("|")[0]) for a in cmd[1:]]
        if args[:1] == ["certify"]:
            args += ["--eps", "0.1"]
        r = _nncert(*args)
        assert r.returncode == 0, (line, r.stderr)
        ran += 1
    assert ran >= 7
