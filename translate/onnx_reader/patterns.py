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
Reshape-MatMul-Reshape around a Dense layer on a sequence. `fuse_repeat_upsample` reads
the Unsqueeze-Tile-Reshape chains of Keras's UpSampling layers back as one nearest Resize.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DOMAIN = "ktorch"  # the rewritten nodes' domain: internal to the reader, never saved
LAYER_NORM = "LayerNormalization"  # inputs X, scale, bias; attributes axes (any non-batch axes), epsilon


class ModelIndex:
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


def _mean_axes(index: ModelIndex, node: Any, rank: int | None) -> tuple[int, ...] | None:
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

    index = ModelIndex(model)
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
        if diff.input[1] != mean_name and not (
            centre is not None and centre.op_type == "Reshape" and centre.input[0] == mean_name
        ):
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
            [
                numpy_helper.from_array(scale.astype(np.float32), scale_name),
                numpy_helper.from_array(bias.astype(np.float32), bias_name),
            ]
        )
        ln = helper.make_node(
            LAYER_NORM,
            [x_name, scale_name, bias_name],
            list(final.output),
            name=base,
            domain=DOMAIN,
            axes=list(axes),
            epsilon=float(eps.reshape(())),
        )
        position = list(index.graph.node).index(final)
        index.graph.node.insert(position, ln)
        index.graph.node.remove(final)
        fused += 1
    if fused:
        drop_dead(model)
    return fused


def _through_casts(index: ModelIndex, name: str) -> Any | None:
    node = index.producer.get(name)
    while node is not None and node.op_type == "Cast":
        node = index.producer.get(node.input[0])
    return node


def _is_leading_shape(index: ModelIndex, name: str, x_name: str, units: int) -> bool:
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
    index = ModelIndex(model)
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
        drop_dead(model)
    return fused


@dataclass(frozen=True)
class _Repeat:
    """One `repeat` link: out = x repeated `factor` times in place along axis `axis`,
    then transposed (out axis i is axis perm[i] of x)."""

    x: str
    out: str
    axis: int
    factor: int
    perm: tuple[int, ...]
    nodes: tuple[Any, ...]


def _repeat_link(index: ModelIndex, unsqueeze: Any, shapes: dict[str, tuple]) -> _Repeat | None:
    """Match tf2onnx's `repeat` (Keras's backend.repeat_elements):

        Unsqueeze(x, [u]) -> Tile(reps: 1 but f at u) -> [Transpose] -> Reshape

    where the Reshape merges the new axis into the x axis just before it (the Tile is
    missing for f = 1). The Reshape target is computed from Shape nodes; ONNX shape
    inference with data propagation gives its output shape, which must be exactly the
    merged shape (all axes but the batch fixed), so the whole chain is element for element
    a nearest repeat."""
    x_shape = shapes.get(unsqueeze.input[0])
    axes = index.const(unsqueeze.input[1]) if len(unsqueeze.input) > 1 else None
    if x_shape is None or len(x_shape) < 3 or None in x_shape[1:] or axes is None or axes.size != 1:
        return None
    rank = len(x_shape)
    u = int(axes.reshape(-1)[0]) % (rank + 1)
    nodes, name, factor = [unsqueeze], unsqueeze.output[0], 1
    users = index.consumers.get(name, [])
    if len(users) == 1 and users[0].op_type == "Tile":
        tile = users[0]
        reps = index.const(tile.input[1])
        if reps is None or reps.size != rank + 1 or any(int(r) != 1 for i, r in enumerate(reps.reshape(-1)) if i != u):
            return None
        factor, name = int(reps.reshape(-1)[u]), tile.output[0]
        nodes.append(tile)
        users = index.consumers.get(name, [])
    labels = [None if j == u else (j if j < u else j - 1) for j in range(rank + 1)]  # None: the new axis
    if len(users) == 1 and users[0].op_type == "Transpose":
        perm = next((list(a.ints) for a in users[0].attribute if a.name == "perm"), None)
        if perm is None or sorted(perm) != list(range(rank + 1)):
            return None
        labels = [labels[p] for p in perm]
        nodes.append(users[0])
        name = users[0].output[0]
        users = index.consumers.get(name, [])
    if len(users) != 1 or users[0].op_type != "Reshape" or factor < 1:
        return None
    reshape = users[0]
    q = labels.index(None)
    if q == 0 or labels[q - 1] in (None, 0) or labels[0] != 0:
        return None
    axis = labels[q - 1]
    order = tuple(a for a in labels if a is not None)
    merged = tuple(x_shape[a] * (factor if a == axis else 1) for a in order[1:])
    got = shapes.get(reshape.output[0])
    if got is None or tuple(got[1:]) != merged:
        return None
    return _Repeat(unsqueeze.input[0], reshape.output[0], axis, factor, order, (*nodes, reshape))


