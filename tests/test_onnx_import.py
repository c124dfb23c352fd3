"""ONNX import: the IR computes what onnxruntime computes, on the shared benchmarks, on hand-built models that
exercise each supported op variant, and on torch models exported by `export_onnx`; broken models give one clear
error line naming the file."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from nncert.engine.io.data import shared_dir
from nncert.engine.errors import BadInput, UnsupportedOp
from nncert.engine.io.onnx_import import load_onnx, load_onnx_bytes
from nncert.engine.io.ort import export_onnx, run_onnx, to_onnx_model
from nncert.engine.io.torch_import import Residual, from_torch

torch.set_num_threads(1)
CORPUS = Path(__file__).resolve().parent / "bad_inputs"


def _close(ir_out, ref, tol=1e-5):
    """|ir - ref| <= tol * max(1, |ref|) elementwise (onnxruntime runs in float32)."""
    ir_out, ref = np.asarray(ir_out, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ir_out.shape == ref.shape
    err = np.abs(ir_out - ref) / np.maximum(1.0, np.abs(ref))
    assert err.max(initial=0.0) <= tol, f"max relative error {err.max():.3g}"


def _parity(net, x: np.ndarray, tol=1e-5):
    """IR forward in float64 and float32 equals onnxruntime on inputs x [N, *input_shape]."""
    ref = run_onnx(net, x)
    xt = torch.from_numpy(x.astype(np.float32))  # what onnxruntime sees
    _close(net.forward_flat(xt.double()).numpy(), ref, tol)
    _close(net.to(torch.float32).forward_flat(xt).numpy(), ref, tol)
    return ref


# -- shared benchmarks ---------------------------------------------------------------------------------------------
def _shared_models():
    s = shared_dir()
    return sorted((s / "benchmarks").glob("*/onnx/*.onnx")) if s is not None else []


def _boxes(path: Path):
    """Input boxes recorded for this network in shared/reference/auto_lirpa (lower_in, upper_in), if any."""
    ref = shared_dir() / "reference" / "auto_lirpa" / f"{path.parents[1].name}.json"
    if not ref.exists():
        return []
    rel = f"onnx/{path.name}"
    return [(np.array(r["lower_in"]), np.array(r["upper_in"])) for r in json.loads(ref.read_text())["records"]
            if r["onnx"] == rel]


@pytest.mark.parametrize("path", _shared_models() or [None], ids=lambda p: p.name if p else "none")
def test_shared_benchmarks_match_onnxruntime(path):
    if path is None:
        pytest.skip("../shared is absent: no benchmark ONNX models")
    net = load_onnx(path)
    assert net.source == str(path) and net.onnx_bytes == path.read_bytes()
    rng = np.random.default_rng(0)
    boxes = _boxes(path)
    for lo, hi in boxes[:3]:  # the network's own input domain (spec boxes): float32 rounding stays tiny
        x = np.concatenate([lo + (hi - lo) * rng.random((32, net.n_inputs)), np.stack([lo, hi])])
        _parity(net, x.reshape(-1, *net.input_shape), tol=1e-5)
    # randn lies far outside ACAS Xu's normalised box and MNIST's [0, 1]: hidden activations grow and
    # onnxruntime's float32 sums round more (measured worst 3.7e-5 relative over 1000 samples on all 48 nets).
    _parity(net, rng.standard_normal((8, *net.input_shape)), tol=1e-4)


def _counterexamples():
    s = shared_dir()
    return sorted((s / "benchmarks").glob("*/own_counterexamples/*.counterexample")) if s is not None else []


def test_run_onnx_reproduces_shared_counterexamples():
    """The shared counterexample files record X and the Y onnxruntime computed: run_onnx gives the same Y and the
    float64 IR agrees to float32 rounding."""
    import re

    files = _counterexamples()
    if not files:
        pytest.skip("../shared is absent: no counterexample files")
    nets = {}
    for f in files:
        text = f.read_text()
        x = np.array([float(v) for v in re.findall(r"\(X_\d+\s+([^\s)]+)\)", text)])
        y = np.array([float(v) for v in re.findall(r"\(Y_\d+\s+([^\s)]+)\)", text)])
        onnx_path = f.parents[1] / "onnx" / (f.name.split("__")[0] + ".onnx")
        if onnx_path not in nets:
            nets[onnx_path] = load_onnx(onnx_path)
        net = nets[onnx_path]
        np.testing.assert_allclose(run_onnx(net, x)[0], y, rtol=0, atol=1e-6, err_msg=f.name)
        _close(net.forward_flat(torch.from_numpy(x[None])).numpy()[0], y)


def test_benchmark_layouts():
    s = shared_dir()
    if s is None or not _shared_models():
        pytest.skip("../shared is absent: no benchmarks")
    acas = load_onnx(s / "benchmarks/acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx")
    assert acas.input_shape == (1, 1, 5) and acas.output_shape == (5,)
    assert acas.input_name == "input"  # the initializers listed among the graph inputs are constants
    assert [n.op for n in acas.nodes].count("linear") == 7 and all("b" in n.params for n in acas.nodes
                                                                   if n.op == "linear")
    mnist = load_onnx(s / "benchmarks/mnist_fc/onnx/mnist-net_256x2.onnx")
    assert mnist.input_shape == (784, 1) and mnist.output_shape == (10,)


# -- hand-built models -----------------------------------------------------------------------------------------------
F = TensorProto.FLOAT


def _w(name, a, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(a, dtype=dtype), name)


def _build(nodes, in_shape, out_shape, inits=(), opset=13, batch="N"):
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", F, [batch, *in_shape])],
                          [helper.make_tensor_value_info("y", F, [batch, *out_shape])], initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(m)
    return m.SerializeToString()


def _check(data: bytes, n=6, seed=0, ops=None):
    net = load_onnx_bytes(data, "model.onnx")
    x = np.random.default_rng(seed).standard_normal((n, *net.input_shape))
    _parity(net, x)
    if ops is not None:
        assert net.ops() == set(ops), net
    return net


R = np.random.default_rng(1)


def test_gemm_variants():
    W = R.standard_normal((4, 6))
    nodes = [helper.make_node("Gemm", ["x", "W", "C"], ["h"], alpha=0.5, beta=2.0, transB=0),
             helper.make_node("Gemm", ["h", "W2"], ["y"], transB=1)]
    _check(_build(nodes, [4], [3], [_w("W", W), _w("C", R.standard_normal((1, 6))), _w("W2", R.standard_normal((3, 6)))]),
           ops={"linear"})


def test_matmul_constant_either_side():
    # mnist_fc-style column input [B, 4, 1]: C @ x, then flatten
    nodes = [helper.make_node("MatMul", ["C", "x"], ["h"]), helper.make_node("Flatten", ["h"], ["f"]),
             helper.make_node("Relu", ["f"], ["g"]), helper.make_node("MatMul", ["g", "W"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["y"])]
    net = _check(_build(nodes, [4, 1], [2], [_w("C", R.standard_normal((3, 4))), _w("W", R.standard_normal((3, 2))),
                                             _w("b", R.standard_normal(2))]))
    assert net.nodes[-1].op == "linear" and "b" in net.nodes[-1].params  # Add folded into the bias
    # x @ W on a rank-3 input acts on the last axis; x @ w with w 1-D drops it
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("MatMul", ["h", "v"], ["y"])]
    _check(_build(nodes, [2, 5], [2], [_w("W", R.standard_normal((5, 3))), _w("v", R.standard_normal(3))]))


def test_arithmetic_with_constants_and_residuals():
    c = R.uniform(0.5, 2.0, (1, 2, 1, 1))
    nodes = [helper.make_node("Sub", ["x", "mean"], ["a"]), helper.make_node("Div", ["a", "std"], ["b"]),
             helper.make_node("Mul", ["b", "k"], ["c"]), helper.make_node("Sub", ["one", "c"], ["d"]),
             helper.make_node("Add", ["d", "b"], ["e"]), helper.make_node("Sub", ["e", "c"], ["f"]),
             helper.make_node("Add", ["f", "s"], ["y"])]
    net = _check(_build(nodes, [2, 3, 3], [2, 3, 3],
                        [_w("mean", R.standard_normal((2, 1, 1))), _w("std", c), _w("k", R.standard_normal((3,))),
                         _w("one", np.ones(())), _w("s", np.array([0.25]))]))
    assert net.ops() == {"affine", "add", "sub"}


def test_conv_padding_modes():
    W = R.standard_normal((4, 2, 3, 3))
    for kw in (dict(pads=[1, 0, 2, 1], strides=[2, 1]), dict(auto_pad="SAME_UPPER", strides=[2, 2]),
               dict(auto_pad="SAME_LOWER", strides=[2, 2]), dict(auto_pad="VALID", dilations=[2, 1]),
               dict(group=2, pads=[1, 1, 1, 1])):
        w = W[:, :1] if kw.get("group") == 2 else W
        node = helper.make_node("Conv", ["x", "W", "B"], ["c"], **kw)
        g = helper.make_graph([node, helper.make_node("Tanh", ["c"], ["y"])], "t",
                              [helper.make_tensor_value_info("x", F, ["N", 2, 6, 7])],
                              [helper.make_tensor_value_info("y", F, ["N", "c", "h", "w"])],  # sizes left open
                              initializer=[_w("W", w), _w("B", R.standard_normal(4))])
        data = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8).SerializeToString()
        net = _check(data, ops={"conv2d", "tanh"})
        assert net.nodes[0].attrs["groups"] == kw.get("group", 1)


def test_pad_clip_neg():
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"]),
             helper.make_node("Conv", ["p", "W"], ["c"], strides=[2, 2]),
             helper.make_node("Clip", ["c", "zero"], ["r"]),
             helper.make_node("Neg", ["r"], ["y"])]
    inits = [_w("pads", [0, 0, 1, 2, 0, 0, 2, 0], np.int64), _w("W", R.standard_normal((3, 2, 3, 3))),
             _w("zero", np.zeros(()))]
    net = _check(_build(nodes, [2, 5, 6], [3, 3, 3], inits))
    assert net.nodes[0].op == "conv2d" and net.nodes[0].attrs["pads"] == (1, 2, 2, 0)
    bad = _build([helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect")], [2, 3, 3], [2, 4, 5],
                 [_w("pads", [0, 0, 0, 1, 0, 0, 1, 1], np.int64)])
    with pytest.raises(UnsupportedOp, match="mode='reflect'"):
        load_onnx_bytes(bad, "pad.onnx")


def test_transpose_reshape_or_permute():
    """A transpose moving only size-1 axes is a reshape; one that reorders data the transpose op; moving the batch
    axis is refused."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]), helper.make_node("Relu", ["t"], ["y"])]
    net = _check(_build(nodes, [1, 1, 5], [5, 1, 1]), ops={"reshape", "relu"})
    assert net.output_shape == (5, 1, 1)
    net = _check(_build([helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 1])], [2, 3], [3, 2]),
                 ops={"transpose"})



