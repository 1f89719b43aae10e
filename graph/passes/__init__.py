"""Graph-to-graph rewrites. Each pass mutates the graph in place."""

from __future__ import annotations

from ..ir import Graph
from ..ops import get_op
from .layout import LayoutReport, assign_layout, count_transposes

__all__ = [
    "LayoutReport",
    "assign_layout",
    "count_transposes",
    "eliminate_dead",
    "fold_padding",
    "fuse_activations",
    "remove_noops",
]

FUSABLE = ("dense", "conv", "conv_transpose")


def remove_noops(graph: Graph) -> int:
    """Drop nodes that do nothing at inference (`identity`: Dropout, GaussianNoise,
    SpatialDropout, ActivityRegularization, ... are read as identity). Returns the count."""
    removed = 0
    for node in list(graph.nodes):
        if node.op != "identity":
            continue
        x, out = node.inputs[0], node.output
        if out in graph.outputs and (x in graph.inputs or x in graph.outputs):
            continue  # an output that is the input itself (or another output) needs the copy
        graph.bypass(node)
        removed += 1
    return removed


def fuse_activations(graph: Graph) -> int:
    """Fold an activation into the dense/conv node of the same source layer
    (Keras `activation=`), so that one source layer stays one emitted statement."""
    fused = 0
    for node in list(graph.nodes):
        if node.op not in FUSABLE or node.attrs.get("activation") is not None:
            continue
        out = node.output
        if len(out.users) != 1 or out in graph.outputs:
            continue
        act = out.users[0]
        if get_op(act.op).family != "activation" or act.op == "prelu" or len(act.attrs.get("axis", (0,))) != 1 or act.source != node.source:
            continue
        if act.output.shape != out.shape:  # glu halves an axis: not a pure activation
            continue
        if "axis" in act.attrs and node.op != "dense":
            continue  # the layout pass remaps a conv's axes, not those of a fused softmax

        node.attrs["activation"] = {"op": act.op, "attrs": dict(act.attrs)}
        act_out = act.output
        graph.replace_uses(act_out, out)
        graph.remove_node(act)
        out.source = act_out.source
        fused += 1
    return fused


def eliminate_dead(graph: Graph) -> int:
    """Remove nodes whose outputs reach no graph output."""
    live: set[int] = {id(v) for v in graph.outputs}
    keep = []
    for node in reversed(graph.nodes):
        if any(id(v) in live for v in node.outputs):
            keep.append(node)
            live.update(id(v) for v in node.inputs)
    removed = [n for n in graph.nodes if n not in keep]
    for node in removed:
        for v in node.inputs:
            if node in v.users:
                v.users.remove(node)
    graph.nodes = list(reversed(keep))
    return len(removed)


def fold_padding(graph: Graph) -> int:
    """Fold a zero `pad` that feeds only a convolution into the convolution's own padding
    (Keras writes ZeroPadding2D + a 'valid' Conv2D where PyTorch writes padding=3)."""
    folded = 0
    for node in list(graph.nodes):
        if node.op != "pad" or node.attrs["value"] != 0.0:
            continue
        out = node.output
        if out in graph.outputs or len(out.users) != 1:
            continue
        conv = out.users[0]
        if conv.op != "conv" or conv.inputs[0] is not out or conv.attrs["padding"] == "same":
            continue
        if conv.attrs["data_format"] != node.attrs["data_format"]:
            continue
        conv.attrs["padding"] = tuple(
            (b + pb, e + pe) for (b, e), (pb, pe) in zip(conv.attrs["padding"], node.attrs["pads"])
        )
        graph.set_input(conv, 0, node.inputs[0])
        graph.remove_node(node)
        folded += 1
    return folded
