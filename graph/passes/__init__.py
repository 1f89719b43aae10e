"""Graph-to-graph rewrites. Each pass mutates the graph in place."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..ir import Graph, Node
from ..ops import get_op
from .affine import fold_affine
from .folding import absorb_input_transposes, fold_constant_transposes, fold_transposes_into_einsum
from .layout import LayoutReport, assign_layout, count_transposes

__all__ = [
    "LayoutReport",
    "absorb_activation",
    "absorb_input_transposes",
    "assign_layout",
    "count_transposes",
    "eliminate_dead",
    "fold_affine",
    "fold_bias_into_batch_norm",
    "fold_constant_transposes",
    "fold_transposes_into_einsum",
    "fold_padding",
    "fuse_activations",
    "fuse_functional_activations",
    "remove_noops",
]

FUSABLE = ("dense", "conv", "conv_transpose", "scaled_std_conv")


def remove_noops(graph: Graph) -> int:
    """Drop `identity` nodes (Keras Identity, copies). Dropout, noise and activity
    regularization are ops of their own that act in training: they stay. Returns the count."""
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
        if (
            get_op(act.op).family != "activation"
            or act.op == "prelu"
            or len(act.attrs.get("axis", (0,))) != 1
            or act.source != node.source
        ):
            continue
        if act.output.shape != out.shape:  # glu halves an axis: not a pure activation
            continue
        if "axis" in act.attrs and node.op != "dense":
            continue  # the layout pass remaps a conv's axes, not those of a fused softmax

        absorb_activation(graph, node, act)
        fused += 1
    return fused


# activations Keras layers take by name (`activation="relu"`), with the attributes that name means
KERAS_ACTIVATION_NAMES: dict[str, tuple[str, dict[str, Any] | None]] = {
    "relu": ("relu", {"max_value": None, "threshold": 0.0, "negative_slope": 0.0}),
    "sigmoid": ("sigmoid", {}),
    "tanh": ("tanh", {}),
    "silu": ("silu", {}),
    "hard_silu": ("hard_silu", {}),
    "gelu": ("gelu", {"approximate": False}),
    "softmax": ("softmax", None),
}


def fuse_functional_activations(graph: Graph) -> int:
    """An activation written functionally right after a Dense/Conv (`torch.softmax(self.fc(x), 1)`,
    `F.relu(self.conv(x))`) becomes that Keras layer's `activation=`; activation modules
    (nn.ReLU) stay layers of their own, named after the module. Runs after the layout pass."""
    fused = 0
    for node in list(graph.nodes):
        if node.op not in ("dense", "conv", "conv_transpose") or node.attrs.get("activation") is not None:
            continue
        out = node.output
        if len(out.users) != 1 or out in graph.outputs:
            continue
        act = out.users[0]
        spec = KERAS_ACTIVATION_NAMES.get(act.op)
        if spec is None or not (act.source_class or "").startswith("aten.") or act.inputs != [out]:
            continue
        name, defaults = spec
        if defaults is None:  # softmax: over the last axis only
            if tuple(act.attrs["axis"]) != (out.rank - 1,):
                continue
        elif any(act.attrs.get(k) != v for k, v in defaults.items()):
            continue
        absorb_activation(graph, node, act, name=name)
        fused += 1
    return fused


def absorb_activation(graph: Graph, node: Node, act: Node, **extra: Any) -> None:
    """Make the activation `act`, the only reader of `node`'s output, part of `node`
    (its `activation` attribute, with `extra` keys): act's readers read node's output,
    which takes act's source layer."""
    out, act_out = node.output, act.output
    node.attrs["activation"] = {"op": act.op, "attrs": dict(act.attrs), **extra}
    graph.replace_uses(act_out, out)
    graph.remove_node(act)
    out.source = act_out.source


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


