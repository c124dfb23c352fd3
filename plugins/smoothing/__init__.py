"""nncert plugin 'smoothing': Gaussian randomized smoothing (domain "gaussian-smoothing").

Modules: stats (Clopper-Pearson, binomial test), sampling (seeded batched vote counting), model (network
adapters), domain (GaussianSmoothing: certify / predict), report (certified accuracy, TSV, plot).
"""
from nncert.engine import hookimpl

from .domain import GaussianSmoothing


@hookimpl
def nncert_register_domains(register):
    register(GaussianSmoothing)