def test_batchnorm_pools_and_shape_chain():
    """BatchNorm, pools (with padding, ceil_mode that changes nothing, global), and torch's Shape/Gather/
    Unsqueeze/Concat/Reshape flatten idiom (constant-folded), with Constant, Identity and Dropout in between."""
    C = 3
    bn = [_w("g", R.uniform(0.5, 2, C)), _w("bb", R.standard_normal(C)), _w("m", R.standard_normal(C)),
          _w("v", R.uniform(0.5, 2, C))]
    nodes = [
        helper.make_node("BatchNormalization", ["x", "g", "bb", "m", "v"], ["bn"], epsilon=1e-3),
        helper.make_node("Dropout", ["bn"], ["dr"]),
        helper.make_node("LeakyRelu", ["dr"], ["lr"], alpha=0.2),
        helper.make_node("AveragePool", ["lr"], ["ap"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                         count_include_pad=1, ceil_mode=1),
        helper.make_node("MaxPool", ["ap"], ["mp"], kernel_shape=[2, 2], pads=[0, 0, 1, 1], strides=[1, 1]),
        helper.make_node("Identity", ["mp"], ["id"]),
        helper.make_node("Shape", ["id"], ["shp"]),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Gather", ["shp", "zero"], ["bdim"], axis=0),
        helper.make_node("Unsqueeze", ["bdim", "ax0"], ["bdim1"]),
        helper.make_node("Concat", ["bdim1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["id", "target"], ["flat"]),
        helper.make_node("Sigmoid", ["flat"], ["s"]),
        helper.make_node("Reshape", ["s", "back"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["gp"]),
        helper.make_node("Squeeze", ["gp", "axes23"], ["sq"]),
        helper.make_node("Unsqueeze", ["sq", "ax2"], ["y"]),
    ]
    inits = bn + [_w("ax0", [0], np.int64), _w("minus1", [-1], np.int64), _w("back", [0, C, -1, 3], np.int64),
                  _w("axes23", [2, 3], np.int64), _w("ax2", [2], np.int64)]
    net = _check(_build(nodes, [C, 5, 5], [C, 1], inits))
    assert net.ops() == {"affine", "leaky_relu", "avgpool2d", "maxpool2d", "reshape", "sigmoid"}
    # the same with a fixed batch of 1 (onnxruntime is then called once per sample)
    _check(_build(nodes, [C, 5, 5], [C, 1], inits, batch=1))


def test_old_opset_attributes():
    """Opset 9: Unsqueeze/Squeeze axes as attributes, BatchNormalization without training_mode."""
    nodes = [helper.make_node("Unsqueeze", ["x"], ["u"], axes=[1]), helper.make_node("Squeeze", ["u"], ["q"], axes=[1]),
             helper.make_node("Flatten", ["q"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "W", "b"], ["y"], transB=1)]
    _check(_build(nodes, [1, 4], [2], [_w("W", R.standard_normal((2, 4))), _w("b", R.standard_normal(2))], opset=9),
           ops={"reshape", "linear"})


def test_legacy_broadcast_and_initializer_inputs():
    """Opset 6 Add with broadcast=1, axis=1 aligns the constant with the channel axis (checked against numpy:
    onnxruntime no longer implements Add-6); an IR 8 initializer also listed as a graph input is a constant."""
    b = np.array([1.0, -2.0, 3.0], np.float32)
    g = helper.make_graph([helper.make_node("Add", ["x", "b"], ["y"], broadcast=1, axis=1)], "t",
                          [helper.make_tensor_value_info("x", F, [1, 3, 2, 2]), helper.make_tensor_value_info("b", F, [3])],
                          [helper.make_tensor_value_info("y", F, [1, 3, 2, 2])], [_w("b", b)])
    net = load_onnx_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 6)], ir_version=3)
                          .SerializeToString(), "legacy.onnx")
    x = np.random.default_rng(0).standard_normal((2, 3, 2, 2))
    np.testing.assert_allclose(net(torch.from_numpy(x)).numpy(), x + b.reshape(3, 1, 1))
    g = helper.make_graph([helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])], "t",
                          [helper.make_tensor_value_info("x", F, ["N", 3, 2]), helper.make_tensor_value_info("s", F, [3, 1]),
                           helper.make_tensor_value_info("b", F, [2])],
                          [helper.make_tensor_value_info("y", F, ["N", 3, 2])],
                          [_w("s", R.standard_normal((3, 1))), _w("b", R.standard_normal(2))])
    net = _check(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8).SerializeToString())
    assert net.input_name == "x" and [n.op for n in net.nodes] == ["affine"]  # Mul and Add merged exactly


