"""Plugin registry: third-party domains through a real entry point, op rules, clear errors."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from nncert.engine.errors import BadInput, PluginError
from nncert.engine.registry import _collect, make_plugin_manager, registry_with
from nncert.engine.spec import Box, Case, Disjunct, Spec
from nncert.engine.verify import verify

from netgen import random_mlp
from plugin_dist import install_plugin

TOY = textwrap.dedent('''
    """A third-party domain: interval arithmetic by its own rules, registered through an entry point."""
    import torch
    from nncert.engine import hookimpl
    from nncert.engine.domain import Domain

    def _linear(node, box):
        lo, hi = box[0]
        W, b = node.params["W"].to(lo.dtype), node.params["b"].to(lo.dtype)
        return lo @ W.clamp(min=0).T + hi @ W.clamp(max=0).T + b, hi @ W.clamp(min=0).T + lo @ W.clamp(max=0).T + b

    class ToyInterval(Domain):
        name = "toy-interval"
        guarantee = "sound"
        input_sets = ("box",)
        default_rules = {"linear": _linear, "relu": lambda n, box: (box[0][0].clamp(min=0), box[0][1].clamp(min=0))}

        def bounds(self, network, lower, upper, C=None):
            self.check_network(network)
            vals = {network.input_name: (lower, upper)}
            for node in network.nodes:
                vals[node.name] = self.op_rules[node.op](node, [vals[i] for i in node.inputs])
            lo, hi = vals[network.output]
            if C is not None:
                Cp, Cn = C.clamp(min=0), C.clamp(max=0)
                lo, hi = lo @ Cp.T + hi @ Cn.T, hi @ Cp.T + lo @ Cn.T
            return lo - 1e-9, hi + 1e-9

    @hookimpl
    def nncert_register_domains(register):
        register(ToyInterval)

    @hookimpl
    def nncert_register_op_rules(register):
        register("toy-interval", "tanh", lambda n, box: (torch.tanh(box[0][0]), torch.tanh(box[0][1])))
''')


@pytest.fixture()
def toy_dist(tmp_path, monkeypatch):
    """The toy plugin installed as a real distribution with an `nncert` entry point."""
    return install_plugin(tmp_path, monkeypatch, "nncert_toy", "toy", TOY)


def _safe_spec(net, centre, eps):
    """Unsafe iff output 0 exceeds a bound far above its IBP upper bound: unsat for any sound domain."""
    return Spec([Case(Box(centre - eps, centre + eps), [Disjunct(torch.eye(net.n_outputs)[:1], torch.tensor([-1e3]))])],
                net.n_inputs, net.n_outputs)


def test_third_party_domain_through_entry_point(toy_dist):
    reg = _collect(make_plugin_manager())
    assert reg.domain_plugin["toy-interval"] == "toy"
    assert reg.domain_plugin["ibp"] == "ibp"  # built-ins come through the same entry points
    dom = reg.domain("toy-interval")
    assert "tanh" in dom.supported_ops()  # a rule contributed through nncert_register_op_rules
    net = random_mlp((3, 6, 2), seed=1)
    spec = _safe_spec(net, torch.zeros(3), 0.5)
    res = verify(net, spec, domain="toy-interval", registry=reg)
    assert res.verdict == "unsat"
    # the toy domain's bounds agree with IBP's (same math)
    l1, h1 = dom.bounds(net.to(torch.float64), -torch.ones(1, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64))
    l2, h2 = reg.domain("ibp").bounds(net.to(torch.float64), -torch.ones(1, 3, dtype=torch.float64),
                                      torch.ones(1, 3, dtype=torch.float64))
    torch.testing.assert_close(l1, l2, atol=1e-6, rtol=0)
    torch.testing.assert_close(h1, h2, atol=1e-6, rtol=0)


def test_cli_lists_third_party_domain(toy_dist):
    env = dict(os.environ, PYTHONPATH=str(toy_dist) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-m", "nncert.engine.cli", "domains", "--json"], env=env,
                         capture_output=True, text=True, check=True)
    rows = {d["name"]: d for d in json.loads(out.stdout)["domains"]}
    assert rows["toy-interval"]["plugin"] == "toy"
    assert rows["toy-interval"]["guarantee"] == "sound"
    assert set(rows["toy-interval"]["ops"]) == {"linear", "relu", "tanh"}


def test_nncert_plugins_filter(toy_dist, monkeypatch):
    monkeypatch.setenv("NNCERT_PLUGINS", "toy")
    reg = _collect(make_plugin_manager())
    assert set(reg.domains) == {"toy-interval"}
    monkeypatch.setenv("NNCERT_PLUGINS", "no-such-plugin")
    with pytest.raises(BadInput, match="no-such-plugin"):
        make_plugin_manager()


class _Opaque:
    """Registers an op with semantics but no traits and no rule in any domain."""
    from nncert.engine import hookimpl

    @staticmethod
    @hookimpl
    def nncert_register_ops(register):
        import torch

        from nncert.engine.ops import OpDef
        register(OpDef("opaque", lambda node, args: torch.relu(args[0])))


def test_unsupported_op_is_named():
    from nncert.engine.errors import UnsupportedOp
    from nncert.engine.registry import use_registry
    reg = registry_with({"opaque-op": _Opaque})
    with use_registry(reg):
        net = random_mlp((3, 4, 2), seed=0)
        net.nodes[1].op = "opaque"
        for name in ("ibp", "crown"):
            dom = reg.domain(name)
            assert "opaque" not in dom.supported_ops()
            with pytest.raises(UnsupportedOp, match=f"opaque.*no rule in domain '{name}'"):
                dom.check_network(net)


class _Dup:
    from nncert.engine import hookimpl

    @staticmethod
    @hookimpl
    def nncert_register_domains(register):
        from nncert.plugins.ibp import IBP
        register(IBP)


class _Misspelt:
    from nncert.engine import hookimpl

    @staticmethod
    @hookimpl
    def nncert_register_domain(register):  # missing "s": must fail loudly
        pass


def test_duplicate_domain_name_rejected():
    with pytest.raises(PluginError, match="already provided by plugin 'ibp'"):
        registry_with({"dup": _Dup})


def test_misspelt_hook_fails_loudly():
    import pluggy
    with pytest.raises(pluggy.PluginValidationError):
        registry_with({"typo": _Misspelt})


def test_unknown_domain_is_bad_input():
    with pytest.raises(BadInput, match="unknown domain 'nope'"):
        registry_with({}).domain("nope")


def test_a_broken_plugin_is_named_and_the_others_keep_working(capsys, monkeypatch):
    from nncert.engine import hookimpl, registry

    class Broken:
        @hookimpl
        def nncert_register_domains(self, register):
            raise NameError("name 'my_interval_rule' is not defined")

    reg = registry.registry_with({"broken": Broken()})
    assert "crown" in reg.domains and "ibp" in reg.domains
    assert "NameError" in reg.failed["broken"]
    assert "plugin broken failed to load: NameError" in capsys.readouterr().err

    class EP:   # an installed plugin whose module raises on import
        name, group = "explodes", registry.GROUP

        def load(self):
            raise ImportError("No module named 'missing_dep'")

    import importlib.metadata
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group: [*real(group=group), EP()] if group == registry.GROUP else real(group=group))
    reg = registry._collect(registry.make_plugin_manager())
    assert "crown" in reg.domains and "ImportError" in reg.failed["explodes"]
    assert "plugin explodes failed to load: ImportError" in capsys.readouterr().err
