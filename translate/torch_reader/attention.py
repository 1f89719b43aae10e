"""Attention: nn.MultiheadAttention as one `attention` node (a Keras MultiHeadAttention
layer), translated from the whole module call; F.scaled_dot_product_attention on its own
as matmul / softmax nodes."""

from __future__ import annotations

import math

import numpy as np

from ...graph import Value
from ..registry import register
from .reader import AtenCall, ModuleCall, aten_key


@register("torch->ir", "module.MultiheadAttention")
def multihead_attention_to_ir(call: ModuleCall) -> list[Value]:
    st = call.state
    if "in_proj_weight" not in st:
        raise call.unsupported("separate query/key/value projections (kdim or vdim differ from embed_dim)")
    if "bias_k" in st or "bias_v" in st:
        raise call.unsupported("bias_k / bias_v")
    sdpa = call.targets("aten.scaled_dot_product_attention")
    if len(sdpa) != 1:
        raise call.unsupported("a call that returns attention weights; call it with need_weights=False")
    args = list(sdpa[0].args) + [None] * 4
    if args[3] is not None or sdpa[0].kwargs.get("attn_mask") is not None:
        raise call.unsupported("attention masks (attn_mask / key_padding_mask)")
    causal = bool(sdpa[0].kwargs.get("is_causal", args[5] if len(args) > 5 and args[5] is not None else False))
    num_heads, head_dim = (int(d) for d in sdpa[0].args[0].meta["val"].shape[1::2])
    # batch_first=True: PyTorch transposes each input to (length, batch, features) first
    names = {n.name for n in call.nodes}
    for n in call.nodes:
        external = [a for a in n.args if getattr(a, "name", None) not in names and isinstance(call.reader.env.get(getattr(a, "name", "")), Value)]
        is_swap = aten_key(n.target) == "aten.transpose" and sorted(int(d) % 3 for d in n.args[1:3]) == [0, 1]
        if external and not is_swap:
            raise call.unsupported("batch_first=False (inputs shaped (length, batch, features)); construct it with batch_first=True")
    if len(call.inputs) not in (1, 2, 3) or len(call.outputs) != 1:
        raise call.unsupported(f"{len(call.inputs)} tensor inputs and {len(call.outputs)} outputs")
    query = call.inputs[0]
    key = call.inputs[1] if len(call.inputs) > 1 else query
    value = call.inputs[2] if len(call.inputs) > 2 else key
    w, e = st["in_proj_weight"], st["in_proj_weight"].shape[1]
    b = st.get("in_proj_bias", np.zeros(3 * e, np.float32))
    weights = {
        "q_weight": w[:e], "k_weight": w[e : 2 * e], "v_weight": w[2 * e :],
        "q_bias": b[:e], "k_bias": b[e : 2 * e], "v_bias": b[2 * e :],
        "out_weight": st["out_proj.weight"],
        "out_bias": st.get("out_proj.bias", np.zeros(e, np.float32)),
    }  # fmt: skip
    weights = {k: np.ascontiguousarray(v) for k, v in weights.items()}
    return [call.emit("attention", [query, key, value], {"num_heads": num_heads, "head_dim": head_dim, "causal": causal}, weights)]


@register("torch->ir", "aten.scaled_dot_product_attention")
def sdpa_to_ir(call: AtenCall) -> Value:
    q, k, v = call.value("query"), call.value("key"), call.value("value")
    if call.args.get("attn_mask") is not None or call.args.get("is_causal"):
        raise call.unsupported("scaled_dot_product_attention with a mask or is_causal")
    if q.rank < 3:
        raise call.unsupported("attention on tensors without a batch axis")
    perm = tuple(range(k.rank - 2)) + (k.rank - 1, k.rank - 2)
    kt = call.emit("transpose", [k], {"perm": perm}, suffix="_keys")
    scores = call.emit("matmul", [q, kt], suffix="_scores")
    scale = call.args.get("scale") or 1.0 / math.sqrt(int(q.shape[-1]))
    scaled = call.emit("mul", [scores, call.reader.scalar_value(float(scale), scores.rank)], suffix="_scaled")
    weights = call.emit("softmax", [scaled], {"axis": (scaled.rank - 1,)}, suffix="_weights")
    return call.emit("matmul", [weights, v])
