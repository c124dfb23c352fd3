"""nncert engine: model IR, ONNX import, specs, VNN-LIB, domain protocol, registry, kernels, runner, CLI."""

__version__ = "0.1.0"

from .hookspecs import hookimpl  # noqa: E402  (plugins: `from nncert.engine import hookimpl`)
