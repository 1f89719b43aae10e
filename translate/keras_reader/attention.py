"""Keras attention layers: MultiHeadAttention, Attention, AdditiveAttention, EinsumDense,
and GlobalAveragePooling1D over a masked sequence.

MultiHeadAttention's projections are EinsumDense kernels (features, heads, dim) and
(heads, dim, out); they become Linear weights (heads * dim, features) and
(out, heads * dim) here. Keras masks reach attention implicitly: the query's mask, the
value's and the key's (Keras fills `value_mask` / `key_mask` from the tensors' masks), and
an explicit `attention_mask=`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...graph import Value
from ...graph.ops.sequence import MHA_MASKS
from ..registry import register
from .calls import LayerCall

_MHA_PARTS = {
    "query": ("query", "query_dense", "_query_dense"),
    "key": ("key", "key_dense", "_key_dense"),
    "value": ("value", "value_dense", "_value_dense"),
    "output": ("attention_output", "output_dense", "_output_dense"),
}


def _mha_weights(call: LayerCall) -> dict[str, dict[str, np.ndarray]]:
    """{'query': {'kernel': ..., 'bias': ...}, ...} from `.h5` names ('query/kernel') or
    `.keras` paths ('query_dense/vars/0')."""
    found: dict[str, dict[str, np.ndarray]] = {}
    for name, array in call.weights:
        parts = name.split("/")
        part = next((p for p, aliases in _MHA_PARTS.items() if any(a in parts for a in aliases)), None)
        if part is None:
            raise call.error(f"weight {name!r} belongs to no projection of the attention layer")
        last = parts[-1].split(":")[0]
        kind = "kernel" if last in ("kernel", "0") else "bias" if last in ("bias", "1") else None
        if kind is None:
            raise call.error(f"weight {name!r} is neither a kernel nor a bias")
        found.setdefault(part, {})[kind] = array
    return found


def _tensor(call: LayerCall, index: int, key: str) -> Value | None:
    if len(call.args) > index and isinstance(call.args[index], Value):
        return call.args[index]
    value = call.kwargs.get(key)
    return value if isinstance(value, Value) else None


@register("keras->ir", "MultiHeadAttention")
def multi_head_attention_from_keras(call: LayerCall) -> Value:
    query, value = _tensor(call, 0, "query"), _tensor(call, 1, "value")
    key = _tensor(call, 2, "key")
    if query is None or value is None:
        raise call.error("needs query and value tensors")
    if call.get("use_gate"):
        raise call.error("use_gate=True is not supported yet")
    if call.get("sliding_window") is not None:
        raise call.error("sliding_window attention is not supported yet")
    dropout = float(call.get("dropout") or 0.0)  # no dropout at inference, but it picks Keras's softmax
    call.get("flash_attention")  # the same numbers, another kernel
    for key_ in ("query_shape", "key_shape", "value_shape"):  # tf.keras 2 build shapes
        call.get(key_)
    axes = call.get("attention_axes")
    if query.rank != 3 or value.rank != 3 or (key is not None and key.rank != 3):
        raise call.error(
            f"attention over (batch, time, features) inputs only; got query {query.shape}, value {value.shape}"
        )
    if axes is not None and [a % 3 for a in (axes if isinstance(axes, (list, tuple)) else [axes])] != [1]:
        raise call.error(f"attention_axes={axes} is not supported (the time axis, 1, is)")
    heads, key_dim = int(call.get("num_heads")), int(call.get("key_dim"))
    value_dim = int(call.get("value_dim") or key_dim)
    out_shape = call.get("output_shape")
    if isinstance(out_shape, (list, tuple)):
        if len(out_shape) != 1:
            raise call.error(f"output_shape={out_shape} with several axes is not supported")
        out_shape = out_shape[0]
    out_dim = int(out_shape) if out_shape else int(query.shape[-1])
    use_bias = bool(call.get("use_bias", True))
    found = _mha_weights(call)
    key_features = int((key if key is not None else value).shape[-1])
    expected = {
        "query": ((int(query.shape[-1]), heads, key_dim), (heads, key_dim)),
        "key": ((key_features, heads, key_dim), (heads, key_dim)),
        "value": ((int(value.shape[-1]), heads, value_dim), (heads, value_dim)),
        "output": ((heads, value_dim, out_dim), (out_dim,)),
    }
    weights: dict[str, np.ndarray] = {}
    for part, (kshape, bshape) in expected.items():
        arrays = found.get(part, {})
        kernel = arrays.get("kernel")
        if kernel is None or tuple(kernel.shape) != kshape:
            raise call.error(
                f"the {part} projection kernel should have shape {kshape}, the file has {None if kernel is None else kernel.shape}"
            )
        rows = kernel.reshape(kshape[0], -1) if part != "output" else kernel.reshape(-1, out_dim)
        weights[f"{part}_weight"] = np.ascontiguousarray(rows.T)
        if use_bias:
            bias = arrays.get("bias")
            if bias is None or tuple(bias.shape) != bshape:
                raise call.error(f"the {part} projection bias should have shape {bshape}")
            weights[f"{part}_bias"] = bias.reshape(-1)
    masks = {
        "query_mask": call.kwargs.get("query_mask") or call.mask_of(query),
        "value_mask": call.kwargs.get("value_mask") or call.mask_of(value),
        "key_mask": call.kwargs.get("key_mask") or (call.mask_of(key) if key is not None else None),
        "attention_mask": call.kwargs.get("attention_mask"),
    }
    given = [m for m in MHA_MASKS if isinstance(masks[m], Value)]
    inputs = [query, value, key if key is not None else value] + [masks[m] for m in given]
    attrs = {
        "num_heads": heads,
        "key_dim": key_dim,
        "value_dim": value_dim,
        "output_dim": out_dim,
        "use_bias": use_bias,
        "causal": bool(call.kwargs.get("use_causal_mask", False)),
        "mask_inputs": tuple(given),
        "return_scores": "heads" if call.kwargs.get("return_attention_scores") else "none",
        "zero_masked_rows": bool(call.kwargs.get("return_attention_scores")) or dropout > 0,
    }
    node = call.graph.add_node(
        "multi_head_attention",
        inputs,
        attrs,
        weights,
        name=call.name.replace("/", "_"),
        source=call.name,
        source_class=call.class_name,
    )
    call._emitted.append(node)
    outs = node.outputs
    # Keras's MultiHeadAttention removes the masks from its input tensors: layers called on
    # them afterwards (a residual Add) see no mask
    for tensor in (query, value, key):
        call.known_masks.pop(id(tensor), None)
    if isinstance(masks["query_mask"], Value):
        call.output_masks = [masks["query_mask"]] + [None] * (len(outs) - 1)
    return outs


def _attention_masks(call: LayerCall, q: Value, v: Value) -> tuple[list[str], list[Value]]:
    explicit = call.kwargs.get("mask")
    if isinstance(explicit, (list, tuple)):
        q_mask = explicit[0] if len(explicit) > 0 else None
        v_mask = explicit[1] if len(explicit) > 1 else None
    else:
        q_mask, v_mask = call.mask_of(q), call.mask_of(v)
    names, values = [], []
    for name, m in (("query_mask", q_mask), ("value_mask", v_mask)):
        if isinstance(m, Value):
            names.append(name)
            values.append(m)
    return names, values


@register("keras->ir", "Attention", "AdditiveAttention")
def attention_from_keras(call: LayerCall) -> Value:
    ins = call.inputs
    if len(ins) not in (2, 3):
        raise call.error(f"needs [query, value] or [query, value, key], got {len(ins)} tensors")
    if call.kwargs.get("return_attention_scores"):
        raise call.error("return_attention_scores=True is not supported yet")
    q, v = ins[0], ins[1]
    k = ins[2] if len(ins) == 3 else v
    call.get("dropout")  # inference: no dropout
    use_scale = bool(call.get("use_scale", call.class_name == "AdditiveAttention"))
    weights: dict[str, Any] = {}
    i = 0
    if use_scale:
        weights["scale"] = np.asarray(call.weight(0), np.float32)
        i = 1
    if call.class_name == "AdditiveAttention":
        score = "additive"
    else:
        score = str(call.get("score_mode", "dot"))
        if score == "concat":
            weights["concat_score_weight"] = np.asarray(call.weight(i), np.float32)
    names, masks = _attention_masks(call, q, v)
    y = call.emit(
        "dot_attention",
        [q, v, k, *masks],
        {"score": score, "causal": bool(call.kwargs.get("use_causal_mask", False)), "mask_inputs": tuple(names)},
        weights,
    )
    if "query_mask" in names:
        call.output_masks = [masks[names.index("query_mask")]]
    return y


@register("keras->ir", "EinsumDense")
def einsum_dense_from_keras(call: LayerCall) -> Value:
    equation = str(call.get("equation")).replace(" ", "")
    if "..." in equation:
        raise call.error(f"equations with an ellipsis ({equation!r}) are not supported yet")
    if call.get("lora_rank"):
        raise call.error("LoRA-enabled EinsumDense layers are not supported; merge the LoRA weights first")
    call.get("output_shape")  # follows from the equation and the kernel
    weights = {"kernel": call.weight(0)}
    if call.get("bias_axes"):
        weights["bias"] = call.weight(1)
    y = call.emit("einsum_dense", [call.x], {"equation": equation}, weights)
    return call.activate(y, call.get("activation"))