def fold_padding(graph: Graph, *, pools: bool = True) -> int:
    """Fold a zero `pad` that feeds only a convolution into the convolution's own padding
    (Keras writes ZeroPadding2D + a 'valid' Conv2D where PyTorch writes padding=3), and one
    that feeds only a max pooling of a non-negative tensor into the pooling's padding
    (ZeroPadding2D + MaxPooling2D after a ReLU, as in Keras's ResNet stem): PyTorch pads a
    max pool with -inf, which selects the same maximum as a zero when no value is below 0.
    `pools=False` folds into convolutions only (Keras pooling layers take no explicit padding)."""
    folded = 0
    for node in list(graph.nodes):
        if node.op != "pad" or node.attrs["value"] != 0.0 or node.attrs.get("mode", "constant") != "constant":
            continue
        out = node.output
        if out in graph.outputs or len(out.users) != 1:
            continue
        user = out.users[0]
        if (
            user.inputs[0] is not out
            or user.attrs.get("padding") == "same"
            or user.attrs.get("data_format") != node.attrs["data_format"]
        ):
            continue
        if user.op in ("conv", "scaled_std_conv"):
            pass
        elif pools and user.op == "pool" and user.attrs["mode"] == "max" and _non_negative(node.inputs[0]):
            if any(
                b + pb > k // 2 or e + pe > k // 2
                for (b, e), (pb, pe), k in zip(user.attrs["padding"], node.attrs["pads"], user.attrs["pool_size"])
            ):
                continue  # a window entirely in the padding would give -inf, not 0
        else:
            continue
        user.attrs["padding"] = tuple(
            (b + pb, e + pe) for (b, e), (pb, pe) in zip(user.attrs["padding"], node.attrs["pads"])
        )
        graph.set_input(user, 0, node.inputs[0])
        graph.remove_node(node)
        folded += 1
    return folded


def fold_bias_into_batch_norm(graph: Graph) -> int:
    """Drop the bias of a convolution or dense layer whose only reader is a BatchNorm over
    its channels, subtracting it from the BatchNorm's running mean instead (Keras's ResNet
    writes Conv2D(use_bias=True) + BatchNormalization; PyTorch code writes bias=False).
    Exact in both modes: at inference BN(y + b) = BN with running_mean - b, and in training
    the batch mean absorbs b (the bias gets no gradient there) while the running mean keeps
    tracking mean - b. The layer's own output then differs from the source layer's by b,
    so it is no longer aligned with it: graph.meta["merged_layers"] maps the BatchNorm's
    source layer to it, and the verifier reports the two as one ("conv + bn")."""
    folded = 0
    # a shared layer is called more than once (one source layer, or one weights dict)
    calls = Counter((n.source, n.op) for n in graph.nodes)
    holders = Counter(id(n.weights) for n in graph.nodes)
    for bn in graph.nodes:
        if bn.op != "batch_norm":
            continue
        x = bn.inputs[0]
        layer = x.producer
        if layer is None or layer.op not in ("conv", "conv_transpose", "dense") or not layer.attrs.get("use_bias"):
            continue
        if layer.attrs.get("activation") is not None or len(x.users) != 1 or any(x is v for v in graph.outputs):
            continue
        if calls[(layer.source, layer.op)] > 1 or holders[id(layer.weights)] > 1:
            continue  # a shared layer: its other calls keep the bias
        if any("bias" in layer.training.get(k, {}) for k in ("regularizers", "constraints")):
            continue  # a regularized or constrained bias trains on its own: keep it
        if bn.training.get("frozen") and not layer.training.get("frozen"):
            continue  # a frozen BatchNorm uses its moving mean in training: the bias still trains
        channels = 1 if layer.attrs.get("data_format") == "channels_first" else x.rank - 1
        if bn.attrs["axis"] % x.rank != channels:
            continue
        bias, mean = layer.weights.pop("bias"), bn.weights["running_mean"]
        bn.weights["running_mean"] = (mean.astype("float64") - bias.astype("float64")).astype(mean.dtype)
        layer.attrs["use_bias"] = False
        if x.source is not None and bn.output.source is not None:
            # the verifier compares the BatchNorm's output as that of both source layers
            graph.meta.setdefault("merged_layers", {}).setdefault(bn.output.source, []).append(x.source)
        x.source = None
        folded += 1
    return folded


# activations whose output is never below zero (with the attributes that keep it so)
_NON_NEGATIVE = {
    "relu": lambda a: float(a["negative_slope"]) == 0.0 and float(a["threshold"]) >= 0.0,
    "clip": lambda a: a["min"] is not None and float(a["min"]) >= 0.0,
    "sigmoid": lambda a: True,
    "hard_sigmoid": lambda a: True,
    "softmax": lambda a: True,
    "exp": lambda a: True,
    "softplus": lambda a: True,
    "abs": lambda a: True,
    "square": lambda a: True,
}


def _non_negative(value) -> bool:
    """Whether `value` is known to hold no negative number (the output of a ReLU, ...)."""
    node = value.producer
    if node is None:
        return False
    act = node.attrs.get("activation") if node.op in FUSABLE else {"op": node.op, "attrs": node.attrs}
    if act is None or act["op"] not in _NON_NEGATIVE:
        return False
    return bool(_NON_NEGATIVE[act["op"]](act["attrs"]))