def test_constant_node_with_nan_is_named():
    c = helper.make_node("Constant", [], ["k"], name="const_k", value=numpy_helper.from_array(np.array([np.nan], np.float32)))
    data = _build([c, helper.make_node("Mul", ["x", "k"], ["y"])], [3], [3])
    with pytest.raises(BadInput, match="constant 'k' .*NaN or Inf"):
        load_onnx_bytes(data, "m.onnx")


def test_identity_network_and_output_shape_check():
    net = _check(_build([helper.make_node("Identity", ["x"], ["y"])], [3], [3]))
    assert [n.op for n in net.nodes] == ["reshape"]
    # a side branch the output does not depend on is dropped, unsupported ops in it included
    net = _check(_build([helper.make_node("Softmax", ["x"], ["dead"]), helper.make_node("Relu", ["x"], ["y"])], [3], [3]))
    assert [n.op for n in net.nodes] == ["relu"]
    with pytest.raises(BadInput, match="declared as"):
        load_onnx_bytes(_build([helper.make_node("Relu", ["x"], ["y"])], [3], [4]), "m.onnx")


def test_unsupported_op_message_names_op_node_and_file(tmp_path):
    p = tmp_path / "model.onnx"
    p.write_bytes(_build([helper.make_node("Erf", ["x"], ["y"], name="erf_3")], [3], [3]))
    with pytest.raises(UnsupportedOp) as e:
        load_onnx(p)
    assert str(e.value) == f"{p}: op 'Erf' (node 'erf_3') is not supported"


