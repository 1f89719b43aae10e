"""The custom layer classes that keras.applications models contain.

ConvNeXt's `LayerScale` (x * gamma over the channel axis) and InceptionResNetV2's
`CustomScaleLayer` (shortcut + residual * scale). ConvNeXt's `StochasticDepth` is the
identity at inference and is read with the other no-op layers (core.py).
"""

from __future__ import annotations

from ...graph import Value
from ..registry import register
from .calls import LayerCall


@register("keras->ir", "LayerScale")
def layer_scale_from_keras(call: LayerCall) -> Value:
    """keras.applications.convnext.LayerScale: x * gamma, gamma of shape (projection_dim,)."""
    x = call.x
    dim = int(call.get("projection_dim", x.shape[-1]))
    call.get("init_values")  # only the initial gamma; the trained one is in the weights
    call.expect_weights(1)
    gamma = call.weight(0, expect=(dim,))
    return call.emit("channel_affine", [x], {"axis": x.rank - 1, "learned": True}, {"scale": gamma})


@register("keras->ir", "CustomScaleLayer")
def custom_scale_from_keras(call: LayerCall) -> Value:
    """keras.applications.inception_resnet_v2.CustomScaleLayer: inputs[0] + inputs[1] * scale."""
    ins = call.inputs
    if len(ins) != 2:
        raise call.error(f"expects [shortcut, residual], got {len(ins)} tensors")
    shortcut, residual = ins
    scaled = call.emit("scale_shift", [residual], {"scale": float(call.get("scale"))}, suffix="_residual")
    return call.emit("add", [shortcut, scaled])
