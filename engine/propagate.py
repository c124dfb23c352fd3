"""The graph traversals every domain shares: one forward pass and one backward pass over an IR network.

A domain supplies a rule per node (`rule_for(node)`); the traversal owns the order, the fan-in/fan-out bookkeeping
and freeing values no later node reads.

* `forward(network, x, rule_for)`: value of every node, rule(node, [input values]) -> value, in topological
  order. Concrete evaluation, interval bounds and any forward abstraction are this pass with other rules.
* `backward(network, target, A, rule_for, ctx)`: linear backward propagation of coefficients
  A [B, m, *shape(target)] from `target` to the network input. rule(node, Lam, ctx) -> (ins, bias) gives the
  coefficients of each node input (or None) and a constant [B, m] (or None), such that
  sum(Lam * node) >= sum_i sum(ins_i * input_i) + bias on the domain's input set; coefficients reaching a node
  from several consumers are summed. Returns (coefficients on the network input or None, summed bias [B, m]).
"""
from __future__ import annotations

from typing import Callable

import torch


def last_uses(network, keep=()) -> dict[str, int]:
    """{value name: index of the last node that reads it} (values in `keep` and the output: never freed)."""
    last: dict[str, int] = {}
    for k, node in enumerate(network.nodes):
        for i in node.inputs:
            last[i] = k
    for name in (*keep, network.output):
        last[name] = len(network.nodes)
    return last


def forward(network, x, rule_for: Callable, keep_all: bool = True, on_node: Callable | None = None,
            vals: dict | None = None) -> dict:
    """{name: value} for the network input and every node (only the output when keep_all is False), filled into
    `vals` when given (so that on_node can read the values computed so far).

    on_node(node, value) -> value, if given, may replace a node's value right after its rule ran (e.g. to tighten
    bounds)."""
    vals = {} if vals is None else vals
    vals[network.input_name] = x
    last = None if keep_all else last_uses(network)
    for k, node in enumerate(network.nodes):
        v = rule_for(node)(node, [vals[i] for i in node.inputs])
        vals[node.name] = on_node(node, v) if on_node is not None else v
        if last is not None:
            for i in set(node.inputs):
                if last.get(i, -1) <= k:
                    del vals[i]
    return vals


def backward(network, target: str, A: torch.Tensor, rule_for: Callable, ctx):
    """(coefficients [B, m, *input_shape] or None, bias [B, m]) of the lower bound of sum(A * value(target))."""
    B, m = A.shape[:2]
    lam = {target: A}
    bias = torch.zeros(B, m, dtype=A.dtype, device=A.device)
    for node in reversed(network.nodes):
        L = lam.pop(node.name, None)
        if L is None:
            continue
        ins, b = rule_for(node)(node, L, ctx)
        if b is not None:
            bias = bias + b
        for name, Li in zip(node.inputs, ins):
            if Li is not None:
                lam[name] = lam[name] + Li if name in lam else Li
    return lam.get(network.input_name), bias
