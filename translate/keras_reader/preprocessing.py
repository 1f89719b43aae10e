"""Keras preprocessing layers that belong to the model: Rescaling and Normalization."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...graph import Value
from ..registry import register
from .calls import LayerCall

KERAS_EPSILON = 1e-7  # keras.config.epsilon(), the floor Normalization puts under sqrt(variance)


@register("keras->ir", "Rescaling")
def rescaling_from_keras(call: LayerCall) -> Value:
    """Keras: x * scale + offset, each a number or an array broadcast against the input."""
    x = call.x
    scale, offset = _array(call, call.get("scale", 1.0)), _array(call, call.get("offset", 0.0))
    if scale.ndim == 0 and offset.ndim == 0:
        return call.emit("scale_shift", [x], {"scale": float(scale), "offset": float(offset)})
    c = x.shape[-1]
    weights = {}
    for name, array in (("scale", scale), ("offset", offset)):
        if array.ndim and (array.shape[-1] not in (1, c) or any(d != 1 for d in array.shape[:-1])):
            raise call.error(
                f"{name} of shape {array.shape} is not per channel (a number or {c} values on the last axis)"
            )
        weights[name] = np.broadcast_to(array.reshape(-1) if array.ndim else array, (c,)).astype(np.float32)
    return call.emit("channel_affine", [x], {"axis": x.rank - 1}, weights)


@register("keras->ir", "Normalization")
def normalization_from_keras(call: LayerCall) -> Value:
    x = call.x
    axis = call.get("axis", -1)
    if axis is None:  # one mean and variance for all values
        axis = ()
    axes = tuple(sorted(int(a) % x.rank for a in (axis if isinstance(axis, (list, tuple)) else [axis])))
    shape = tuple(x.shape[a] for a in axes)
    if None in shape:
        raise call.error(f"the normalised axes {axes} of input shape {x.shape} must have known sizes")
    if call.get("mean") is not None:
        mean, var = _array(call, call.get("mean")), _array(call, call.get("variance"))
    else:
        mean, var = call.weight(0), call.weight(1)
    mean, var = _stat(call, mean, shape), _stat(call, var, shape)
    if np.any(var < 0):
        raise call.error("the variance has negative entries")
    std = np.maximum(np.sqrt(var), KERAS_EPSILON).astype(np.float32)
    return call.emit(
        "standardize", [x], {"axis": axes, "invert": bool(call.get("invert", False))}, {"mean": mean, "std": std}
    )


def _array(call: LayerCall, value: Any) -> np.ndarray:
    """A number, a (nested) list, or a Keras-serialized array (`__numpy__` / `__tensor__`)."""
    if isinstance(value, dict):
        inner = value.get("config", {})
        if value.get("class_name") not in ("__numpy__", "__tensor__") or "value" not in inner:
            raise call.error(f"cannot read the array {value!r}")
        value = inner["value"]
    return np.asarray(value, np.float32)


def _stat(call: LayerCall, array: np.ndarray, shape: tuple) -> np.ndarray:
    """Statistics shaped like the kept axes; given ones are aligned to them from the
    right, as Keras broadcasts them."""
    array = np.asarray(array, np.float32)
    if array.size == int(np.prod(shape)):
        return array.reshape(shape)
    try:
        return np.broadcast_to(array, shape).astype(np.float32)
    except ValueError:
        raise call.error(f"statistics of shape {array.shape} do not fit the normalised axes of size {shape}") from None


@register("keras->ir", "CenterCrop")
def center_crop_from_keras(call: LayerCall) -> Value:
    """Keras crops the central height x width window (the extra row/column of an odd
    difference stays at the end); smaller images it resizes instead, which is refused."""
    x = call.x
    height, width = int(call.get("height")), int(call.get("width"))
    data_format = call.get("data_format") or "channels_last"
    if x.rank != 4:
        raise call.error(f"expects a batch of images (rank 4), got shape {x.shape}")
    sizes = x.shape[1:3] if data_format == "channels_last" else x.shape[2:4]
    if None in sizes:
        raise call.error("the image size must be known to crop; give the model input a fixed size")
    crops = []
    for size, target in zip(sizes, (height, width)):
        if size < target:
            raise call.error(
                f"images of size {tuple(sizes)} are smaller than the crop {(height, width)}; Keras resizes those, which is not supported"
            )
        start = (size - target) // 2
        crops.append((start, size - target - start))
    return call.emit("crop", [x], {"crops": tuple(crops), "data_format": data_format})


# Augmentation layers that return their input unchanged at inference (training=False), checked
# against Keras 3.15 and tf_keras 2.21 (keras/src/layers/preprocessing/image_preprocessing:
# `transform_images` transforms only `if training`). RandomCrop is not among them: tf_keras
# crops the centre and resizes at inference, and Keras 3 keeps the full image although the
# functional graph recorded the cropped shape.
INFERENCE_IDENTITIES = (
    "RandomFlip",
    "RandomRotation",
    "RandomZoom",
    "RandomTranslation",
    "RandomContrast",
    "RandomBrightness",
    "RandomHeight",
    "RandomWidth",
    "RandomGrayscale",
    "RandomHue",
    "RandomSaturation",
    "RandomSharpness",
    "RandomShear",
    "RandomColorJitter",
    "RandomColorDegeneration",
    "RandomErasing",
    "RandomGaussianBlur",
    "RandomPerspective",
    "RandomPosterization",
    "RandomInvert",
    "RandomElasticTransform",
    "Solarization",
    "AugMix",
    "RandAugment",
    "MixUp",
    "CutMix",
)


@register("keras->ir", *INFERENCE_IDENTITIES)
def augmentation_from_keras(call: LayerCall) -> Value:
    """A random augmentation: the identity at inference, recorded in the graph's
    meta['inference_identities'] (the manifest says which layers were dropped)."""
    for option in list(call.config):
        call.get(option)  # factors, fill modes, seeds: they shape the training-time randomness only
    dropped = call.graph.meta.setdefault("inference_identities", [])
    if call.name not in dropped:
        dropped.append(call.name)
    return call.emit("identity", [call.x])
