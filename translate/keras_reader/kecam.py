"""keras-cv-attention-models (kecam) layers, as saved in its tf.keras 2 `.h5` files.

kecam registers its layers with `register_keras_serializable(package=...)`, so a file names
them "package>Class" (`resmlp>ChannelAffine`, `volo>ClassToken`, `beit>Multi...`). Each is
translated here from its config and weights, with the formulas of kecam's own `call` and
`build` (keras_cv_attention_models 1.4: mlp_family/res_mlp.py, volo/volo.py, beit/beit.py,
levit/levit.py, edgenext/edgenext.py, nfnets/nfnets.py, llama2/llama2.py, gpt2/gpt2.py).
Index tables and sin/cos tables that kecam computes in `build` from the input shape are
computed here the same way and kept as buffers; the learned tables stay parameters of their
source shape (a relative position bias is gathered from its table at run time, as in kecam,
so that a fine-tuned model keeps its tied entries).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...graph import Value
from ..registry import register
from .calls import LayerCall
from .conv import conv2d_from_keras, conv_layer


def _axis_vector(call: LayerCall, x: Value, array: np.ndarray, axis: int | list) -> tuple[int, np.ndarray]:
    """A per-channel weight of ChannelAffine / BiasLayer as (axis, vector): kecam stores it as
    (C,) for the last axis, else shaped to broadcast (ones except on `axis`)."""
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    if len(axes) != 1:
        raise call.error(f"a per-channel weight over several axes {axes} is not supported")
    a = int(axes[0]) % x.rank
    if a == 0:
        raise call.error("a per-channel weight over the batch axis is not supported")
    if array.size != x.shape[a]:
        raise call.error(f"weight of shape {array.shape} does not match axis {a} of the input {x.shape}")
    return a, array.reshape(-1)


@register("keras->ir", "resmlp>ChannelAffine")
def channel_affine_from_kecam(call: LayerCall) -> Value:
    """x * weight (+ bias), one value per channel along `axis` (LayerScale, ResMLP's Affine)."""
    x = call.x
    use_bias = bool(call.get("use_bias", True))
    call.expect_weights(2 if use_bias else 1)
    axis, scale = _axis_vector(call, x, call.weight(0), call.get("axis", -1))
    weights = {"scale": scale}
    if use_bias:
        weights["offset"] = _axis_vector(call, x, call.weight(1), axis)[1]
    return call.emit("channel_affine", [x], {"axis": axis, "learned": True}, weights)


@register("keras->ir", "volo>BiasLayer")
def bias_layer_from_kecam(call: LayerCall) -> Value:
    """x + bias, one value per channel along `axis` (the output bias of a bias-free attention)."""
    x = call.x
    call.expect_weights(1)
    axis, offset = _axis_vector(call, x, call.weight(0), call.get("axis", -1))
    return call.emit("channel_affine", [x], {"axis": axis, "learned": True}, {"offset": offset})


@register("keras->ir", "nfnets>ZeroInitGain")
def zero_init_gain_from_kecam(call: LayerCall) -> Value:
    """x * gain (+ bias) with scalar gain and bias (NFNet's skip gain, StarReLU's s and b)."""
    x = call.x
    use_bias = bool(call.get("use_bias", False))
    call.expect_weights(2 if use_bias else 1)
    gain = call.emit("constant", [], {"trainable": True}, {"value": call.weight(0, expect=())}, suffix="_gain")
    y = call.emit("mul", [x, gain], suffix="" if not use_bias else "_scaled")
    if use_bias:
        bias = call.emit("constant", [], {"trainable": True}, {"value": call.weight(1, expect=())}, suffix="_bias")
        y = call.emit("add", [y, bias])
    return y


@register("keras->ir", "volo>PositionalEmbedding")
def positional_embedding_from_kecam(call: LayerCall) -> Value:
    """x + a learned table of the input's shape, batch axis 1 (`input_height` only matters
    when kecam resizes the table for another input size)."""
    x = call.x
    call.get("input_height")
    table = call.weight(0, expect=(1, *x.shape[1:]))
    pos = call.emit("constant", [], {"trainable": True}, {"value": table}, suffix="_table")
    return call.emit("add", [x, pos])


@register("keras->ir", "volo>ClassToken")
def class_token_from_kecam(call: LayerCall) -> Value:
    """`num_tokens` learned tokens concatenated before (or, is_at_end, after) the sequence."""
    x = call.x
    n = int(call.get("num_tokens", 1))
    if x.rank != 3:
        raise call.error(f"expects a (batch, tokens, channels) input, got {x.shape}")
    tokens = call.weight(0, expect=(1, n, x.shape[-1]))
    token = call.emit("constant", [], {"trainable": True, "per_example": True}, {"value": tokens}, suffix="_tokens")
    parts = [x, token] if call.get("is_at_end", False) else [token, x]
    return call.emit("concat", parts, {"axis": 1})


def _table_bias(call: LayerCall, x: Value, table: np.ndarray, index: np.ndarray, perm: tuple | None = None) -> Value:
    """x + table[:, index]: a learned (heads, distances) table gathered by a constant
    (queries, keys) index at run time, broadcast over the batch (its axes permuted by `perm`
    first, when the heads are not the first axis of x after the batch)."""
    heads = table.shape[0]
    t = call.emit("constant", [], {"trainable": True}, {"value": np.ascontiguousarray(table)}, suffix="_table")
    flat = np.ascontiguousarray(index.reshape(1, -1).astype(np.int64))
    idx = call.emit("constant", [], {"trainable": False}, {"value": flat}, suffix="_index")
    picked = call.emit("gather", [t, idx], {"axis": 1}, suffix="_gather")
    bias = call.emit("reshape", [picked], {"shape": tuple(int(d) for d in index.shape)}, suffix="_bias")
    if x.rank == 3 and heads != 1:
        raise call.error(f"a {heads}-head table for a rank-3 input {x.shape}")
    if perm is not None:
        bias = call.emit("transpose", [bias], {"perm": perm}, suffix="_bias_t")
    return call.emit("add", [x, bias])


def _beit_relative_index(height: int, width: int, q: int, k: int, with_cls: bool) -> tuple[np.ndarray, int]:
    """kecam beit.MultiHeadRelativePositionalEmbedding.build: the (q, k) index into the
    (heads, (2h-1)(2w-1) + 3) table; the 3 extra entries are cls->patch, patch->cls, cls->cls."""
    cls_len, cls_pos_len = (1, 3) if with_cls else (0, 0)
    num_distance = (2 * height - 1) * (2 * width - 1) + cls_pos_len
    hh, ww = np.meshgrid(range(height), range(width))  # 'xy' indexing, as kecam
    coords = np.reshape(np.stack([hh, ww], axis=-1), [-1, 2])
    rel = coords[:, None, :] - coords[None, :, :]
    rel_hh = rel[:, :, 0] + height - 1
    rel_ww = (rel[:, :, 1] + width - 1) * (2 * height - 1)
    index = (rel_hh + rel_ww).astype(np.int64)
    if k != q:  # kecam keeps the last key blocks when keys and queries differ
        index = index[:, -(k - cls_len) :]
    if with_cls:
        top = np.full((1, index.shape[1]), num_distance - 3, np.int64)
        left = np.full((index.shape[0], 1), num_distance - 2, np.int64)
        corner = np.full((1, 1), num_distance - 1, np.int64)
        index = np.concatenate([np.concatenate([corner, left], axis=0), np.concatenate([top, index], axis=0)], axis=1)
    return index[:q, :k], num_distance


@register("keras->ir", "beit>MultiHeadRelativePositionalEmbedding")
def beit_relative_position_from_kecam(call: LayerCall) -> Value:
    """Attention scores (batch, heads, q, k) + a relative position bias per head (BEiT)."""
    x = call.x
    if x.rank != 4 or None in x.shape[1:]:
        raise call.error(f"expects attention scores (batch, heads, queries, keys) of known size, got {x.shape}")
    with_cls = bool(call.get("with_cls_token", True))
    attn_height, num_heads = int(call.get("attn_height", -1)), int(call.get("num_heads", -1))
    _, heads, q, k = x.shape
    cls_len = 1 if with_cls else 0
    if attn_height == -1:
        height = width = int(float(q - cls_len) ** 0.5)
    else:
        height, width = attn_height, int(float(q - cls_len) / attn_height)
    heads = heads if num_heads == -1 else num_heads
    index, num_distance = _beit_relative_index(height, width, q, k, with_cls)
    table = call.weight(0, expect=(heads, num_distance))
    return _table_bias(call, x, table, index)


def _levit_index(q: int, k: int, query_height: int, key_height: int) -> np.ndarray:
    """kecam levit.MultiHeadPositionalEmbedding.build: the (q, k) index of the absolute
    offset between each query block (on a `strides` grid) and each key block."""
    if query_height == -1:
        q_h = q_w = int(float(q) ** 0.5)
    else:
        q_h, q_w = query_height, int(q / query_height)
    strides = int(math.ceil(float(k / q) ** 0.5))
    if key_height == -1:
        k_h = q_h * strides
        while k % k_h != 0:
            k_h -= 1
        k_w = int(k / k_h)
    else:
        k_h, k_w = key_height, int(k / key_height)
    x1, y1 = np.meshgrid(range(q_h), range(q_w))
    x2, y2 = np.meshgrid(range(k_h), range(k_w))
    aa = np.concatenate([np.reshape(x1, (-1, 1)), np.reshape(y1, (-1, 1))], axis=-1)
    bb = np.concatenate([np.reshape(x2, (-1, 1)), np.reshape(y2, (-1, 1))], axis=-1)
    return np.stack([d[:, 0] + d[:, 1] * k_h for d in (np.abs(bb - a * strides) for a in aa)]).astype(np.int64)


@register("keras->ir", "levit>MultiHeadPositionalEmbedding")
def levit_position_from_kecam(call: LayerCall) -> Value:
    """Attention scores (batch[, heads], q, k) + a learned bias per head and key offset (LeViT)."""
    x = call.x
    if x.rank not in (3, 4) or None in x.shape[1:]:
        raise call.error(f"expects attention scores (batch[, heads], queries, keys) of known size, got {x.shape}")
    q, k = x.shape[-2:]
    index = _levit_index(q, k, int(call.get("query_height", -1)), int(call.get("key_height", -1)))
    if x.rank == 3:
        table = call.weight(0, expect=(k,))[None]
    else:
        table = call.weight(0, expect=(k, x.shape[1])).T  # kecam's (keys, heads) gathered then permuted
    return _table_bias(call, x, table, index)


@register("keras->ir", "kecam/edgenext>PositionalEncodingFourier")
def fourier_position_from_kecam(call: LayerCall) -> Value:
    """x + (fixed 2-D sin/cos features @ ww + bb), the learned projection of EdgeNeXt."""
    x = call.x
    if x.rank != 4 or None in x.shape[1:]:
        raise call.error(f"expects a (batch, height, width, channels) input of known size, got {x.shape}")
    _, height, width, channels = x.shape
    filters, temperature = int(call.get("filters", 32)), float(call.get("temperature", 1e4))
    eps, scale = 1e-6, 2 * math.acos(-1.0)
    hh = (np.arange(height, dtype="float32") + 1) / (float(height) + eps) * scale
    ww = (np.arange(width, dtype="float32") + 1) / (float(width) + eps) * scale
    dim_t = temperature ** (2 * (np.arange(filters, dtype="float32") // 2) / filters)
    pos_hh, pos_ww = hh[:, None] / dim_t, ww[:, None] / dim_t
    pos_hh = np.stack([np.sin(pos_hh[:, 0::2]), np.cos(pos_hh[:, 1::2])], axis=-1)
    pos_ww = np.stack([np.sin(pos_ww[:, 0::2]), np.cos(pos_ww[:, 1::2])], axis=-1)
    pos_hh = np.repeat(np.reshape(pos_hh, [height, 1, -1]), width, axis=1)
    pos_ww = np.repeat(np.reshape(pos_ww, [1, width, -1]), height, axis=0)
    grid = np.concatenate([pos_hh, pos_ww], axis=-1).astype(np.float32)[None]  # (1, h, w, 2 * filters)
    kernel = call.weight(0, expect=(2 * filters, channels))
    bias = call.weight(1, expect=(channels,))
    features = call.emit("constant", [], {"trainable": False}, {"value": grid}, suffix="_grid")
    attrs = {
        "rank": 2,
        "filters": channels,
        "kernel_size": (1, 1),
        "strides": (1, 1),
        "dilation": (1, 1),
        "padding": ((0, 0), (0, 0)),
        "use_bias": True,
        "data_format": "channels_last",
    }
    weights = {"weight": np.ascontiguousarray(kernel.T).reshape(channels, 2 * filters, 1, 1), "bias": bias}
    pos = call.emit("conv", [features], attrs, weights, suffix="_projection")  # a Dense over the features
    return call.emit("add", [x, pos])


@register("keras->ir", "kecam/llama2>RMSNorm")
def rms_norm_from_kecam(call: LayerCall) -> Value:
    """x * rsqrt(mean(x ** 2 over axis) + epsilon) * gamma."""
    x = call.x
    axis = int(call.get("axis", -1)) % x.rank
    gamma = call.weight(0, expect=(x.shape[axis],))
    return call.emit("rms_norm", [x], {"axes": (axis,), "epsilon": float(call.get("epsilon", 1e-5))}, {"weight": gamma})


@register("keras->ir", "kecam/gpt2>PositionalIndex")
def positional_index_from_kecam(call: LayerCall) -> Value:
    """The position ids 0..length-1 of a (batch, length) token input, as a (1, length) int64 row."""
    x = call.x
    length, block = x.shape[-1], int(call.get("block_size", 1024))
    if length is None or length > block:
        raise call.error(f"needs a known sequence length up to block_size={block}, got {x.shape}")
    ids = np.arange(length, dtype=np.int64)[None]
    return call.emit("constant", [], {"trainable": False}, {"value": ids})


@register("keras->ir", "kecam/gpt2>CausalMask")
def causal_mask_from_kecam(call: LayerCall) -> Value:
    """Attention scores + (1 - lower triangle) * -65504 (kecam's float16-safe minus infinity)."""
    x = call.x
    if call.get("is_kv_cache", False):
        raise call.error("a causal mask with a key/value cache is not supported")
    if x.rank != 4 or None in x.shape[2:]:
        raise call.error(f"expects attention scores (batch, heads, queries, keys) of known size, got {x.shape}")
    block = int(call.get("block_size"))
    mask = ((1 - np.tri(block).astype("float32")) * -65504)[None, None, : x.shape[2], : x.shape[3]]
    bias = call.emit("constant", [], {"trainable": False}, {"value": np.ascontiguousarray(mask)}, suffix="_mask")
    return call.emit("add", [x, bias])


@register("keras->ir", "beit>PatchConv2DWithResampleWeights")
def patch_conv_from_kecam(call: LayerCall) -> Value:
    """A plain Conv2D; its subclass only adds a way to resample the kernel for other patch sizes."""
    return conv2d_from_keras(call)


def _relative_to_absolute(call: LayerCall, logits: Value, position: int, blocks: int, axis: int, name: str) -> Value:
    """kecam botnet.RelativePositionalEmbedding.rel_to_abs as the gather it amounts to: the
    (..., 2 * position - 1) relative logits of query block q become the (..., position)
    absolute ones, out[..., q, k] = logits[..., q, position - 1 + k - q], where q is the
    block index on `axis` (the reshape-and-slice trick reads exactly these entries)."""
    if position == 1:  # one position: the single relative logit is the absolute one
        return logits
    shape = [1] * logits.rank
    shape[axis], shape[-1] = blocks, position
    q = np.arange(blocks).reshape([blocks if i == axis else 1 for i in range(logits.rank)])
    k = np.arange(position).reshape([position if i == logits.rank - 1 else 1 for i in range(logits.rank)])
    index = np.ascontiguousarray(np.broadcast_to(position - 1 + k - q, shape).astype(np.int64))
    idx = call.emit("constant", [], {"trainable": False}, {"value": index}, suffix=f"_{name}_index")
    return call.emit("gather", [logits, idx], {"axis": logits.rank - 1}, suffix=f"_{name}_abs")


@register("keras->ir", "botnet>RelativePositionalEmbedding")
def botnet_relative_position_from_kecam(call: LayerCall) -> Value:
    """The 2-D position logits of BotNet / HaloNet attention: queries (batch, heads, h, w, dim)
    -> (batch, heads, h, w, position_height, position_width), the sum of a height and a width
    term, each the queries times a learned (dim, positions) table. Relative tables hold
    2 * positions - 1 offsets, turned into absolute positions as kecam's rel_to_abs does;
    with use_absolute_pos the tables are read as they are."""
    x = call.x
    if x.rank != 5 or None in x.shape[1:]:
        raise call.error(f"expects queries (batch, heads, height, width, key_dim) of known size, got {x.shape}")
    _, _, height, width, key_dim = x.shape
    absolute = bool(call.get("use_absolute_pos", False))
    pos_h = int(call.get("position_height", 0))
    pos_w = int(call.get("position_width", 0)) or pos_h
    pos_h, pos_w = max(pos_h, height), max(pos_w, width)  # kecam's build: at least the input size
    size_h, size_w = (pos_h, pos_w) if absolute else (2 * pos_h - 1, 2 * pos_w - 1)
    call.expect_weights(2)
    terms = {}
    for i, (name, size, position, blocks, axis) in enumerate(
        (("height", size_h, pos_h, height, 2), ("width", size_w, pos_w, width, 3))
    ):
        table = call.weight(i, expect=(key_dim, size))  # r_height, then r_width
        t = call.emit("constant", [], {"trainable": True}, {"value": table}, suffix=f"_{name}_table")
        logits = call.emit("matmul", [x, t], suffix=f"_{name}")
        if not absolute:
            logits = _relative_to_absolute(call, logits, position, blocks, axis, name)
        terms[name] = logits
    h = call.emit("expand_dims", [terms["height"]], {"axis": 5}, suffix="_height_column")
    w = call.emit("expand_dims", [terms["width"]], {"axis": 4}, suffix="_width_row")
    crop = bool(call.get("dynamic_shape", False)) and (height < pos_h or width < pos_w)
    out = call.emit("add", [w, h], suffix="_sum" if crop else "")
    if crop:  # kecam's deprecated dynamic_shape crops the positions to the input size
        out = call.emit("slice", [out], {"axis": 4, "stop": height}, suffix="_crop_height")
        out = call.emit("slice", [out], {"axis": 5, "stop": width})
    return out


@register("keras->ir", "nfnets>ScaledStandardizedConv2D")
def scaled_std_conv_from_kecam(call: LayerCall) -> Value:
    """A Conv2D whose kernel is standardized on every call (NFNet): per filter over (h, w, in),
    (kernel - mean) * rsqrt(max(var * fan_in, eps)) * gain * gamma. The kernel stays the
    trained weight and the standardization stays in the emitted forward, so training matches."""
    attrs = {"gamma": float(call.get("gamma", 1.0)), "epsilon": float(call.get("eps", 1e-5))}
    return conv_layer(call, 2, op="scaled_std_conv", attrs=attrs, filter_weights=("gain",))


def _rates(value: Any) -> tuple[int, int]:
    """kecam's CompatibleExtractPatches dilation rates: a number, (1, r_h, r_w, 1) or (r_h, r_w)."""
    if isinstance(value, (list, tuple)):
        return (int(value[0]), int(value[1])) if len(value) == 2 else (int(value[1]), int(value[2]))
    return (int(value), int(value))


@register("keras->ir", "kecamCommon>CompatibleExtractPatches")
def extract_patches_from_kecam(call: LayerCall) -> Value:
    """tf.image.extract_patches of each (batch, height, width, channels) image ('VALID' windows,
    after kecam's own k // 2 zero padding when padding="same"): (batch, out_h, out_w, k * k * c),
    or (batch, out_h, out_w, k, k, c) when not `compressed`. With force_conv kecam computes the
    same thing with a fixed one-hot convolution, whose kernel is checked to be that one."""
    x = call.x
    if x.rank != 4 or None in x.shape[1:]:
        raise call.error(f"expects a (batch, height, width, channels) input of known size, got {x.shape}")
    sizes, strides = call.get("sizes", 3), call.get("strides", 2)
    # kecam reads entry 1 of a list for both axes ((1, k, k, 1) or (k, k)); the rates, entries 1:3
    kernel = int(sizes[1] if isinstance(sizes, (list, tuple)) else sizes)
    stride = int(strides[1] if isinstance(strides, (list, tuple)) else strides)
    dilation = _rates(call.get("rates", 1))
    if call.get("force_conv", False) or call.weights:  # an untrainable Conv2D of one-hot (k, k, 1, k * k) filters
        call.expect_weights(1)
        unfold = np.eye(kernel * kernel, dtype="float32").reshape(kernel, kernel, 1, kernel * kernel)
        if not np.array_equal(call.weight(0, expect=unfold.shape), unfold):
            raise call.error("its unfold convolution holds other filters than the one-hot windows")
    if str(call.get("padding", "same")).lower() == "same":
        pad = kernel // 2
        x = call.emit("pad", [x], {"pads": ((pad, pad), (pad, pad)), "data_format": "channels_last"}, suffix="_pad")
    attrs = {
        "rank": 2,
        "kernel_size": (kernel, kernel),
        "strides": (stride, stride),
        "dilation": dilation,
        "data_format": "channels_last",
    }
    compressed = bool(call.get("compressed", True))
    y = call.emit("extract_patches", [x], attrs, suffix="" if compressed else "_patches")
    if compressed:
        return y
    return call.emit("reshape", [y], {"shape": (*y.shape[1:3], kernel, kernel, x.shape[-1])})


def _nat_pad_bias(indexes: np.ndarray, total: int, dilation: int) -> np.ndarray:
    """kecam nat.MultiHeadRelativePositionalKernelBias._pad_bias_: the table row of each query
    position along one axis (edge queries keep the first or last offsets)."""
    size = indexes.shape[0]
    left = np.repeat(indexes[: size // 2], dilation)
    right = np.repeat(indexes[size // 2 + 1 :], dilation)
    center = np.repeat(indexes[size // 2], total - left.shape[0] - right.shape[0])
    return np.concatenate([left, center, right], axis=-1)


@register("keras->ir", "kecam/nat>MultiHeadRelativePositionalKernelBias")
def nat_kernel_bias_from_kecam(call: LayerCall) -> Value:
    """Neighborhood-attention scores (batch, h * w, heads, ..., k * k) (or heads first) + a learned
    (heads, (2k - 1) ** 2) bias gathered per query position and kernel offset (NAT, DiNAT), with
    the index of kecam's build."""
    x = call.x
    if x.rank < 4 or None in x.shape[1:]:
        raise call.error(f"expects attention scores (batch, queries, heads, ..., keys) of known size, got {x.shape}")
    heads_first = bool(call.get("is_heads_first", False))
    blocks, heads = (x.shape[2], x.shape[1]) if heads_first else (x.shape[1], x.shape[2])
    size = int(np.sqrt(float(x.shape[-1])))
    input_height = int(call.get("input_height", -1))
    height = input_height if input_height > 0 else int(np.sqrt(float(blocks)))
    width = blocks // height
    pos_size = 2 * size - 1
    table = call.weight(0, expect=(heads, pos_size * pos_size))
    rate = call.get("dilation_rate", 1)
    rate_h, rate_w = (int(rate[0]), int(rate[1])) if isinstance(rate, (list, tuple)) else (int(rate), int(rate))
    idx = np.arange(0, size)
    coords = np.reshape(np.expand_dims(idx, -1) * pos_size + idx, [-1]).astype("int64")
    bias_hw = np.expand_dims(_nat_pad_bias(idx, height, rate_h), -1) * pos_size + _nat_pad_bias(idx, width, rate_w)
    index = np.reshape(np.expand_dims(bias_hw, -1) + coords, [-1, size**2])[::-1]  # torch.flip(bias_coords, [0])
    if index.shape[0] != blocks or size * size != x.shape[-1]:
        raise call.error(f"a {height} x {width} grid of {size} x {size} kernels does not match the scores {x.shape}")
    index = np.reshape(index, [blocks] + [1] * (x.rank - 4) + [size * size])
    perm = None if heads_first else (1, 0, *range(2, x.rank - 1))
    return _table_bias(call, x, table, index, perm)


@register("keras->ir", "swinv2>DivideScale")
def divide_scale_from_kecam(call: LayerCall) -> Value:
    """x / maximum(scale, min_value) with a learned scale per channel of `axis` (Swin V2's
    per-head logit scale of its cosine attention)."""
    x = call.x
    call.expect_weights(1)
    scale = call.weight(0)
    axis = call.get("axis", -1)
    axes = [int(a) % x.rank for a in (axis if isinstance(axis, (list, tuple)) else [axis])]
    if axes == [x.rank - 1]:
        expect: tuple = (x.shape[-1],)
    else:  # kecam shapes it to broadcast: ones except on `axis`
        expect = tuple(x.shape[i] if i in axes else 1 for i in range(x.rank))
    if 0 in axes or tuple(scale.shape) != expect:
        raise call.error(f"scale of shape {scale.shape} does not fit axis {axis} of the input {x.shape}")
    s = call.emit("constant", [], {"trainable": True}, {"value": scale}, suffix="_scale")
    floor = call.emit("clip", [s], {"min": float(call.get("min_value", 0.01))}, suffix="_floor")
    return call.emit("div", [x, floor])


@register("keras->ir", "swinv2>WindowAttentionMask")
def window_attention_mask_from_kecam(call: LayerCall) -> Value:
    """Shifted-window attention scores (batch * windows, heads, q, q) + kecam's fixed mask: -100
    between positions that come from different regions of the shifted image, per window."""
    x = call.x
    if x.rank != 4 or None in x.shape[1:]:
        raise call.error(f"expects attention scores (batch * windows, heads, q, q) of known size, got {x.shape}")
    height, width = int(call.get("height")), int(call.get("width"))
    win_h, win_w = int(call.get("window_height")), int(call.get("window_width"))
    shift_h, shift_w = int(call.get("shift_height", 0)), int(call.get("shift_width", 0))
    blocks = (height // win_h) * (width // win_w)
    if x.shape[2] != win_h * win_w or x.shape[3] != win_h * win_w:
        raise call.error(f"{win_h} x {win_w} windows do not match the scores {x.shape}")
    hh_split = [0, height - win_h, height - shift_h, height]  # kecam's build, as written there
    ww_split = [0, width - win_w, width - shift_w, width]
    rows, value = [], 0
    for i in range(len(hh_split) - 1):
        hh = hh_split[i + 1] - hh_split[i]
        cols = [
            np.zeros([hh, ww_split[j + 1] - ww_split[j]], "float32") + (j + value) for j in range(len(ww_split) - 1)
        ]
        rows.append(np.concatenate(cols, axis=-1))
        value += len(ww_split) - 1
    region = np.concatenate(rows, axis=0).reshape(height // win_h, win_h, width // win_w, win_w)
    region = region.transpose(0, 2, 1, 3).reshape(-1, win_h * win_w)
    mask = np.where(region[:, None, :] - region[:, :, None] != 0, -100, 0).astype("float32")[None, :, None]
    windows = call.emit("unfold_time", [x], {"steps": blocks}, suffix="_windows")
    bias = call.emit("constant", [], {"trainable": False}, {"value": np.ascontiguousarray(mask)}, suffix="_mask")
    masked = call.emit("add", [windows, bias], suffix="_masked")
    return call.emit("fold_time", [masked])


@register("keras->ir", "swinv2>PairWiseRelativePositionalEmbedding")
def pair_wise_positions_from_kecam(call: LayerCall) -> Value:
    """Swin V2's fixed (h * w, h * w, 2) table of log-spaced relative coordinates between the
    positions of an (h, w) window, computed as kecam's build does; the input only gives the
    window size. The table has no batch axis: the meta MLP reading it runs once per call."""
    x = call.x
    if x.rank != 4 or None in x.shape[1:3]:
        raise call.error(f"expects windows (batch * windows, height, width, channels) of known size, got {x.shape}")
    height, width = x.shape[1], x.shape[2]
    xx, yy = np.meshgrid(range(height), range(width))  # 'xy' indexing, as kecam
    coords = np.reshape(np.stack([yy, xx], axis=-1).astype("float32"), [-1, 2])
    relative = coords[:, None, :] - coords[None, :, :]
    table = (np.sign(relative) * np.log(1.0 + np.abs(relative))).astype("float32")
    return call.emit("constant", [], {"trainable": False}, {"value": np.ascontiguousarray(table)})