# -- export round trips ------------------------------------------------------------------------------------------
def _models():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2.0), bn.weight.normal_(), bn.bias.normal_()
    return [
        ("conv_bn_pools", (2, 9, 9), nn.Sequential(
            nn.Conv2d(2, 4, 3, stride=2, padding=1), bn, nn.ReLU(), nn.AvgPool2d(2, padding=1), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(4, 3))),
        ("residual_sigmoid_tanh", (6,), nn.Sequential(
            nn.Linear(6, 8), nn.Tanh(), Residual(nn.Sequential(nn.Linear(8, 8), nn.Sigmoid())), nn.LeakyReLU(0.1),
            nn.Linear(8, 2))),
        ("reshape_grouped_conv", (16,), nn.Sequential(
            nn.Unflatten(1, (4, 2, 2)), nn.Conv2d(4, 4, 2, groups=2, padding=1, dilation=2), nn.ReLU(),
            nn.Flatten(), nn.Linear(16, 3))),
    ]


@pytest.mark.parametrize("batch", [None, 1])
@pytest.mark.parametrize("name,shape,module", _models(), ids=[m[0] for m in _models()])
def test_export_roundtrip(tmp_path, name, shape, module, batch):
    module.eval()
    p = export_onnx(module, shape, tmp_path / f"{name}.onnx", batch_size=batch)
    net = load_onnx(p)
    assert net.input_shape == shape
    x = np.random.default_rng(3).standard_normal((5, *shape)).astype(np.float32)
    ref = _parity(net, x)
    with torch.no_grad():
        _close(module(torch.from_numpy(x)).reshape(5, -1).numpy(), ref)
    # IR -> ONNX -> IR keeps the op sequence of the torch import
    assert [n.op for n in net.nodes if n.op != "affine"] == [n.op for n in from_torch(module, shape).nodes
                                                              if n.op != "affine"]


