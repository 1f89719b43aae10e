"""Core Keras layers: Dense, Embedding, Flatten, Reshape, Permute, RepeatVector, no-ops."""

from __future__ import annotations

import numpy as np

from ...graph import Value
from ..registry import register
from .calls import LayerCall


@register("keras->ir", "Dense")
def dense_from_keras(call: LayerCall) -> Value:
    x = call.x
    units = int(call.get("units"))
    if call.get("lora_rank"):
        raise call.error("LoRA-enabled Dense layers are not supported; merge the LoRA weights first")
    use_bias = bool(call.get("use_bias", True))
    call.expect_weights(2 if use_bias else 1)
    kernel = call.weight(0, expect=(x.shape[-1], units) if x.shape[-1] is not None else None)
    weights = {"weight": np.ascontiguousarray(kernel.T)}
    if use_bias:
        weights["bias"] = call.weight(1, expect=(units,))
    if x.rank in (4, 5):
        # a Dense on image features (ConvNeXt's pointwise MLP) is a 1x1 convolution over
        # the channel axis; as such it follows the image layout instead of forcing a transpose
        rank = x.rank - 2
        weights["weight"] = weights["weight"].reshape(units, -1, *([1] * rank))
        attrs = {
            "rank": rank,
            "filters": units,
            "kernel_size": (1,) * rank,
            "strides": (1,) * rank,
            "dilation": (1,) * rank,
            "padding": ((0, 0),) * rank,
            "use_bias": use_bias,
            "data_format": "channels_last",
        }
        y = call.emit("conv", [x], attrs, weights)
    else:
        y = call.emit("dense", [x], {"units": units, "use_bias": use_bias}, weights)
    return call.activate(y, call.get("activation"))


@register("keras->ir", "Embedding")
def embedding_from_keras(call: LayerCall) -> Value:
    input_dim, output_dim = int(call.get("input_dim")), int(call.get("output_dim"))
    call.get("input_length")  # Keras 2: the sequence length, known from the input shape
    table = call.weight(0, expect=(input_dim, output_dim))
    x = call.x
    if not x.dtype.startswith("int"):
        x = call.emit("cast", [x], {"dtype": "int64"}, suffix="_ids")
    y = call.emit("embedding", [x], {"input_dim": input_dim, "output_dim": output_dim}, {"weight": table})
    if call.get("mask_zero"):
        # the mask flows implicitly in Keras; here it is a value its consumers read
        call.output_masks = [call.emit("sequence_mask", [x], {"value": 0}, suffix="_mask")]
    return y


@register("keras->ir", "Flatten")
def flatten_from_keras(call: LayerCall) -> Value:
    x = call.x
    if call.get("data_format") == "channels_first" and x.rank >= 3:
        # Keras flattens channels_first input as if it were channels-last
        x = call.emit("transpose", [x], {"perm": (0, *range(2, x.rank), 1)}, suffix="_cl")
    return call.emit("flatten", [x])


@register("keras->ir", "Reshape")
def reshape_from_keras(call: LayerCall) -> Value:
    return call.emit("reshape", [call.x], {"shape": tuple(int(d) for d in call.get("target_shape"))})


@register("keras->ir", "Permute")
def permute_from_keras(call: LayerCall) -> Value:
    dims = tuple(int(d) for d in call.get("dims"))
    return call.emit("transpose", [call.x], {"perm": (0, *dims)})


@register("keras->ir", "RepeatVector")
def repeat_vector_from_keras(call: LayerCall) -> Value:
    return call.emit("repeat_vector", [call.x], {"n": int(call.get("n"))})


@register("keras->ir", "Identity", "StochasticDepth")
def inference_noop_from_keras(call: LayerCall) -> Value:
    """Layers that are the identity at inference (dropout and noise layers, which act in
    training, are in regularization.py)."""
    for training_only in ("data_format", "drop_path_rate", "rate", "stddev"):
        call.get(training_only)  # they shape the noise added in training only
    return call.emit("identity", [call.x])
