"""Keras code for attention: `multi_head_attention` as layers.MultiHeadAttention (its
masks, use_causal_mask, the attention scores), and the masks it reads."""

from __future__ import annotations

import numpy as np

from ...graph import Node
from ..registry import register
from .codegen import KerasEmitter, py_literal


@register("ir->keras", "multi_head_attention")
def multi_head_attention_to_keras(node: Node, em: KerasEmitter) -> None:
    a, w = node.attrs, node.weights
    h, d, dv = a["num_heads"], a["key_dim"], a["value_dim"]
    weights = []
    for part, dim in (("query", d), ("key", d), ("value", dv)):
        # a Linear's (heads * dim, features) weight is the (features, heads, dim) EinsumDense kernel
        weights.append(w[f"{part}_weight"].T.reshape(-1, h, dim))
        if a["use_bias"]:
            weights.append(w[f"{part}_bias"].reshape(h, dim))
    weights.append(w["output_weight"].T.reshape(h, dv, -1))
    if a["use_bias"]:
        weights.append(w["output_bias"])
    query, value, key = node.inputs[:3]
    kwargs: dict = {"num_heads": h, "key_dim": d}
    if dv != d:
        kwargs["value_dim"] = dv
    if not a["use_bias"]:
        kwargs["use_bias"] = False
    if a["output_dim"] != query.shape[-1]:
        kwargs["output_shape"] = a["output_dim"]
    layer = em.layer(
        node,
        "layers.MultiHeadAttention",
        [np.asarray(x, np.float32) for x in weights],
        **kwargs,
    )
    args = [em.var(query), em.var(value)]
    if key is not value:
        args.append(f"key={em.var(key)}")
    for name, mask in zip(a["mask_inputs"], node.inputs[3:]):
        args.append(f"{name}={em.var(mask)}")
    if a["causal"]:
        args.append("use_causal_mask=True")
    if a["return_scores"] == "none":
        em.assign(node, f"{layer}({', '.join(args)})")
        return
    args.append("return_attention_scores=True")
    out = em.bind(node.outputs[0])
    if a["return_scores"] == "heads":
        scores = em.bind(node.outputs[1], f"{node.name}_weights")
        em.line(f"{out}, {scores} = {layer}({', '.join(args)})")
        return
    per_head = em.temp(f"{node.name}_scores", "None")
    em.lines[-1] = f"{out}, {per_head} = {layer}({', '.join(args)})"
    # nn.MultiheadAttention returns the weights averaged over the heads
    em.line(f"{em.bind(node.outputs[1], f'{node.name}_weights')} = keras.ops.mean({per_head}, axis=1)")


@register("ir->keras", "sequence_mask")
def sequence_mask_to_keras(node: Node, em: KerasEmitter) -> None:
    x = em.var(node.inputs[0])
    expr = f"keras.ops.not_equal({x}, {py_literal(node.attrs['value'])})"
    if node.attrs["reduce_last"]:
        expr = f"keras.ops.any({expr}, axis=-1)"
    em.assign(node, expr)


@register("ir->keras", "mask_merge")
def mask_merge_to_keras(node: Node, em: KerasEmitter) -> None:
    fn = "keras.ops.logical_and" if node.attrs["mode"] == "and" else "keras.ops.logical_or"
    a, b = node.inputs
    em.assign(node, f"{fn}({em.var(a)}, {em.var(b)})")
