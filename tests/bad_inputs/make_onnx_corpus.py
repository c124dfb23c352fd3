"""Write the ONNX part of the broken-input corpus: tiny models (ours, built with onnx.helper), each broken in one way.

Run `python tests/bad_inputs/make_onnx_corpus.py` to (re)write the files next to this script. `CASES` maps each
file name to a fragment the one-line error of `nncert.engine.io.onnx_import.load_onnx` must contain (the file name
itself must appear too); tests/test_onnx_import.py checks both.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset=13):
    g = helper.make_graph(nodes, "broken", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8, producer_name="nncert")


def _vi(name, shape, t=F):
    return helper.make_tensor_value_info(name, t, shape)


def _w(name, a):
    return numpy_helper.from_array(np.asarray(a, dtype=np.float32), name)


def _fc(w=None, b=None, in_t=F, in_shape=(1, 3)):
    """x [1,3] -> Gemm(W [2,3], b [2]) -> y [1,2]."""
    w = np.arange(6, dtype=np.float32).reshape(2, 3) / 10 if w is None else w
    b = np.zeros(2, np.float32) if b is None else b
    return _model([helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["y"], transB=1, name="fc1")],
                  [_vi("x", list(in_shape), in_t)], [_vi("y", [1, 2])], [_w("fc1.weight", w), _w("fc1.bias", b)])


def _erf():
    m = _fc()
    g = m.graph
    g.node[0].output[0] = "h"
    g.node.append(helper.make_node("Erf", ["h"], ["y"], name="erf_3"))
    return m


def _unary(op, in_shape, out_shape, **attrs):
    return _model([helper.make_node(op, ["x"], ["y"], name=f"{op.lower()}_0", **attrs)],
                  [_vi("x", in_shape)], [_vi("y", out_shape)])


def _nan():
    w = np.ones((2, 3), np.float32)
    w[1, 2] = np.nan
    return _fc(w=w)


def _two_inputs():
    return _model([helper.make_node("Add", ["a", "b"], ["y"], name="add")],
                  [_vi("a", [1, 3]), _vi("b", [1, 3])], [_vi("y", [1, 3])])


def _two_outputs():
    return _model([helper.make_node("Relu", ["x"], ["y"], name="r"), helper.make_node("Sigmoid", ["x"], ["z"], name="s")],
                  [_vi("x", [1, 3])], [_vi("y", [1, 3]), _vi("z", [1, 3])])


def _gemm_transA():
    return _model([helper.make_node("Gemm", ["x", "W"], ["y"], transA=1, name="gemm_t")],
                  [_vi("x", [3, 1])], [_vi("y", [1, 2])], [_w("W", np.ones((3, 2)))])


def _conv3d():
    return _model([helper.make_node("Conv", ["x", "W"], ["y"], name="conv3d")],
                  [_vi("x", [1, 1, 3, 3, 3])], [_vi("y", [1, 1, 2, 2, 2])], [_w("W", np.ones((1, 1, 2, 2, 2)))])


def _div_by_var():
    return _model([helper.make_node("Div", ["c", "x"], ["y"], name="inv")],
                  [_vi("x", [1, 3])], [_vi("y", [1, 3])], [_w("c", np.ones(3))])


def _undefined():
    return _model([helper.make_node("Relu", ["nowhere"], ["y"], name="r")], [_vi("x", [1, 3])], [_vi("y", [1, 3])])


def _reshape_batch():
    shape = numpy_helper.from_array(np.array([2, 2], np.int64), "shape")
    return _model([helper.make_node("Reshape", ["x", "shape"], ["y"], name="mix")],
                  [_vi("x", ["N", 4])], [_vi("y", [2, 2])], [shape])


def _bn_training():
    c = [_w(n, v) for n, v in (("g", [1.0]), ("b", [0.0]), ("m", [0.0]), ("v", [1.0]))]
    return _model([helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"], name="bn",
                                    training_mode=1)],
                  [_vi("x", [1, 1, 2, 2])], [_vi("y", [1, 1, 2, 2])], c, opset=15)


def _external_data():
    m = _fc()
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", "missing_weights.bin"
    return m


def _custom_domain():
    m = _model([helper.make_node("MyOp", ["x"], ["y"], domain="com.example", name="custom")],
               [_vi("x", [1, 3])], [_vi("y", [1, 3])])
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    return m


def _truncated() -> bytes:
    w = np.linspace(-1, 1, 64 * 32, dtype=np.float32).reshape(32, 64)
    m = _model([helper.make_node("Gemm", ["x", "W"], ["y"], transB=1, name="fc")],
               [_vi("x", [1, 64])], [_vi("y", [1, 32])], [_w("W", w)])
    data = m.SerializeToString()
    return data[: len(data) // 2]


def _no_graph() -> bytes:
    return onnx.ModelProto(ir_version=8, producer_name="nncert").SerializeToString()


CASES: dict[str, tuple] = {
    # file name: (builder returning a ModelProto or bytes, fragment the error message must contain)
    "onnx_empty.onnx": (lambda: b"", "empty file"),
    "onnx_text.onnx": (lambda: b"this is a text file, not a neural network\n", "not an ONNX model"),
    "onnx_truncated.onnx": (_truncated, "truncated"),
    "onnx_no_graph.onnx": (_no_graph, "no graph"),
    "onnx_erf.onnx": (_erf, "op 'Erf' (node 'erf_3') is not supported"),
    "onnx_nan_weight.onnx": (_nan, "initializer 'fc1.weight' contains NaN or Inf"),
    "onnx_inf_bias.onnx": (lambda: _fc(b=np.array([0, np.inf], np.float32)), "initializer 'fc1.bias' contains NaN or Inf"),
    "onnx_int_input.onnx": (lambda: _fc(in_t=TensorProto.INT64), "only float inputs"),
    "onnx_dynamic_dim.onnx": (lambda: _unary("Relu", ["N", "width"], ["N", "width"]), "dimension 1 is dynamic"),
    "onnx_two_inputs.onnx": (_two_inputs, "exactly one is supported"),
    "onnx_two_outputs.onnx": (_two_outputs, "2 outputs"),
    "onnx_gemm_transA.onnx": (_gemm_transA, "transA=1"),
    "onnx_avgpool_exclude_pad.onnx": (lambda: _unary("AveragePool", [1, 1, 4, 4], [1, 1, 5, 5], kernel_shape=[2, 2],
                                                     pads=[1, 1, 1, 1]), "count_include_pad=0"),
    "onnx_maxpool_dilation.onnx": (lambda: _unary("MaxPool", [1, 1, 5, 5], [1, 1, 3, 3], kernel_shape=[2, 2],
                                                  dilations=[2, 2]), "dilations"),
    "onnx_conv3d.onnx": (_conv3d, "only 1-D and 2-D"),
    "onnx_div_by_var.onnx": (_div_by_var, "dividing a constant by a non-constant input"),
    "onnx_undefined_value.onnx": (_undefined, "invalid ONNX model"),
    "onnx_reshape_batch.onnx": (_reshape_batch, "does not keep the leading batch axis"),
    "onnx_flatten_axis0.onnx": (lambda: _unary("Flatten", ["N", 2, 2], [1, 4], axis=0), "merges the batch axis"),
    "onnx_leaky_alpha.onnx": (lambda: _unary("LeakyRelu", [1, 3], [1, 3], alpha=2.0), "alpha must be in [0, 1]"),
    "onnx_bn_training.onnx": (_bn_training, "training mode"),
    "onnx_external_data.onnx": (_external_data, "missing_weights.bin"),
    "onnx_custom_domain.onnx": (_custom_domain, "op 'MyOp' (node 'custom') from domain 'com.example'"),
}


def build(name: str) -> bytes:
    m = CASES[name][0]()
    return m if isinstance(m, bytes) else m.SerializeToString()


def main(folder: Path = HERE) -> None:
    for name in CASES:
        (folder / name).write_bytes(build(name))
    print(f"wrote {len(CASES)} files to {folder}")


if __name__ == "__main__":
    main()
