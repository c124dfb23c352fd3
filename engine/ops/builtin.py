"""nncert's own ops, registered through the same hook as a plugin's (`nncert_register_ops`)."""
from __future__ import annotations

from ..hookspecs import hookimpl
from ..io.onnx_import import OnnxContext as X
from . import OpDef
from . import core, nonlinear as nl, tensor as tn

LIN, MONO, ELEM = "linear", "monotone", "elementwise"

BUILTIN_OPS = (
    OpDef("linear", core.linear, {LIN}, {"Gemm": X.op_Gemm, "MatMul": X.op_MatMul}, abs_forward=core.linear_abs),
    OpDef("conv2d", core.conv2d, {LIN}, {"Conv": X.op_Conv}, abs_forward=core.conv2d_abs),
    OpDef("affine", core.affine, {LIN}, {"BatchNormalization": X.op_BatchNormalization, "Neg": X.op_Neg,
                                         "Mul": X.op_Mul, "Div": X.op_Div}, abs_forward=core.affine_abs),
    OpDef("add", core.add, {LIN, MONO}, {"Add": X.op_Add}),
    OpDef("sub", core.sub, {LIN}, {"Sub": X.op_Sub}),
    OpDef("relu", core.relu, {ELEM, MONO}, {"Relu": X.op_Relu}),
    OpDef("sigmoid", core.sigmoid, {ELEM, MONO}, {"Sigmoid": X.op_Sigmoid}),
    OpDef("tanh", core.tanh, {ELEM, MONO}, {"Tanh": X.op_Tanh}),
    OpDef("leaky_relu", core.leaky_relu, {ELEM, MONO}, {"LeakyRelu": X.op_LeakyRelu}),
    OpDef("reshape", core.reshape, {LIN, MONO}, {
        "Reshape": X.op_Reshape, "Flatten": X.op_Flatten, "Squeeze": X.op_Squeeze, "Unsqueeze": X.op_Unsqueeze,
        "Identity": X.op_Identity, "Dropout": X.op_Dropout, "Cast": X.op_Cast}),
    OpDef("avgpool2d", core.avgpool2d, {LIN, MONO}, {"AveragePool": X.op_AveragePool,
                                                     "GlobalAveragePool": X.op_GlobalAveragePool}),
    OpDef("maxpool2d", core.maxpool2d, {MONO}, {"MaxPool": X.op_MaxPool, "GlobalMaxPool": X.op_GlobalMaxPool}),
    OpDef("select", tn.select, {LIN, MONO}, {"Slice": tn.import_slice, "Split": tn.import_split,
                                             "Gather": tn.import_gather, "Resize": tn.import_resize}),
    OpDef("concat", tn.concat, {LIN, MONO}, {"Concat": tn.import_concat}),
    OpDef("transpose", tn.transpose, {LIN, MONO}, {"Transpose": tn.import_transpose}),
    OpDef("pad", tn.pad, {LIN, MONO}, {"Pad": X.op_Pad}, abs_forward=tn.pad_abs),
    OpDef("conv_transpose2d", tn.conv_transpose2d, {LIN}, {"ConvTranspose": tn.import_conv_transpose},
          abs_forward=tn.conv_transpose2d_abs),
    OpDef("reduce_sum", tn.reduce_sum, {LIN, MONO}, {"ReduceSum": tn.import_reduce_sum}),
    OpDef("reduce_mean", tn.reduce_mean, {LIN, MONO}, {"ReduceMean": tn.import_reduce_mean}),
    OpDef("mul", nl.mul, (), {"LayerNormalization": nl.import_layer_norm}),
    OpDef("matmul", nl.matmul, (), {}),
    OpDef("pow", nl.pow_, {ELEM}, {"Pow": nl.import_pow, "Sqrt": nl.import_sqrt, "Reciprocal": nl.import_reciprocal},
          derivative=nl.pow_derivative, curvature=nl.pow_curvature),
    OpDef("exp", nl.exp, {ELEM, MONO}, {"Exp": nl.import_exp}, derivative=nl.exp_derivative, curvature=1),
    OpDef("log", nl.log, {ELEM, MONO}, {"Log": nl.import_log}, derivative=nl.log_derivative, curvature=-1),
    OpDef("sin", nl.sin, {ELEM}, {"Sin": nl.import_sin}),
    OpDef("cos", nl.cos, {ELEM}, {"Cos": nl.import_cos}),
    OpDef("sign", nl.sign, {ELEM, MONO}, {"Sign": nl.import_sign}),
    OpDef("clip", nl.clip, {ELEM, MONO}, {"Clip": nl.import_clip}),
    OpDef("softmax", nl.softmax, (), {"Softmax": nl.import_softmax}),
)


@hookimpl
def nncert_register_ops(register):
    for op in BUILTIN_OPS:
        register(op)
