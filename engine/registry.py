"""Plugin registry (pluggy): finds plugins through the entry-point group "nncert" and collects what they register.

Built-in plugins are found exactly like third-party ones. `NNCERT_PLUGINS=ibp,crown` loads only the named entry
points (default: all). Everything registered records the plugin that provided it (`nncert domains`).
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .domain import Domain
from .errors import BadInput, PluginError

GROUP = "nncert"


@dataclass
class Registry:
    pm: pluggy.PluginManager
    ops: dict[str, Any] = field(default_factory=dict)                       # op name -> OpDef
    op_plugin: dict[str, str] = field(default_factory=dict)
    onnx_importers: dict[str, Any] = field(default_factory=dict)            # ONNX op type -> importer
    onnx_plugin: dict[str, str] = field(default_factory=dict)
    domains: dict[str, type] = field(default_factory=dict)
    domain_plugin: dict[str, str] = field(default_factory=dict)
    op_rules: dict[str, dict[str, Any]] = field(default_factory=dict)       # domain -> op -> rule
    op_rule_plugin: dict[tuple[str, str], str] = field(default_factory=dict)
    transforms: dict[str, type] = field(default_factory=dict)
    transform_plugin: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)                    # plugin -> why it did not load

    # -- lookups ---------------------------------------------------------------------------------------------
    def domain(self, name: str) -> Domain:
        """A fresh instance of the named domain with every op rule plugins contributed to it."""
        if name not in self.domains:
            known = ", ".join(sorted(self.domains)) or "none"
            raise BadInput(f"unknown domain {name!r} (registered: {known})")
        d = self.domains[name](op_rules=self.op_rules.get(name, {}))
        d.ops, d.registry = self.ops, self
        return d

    def transform(self, name: str):
        if name not in self.transforms:
            known = ", ".join(sorted(self.transforms)) or "none"
            raise BadInput(f"unknown transform {name!r} (registered: {known})")
        return self.transforms[name]

    def describe(self) -> list[dict]:
        out = []
        for name in sorted(self.domains):
            d = self.domain(name).info()
            d["plugin"] = self.domain_plugin[name]
            out.append(d)
        return out


def _failed(reg_or_dict, plugin: str, e: BaseException) -> None:
    """Record and report (one line on stderr) a plugin that raised while loading; the others keep working."""
    why = f"{type(e).__name__}: {e}".replace("\n", " ")
    failed = reg_or_dict if isinstance(reg_or_dict, dict) else reg_or_dict.failed
    if plugin not in failed:
        failed[plugin] = why
        print(f"nncert: plugin {plugin} failed to load: {why}", file=sys.stderr)


def _collect(pm: pluggy.PluginManager) -> Registry:
    reg = Registry(pm)
    reg.failed.update(getattr(pm, "nncert_failed", {}))
    broken = set()

    def each(hookname):
        for impl in getattr(pm.hook, hookname).get_hookimpls():
            if impl.plugin_name not in broken:
                yield impl.plugin_name, impl.function

    def run(plugin, fn, register):
        try:
            fn(register=register)
        except PluginError:
            raise
        except Exception as e:  # a plugin's own bug: name it, drop it, keep the others
            broken.add(plugin)
            _failed(reg, plugin, e)

    from .ops import TRAITS, OpDef

    for plugin, fn in each("nncert_register_ops"):
        def register(op, _plugin=plugin):
            if not isinstance(op, OpDef) or not op.name or not callable(op.forward):
                raise PluginError(f"plugin {_plugin!r} registered {op!r}, which is not a named OpDef with a forward")
            if op.name in reg.ops:
                raise PluginError(f"plugin {_plugin!r} registers op {op.name!r}, "
                                  f"already provided by plugin {reg.op_plugin[op.name]!r}")
            if op.traits - TRAITS:
                raise PluginError(f"plugin {_plugin!r}: op {op.name!r} has unknown traits {sorted(op.traits - TRAITS)}"
                                  f" (known: {sorted(TRAITS)})")
            for onnx_type, importer in op.onnx.items():
                if onnx_type in reg.onnx_importers:
                    raise PluginError(f"plugin {_plugin!r} registers an importer for ONNX op {onnx_type!r}, "
                                      f"already provided by plugin {reg.onnx_plugin[onnx_type]!r}")
                reg.onnx_importers[onnx_type] = importer
                reg.onnx_plugin[onnx_type] = _plugin
            reg.ops[op.name] = op
            reg.op_plugin[op.name] = _plugin
        run(plugin, fn, register)

    for plugin, fn in each("nncert_register_domains"):
        def register(cls, _plugin=plugin):
            if not (isinstance(cls, type) and issubclass(cls, Domain)) or not cls.name:
                raise PluginError(f"plugin {_plugin!r} registered {cls!r}, which is not a named Domain subclass")
            if cls.name in reg.domains:
                raise PluginError(f"plugin {_plugin!r} registers domain {cls.name!r}, "
                                  f"already provided by plugin {reg.domain_plugin[cls.name]!r}")
            reg.domains[cls.name] = cls
            reg.domain_plugin[cls.name] = _plugin
        run(plugin, fn, register)

    for plugin, fn in each("nncert_register_op_rules"):
        def register(domain, op, rule, _plugin=plugin):
            if not callable(rule):
                raise PluginError(f"plugin {_plugin!r} registered a non-callable rule for ({domain!r}, {op!r})")
            if op in reg.op_rules.get(domain, {}):
                raise PluginError(f"plugin {_plugin!r} registers a rule for op {op!r} in domain {domain!r}, "
                                  f"already provided by plugin {reg.op_rule_plugin[(domain, op)]!r}")
            reg.op_rules.setdefault(domain, {})[op] = rule
            reg.op_rule_plugin[(domain, op)] = _plugin
        run(plugin, fn, register)

    for plugin, fn in each("nncert_register_transforms"):
        def register(cls, _plugin=plugin):
            name = getattr(cls, "name", None)
            if not name:
                raise PluginError(f"plugin {_plugin!r} registered a transform without a name: {cls!r}")
            if name in reg.transforms:
                raise PluginError(f"plugin {_plugin!r} registers transform {name!r}, "
                                  f"already provided by plugin {reg.transform_plugin[name]!r}")
            reg.transforms[name] = cls
            reg.transform_plugin[name] = _plugin
        run(plugin, fn, register)
    return reg


def _load_entry_points(pm: pluggy.PluginManager, names=None) -> set[str]:
    """Register the installed plugins (entry point group GROUP; only `names` when given). A plugin that raises
    while importing is reported and skipped (_failed). Returns the entry point names found."""
    from importlib.metadata import entry_points
    found = set()
    for ep in entry_points(group=GROUP):
        if names is not None and ep.name not in names:
            continue
        found.add(ep.name)
        if pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as e:
            _failed(pm.nncert_failed, ep.name, e)
            continue
        pm.register(plugin, name=ep.name)
    return found


def make_plugin_manager(extra_plugins: dict[str, object] | None = None, entry_points: bool = True) -> pluggy.PluginManager:
    from .ops import builtin

    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    pm.register(builtin, name="nncert-ops")  # the built-in ops, always (NNCERT_PLUGINS selects domains)
    pm.nncert_failed = {}
    if entry_points:
        wanted = os.environ.get("NNCERT_PLUGINS")
        names = None if not wanted else [w.strip() for w in wanted.split(",") if w.strip()]
        found = _load_entry_points(pm, names)
        for name in names or ():
            if name not in found and not pm.has_plugin(name):
                raise BadInput(f"NNCERT_PLUGINS names {name!r}, but no installed plugin has that entry point")
    for name, plugin in (extra_plugins or {}).items():
        pm.register(plugin, name=name)
    pm.check_pending()  # a misspelt hook name fails loudly
    return pm


_REGISTRY: Registry | None = None


def get_registry(refresh: bool = False) -> Registry:
    """The process-wide registry, built on first use from the installed entry points."""
    global _REGISTRY
    if _REGISTRY is None or refresh:
        _REGISTRY = _collect(make_plugin_manager())
    return _REGISTRY


def registry_with(plugins: dict[str, object]) -> Registry:
    """A registry of the installed plugins plus the given ones (for tests and embedding)."""
    return _collect(make_plugin_manager(plugins))


@contextmanager
def use_registry(reg: Registry):
    """Make `reg` the process registry for the duration (ops, importers and domains resolve through it)."""
    global _REGISTRY
    old, _REGISTRY = _REGISTRY, reg
    try:
        yield reg
    finally:
        _REGISTRY = old


def get_domain(name: str) -> Domain:
    return get_registry().domain(name)