def fuse_repeat_upsample(model: Any) -> int:
    """tf2onnx writes Keras's UpSampling1D/2D/3D (nearest) as one `repeat` per spatial
    axis (see `_repeat_link`), on the NHWC tensor, or with the Transpose from a preceding
    NCHW conv pushed inside. A chain of them is one nearest Resize (asymmetric, floor:
    each element repeated) on a channels-first tensor, plus the chain's net transpose,
    which cancels against the NHWC -> NCHW Transpose before the next conv. Chains that do
    not match exactly are left alone, and the reader refuses their Tile. Returns the count."""
    from onnx import helper, numpy_helper, shape_inference

    if not any(n.op_type == "Tile" for n in model.graph.node):
        return 0
    try:
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - without shapes, nothing is fused
        return 0
    from .calls import shape_of

    shapes = {
        info.name: shape_of(info, batch=False)
        for info in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    }
    index = ModelIndex(model)
    outputs = {o.name for o in model.graph.output}
    found = [_repeat_link(index, n, shapes) for n in index.graph.node if n.op_type == "Unsqueeze"]
    found = [link for link in found if link is not None]
    links = {link.x: link for link in found}  # the next link of a chain (`_chains`: only one)
    by_out = {link.out: link for link in found}
    fused = 0
    for first in found:
        prev = by_out.get(first.x)
        if prev is not None and _chains(index, prev, outputs):
            continue  # not the head of its chain
        chain = [first]
        while chain[-1].out in links and _chains(index, chain[-1], outputs):
            chain.append(links[chain[-1].out])
        rank = len(shapes[first.x])
        factors, perm = [1] * rank, tuple(range(rank))
        for link in chain:  # out = transpose(repeat(x), perm): compose in terms of the head's axes
            factors[perm[link.axis]] *= link.factor
            perm = tuple(perm[p] for p in link.perm)
        repeated = {a for a, f in enumerate(factors) if f > 1}
        if not repeated:
            continue
        if repeated <= set(range(2, rank)):
            pre = tuple(range(rank))
        elif repeated <= set(range(1, rank - 1)):
            pre = (0, rank - 1, *range(1, rank - 1))  # NHWC -> NCHW
        else:
            continue
        post = tuple(pre.index(p) for p in perm)
        scope = _common_scope([n.name for link in chain for n in link.nodes])
        new, x = [], first.x
        if pre != tuple(range(rank)):
            new.append(
                helper.make_node("Transpose", [x], [f"{scope}/to_nchw:0"], name=f"{scope}/to_nchw", perm=list(pre))
            )
            x = new[-1].output[0]
        scales = f"{scope}/scales"
        index.graph.initializer.append(numpy_helper.from_array(np.array([factors[p] for p in pre], np.float32), scales))
        last = chain[-1].out
        resized = last if post == tuple(range(rank)) else f"{scope}/Resize:0"
        new.append(
            helper.make_node(
                "Resize", [x, "", scales], [resized], name=f"{scope}/Resize",
                mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor",
            )
        )  # fmt: skip
        if resized != last:
            new.append(helper.make_node("Transpose", [resized], [last], name=f"{scope}/Transpose", perm=list(post)))
        position = list(index.graph.node).index(chain[-1].nodes[-1])
        for offset, node in enumerate(new):
            index.graph.node.insert(position + offset, node)
        index.graph.node.remove(chain[-1].nodes[-1])
        fused += 1
    if fused:
        drop_dead(model)
    return fused


def _chains(index: ModelIndex, link: _Repeat, outputs: set[str]) -> bool:
    """Whether `link`'s output feeds only the next repeat (and the Shape nodes that compute
    its Reshape target), so that the two fuse."""
    users = index.consumers.get(link.out, [])
    return (
        link.out not in outputs
        and sum(u.op_type == "Unsqueeze" for u in users) == 1
        and all(u.op_type in ("Unsqueeze", "Shape") for u in users)
    )


def _common_scope(names: list[str]) -> str:
    """The longest common '/'-scope of node names ("model/up_sampling2d/Repeat/Tile" and
    "model/up_sampling2d/Repeat_1/Tile" -> "model/up_sampling2d")."""
    parts = [n.split("/")[:-1] for n in names if "/" in n]  # tf2onnx's own nodes ("Transpose__42") have no scope
    common: list[str] = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return "/".join(common) or "repeat"


def drop_dead(model: Any) -> None:
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
