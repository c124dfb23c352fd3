"""nncert plugin 'crown': CROWN backward linear bound propagation (Zhang et al. 2018).

Registers the domains "crown" (plugins.crown.domain.Crown) and "alpha-crown" (AlphaCrown: optimised slopes).
Other plugins can teach CROWN an op with register("crown", op, rule) through nncert_register_op_rules; the rule
signature is in plugins.crown.rules.
"""
from nncert.engine import hookimpl

from .domain import AlphaCrown, Crown


@hookimpl
def nncert_register_domains(register):
    register(Crown)
    register(AlphaCrown)
