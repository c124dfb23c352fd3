"""Install a plugin module as a real distribution for a test: a package and a dist-info with an `nncert` entry
point, on a path prepended to sys.path (undone by monkeypatch at the end of the test)."""
from __future__ import annotations


def install_plugin(tmp_path, monkeypatch, package: str, entry: str, source: str):
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text(source)
    dist = package.replace("_", "-")
    di = tmp_path / f"{package}-0.1.dist-info"
    di.mkdir()
    (di / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (di / "entry_points.txt").write_text(f"[nncert]\n{entry} = {package}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path
