"""nncert plugin 'liplt': certified Lipschitz bounds (LipLT, naive) and certified l2 / l_inf radii.

Domain "liplt" (domain.LipLT): `lipschitz(network, method, pairwise)` and `certify(model, x, y, options)`.
Training helpers (differentiable LipLT with power-iteration estimates): `differentiable.py`.
"""
from nncert.engine import hookimpl

from .domain import LipLT


@hookimpl
def nncert_register_domains(register):
    register(LipLT)


__all__ = ["LipLT"]
