"""ATen linear algebra and lookups: linear, matmul/mm/bmm/addmm/baddbmm, einsum, embedding."""

from __future__ import annotations

import numpy as np

from ...graph import Node, Value
from ..registry import register
from .arithmetic import operand
from .calls import AtenCall, Const, learned_rows


def _tied_embedding(call: AtenCall) -> Node | None:
    """The embedding node whose table is this linear's weight (a language model's head tied to
    its input embeddings: GPT-2's lm_head.weight is transformer.wte.weight), if it was read."""
    weight = call.args["weight"]
    if not (isinstance(weight, Const) and weight.trainable and weight.name.endswith(".weight")):
        return None
    owner = weight.name[: -len(".weight")]
    if owner == (call.module if call.leaf else call.owner):
        return None
    return next(
        (n for n in call.graph.nodes if n.op == "embedding" and n.source == owner and not n.attrs["reverse"]), None
    )


@register("torch->ir", "aten.linear")
def linear_to_ir(call: AtenCall) -> Value:
    x = call.value("input")
    bias = call.args.get("bias")
    table = _tied_embedding(call)
    if table is not None:
        # the tied table read as an output layer: one weight, as in PyTorch (the nodes of one
        # source are one Keras layer, called again)
        out = call.emit("embedding", [x], {**table.attrs, "reverse": True}, dict(table.weights))
        out.source = out.source or call.module
        out.producer.source = table.source
    elif isinstance(call.args["weight"], Value):
        # a weight the model computes (weight_norm's g * v / ||v||): x @ weight.T on the value
        batch = "abcdefgh"[: x.rank - 1]
        out = call.emit("einsum", [x, call.args["weight"]], {"equation": f"{batch}i,oi->{batch}o"})
    else:
        w = call.const("weight")
        weights = {"weight": w}
        if isinstance(bias, Const):
            weights["bias"] = bias.array
        out = call.emit("dense", [x], {"units": int(w.shape[0]), "use_bias": "bias" in weights}, weights)
        if isinstance(bias, Const):
            return out
    return out if bias is None else _add_bias(call, out, bias)


def _add_bias(call: AtenCall, out: Value, bias: Const | Value) -> Value:
    """out + bias, where the bias is a parameter that no layer holds (a tied head's bias) or
    one the model computes (EVA's torch.cat((q_bias, k_bias, v_bias)) with a zero k_bias
    buffer: q_bias and v_bias stay trainable, the zero third stays a fixed zero)."""
    value = bias if isinstance(bias, Value) else call.reader.constant_value(bias, out.rank)
    return call.emit("add", [out, value], suffix="_bias")


def _matmul(call: AtenCall, a_name: str, b_name: str, bias: Const | Value | None = None) -> Value:
    a, b = call.args[a_name], call.args[b_name]
    if isinstance(b, Const) and b.array.ndim == 2 and isinstance(a, Value):
        # x @ W with a parameter W is a Dense layer with kernel W (and the bias, if a parameter)
        weights = {"weight": np.ascontiguousarray(b.array.T)}
        if isinstance(bias, Const):
            weights["bias"] = bias.array
        y = call.emit("dense", [a], {"units": int(b.array.shape[1]), "use_bias": "bias" in weights}, weights)
        return y if bias is None or "bias" in weights else _add_bias(call, y, bias)
    y = call.emit("matmul", [call.value(a_name), call.value(b_name)])
    return y if bias is None else _add_bias(call, y, bias)


@register("torch->ir", "aten.matmul", "aten.mm", "aten.bmm")
def matmul_to_ir(call: AtenCall) -> Value:
    names = [k for k in call.args if call.args[k] is not None][:2]
    return _matmul(call, names[0], names[1])


@register("torch->ir", "aten.addmm")
def addmm_to_ir(call: AtenCall) -> Value:
    if call.args.get("beta", 1) != 1 or call.args.get("alpha", 1) != 1:
        raise call.unsupported("addmm with beta or alpha other than 1")
    return _matmul(call, "mat1", "mat2", bias=call.args["self"])


@register("torch->ir", "aten.baddbmm")
def baddbmm_to_ir(call: AtenCall) -> Value:
    """beta * self + alpha * (batch1 @ batch2) (BLOOM's ALiBi scores). With beta 0, torch
    ignores `self` altogether (NaN and inf in it do not reach the result)."""
    y = call.emit("matmul", [call.value("batch1"), call.value("batch2")])
    alpha, beta = call.args.get("alpha", 1), call.args.get("beta", 1)
    if alpha != 1:
        y = call.emit("mul", [y, call.reader.scalar_value(float(alpha), y.rank)], suffix="_alpha")
    if beta == 0:
        return y
    base = operand(call, "self", y.rank, y.dtype)
    if beta != 1:
        base = call.emit("mul", [base, call.reader.scalar_value(float(beta), y.rank)], suffix="_beta")
    return call.emit("add", [base, y], suffix="_add")


@register("torch->ir", "aten.einsum")
def einsum_to_ir(call: AtenCall) -> Value:
    operands = list(call.args["tensors"])
    values = [call.reader.constant_value(o) if isinstance(o, Const) else o for o in operands]
    return call.emit("einsum", values, {"equation": str(call.args["equation"]).replace(" ", "")})


@register("torch->ir", "aten.embedding")
def embedding_to_ir(call: AtenCall) -> Value:
    rows = learned_rows(call.args)
    if rows is not None:
        # consecutive rows of a learned table (position embeddings): the table is a trainable
        # weight shaped (1, P, C), sliced; the batch broadcasts
        start, count = rows
        table = call.args["weight"]
        full = call.reader.constant_value(Const(table.name, table.array.reshape(1, *table.array.shape), True))
        picked = call.emit("slice", [full], {"axis": 1, "start": start, "stop": start + count, "step": 1})
        shape = tuple(call.args["indices"].array.shape) + (int(table.array.shape[1]),)
        return (
            picked
            if shape == tuple(picked.shape)
            else call.emit("reshape", [picked], {"shape": shape[1:]}, suffix="_rows")
        )
    w = call.const("weight")
    idx = call.args["padding_idx"]
    attrs = {
        "input_dim": int(w.shape[0]),
        "output_dim": int(w.shape[1]),
        "padding_idx": None if idx is None or idx < 0 else int(idx),
    }
    out = call.emit("embedding", [call.value("indices")], attrs, {"weight": w})
    table = call.args["weight"].name
    if call.leaf and table.endswith(".weight") and table != f"{call.module}.weight":
        # a table tied to another module's (Bart's encoder and decoder embeddings share one):
        # the nodes of one source are one Keras layer, called again
        out.source = out.source or call.module
        out.producer.source = table[: -len(".weight")]
    return out
