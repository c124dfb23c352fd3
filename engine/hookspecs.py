"""Hook specifications: the whole plugin API of nncert.

A plugin is a module (or object) with functions named like these hooks, decorated with `nncert.engine.hookimpl`,
and announced in its distribution's entry points under the group "nncert":

    [project.entry-points.nncert]
    mydomain = "mypackage.nncert_plugin"

Each contribution hook receives a `register` callback; call it once per thing you contribute.
"""
import pluggy

hookspec = pluggy.HookspecMarker("nncert")
hookimpl = pluggy.HookimplMarker("nncert")


@hookspec
def nncert_register_ops(register):
    """Contribute IR ops: call register(OpDef(...)) for each (engine/ops/__init__.py). An op brings its exact
    semantics, traits and ONNX importers; names and ONNX op types must be unique across plugins."""


@hookspec
def nncert_register_domains(register):
    """Contribute domains: call register(DomainSubclass) for each. Names must be unique across plugins."""


@hookspec
def nncert_register_op_rules(register):
    """Teach a domain an op: register(domain_name, op_name, rule). The rule's signature is the domain's own
    (plugins/ibp: rule(node, boxes) -> (lo, hi); plugins/crown: rule(node, Lam, ctx) -> (ins, bias)); a later
    plugin may not silently replace an existing rule."""


@hookspec
def nncert_register_transforms(register):
    """Contribute semantic transforms for the semantic-smoothing domain: register(TransformSubclass)."""
