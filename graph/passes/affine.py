"""Conversion-time folding of the pieces exporters leave behind.

tf2onnx splits a BatchNormalization it cannot fold (after a depthwise convolution) into
a Mul and an Add of per-channel constants, and writes a Dense layer as MatMul + Add. The
reader translates those one by one (`channel_affine`); this pass merges them back into
the layer they belong to, so that the emitted model computes them as one layer, as a
person would have written it."""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node

__all__ = ["fold_affine"]


def _single_user(graph: Graph, node: Node) -> Node | None:
    out = node.outputs[0]
    if len(node.outputs) != 1 or len(out.users) != 1 or out in graph.outputs:
        return None
    return out.users[0]


def _merge_affines(graph: Graph) -> int:
    """x * scale followed by + offset on the same axis: one channel_affine."""
    merged = 0
    for node in list(graph.nodes):
        if node not in graph.nodes or node.op != "channel_affine" or set(node.weights) != {"scale"}:
            continue
        nxt = _single_user(graph, node)
        if (
            nxt is None
            or nxt.op != "channel_affine"
            or set(nxt.weights) != {"offset"}
            or nxt.attrs["axis"] != node.attrs["axis"]
        ):
            continue
        node.weights["offset"] = nxt.weights["offset"]
        out = nxt.outputs[0]
        graph.replace_uses(out, node.outputs[0])
        graph.remove_node(nxt)
        node.outputs[0].source = out.source
        merged += 1
    return merged


def _fold_into_layer(graph: Graph) -> int:
    """A channel_affine on the channel axis right after a conv (or on the units of a
    dense) becomes part of that layer's weight and bias."""
    folded = 0
    for node in list(graph.nodes):
        if node.op not in ("conv", "dense") or node.attrs.get("activation") is not None:
            continue
        nxt = _single_user(graph, node)
        if nxt is None or nxt.op != "channel_affine":
            continue
        channel = 1 if node.op == "conv" else node.outputs[0].rank - 1
        if nxt.attrs["axis"] != channel:
            continue
        w = node.weights["weight"]
        units = w.shape[0]
        scale = nxt.weights.get("scale", np.ones(units, np.float32))
        offset = nxt.weights.get("offset", np.zeros(units, np.float32))
        bias = node.weights.get("bias", np.zeros(units, np.float32))
        node.weights["weight"] = np.ascontiguousarray((w * scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype))
        node.weights["bias"] = np.ascontiguousarray((bias * scale + offset).astype(np.float32))
        node.attrs["use_bias"] = True
        out = nxt.outputs[0]
        graph.replace_uses(out, node.outputs[0])
        graph.remove_node(nxt)
        folded += 1
    return folded


def _fold_swish(graph: Graph) -> int:
    """x * sigmoid(x), which exporters write out for swish/SiLU: one silu node."""
    folded = 0
    for node in list(graph.nodes):
        if node not in graph.nodes or node.op != "mul" or len(node.inputs) != 2:
            continue
        for gate, x in (node.inputs, reversed(node.inputs)):
            sig = gate.producer
            if (
                sig is not None
                and sig.op == "sigmoid"
                and sig.inputs[0] is x
                and gate.users == [node]
                and gate not in graph.outputs
            ):
                break
        else:
            continue
        silu = graph.add_node(
            "silu", [x], name=sig.name, source=sig.source, source_class="Sigmoid*Mul", index=graph.nodes.index(node)
        )
        graph.replace_uses(node.output, silu.output)
        silu.output.source = node.output.source
        graph.remove_node(node)
        graph.remove_node(sig)
        folded += 1
    return folded


def fold_affine(graph: Graph) -> int:
    """Merge Mul/Add pairs and fold them into the preceding conv or dense, and read
    x * sigmoid(x) as silu; returns the number of nodes removed."""
    return _merge_affines(graph) + _fold_into_layer(graph) + _fold_swish(graph)
