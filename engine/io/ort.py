"""onnxruntime helpers: re-run the original ONNX model (to re-check counterexamples) and export models to ONNX.

`run_onnx` evaluates a model exactly as onnxruntime (CPU provider, one thread) computes it, in the model's own
input precision; `verify` uses it so that a `sat` verdict rests on the real network, not on the IR.
`export_onnx` / `to_onnx_model` write IR networks (or torch modules via `from_torch`) as ONNX models that
onnxruntime 1.31 loads (IR version 8, opset 13).
"""
from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from ..errors import BadInput
from ..ir import Network

_CACHE: "OrderedDict[str, _Session]" = OrderedDict()
_CACHE_SIZE = 16
_CHUNK = 4096  # samples per onnxruntime call when the batch axis is dynamic


class _Session:
    """An onnxruntime session with the facts needed to feed it."""

    def __init__(self, data: bytes, source: str | None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.log_severity_level = 3
        try:
            self.sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            if "IR version" not in str(e):
                raise BadInput(f"onnxruntime cannot load the model: {str(e).strip().splitlines()[0]}", source) from None
            # A newer IR version than this onnxruntime accepts: the graph itself is usually fine, so relabel it.
            import onnx

            m = onnx.load_model_from_string(data)
            m.ir_version = 10
            try:
                self.sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            except Exception as e2:
                raise BadInput(f"onnxruntime cannot load the model: {str(e2).strip().splitlines()[0]}",
                               source) from None
        consts = {i.name for i in self.sess.get_overridable_initializers()} \
            if hasattr(self.sess, "get_overridable_initializers") else set()
        inputs = [i for i in self.sess.get_inputs() if i.name not in consts]
        if len(inputs) != 1:
            raise BadInput(f"model has {len(inputs)} inputs; exactly one is supported", source)
        i = inputs[0]
        self.input_name = i.name
        self.dtype = np.float64 if i.type == "tensor(double)" else np.float16 if i.type == "tensor(float16)" \
            else np.float32
        dims = list(i.shape)
        # Unbatched models (a rank-1 input, or a fixed first axis > 1, as engine/io/onnx_import reads them) take one
        # sample of the full input shape per run.
        self.unbatched = len(dims) == 1 or (isinstance(dims[0], int) and dims[0] > 1)
        rest = dims if self.unbatched else dims[1:]
        if not dims or not all(isinstance(d, int) and d > 0 for d in rest):
            raise BadInput(f"input {i.name!r} has shape {dims}; fixed sizes after the batch axis are required", source)
        self.sample_shape = tuple(int(d) for d in rest)
        self.batch = None if self.unbatched else dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
        self.output_name = self.sess.get_outputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        """x [N, *sample_shape] -> flat float64 outputs [N, n_outputs]."""
        n = x.shape[0]
        step = 1 if self.unbatched else self.batch or _CHUNK
        outs = []
        for s in range(0, n, step):
            xb = x[s:s + step]
            m = xb.shape[0]
            if self.batch is not None and m < self.batch:  # fixed batch: pad the last chunk with copies
                xb = np.concatenate([xb, np.repeat(xb[-1:], self.batch - m, axis=0)])
            feed = xb[0] if self.unbatched else xb
            y = self.sess.run([self.output_name], {self.input_name: np.ascontiguousarray(feed, dtype=self.dtype)})[0]
            outs.append(np.asarray(y, dtype=np.float64).reshape(xb.shape[0], -1)[:m])
        if not outs:
            y = self.run(np.zeros((1, *self.sample_shape)))
            return y[:0]
        return np.concatenate(outs)


_LAST: list = [None, None]  # (bytes object, session): skips hashing when the same model is run repeatedly


def _session(data: bytes, source: str | None) -> _Session:
    if _LAST[0] is data:
        return _LAST[1]
    key = hashlib.sha256(data).hexdigest()
    s = _CACHE.get(key)
    if s is None:
        s = _Session(data, source)
        _CACHE[key] = s
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    _LAST[:] = [data, s]
    return s


def run_onnx(model: Network | bytes | str | Path, x) -> np.ndarray:
    """Outputs of the original ONNX model under onnxruntime, flat float64 [N, n_outputs].

    model: an imported Network (its `onnx_bytes`), the model bytes, or a path. x: flat [N, n_inputs], shaped
    [N, *sample_shape], or one sample (flat or shaped); numpy or torch. Inputs are cast to the model's input type
    (float32 for almost all models) before running, exactly as a deployed model would see them.
    """
    source = None
    if isinstance(model, Network):
        source = model.source
        if model.onnx_bytes is None:
            raise BadInput("network was not imported from ONNX: no model for onnxruntime", source)
        data = model.onnx_bytes
    elif isinstance(model, (bytes, bytearray)):
        data = bytes(model)
    else:
        source = str(model)
        try:
            data = Path(model).read_bytes()
        except OSError as e:
            raise BadInput(f"cannot read model: {e.strerror or e}", source) from None
    sess = _session(data, source)
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    numel = math.prod(sess.sample_shape)
    if x.shape == sess.sample_shape or (x.ndim == 1 and x.size == numel):
        x = x.reshape(1, *sess.sample_shape)
    elif x.ndim >= 1 and x.size == x.shape[0] * numel:
        x = x.reshape(x.shape[0], *sess.sample_shape)
    else:
        raise BadInput(f"inputs of shape {list(x.shape)} do not fit the model's input [N, "
                       f"{', '.join(map(str, sess.sample_shape))}]", source)
    return sess.run(x)


# -- export ----------------------------------------------------------------------------------------------------
def to_onnx_model(network: Network, batch_size: int | None = None, opset: int = 13, ir_version: int = 8):
    """An onnx ModelProto computing `network` (float32). batch_size None gives a symbolic batch axis "N".

    Maps every canonical IR op onto standard ONNX ops (linear -> Gemm or MatMul+Add, conv2d -> Conv, affine ->
    Mul/Add, reshape -> Reshape with a copied batch axis, pools with count_include_pad=1, ...).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []

    def const(name, t):
        arr = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
        inits.append(numpy_helper.from_array(arr.astype(np.float32) if arr.dtype.kind == "f" else arr, name))
        return name

    shapes = {network.input_name: network.input_shape}
    for k, nd in enumerate(network.nodes):
        x, out, p, a = nd.inputs[0] if nd.inputs else None, nd.name, nd.params, nd.attrs
        pre = f"p{k}_"
        if nd.op == "linear":
            if len(shapes[x]) == 1:
                ins = [x, const(pre + "W", p["W"])] + ([const(pre + "b", p["b"])] if "b" in p else [])
                nodes.append(helper.make_node("Gemm", ins, [out], transB=1))
            else:
                wt = const(pre + "WT", p["W"].t().contiguous())
                if "b" in p:
                    nodes.append(helper.make_node("MatMul", [x, wt], [pre + "mm"]))
                    nodes.append(helper.make_node("Add", [pre + "mm", const(pre + "b", p["b"])], [out]))
                else:
                    nodes.append(helper.make_node("MatMul", [x, wt], [out]))
        elif nd.op == "conv2d":
            ins = [x, const(pre + "W", p["W"])] + ([const(pre + "b", p["b"])] if "b" in p else [])
            nodes.append(helper.make_node("Conv", ins, [out], strides=list(a["stride"]), pads=list(a["pads"]),
                                          dilations=list(a["dilation"]), group=int(a["groups"]),
                                          kernel_shape=list(p["W"].shape[2:])))
        elif nd.op == "affine":
            cur = x
            if "scale" in p:
                nxt = out if "shift" not in p else pre + "scaled"
                nodes.append(helper.make_node("Mul", [cur, const(pre + "scale", p["scale"])], [nxt]))
                cur = nxt
            if "shift" in p:
                nodes.append(helper.make_node("Add", [cur, const(pre + "shift", p["shift"])], [out]))
            if cur == x and "shift" not in p:
                nodes.append(helper.make_node("Identity", [x], [out]))
        elif nd.op in ("add", "sub"):
            nodes.append(helper.make_node(nd.op.capitalize(), list(nd.inputs), [out]))
        elif nd.op in ("relu", "sigmoid", "tanh"):
            nodes.append(helper.make_node(nd.op.capitalize(), [x], [out]))
        elif nd.op == "leaky_relu":
            nodes.append(helper.make_node("LeakyRelu", [x], [out], alpha=float(a["alpha"])))
        elif nd.op == "reshape":
            shp = const(pre + "shape", np.array([0, *a["shape"]], dtype=np.int64))
            nodes.append(helper.make_node("Reshape", [x, shp], [out]))
        elif nd.op in ("avgpool2d", "maxpool2d"):
            kw = dict(kernel_shape=list(a["kernel"]), strides=list(a["stride"]), pads=list(a["pads"]))
            if nd.op == "avgpool2d":
                nodes.append(helper.make_node("AveragePool", [x], [out], count_include_pad=1, **kw))
            else:
                nodes.append(helper.make_node("MaxPool", [x], [out], **kw))
        else:
            raise BadInput(f"IR op {nd.op!r} (node {nd.name!r}) has no ONNX export rule", network.source)
        shapes[out] = nd.shape
    bdim = batch_size if batch_size is not None else "N"
    inp = helper.make_tensor_value_info(network.input_name, TensorProto.FLOAT, [bdim, *network.input_shape])
    outp = helper.make_tensor_value_info(network.output, TensorProto.FLOAT, [bdim, *network.output_shape])
    graph = helper.make_graph(nodes, "nncert_export", [inp], [outp], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version,
                              producer_name="nncert")
    onnx.checker.check_model(model)
    return model


def export_onnx(model: Network | torch.nn.Module, input_shape: tuple[int, ...] | None, path: str | Path,
                batch_size: int | None = None) -> Path:
    """Write `model` (an IR Network, or a torch module imported with `from_torch(model, input_shape)`) as ONNX.

    The file uses IR version 8 / opset 13 so onnxruntime 1.31 loads it; the batch axis is symbolic unless
    `batch_size` is given. Returns the path.
    """
    if not isinstance(model, Network):
        from .torch_import import from_torch

        if input_shape is None:
            raise BadInput("export_onnx of a torch module needs input_shape (without the batch axis)")
        model = from_torch(model.eval(), tuple(input_shape))
    elif input_shape is not None and tuple(input_shape) != model.input_shape:
        raise BadInput(f"input_shape {tuple(input_shape)} differs from the network's {model.input_shape}")
    path = Path(path)
    path.write_bytes(to_onnx_model(model, batch_size=batch_size).SerializeToString())
    return path
