"""ONNX-level rewrites of subgraphs that exporters write out op by op, run before reading.

tf2onnx exports Keras's LayerNormalization as TensorFlow computes it (`tf.nn.moments`
then `batch_normalization`):

    mean = ReduceMean(x)               (GlobalAveragePool on the last axis of a rank-3 x)
    var  = ReduceMean((x - mean) * (x - mean))
    m    = Reciprocal(Sqrt(var + eps)) * gamma
    y    = x * m + (beta - mean * m)   (written as Neg(mean) * m + beta)

The normalised axes are the trailing ones for a sequence, but the channel axis (1) of an
NCHW image tensor, which ONNX's own LayerNormalization cannot express: `fuse_layer_norm`
replaces each such subgraph by one `ktorch::LayerNormalization` node (any axes), which
the reader then translates like any other node. `fuse_tensordot` undoes tf2onnx's
Reshape-MatMul-Reshape around a Dense layer on a sequence.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DOMAIN = "ktorch"  # the rewritten nodes' domain: internal to the reader, never saved
LAYER_NORM = "LayerNormalization"  # inputs X, scale, bias; attributes axes (any non-batch axes), epsilon


class _Index:
    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.graph = model.graph
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for n in self.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.consts = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}

    def node(self, name: str, op: str) -> Any | None:
        n = self.producer.get(name)
        return n if n is not None and n.op_type == op else None

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name)


def _mean_axes(index: _Index, node: Any, rank: int | None) -> tuple[int, ...] | None:
    """The axes a mean node reduces (keeping them), or None if it is not one."""
    if node.op_type == "GlobalAveragePool":
        return None if rank is None else tuple(range(2, rank))
    if node.op_type != "ReduceMean":
        return None
    attrs = {a.name: a for a in node.attribute}
    if "keepdims" in attrs and attrs["keepdims"].i == 0:
        return None
    if len(node.input) > 1 and node.input[1]:
        axes = index.const(node.input[1])
        return None if axes is None else tuple(int(a) for a in axes.reshape(-1))
    return tuple(attrs["axes"].ints) if "axes" in attrs else None


def _operands(node: Any, first: str) -> str | None:
    """The other input of a two-input node, given one of them."""
    ins = list(node.input)
    if len(ins) != 2 or first not in ins:
        return None
    return ins[1] if ins[0] == first else ins[0]


def fuse_layer_norm(model: Any, shapes: dict[str, tuple]) -> int:
    """Replace tf2onnx's decomposed layer normalisations by ktorch::LayerNormalization
    nodes (where the normalised axes have known sizes: `shapes` maps tensor names to ONNX
    shape inference's shapes); returns the count."""
    from onnx import helper, numpy_helper

    index = _Index(model)
    fused = 0
    for final in list(index.graph.node):
        if final.op_type != "Add" or len(final.input) != 2:
            continue
        for mul_x_name, shift_name in (final.input, reversed(final.input)):
            mul_x, shift = index.node(mul_x_name, "Mul"), index.node(shift_name, "Add")
            if mul_x is not None and shift is not None:
                break
        else:
            continue
        # shift = Neg(mean) * m + beta
        match = None
        for neg_mul_name in shift.input:
            neg_mul = index.node(neg_mul_name, "Mul")
            beta = index.const(_operands(shift, neg_mul_name) or "")
            if neg_mul is None or beta is None:
                continue
            for neg_name in neg_mul.input:
                neg = index.node(neg_name, "Neg")
                m_name = _operands(neg_mul, neg_name)
                if neg is not None and m_name is not None:
                    match = (neg_mul, beta, neg, m_name)
        if match is None:
            continue
        neg_mul, beta, neg, m_name = match
        mean_name = neg.input[0]
        x_name = _operands(mul_x, m_name)
        m = index.node(m_name, "Mul")
        if x_name is None or m is None:
            continue
        # m = Reciprocal(Sqrt(var + eps)) * gamma
        gamma = rec = None
        for rec_name in m.input:
            rec = index.node(rec_name, "Reciprocal")
            gamma = index.const(_operands(m, rec_name) or "")
            if rec is not None and gamma is not None:
                break
        if rec is None or gamma is None:
            continue
        sqrt = index.node(rec.input[0], "Sqrt")
        add_eps = index.node(sqrt.input[0], "Add") if sqrt is not None else None
        if add_eps is None:
            continue
        eps = next((index.const(i) for i in add_eps.input if index.const(i) is not None), None)
        var = next((index.producer.get(i) for i in add_eps.input if index.const(i) is None), None)
        if eps is None or eps.size != 1 or var is None:
            continue
        square = index.node(var.input[0], "Mul")
        if square is None or square.input[0] != square.input[1]:
            continue
        diff = index.node(square.input[0], "Sub")
        mean = index.producer.get(mean_name)
        if diff is None or mean is None or diff.input[0] != x_name or mean.input[0] != x_name:
            continue
        centre = index.producer.get(diff.input[1])
        if diff.input[1] != mean_name and not (centre is not None and centre.op_type == "Reshape" and centre.input[0] == mean_name):
            continue  # tf2onnx may reshape the mean to its own shape on the way
        x_shape = shapes.get(x_name)
        rank = None if x_shape is None else len(x_shape)
        axes_mean, axes_var = _mean_axes(index, mean, rank), _mean_axes(index, var, rank)
        if rank is None or axes_mean is None or axes_mean != axes_var:
            continue
        axes = tuple(sorted(a % rank for a in axes_mean))
        if 0 in axes or any(x_shape[a] is None for a in axes):
            continue
        sizes = tuple(int(x_shape[a]) for a in axes)
        keep = [x_shape[a] if a in axes else 1 for a in range(rank)]
        try:
            scale = np.broadcast_to(gamma.reshape((1,) * (rank - gamma.ndim) + gamma.shape), keep).reshape(sizes)
            bias = np.broadcast_to(beta.reshape((1,) * (rank - beta.ndim) + beta.shape), keep).reshape(sizes)
        except ValueError:
            continue  # gamma or beta varies along an axis that is not normalised
        base = final.name or final.output[0]
        scale_name, bias_name = f"{base}/gamma", f"{base}/beta"
        index.graph.initializer.extend(
            [numpy_helper.from_array(scale.astype(np.float32), scale_name), numpy_helper.from_array(bias.astype(np.float32), bias_name)]
        )
        ln = helper.make_node(
            LAYER_NORM, [x_name, scale_name, bias_name], list(final.output), name=base, domain=DOMAIN, axes=list(axes), epsilon=float(eps.reshape(()))
        )
        position = list(index.graph.node).index(final)
        index.graph.node.insert(position, ln)
        index.graph.node.remove(final)
        fused += 1
    if fused:
        _drop_dead(model)
    return fused


def _through_casts(index: _Index, name: str) -> Any | None:
    node = index.producer.get(name)
    while node is not None and node.op_type == "Cast":
        node = index.producer.get(node.input[0])
    return node


def _is_leading_shape(index: _Index, name: str, x_name: str, units: int) -> bool:
    """Whether tensor `name` is concat(shape(x)[:-1], [units]) for a rank >= 3 x, as
    tf2onnx computes the target of a Tensordot's final Reshape."""
    concat = _through_casts(index, name)
    if concat is None or concat.op_type != "Concat" or len(concat.input) != 2:
        return False
    gather, tail = _through_casts(index, concat.input[0]), index.const(concat.input[1])
    if gather is None or gather.op_type != "Gather" or tail is None or tail.reshape(-1).tolist() != [units]:
        return False
    shape, indices = _through_casts(index, gather.input[0]), index.const(gather.input[1])
    if shape is None or shape.op_type != "Shape" or shape.input[0] != x_name or indices is None:
        return False
    leading = indices.reshape(-1).tolist()
    return len(leading) >= 2 and leading == list(range(len(leading)))


def fuse_tensordot(model: Any) -> int:
    """tf2onnx writes a Dense layer on a (batch, ..., features) tensor as Reshape to
    (-1, features), MatMul, Reshape back to (batch, ..., units): one MatMul on the
    original tensor (ONNX's MatMul broadcasts over the leading axes). Returns the count."""
    index = _Index(model)
    fused = 0
    for first in list(index.graph.node):
        if first.op_type != "Reshape":
            continue
        x_name = first.input[0]
        target = index.const(first.input[1])
        if target is None or target.size != 2 or int(target.reshape(-1)[0]) != -1:
            continue  # the features axis is checked by the MatMul's weight
        users = index.consumers.get(first.output[0], [])
        if len(users) != 1 or users[0].op_type != "MatMul" or users[0].input[0] != first.output[0]:
            continue
        matmul = users[0]
        weight = index.const(matmul.input[1])
        after = index.consumers.get(matmul.output[0], [])
        if weight is None or weight.ndim != 2 or int(target.reshape(-1)[1]) != weight.shape[0]:
            continue
        if len(after) != 1 or after[0].op_type != "Reshape":
            continue
        last = after[0]
        if not _is_leading_shape(index, last.input[1], x_name, int(weight.shape[1])):
            continue  # the Reshape back must restore x's leading axes (the rank is the Gather's)
        position = list(index.graph.node).index(last)
        from onnx import helper

        fused_node = helper.make_node("MatMul", [x_name, matmul.input[1]], list(last.output), name=matmul.name)
        index.graph.node.insert(position, fused_node)
        index.graph.node.remove(last)
        fused += 1
    if fused:
        _drop_dead(model)
    return fused


def _drop_dead(model: Any) -> None:
    """Remove nodes whose outputs nothing reads any more."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
