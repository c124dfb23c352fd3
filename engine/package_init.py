"""nncert: certify the robustness of neural networks, or find the input that breaks them.

Installed as the package's `nncert/__init__.py` (CMakeLists.txt). The Python API lives in nncert.engine.api and is
reachable from here (`nncert.load`, `nncert.verify`, ...); it is imported on first use, so `import nncert` and the
command line stay light (no torch import until needed).
"""
import os

# torch's CPU allocator puts large tensors on transparent huge pages when this is set; it reads it once, at its
# first allocation, so it takes effect when nncert is imported before torch (the CLI, workers). CROWN on a CNN
# allocates and frees GB of coefficient blocks, and 4 KB page faults cost as much as the arithmetic: TinyYOLO's
# CROWN pass 100 s -> 60 s on 2 cores. A value the user set wins.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from nncert.engine import __version__  # noqa: E402

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