def _random_module(seed):
    """A random small conv or MLP stack with random activations, pools, batchnorm and residual blocks."""
    g = torch.Generator().manual_seed(seed)
    pick = lambda opts: opts[int(torch.randint(len(opts), (1,), generator=g))]  # noqa: E731
    acts = [nn.ReLU, nn.Sigmoid, nn.Tanh, lambda: nn.LeakyReLU(0.05)]
    torch.manual_seed(seed)
    layers, c, hw = [], 2, 8
    for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
        k, pad, dil = pick([1, 2, 3]), pick([0, 1]), pick([1, 2])
        if dil * (k - 1) + 1 > hw + 2 * pad:
            k, dil = 1, 1
        conv = nn.Conv2d(c, 4, k, stride=pick([1, 2]), padding=pad, dilation=dil)
        layers.append(conv)
        hw = (hw + 2 * conv.padding[0] - conv.dilation[0] * (k - 1) - 1) // conv.stride[0] + 1
        c = 4
        if pick([True, False]):
            bn = nn.BatchNorm2d(c)
            with torch.no_grad():
                bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2.0)
            layers.append(bn)
        layers.append(pick(acts)())
        if pick([True, False]):
            layers.append(Residual(nn.Sequential(nn.Conv2d(c, c, 3, padding=1), pick(acts)())))
        if hw >= 4 and pick([True, False]):
            layers.append(pick([nn.MaxPool2d(2), nn.AvgPool2d(3, stride=2, padding=1)]))
            hw = hw // 2 if isinstance(layers[-1], nn.MaxPool2d) else (hw + 2 - 3) // 2 + 1
    layers += [nn.Flatten(), nn.Linear(c * hw * hw, 6), pick(acts)(), nn.Linear(6, 3)]
    return nn.Sequential(*layers).eval()


