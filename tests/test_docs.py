"""The documentation works as written: each worked example in docs/examples runs (its Python blocks in order, in a
folder holding a copy of examples/), the plugin example installs and verifies, and the site (API reference from the
docstrings) builds with `mkdocs build --strict`."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EX = ROOT / "examples" / "digits"


def blocks(page: Path, lang: str = "python") -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", page.read_text(), re.S)


def block(page: Path, first_line: str) -> str:
    """The fenced code block of `page` whose first line is `first_line`."""
    for body in re.findall(r"```[a-z]*\n(.*?)```", page.read_text(), re.S):
        if body.startswith(first_line + "\n"):
            return body
    raise AssertionError(f"{page.name} has no code block starting with {first_line!r}")


def _nncert(*args, env=None):
    return subprocess.run([sys.executable, "-m", "nncert.engine.cli", *map(str, args)], capture_output=True,
                          text=True, env=env)


def run_page(page: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    script = tmp_path / "example.py"
    script.write_text("\n".join(blocks(page)))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)


def test_verify_a_torch_cnn_example(tmp_path):
    pytest.importorskip("sklearn")
    r = run_page(DOCS / "examples" / "verify-a-torch-cnn.md", tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "eps 0.005: unsat" and lines[1] == "eps 0.3: sat" and lines[-1] == "unsat"
    label_line = lines[2].split()   # its class: K distance: D
    assert float(label_line[-1]) <= 0.3 + 1e-6
    assert (tmp_path / "digit.vnnlib").read_text().count("(vnnlib-version <2.0>)") == 1


def test_certify_with_smoothing_example(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    r = run_page(DOCS / "examples" / "certify-with-smoothing.md", tmp_path)
    assert r.returncode == 0, r.stderr
    accs = [eval(line.split(":", 1)[1]) for line in r.stdout.splitlines() if line.startswith("sigma=")]
    assert len(accs) == 2
    for acc in accs:   # certified accuracy falls with the radius
        vals = [acc[k] for k in sorted(acc)]
        assert vals == sorted(vals, reverse=True) and vals[0] > 0.5
    png = (tmp_path / "smoothing.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """The plugin of docs/examples/write-a-plugin.md, built from its two code blocks and pip-installed into a folder
    of its own."""
    page = DOCS / "examples" / "write-a-plugin.md"
    tmp = tmp_path_factory.mktemp("docs_plugin")
    src = tmp / "mypkg-src"
    (src / "mypkg").mkdir(parents=True)
    (src / "mypkg" / "__init__.py").write_text("")
    (src / "mypkg" / "nncert_plugin.py").write_text(block(page, "# mypkg/nncert_plugin.py"))
    (src / "pyproject.toml").write_text(block(page, "# pyproject.toml of mypkg"))
    site = tmp / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
                        "--target", str(site), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def test_plugin_example_registers_and_verifies(plugin_env):
    r = _nncert("domains", "--json", env=plugin_env)
    assert r.returncode == 0 and "failed to load" not in r.stderr, r.stderr
    rows = {d["name"]: d for d in json.loads(r.stdout)["domains"]}
    assert rows["my-domain"]["plugin"] == "my-domain" and "tanh" in rows["my-domain"]["ops"]
    spec = EX / "prop_0_0.01.vnnlib"
    mine = _nncert("verify", EX / "mlp.onnx", spec, "--domain", "my-domain", "--json", env=plugin_env)
    ibp = _nncert("verify", EX / "mlp.onnx", spec, "--domain", "ibp", "--json")
    assert mine.returncode == 0, mine.stderr
    assert json.loads(mine.stdout)["verdict"] == json.loads(ibp.stdout)["verdict"]
    # the example is interval arithmetic: its bounds contain IBP's, and are no looser than rounding
    b_mine = json.loads(_nncert("bounds", EX / "mlp.onnx", spec, "--domain", "my-domain", "--json",
                                env=plugin_env).stdout)["regions"][0]
    b_ibp = json.loads(_nncert("bounds", EX / "mlp.onnx", spec, "--domain", "ibp", "--json").stdout)["regions"][0]
    for lo_m, hi_m, lo_i, hi_i in zip(b_mine["lower"], b_mine["upper"], b_ibp["lower"], b_ibp["upper"]):
        assert abs(lo_m - lo_i) <= 1e-6 * (1 + abs(lo_i)) and abs(hi_m - hi_i) <= 1e-6 * (1 + abs(hi_i))


def _griffe_finds_the_package() -> str | None:
    """Why the site cannot be built here, or None. mkdocstrings reads the installed package's sources; an editable
    install keeps them outside site-packages, where it does not look."""
    import importlib.util
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("griffe") is None:
        return "mkdocs / mkdocstrings not installed (pip install '.[docs]')"
    import griffe
    try:
        griffe.load("nncert.engine.api")
    except Exception:  # noqa: BLE001 - griffe's lookup errors vary by version
        return "nncert is installed in editable mode: mkdocstrings finds its sources only in a regular install"
    return None


def test_site_builds_with_the_api_reference(tmp_path):
    why = _griffe_finds_the_package()
    if why:
        pytest.skip(why)
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
                        "-d", str(tmp_path / "site")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    import nncert
    for name in ("load", "robustness", "read_vnnlib", "write_vnnlib", "verify", "bounds", "certify", "lipschitz"):
        assert f'id="nncert.engine.api.{name}"' in api, name
        assert getattr(nncert, name).__doc__.split("(")[0].split()[0] in api   # the docstring is on the page
    for page in ("verify-a-torch-cnn", "certify-with-smoothing", "write-a-plugin"):
        assert (tmp_path / "site" / "examples" / page / "index.html").exists()
