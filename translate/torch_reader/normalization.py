"""ATen normalisations: batch_norm (eval mode), layer_norm, group_norm, instance_norm."""

from __future__ import annotations

import numpy as np

from ...graph import Value
from ..registry import register
from .arithmetic import operand
from .calls import AtenCall


def _affine(call: AtenCall, channels: int, *, fill: bool) -> dict[str, np.ndarray]:
    weights = {}
    for name in ("weight", "bias"):
        w = call.const(name, optional=True)
        if w is None and fill:
            w = (np.ones if name == "weight" else np.zeros)(channels, dtype=np.float32)
        if w is not None:
            weights[name] = w
    return weights


def _batch_norm(call: AtenCall, training: bool, momentum: float, eps: float) -> Value:
    x = call.value("input")
    mean = call.const("running_mean", optional=True)
    if mean is None:
        raise call.unsupported(
            "BatchNorm with track_running_stats=False (batch statistics in eval mode too); Keras's "
            "BatchNormalization normalises with moving statistics in inference"
        )
    if training:
        raise call.unsupported(
            "batch normalisation with batch statistics (training mode); export the model after model.eval()"
        )
    weights = {
        **_affine(call, mean.shape[0], fill=False),
        "running_mean": mean,
        "running_var": call.const("running_var"),
    }
    # the channel axis is 1, or 2 where the batch is held split out of a merged axis 0 (merged.py)
    attrs = {
        "axis": int(call.args.get("channel_axis", 1)),
        "epsilon": float(eps),
        "momentum": float(momentum if momentum is not None else 0.1),
    }
    return call.emit("batch_norm", [x], attrs, weights)


@register("torch->ir", "aten.batch_norm")
def batch_norm_to_ir(call: AtenCall) -> Value:
    a = call.args
    return _batch_norm(call, bool(a["training"]), a["momentum"], a["eps"])


@register("torch->ir", "aten._native_batch_norm_legit_no_training")
def native_batch_norm_to_ir(call: AtenCall) -> list:
    y = _batch_norm(call, False, call.args["momentum"], call.args["eps"])
    return [y, None, None]


@register("torch->ir", "aten.layer_norm")
def layer_norm_to_ir(call: AtenCall) -> Value:
    x = call.value("input")
    n = len(call.args["normalized_shape"])
    axes = tuple(range(x.rank - n, x.rank))
    weights = {}
    for name in ("weight", "bias"):
        w = call.const(name, optional=True)
        if w is not None:
            weights[name] = w
    return call.emit("layer_norm", [x], {"axes": axes, "epsilon": float(call.args["eps"])}, weights)


@register("torch->ir", "aten.group_norm")
def group_norm_to_ir(call: AtenCall) -> Value:
    x = call.value("input")
    c = int(x.shape[1])
    attrs = {"groups": int(call.args["num_groups"]), "axis": 1, "epsilon": float(call.args["eps"])}
    return call.emit("group_norm", [x], attrs, _affine(call, c, fill=True))


@register("torch->ir", "aten.instance_norm")
def instance_norm_to_ir(call: AtenCall) -> Value:
    x = call.value("input")
    c = int(x.shape[1])
    if not call.args["use_input_stats"]:
        raise call.unsupported("InstanceNorm with track_running_stats in eval mode; use track_running_stats=False")
    # instance normalisation is group normalisation with one channel per group
    attrs = {"groups": c, "axis": 1, "epsilon": float(call.args["eps"])}
    return call.emit("group_norm", [x], attrs, _affine(call, c, fill=True))


@register("torch->ir", "aten.rms_norm")
def rms_norm_to_ir(call: AtenCall) -> Value:
    """nn.RMSNorm / F.rms_norm over the trailing `normalized_shape` axes; eps None is
    torch.finfo(dtype).eps."""
    x = call.value("input")
    n = len(call.args["normalized_shape"])
    eps = call.args.get("eps")
    eps = float(np.finfo(np.float32).eps) if eps is None else float(eps)
    w = call.const("weight", optional=True)
    return call.emit(
        "rms_norm", [x], {"axes": tuple(range(x.rank - n, x.rank)), "epsilon": eps}, {} if w is None else {"weight": w}
    )


@register("torch->ir", "aten._weight_norm")
def weight_norm_to_ir(call: AtenCall) -> Value:
    """torch.nn.utils.(parametrizations.)weight_norm: v * (g / ||v||), the norm over every axis
    of v but `dim` (over all of them for dim=-1, as torch's norm_except_dim). g and v stay
    trainable weights and the kernel is computed in the model, so training updates g and v."""
    v = call.value("v")
    dim = int(call.args["dim"])
    axes = tuple(range(v.rank)) if dim == -1 else tuple(a for a in range(v.rank) if a != dim % v.rank)
    squares = call.emit("square", [v], suffix="_square")
    total = call.emit("reduce", [squares], {"mode": "sum", "axes": axes, "keepdims": True}, suffix="_sum")
    scale = call.emit("div", [operand(call, "g", v.rank), call.emit("sqrt", [total], suffix="_norm")], suffix="_scale")
    return call.emit("mul", [v, scale])
