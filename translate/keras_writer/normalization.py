"""Keras code for BatchNormalization, LayerNormalization and GroupNormalization.

Keras's momentum is the weight of the old moving statistics: 1 - PyTorch's momentum. A PyTorch
BatchNorm (`biased_running_var` False) becomes `TorchBatchNormalization`, which also updates the
moving variance with the unbiased batch variance, as PyTorch does."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...graph import Node
from ..registry import register
from .codegen import KerasEmitter


def keras_axis(axis: int, rank: int) -> int:
    """-1 for the last axis, as people write it."""
    return -1 if axis == rank - 1 else axis


_TORCH_BATCH_NORMALIZATION = '''class TorchBatchNormalization(layers.BatchNormalization):
    """layers.BatchNormalization that, in training, updates moving_variance with the unbiased batch
    variance (the biased one times n / (n - 1), n the elements per channel), as PyTorch's BatchNorm
    updates running_var; Keras's own uses the biased one. It normalises (in training with the biased
    batch variance, in inference with the moving statistics) as layers.BatchNormalization does."""

    def call(self, inputs, training=None, mask=None):
        if mask is not None:
            raise ValueError(f"{self.name}: masks are not supported (PyTorch's BatchNorm takes none)")
        if not (training and self.trainable):
            return super().call(inputs, training=training)
        before = keras.ops.copy(self.moving_variance)
        outputs = super().call(inputs, training=True)
        # Keras set moving_variance to m * before + (1 - m) * v, v the biased batch variance; PyTorch's
        # rule is m * before + (1 - m) * v * n / (n - 1): add (1 - m) * v / (n - 1)
        n = keras.ops.cast(keras.ops.size(inputs), "float32") / inputs.shape[self.axis]
        after = keras.ops.convert_to_tensor(self.moving_variance)
        self.moving_variance.assign(after + (after - before * self.momentum) / (n - 1.0))
        return outputs
'''


@register("ir->keras", "batch_norm")
def batch_norm_to_keras(node: Node, em: KerasEmitter) -> None:
    x = node.inputs[0]
    w = node.weights
    kwargs: dict[str, Any] = {"axis": keras_axis(node.attrs["axis"], x.rank), "epsilon": float(node.attrs["epsilon"])}
    kwargs["momentum"] = round(1.0 - float(node.attrs["momentum"]), 10)
    weights = []
    if "weight" in w:
        weights.append(w["weight"])
    else:
        kwargs["scale"] = False
    if "bias" in w:
        weights.append(w["bias"])
    else:
        kwargs["center"] = False
    weights += [w["running_mean"], w["running_var"]]
    if node.attrs["biased_running_var"]:  # Keras's own rule (a Keras source)
        cls = "layers.BatchNormalization"
    else:  # PyTorch's
        cls = em.helper("TorchBatchNormalization", _TORCH_BATCH_NORMALIZATION)
    em.assign(node, f"{em.layer(node, cls, weights, **kwargs)}({em.var(x)})")


@register("ir->keras", "layer_norm")
def layer_norm_to_keras(node: Node, em: KerasEmitter) -> None:
    x = node.inputs[0]
    axes = tuple(node.attrs["axes"])
    kwargs: dict[str, Any] = {
        "axis": keras_axis(axes[0], x.rank) if len(axes) == 1 else list(axes),
        "epsilon": float(node.attrs["epsilon"]),
    }
    weights = []
    if node.attrs["rms_scaling"]:
        kwargs["rms_scaling"] = True
    if "weight" in node.weights:
        weights.append(node.weights["weight"])
    else:
        kwargs["scale"] = False
    if "bias" in node.weights:
        weights.append(node.weights["bias"])
    else:
        kwargs["center"] = False
    em.assign(node, f"{em.layer(node, 'layers.LayerNormalization', weights, **kwargs)}({em.var(x)})")


@register("ir->keras", "group_norm")
def group_norm_to_keras(node: Node, em: KerasEmitter) -> None:
    x = node.inputs[0]
    kwargs = {
        "groups": node.attrs["groups"],
        "axis": keras_axis(node.attrs["axis"], x.rank),
        "epsilon": float(node.attrs["epsilon"]),
    }
    weights = [node.weights["weight"], node.weights["bias"]]
    em.assign(node, f"{em.layer(node, 'layers.GroupNormalization', weights, **kwargs)}({em.var(x)})")


@register("ir->keras", "rms_norm")
def rms_norm_to_keras(node: Node, em: KerasEmitter) -> None:
    """layers.RMSNormalization (x * rsqrt(mean(x**2) + epsilon) * scale; a scale of ones
    where the source has no weight)."""
    x = node.inputs[0]
    axes = tuple(node.attrs["axes"])
    shape = tuple(int(x.shape[a]) for a in axes)
    scale = node.weights.get("weight")
    scale = np.ones(shape, np.float32) if scale is None else scale.reshape(shape)
    kwargs: dict[str, Any] = {
        "axis": keras_axis(axes[0], x.rank) if len(axes) == 1 else list(axes),
        "epsilon": float(node.attrs["epsilon"]),
    }
    em.assign(node, f"{em.layer(node, 'layers.RMSNormalization', [scale], **kwargs)}({em.var(x)})")