@pytest.mark.parametrize("seed", range(8))
def test_random_models_roundtrip(tmp_path, seed):
    module = _random_module(seed)
    net = load_onnx(export_onnx(module, (2, 8, 8), tmp_path / "m.onnx"))
    x = np.random.default_rng(seed).standard_normal((4, 2, 8, 8)).astype(np.float32)
    ref = _parity(net, x)
    with torch.no_grad():
        _close(module(torch.from_numpy(x)).numpy(), ref)


# -- run_onnx ------------------------------------------------------------------------------------------------------
def test_run_onnx_input_forms_and_errors(tmp_path):
    net = from_torch(nn.Sequential(nn.Flatten(), nn.Linear(6, 2)), (2, 3))
    data = to_onnx_model(net).SerializeToString()
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    ref = net.forward_flat(torch.from_numpy(x).float().double()).numpy()
    _close(run_onnx(data, x), ref)
    _close(run_onnx(data, x.reshape(4, 6)), ref)
    _close(run_onnx(data, torch.from_numpy(x[0])), ref[:1])
    assert run_onnx(data, x[:0]).shape == (0, 2)
    with pytest.raises(BadInput, match="do not fit"):
        run_onnx(data, np.zeros((4, 5)))
    with pytest.raises(BadInput, match="not imported from ONNX"):
        run_onnx(net, x)
    # a model labelled with an IR version newer than onnxruntime accepts is still run
    m = to_onnx_model(net)
    m.ir_version = 14
    _close(run_onnx(m.SerializeToString(), x), ref)


# -- broken models ---------------------------------------------------------------------------------------------------
def _corpus():
    spec = importlib.util.spec_from_file_location("make_onnx_corpus", CORPUS / "make_onnx_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.CASES


@pytest.mark.parametrize("name,fragment", [(k, v[1]) for k, v in _corpus().items()])
def test_broken_model_corpus(name, fragment):
    p = CORPUS / name
    assert p.exists(), f"{p} missing: run python tests/bad_inputs/make_onnx_corpus.py"
    with pytest.raises(BadInput) as e:
        load_onnx(p)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(p) + ": ") and fragment in msg, msg


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(BadInput, match="nothere.onnx: file not found"):
        load_onnx(tmp_path / "nothere.onnx")
    with pytest.raises(BadInput, match="directory"):
        load_onnx(tmp_path)
