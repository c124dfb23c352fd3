"""A third-party op plugin, installed as its own distribution without touching nncert's files: it adds the op
`softsign` (y = x / (1 + |x|)) with its ONNX importer, exact semantics and an IBP and a CROWN rule; nncert then
loads an ONNX network that uses it, bounds it soundly (checked against onnxruntime on samples) and verifies it
end to end through the CLI.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from nncert.engine.io.onnx_import import load_onnx
from nncert.engine.io.ort import run_onnx
from nncert.engine.registry import _collect, make_plugin_manager, use_registry
from plugin_dist import install_plugin

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

PLUGIN = textwrap.dedent('''
    """softsign for nncert: y = x / (1 + |x|), increasing, with derivative 1 / (1 + |x|)^2 in (0, 1]."""
    import torch
    from nncert.engine import hookimpl
    from nncert.engine.ops import OpDef

    def softsign(node, args):
        x = args[0]
        return x / (1 + x.abs())

    def import_softsign(ctx, n):
        ctx.attrs(n, ())
        ctx.set(n, ctx.emit(n, "softsign", [ctx.var(n, n.input[0])]))

    def ibp_rule(node, boxes):          # increasing: the bounds' images bound the image
        lo, hi = boxes[0]
        return softsign(node, [lo]), softsign(node, [hi])

    def crown_rule(node, Lam, ctx):
        """On [l, u] the slope is at least d = 1 / (1 + max(|l|, |u|))^2, so f(l) + d (x - l) <= f(x) <=
        f(u) + d (x - u). Lam [B, m, *shape] -> coefficients on x and the bias [B, m]."""
        l, u = ctx.bounds[node.inputs[0]]
        d = 1 / (1 + torch.maximum(l.abs(), u.abs())) ** 2
        lo_icpt = softsign(node, [l]) - d * l
        hi_icpt = softsign(node, [u]) - d * u
        pos, neg = Lam.clamp(min=0), Lam.clamp(max=0)
        bias = (pos * lo_icpt[:, None] + neg * hi_icpt[:, None]).flatten(2).sum(-1)
        return [Lam * d[:, None]], bias
    crown_rule.needs_bounds = True

    @hookimpl
    def nncert_register_ops(register):
        register(OpDef("softsign", softsign, {"elementwise"}, {"Softsign": import_softsign}))

    @hookimpl
    def nncert_register_op_rules(register):
        register("ibp", "softsign", ibp_rule)
        register("crown", "softsign", crown_rule)
''')


@pytest.fixture()
def softsign_dist(tmp_path, monkeypatch):
    """The plugin installed as a real distribution with an `nncert` entry point."""
    return install_plugin(tmp_path, monkeypatch, "nncert_softsign", "softsign", PLUGIN)


def _model(path):
    """Gemm(3->8) -> Softsign -> Gemm(8->8) -> Relu -> Gemm(8->2), symbolic batch axis, float32."""
    g = np.random.default_rng(0)
    inits, nodes, x = [], [], "x"
    for k, (i, o) in enumerate(((3, 8), (8, 8), (8, 2))):
        inits += [numpy_helper.from_array(g.normal(size=(o, i)).astype(np.float32), f"W{k}"),
                  numpy_helper.from_array(g.normal(size=o).astype(np.float32) * 0.3, f"b{k}")]
        nodes.append(helper.make_node("Gemm", [x, f"W{k}", f"b{k}"], [f"g{k}"], transB=1))
        x = f"g{k}"
        if k < 2:
            act = "Softsign" if k == 0 else "Relu"
            nodes.append(helper.make_node(act, [x], [f"a{k}"]))
            x = f"a{k}"
    graph = helper.make_graph(nodes, "softsign_net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_plugin_op_loads_bounds_soundly_and_reaches_crown(softsign_dist):
    reg = _collect(make_plugin_manager())
    assert reg.op_plugin["softsign"] == "softsign" and reg.onnx_plugin["Softsign"] == "softsign"
    ibp, crown = reg.domain("ibp"), reg.domain("crown")
    assert crown.rule("softsign").__name__ == "crown_rule"
    # CROWN's intermediate bounds come from the registry's interval rules: the plugin's IBP rule reaches them
    assert crown.interval_domain.rule("softsign").__name__ == "ibp_rule"
    path = _model(softsign_dist / "softsign.onnx")
    with use_registry(reg):
        net = load_onnx(path).to(torch.float64)
        assert [n.op for n in net.nodes].count("softsign") == 1
        centre = torch.tensor([[0.3, -0.5, 0.8], [0.0, 0.0, 0.0]], dtype=torch.float64)
        eps = torch.tensor([[0.05], [1.0]], dtype=torch.float64)
        lower, upper = centre - eps, centre + eps
        g = torch.Generator().manual_seed(1)
        for b in range(2):
            x = lower[b] + torch.rand(4000, 3, generator=g, dtype=torch.float64) * (upper[b] - lower[b])
            y_ort = torch.from_numpy(run_onnx(path, x.numpy()))
            y_ir = net.forward(x)
            torch.testing.assert_close(y_ir, y_ort, atol=1e-4, rtol=1e-4)  # the plugin's semantics = onnxruntime's
            for dom in (ibp, crown):
                lo, hi = dom.bounds(net, lower[b:b + 1], upper[b:b + 1])
                slack = 1e-5 * (1 + y_ort.abs())  # onnxruntime computes in float32
                assert (y_ort >= lo - slack).all() and (y_ort <= hi + slack).all(), dom.name
                assert (y_ir >= lo).all() and (y_ir <= hi).all(), dom.name
        # CROWN's linear relaxation of softsign pays off on the narrow box
        assert (crown.bounds(net, lower[:1], upper[:1])[1] <= ibp.bounds(net, lower[:1], upper[:1])[1] + 1e-9).all()


def test_plugin_op_verifies_through_cli(softsign_dist):
    path = _model(softsign_dist / "softsign.onnx")
    reg = _collect(make_plugin_manager())
    with use_registry(reg):
        net = load_onnx(path).to(torch.float64)
        lo, hi = reg.domain("crown").bounds(net, torch.full((1, 3), -0.1, dtype=torch.float64),
                                            torch.full((1, 3), 0.1, dtype=torch.float64))
        y0 = float(net.forward(torch.zeros(1, 3, dtype=torch.float64))[0, 0])
    box = "".join(f"(assert (>= X_{i} -0.1))\n(assert (<= X_{i} 0.1))\n" for i in range(3))
    decl = "".join(f"(declare-const X_{i} Real)\n" for i in range(3)) + "(declare-const Y_0 Real)\n" \
        "(declare-const Y_1 Real)\n"
    specs = {"unsat": f"(assert (>= Y_0 {float(hi[0, 0]) + 0.05!r}))\n",  # above a sound upper bound
             "sat": f"(assert (>= Y_0 {y0 - 1e-3!r}))\n"}                  # reached at the centre
    env = dict(os.environ, PYTHONPATH=str(softsign_dist) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for want, prop in specs.items():
        spec = softsign_dist / f"{want}.vnnlib"
        spec.write_text(decl + box + prop)
        out = subprocess.run([sys.executable, "-m", "nncert.engine.cli", "verify", str(path), str(spec),
                              "--domain", "crown", "--json"], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["verdict"] == want


def test_network_with_plugin_op_is_refused_without_the_plugin(tmp_path):
    from nncert.engine.errors import UnsupportedOp
    from nncert.engine.registry import registry_with
    path = _model(tmp_path / "softsign.onnx")
    with use_registry(registry_with({})), pytest.raises(UnsupportedOp, match="Softsign"):
        load_onnx(path)
