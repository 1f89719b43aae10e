"""Keras code for Dense, Embedding, matmul, einsum, learned constants and per-channel affines."""

from __future__ import annotations

import numpy as np

from ...graph import Node
from ..registry import register
from .codegen import KerasEmitter, activation_kwarg, py_literal

_PARAMETER = '''class Parameter(layers.Layer):
    """A learned tensor that does not depend on the inputs (a PyTorch nn.Parameter or
    buffer used directly in forward). It is called on the model input only to join the graph."""

    def __init__(self, shape, value_trainable=True, per_example=False, value_dtype="float32", **kwargs):
        super().__init__(**kwargs)
        self.shape_ = tuple(shape)
        self.value_trainable = value_trainable
        self.per_example = per_example  # repeat the size-1 axis 0 for every example of the batch
        self.value_dtype = value_dtype
        self.value = self.add_weight(
            shape=self.shape_, initializer="zeros", trainable=value_trainable, name="value", dtype=value_dtype
        )

    def call(self, inputs):
        value = keras.ops.convert_to_tensor(self.value)
        if self.per_example:
            value = keras.ops.broadcast_to(value, (keras.ops.shape(inputs)[0], *self.shape_[1:]))
        return value

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.shape_[1:]) if self.per_example else self.shape_

    def get_config(self):
        config = {"shape": self.shape_, "value_trainable": self.value_trainable, "per_example": self.per_example}
        return {**super().get_config(), **config, "value_dtype": self.value_dtype}
'''

_TABLE_LOOKUP = '''class TableLookup(layers.Layer):
    """Entries of a learned table picked by an integer index at run time:
    table.reshape(-1)[index] (a PyTorch parameter read through a constant index, such as a
    relative-position bias table gathered by its index buffer). The table is a trainable weight."""

    def __init__(self, table_shape, **kwargs):
        super().__init__(**kwargs)
        self.table_shape = tuple(table_shape)
        self.table = self.add_weight(shape=self.table_shape, initializer="zeros", name="table")

    def call(self, index):
        return keras.ops.take(keras.ops.reshape(self.table, (-1,)), index)

    def compute_output_shape(self, index_shape):
        return index_shape

    def get_config(self):
        return {**super().get_config(), "table_shape": self.table_shape}
'''


@register("ir->keras", "dense")
def dense_to_keras(node: Node, em: KerasEmitter) -> None:
    w = node.weights["weight"]
    weights = [w.T]
    kwargs = {}
    if node.attrs["use_bias"]:
        weights.append(node.weights["bias"])
    else:
        kwargs["use_bias"] = False
    kwargs.update(activation_kwarg(node))
    em.assign(
        node, f"{em.layer(node, 'layers.Dense', weights, units=int(w.shape[0]), **kwargs)}({em.var(node.inputs[0])})"
    )


_REVERSIBLE_EMBEDDING = '''class ReversibleEmbedding(layers.Embedding):
    """An Embedding whose table is also read as an output layer: reverse=True computes
    inputs @ embeddings.T (a language model's head tied to its input embeddings, one weight)."""

    def call(self, inputs, reverse=False):
        if reverse:
            return keras.ops.matmul(inputs, keras.ops.transpose(self.embeddings))
        return super().call(inputs)

    def compute_output_spec(self, inputs, reverse=False):
        if reverse:
            return keras.KerasTensor((*inputs.shape[:-1], self.input_dim), dtype=self.compute_dtype)
        return super().compute_output_spec(inputs)
'''


@register("ir->keras", "embedding")
def embedding_to_keras(node: Node, em: KerasEmitter) -> None:
    a = node.attrs
    tied = any(n.attrs["reverse"] for n in em.graph.nodes if n.op == "embedding" and n.source == node.source)
    cls = em.helper("ReversibleEmbedding", _REVERSIBLE_EMBEDDING) if tied else "layers.Embedding"
    layer = em.layer(node, cls, [node.weights["weight"]], input_dim=a["input_dim"], output_dim=a["output_dim"])
    reverse = ", reverse=True" if a["reverse"] else ""
    em.assign(node, f"{layer}({em.var(node.inputs[0])}{reverse})")


@register("ir->keras", "matmul")
def matmul_to_keras(node: Node, em: KerasEmitter) -> None:
    a, b = node.inputs
    em.assign(node, f"keras.ops.matmul({em.var(a)}, {em.var(b)})")


@register("ir->keras", "einsum")
def einsum_to_keras(node: Node, em: KerasEmitter) -> None:
    args = ", ".join(em.var(v) for v in node.inputs)
    em.assign(node, f"keras.ops.einsum({py_literal(node.attrs['equation'])}, {args})")


@register("ir->keras", "constant")
def constant_to_keras(node: Node, em: KerasEmitter) -> None:
    value = node.weights["value"]
    if value.size == 1 and not node.attrs["trainable"] and not node.attrs["per_example"]:
        number = value.reshape(-1)[0]
        # the shortest literal that round-trips the stored (float32) number: 0.3, not 0.30000001192092896
        literal = float(str(number)) if np.issubdtype(value.dtype, np.floating) else int(number)
        em.inline(node.output, py_literal(literal))
        return
    cls = em.helper("Parameter", _PARAMETER)
    anchor = em.var(em.graph.inputs[0])
    kwargs = {"shape": tuple(int(d) for d in value.shape)}
    if not node.attrs["trainable"]:
        kwargs["value_trainable"] = False
    if node.attrs["per_example"]:
        kwargs["per_example"] = True
    if np.issubdtype(value.dtype, np.integer):  # token ids, a table's index (Keras's int32 where it fits)
        index = node.output.users and all(u.op == "table_lookup" for u in node.output.users)
        small = value.size == 0 or int(np.abs(value).max()) < 2**31
        kwargs["value_dtype"] = "int32" if index and small else str(value.dtype)
    em.assign(node, f"{em.layer(node, cls, [value], **kwargs)}({anchor})")


@register("ir->keras", "table_lookup")
def table_lookup_to_keras(node: Node, em: KerasEmitter) -> None:
    table = node.weights["table"]
    cls = em.helper("TableLookup", _TABLE_LOOKUP)
    layer = em.layer(node, cls, [table], table_shape=tuple(int(d) for d in table.shape))
    em.assign(node, f"{layer}({em.var(node.inputs[0])})")


@register("ir->keras", "channel_affine")
def channel_affine_to_keras(node: Node, em: KerasEmitter) -> None:
    """x * scale + offset with per-channel vectors (ONNX's Mul/Add by a (C, 1, 1) constant,
    LayerScale's gamma): each vector is a Parameter layer shaped to broadcast over the
    example axes, trainable when the source learned it."""
    x = node.inputs[0]
    axis = node.attrs["axis"]
    shape = tuple(int(x.shape[axis]) if i == axis else 1 for i in range(1, x.rank))  # the batch broadcasts
    cls = em.helper("Parameter", _PARAMETER)
    anchor = em.var(em.graph.inputs[0])
    expr = em.var(x)
    for key, op in (("scale", "*"), ("offset", "+")):
        if key not in node.weights:
            continue
        kwargs = {"shape": shape} if node.attrs["learned"] else {"shape": shape, "value_trainable": False}
        param = em.layer(node, cls, [np.asarray(node.weights[key]).reshape(shape)], suffix=key, **kwargs)
        expr = f"{expr} {op} {param}({anchor})"
    em.assign(node, expr)
