"""nncert: certify the robustness of neural networks, or find the input that breaks them.

Installed as the package's `nncert/__init__.py` (CMakeLists.txt). The Python API lives in nncert.engine.api and is
reachable from here (`nncert.load`, `nncert.verify`, ...); it is imported on first use, so `import nncert` and the
command line stay light (no torch import until needed).
"""
from nncert.engine import __version__

API = ("load", "read_vnnlib", "write_vnnlib", "robustness", "verify", "bounds", "certify", "certified_accuracy",
       "plot_certificates", "lipschitz", "Result", "Spec", "Network")


def __getattr__(name):
    if name in API:
        from nncert.engine import api
        return getattr(api, name)
    raise AttributeError(f"module 'nncert' has no attribute {name!r}")


def __dir__():
    return sorted(list(API) + ["__version__"])


__all__ = list(API) + ["__version__"]
