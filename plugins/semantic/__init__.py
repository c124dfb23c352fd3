"""nncert plugin 'semantic': semantic-transform smoothing (domain "semantic-smoothing") and its transforms.

Modules: transforms (resolvable transforms: parameter space, smoothing law, resolving map, certificates),
closed_form (Neyman-Pearson closed forms), rates (worst-case rates along parameter paths and their conservative
integration: the numerical certificate), domain (SemanticSmoothing.certify).
"""
from nncert.engine import hookimpl

from .domain import SemanticSmoothing
from .transforms import BUILTIN, Transform  # noqa: F401  (Transform: base class for third-party transforms)


@hookimpl
def nncert_register_domains(register):
    register(SemanticSmoothing)


@hookimpl
def nncert_register_transforms(register):
    for cls in BUILTIN:
        register(cls)
