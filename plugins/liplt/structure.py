"""Read an IR network as the layer form of LipLT (Fazlyab et al., NeurIPS 2023, eq. 3):

    x_{k+1} = H_k x_k + G_k phi_k(W_k x_k)   (k = 0..L-1),     y = W_L x_L   (+ constant biases everywhere)

where H_k, W_k, G_k are linear chains of IR nodes (linear, conv2d, affine, reshape, avgpool2d; biases and
shifts do not matter for Lipschitz constants) and phi_k is one elementwise activation with slopes in
[alpha_k, beta_k]. A plain layer has H_k = 0 and G_k = I; a residual block add(skip, block) has H_k = the skip
chain (often the identity) and W_k, G_k the block's chains before and after its one activation. Linear nodes met
before a layer are folded into its H_k and W_k. Anything else raises UnsupportedOp naming the node.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from nncert.engine.errors import UnsupportedOp

LINEAR_OPS = ("linear", "conv2d", "affine", "reshape", "avgpool2d")
ACT_OPS = ("relu", "leaky_relu", "sigmoid", "tanh")
SUPPORTED_OPS = LINEAR_OPS + ACT_OPS + ("add",)


def slope_bounds(node) -> tuple[float, float]:
    """[alpha, beta] with alpha <= phi'(z) <= beta everywhere (slope-restricted activation)."""
    if node.op == "relu":
        return 0.0, 1.0
    if node.op == "leaky_relu":
        a = float(node.attrs["alpha"])
        return min(a, 1.0), max(a, 1.0)
    if node.op == "tanh":
        return 0.0, 1.0
    if node.op == "sigmoid":
        return 0.0, 0.25
    raise UnsupportedOp(f"op {node.op!r} (node {node.name!r}) is not a slope-restricted activation")


@dataclass
class Chain:
    """A composition of linear IR nodes applied in order; `nodes == []` is the identity on in_shape."""

    nodes: list
    in_shape: tuple
    out_shape: tuple

    @property
    def identity(self) -> bool:
        return not self.nodes or all(n.op == "reshape" for n in self.nodes)


@dataclass
class Layer:
    W: Chain
    G: Chain | None        # None = identity
    H: Chain | None        # None = zero (plain layer)
    act: str
    alpha: float
    beta: float
    names: list = field(default_factory=list)


@dataclass
class LayerForm:
    layers: list[Layer]
    final: Chain             # W_L
    input_shape: tuple
    output_shape: tuple


def _shape_of(network, name):
    if name == network.input_name:
        return tuple(network.input_shape)
    for n in network.nodes:
        if n.name == name:
            return tuple(n.shape)
    raise KeyError(name)


def layer_form(network) -> LayerForm:
    """Parse `network` (engine.ir.Network) into LayerForm or raise UnsupportedOp."""
    for n in network.nodes:
        if n.op not in SUPPORTED_OPS:
            raise UnsupportedOp(f"op {n.op!r} (node {n.name!r}) has no rule in domain 'liplt'", network.source)
    consumers = network.consumers()
    layers: list[Layer] = []
    cur = network.input_name
    chain: list = []
    chain_in = tuple(network.input_shape)
    while True:
        cons = consumers.get(cur, [])
        if not cons:
            break
        if len(cons) == 1 and cons[0].op != "add":
            node = cons[0]
            if node.op in LINEAR_OPS:
                chain.append(node)
            else:  # activation
                alpha, beta = slope_bounds(node)
                W = Chain(chain, chain_in, _shape_of(network, node.inputs[0]))
                layers.append(Layer(W, None, None, node.op, alpha, beta, [node.name]))
                chain, chain_in = [], tuple(node.shape)
            cur = node.name
            continue
        # a residual block: exactly two branches from cur meeting at one add
        if len(cons) != 2:
            raise UnsupportedOp(f"value {cur!r} feeds {len(cons)} nodes; liplt handles chains and residual "
                                f"add(skip, block) only", network.source)
        branches, ends = [], []
        for c in cons:
            path, v = [], c
            while v.op != "add":
                path.append(v)
                nxt = consumers.get(v.name, [])
                if len(nxt) != 1:
                    raise UnsupportedOp(f"node {v.name!r} inside a residual branch feeds {len(nxt)} nodes",
                                        network.source)
                v = nxt[0]
            branches.append(path)
            ends.append(v)
        if ends[0] is not ends[1]:
            raise UnsupportedOp(f"the branches from {cur!r} do not meet at one add node", network.source)
        add = ends[0]
        acts = [sum(n.op in ACT_OPS for n in p) for p in branches]
        if sorted(acts) != [0, 1]:
            raise UnsupportedOp(f"residual add {add.name!r} needs one linear skip branch and one branch with "
                                f"exactly one activation (found {acts[0]} and {acts[1]})", network.source)
        skip, block = (branches[0], branches[1]) if acts[0] == 0 else (branches[1], branches[0])
        ai = next(i for i, n in enumerate(block) if n.op in ACT_OPS)
        act = block[ai]
        alpha, beta = slope_bounds(act)
        H = Chain(chain + skip, chain_in, tuple(add.shape))
        W = Chain(chain + block[:ai], chain_in, _shape_of(network, act.inputs[0]))
        G = Chain(block[ai + 1:], tuple(act.shape), tuple(add.shape))
        layers.append(Layer(W, G, H, act.op, alpha, beta, [add.name]))
        chain, chain_in = [], tuple(add.shape)
        cur = add.name
    if cur != network.output:
        raise UnsupportedOp(f"network output {network.output!r} is not the end of the layer chain ({cur!r})",
                            network.source)
    final = Chain(chain, chain_in, tuple(network.output_shape))
    return LayerForm(layers, final, tuple(network.input_shape), tuple(network.output_shape))
