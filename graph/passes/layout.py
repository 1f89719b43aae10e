"""Layout assignment: choose, for every tensor, the axis order the emitted model uses.

Keras is channels-last, PyTorch channels-first. Rather than wrapping every convolution in
transposes, the pass solves the layout globally:

1. Values of rank >= 3 that must share an axis order (the operands of element-wise and
   axis ops, the input and output of a spatial op) are joined into components.
2. Each op votes for the order it wants: a spatial op for the target's native order (with
   weight 2: held otherwise it costs a transpose in and one out), an opaque op (Dense on a
   sequence, an RNN, a general Reshape) for the source's order. Each component takes the
   order with most votes (ties keep the source order); a component nobody voted for behind
   a transpose takes the order that makes that transpose a no-op.
3. Materialisation rewrites every node into the chosen orders (axis attributes remapped,
   `data_format` flipped, broadcast weights permuted, Flatten -> Dense rows permuted) and
   inserts a transpose only on an edge whose two ends disagree. For PyTorch, which has
   channels-first layers only, a spatial op outvoted in its component is transposed around.
4. Transposes that cancel or compose are folded away.

Afterwards every value's `perm` says how its emitted axes relate to the source's:
`emitted = source.transpose(perm)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import GraphError
from ..ir import Graph, Node, Value
from ..ops import Layout, get_op

Perm = tuple[int, ...]


def identity(rank: int) -> Perm:
    return tuple(range(rank))


def channels_first_perm(rank: int) -> Perm:
    """Channels-last -> channels-first: (0, r-1, 1, ..., r-2)."""
    return (0, rank - 1, *range(1, rank - 1))


def channels_last_perm(rank: int) -> Perm:
    """Channels-first -> channels-last: (0, 2, ..., r-1, 1)."""
    return (0, *range(2, rank), 1)


def inverse(perm: Perm) -> Perm:
    out = [0] * len(perm)
    for i, p in enumerate(perm):
        out[p] = i
    return tuple(out)


def relative(actual: Perm, wanted: Perm) -> Perm:
    """The transpose that turns a tensor held in `actual` order into `wanted` order."""
    return tuple(actual.index(w) for w in wanted)


@dataclass
class LayoutReport:
    target: str
    keep_io: bool
    transposes: int  # transposes left in the graph after the pass
    moved_values: int  # values held in the non-source order


class _Components:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.votes: dict[int, list[int]] = {}

    def find(self, key: int) -> int:
        self.parent.setdefault(key, key)
        root = key
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[key] != root:
            self.parent[key], key = root, self.parent[key]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra

    def vote(self, key: int, moved: bool, weight: int = 1) -> None:
        self.votes.setdefault(key, []).append(weight if moved else -weight)

    def moved(self, key: int) -> bool:
        if not hasattr(self, "_totals"):
            self._totals: dict[int, int] = {}
            for k, ws in self.votes.items():
                root = self.find(k)
                self._totals[root] = self._totals.get(root, 0) + sum(ws)
        return self._totals.get(self.find(key), 0) > 0

    def voted(self, key: int) -> bool:
        """Whether any op has a preference for the order of this value's component."""
        self.moved(key)
        return self.find(key) in self._totals

    def settle(self, key: int, moved: bool) -> None:
        """Fix the order of a component no op voted for."""
        self.moved(key)
        self._totals[self.find(key)] = 1 if moved else -1


def _spatial_wants_move(node: Node, target: str) -> bool:
    return node.attrs["data_format"] != target


def _order_free(shape: tuple, perm: Perm) -> bool:
    """Whether holding a tensor of (source) `shape` in `perm` order leaves its elements in
    the same row-major order: only axes of size 1 move (a flattened (N, 1, 1, C))."""
    moving = [p for p in perm if shape[p] != 1]
    return None not in shape[1:] and moving == sorted(moving)


def _feature_order_free(node: Node) -> bool:
    """An op on a (batch, features) tensor that commutes with any reordering of the
    features: dropout, noise and activity regularization (the training family)."""
    return get_op(node.op).family == "training" and len(node.inputs) == 1


def _flatten_readers(graph: Graph, value: Value) -> tuple[list[Node], list[Value]] | None:
    """The Dense layers that read a flattened `value`, directly or through order-free ops
    (Flatten -> Dropout -> Dense), and the values in between; None if anything else reads it."""
    if not value.users or value in graph.outputs:
        return None
    denses: list[Node] = []
    between: list[Value] = []
    for user in value.users:
        if user.op == "dense" and user.inputs[0] is value:
            denses.append(user)
        elif _feature_order_free(user):
            found = _flatten_readers(graph, user.output)
            if found is None:
                return None
            denses += found[0]
            between += [user.output, *found[1]]
        else:
            return None
    return denses, between


def _flatten_folds(graph: Graph, node: Node) -> bool:
    return _flatten_readers(graph, node.output) is not None


def _reshape_ok(node: Node, in_perm: Perm, out_perm: Perm, in_shape: tuple | None = None) -> tuple | None:
    """The emitted reshape target (without batch) if reshaping the input held in
    `in_perm` can produce the output held in `out_perm`; None if it cannot. `in_shape` is
    the input's shape in the source's order (default: its current shape)."""
    x, y = node.inputs[0], node.output
    shape = tuple(x.shape) if in_shape is None else in_shape
    if any(d is None for d in shape[1:]) or any(d is None for d in y.shape[1:]):
        return tuple(node.attrs["shape"]) if in_perm == identity(x.rank) and out_perm == identity(y.rank) else None
    src = np.arange(int(np.prod(shape[1:]))).reshape(shape[1:])
    src_out = src.reshape(y.shape[1:])
    emitted_in = src.transpose([p - 1 for p in in_perm[1:]])
    emitted_out = src_out.transpose([p - 1 for p in out_perm[1:]])
    if np.array_equal(emitted_in.reshape(-1), emitted_out.reshape(-1)):
        if out_perm == identity(y.rank):
            return tuple(node.attrs["shape"])
        return tuple(emitted_out.shape)
    return None


def assign_layout(graph: Graph, target: str = "channels_first", *, keep_io: bool = False) -> LayoutReport:
    """Choose and materialise the emitted axis order of every value (see module doc)."""
    if target not in ("channels_first", "channels_last"):
        raise GraphError(f"unknown layout target {target!r}")
    moved_perm = channels_first_perm if target == "channels_first" else channels_last_perm

    if keep_io:
        _insert_io_boundaries(graph)

    comps = _Components()
    for value in graph.values():
        if value.rank >= 3:
            comps.find(id(value))

    for node in graph.nodes:
        opdef = get_op(node.op)
        cls = opdef.layout
        outs = [v for v in node.outputs if v.rank >= 3]
        if cls in (Layout.ELEMENTWISE, Layout.AXIS):
            rank = node.inputs[0].rank
            group = [v for v in node.inputs if v.rank == rank and rank >= 3]
            group += [v for v in outs if v.rank == rank]
            for v in group[1:]:
                comps.union(id(group[0]), id(v))
        elif cls == Layout.SPATIAL:
            wants = _spatial_wants_move(node, target)
            x = node.inputs[0]
            # held against its component's order, a spatial op costs a transpose in and one out
            comps.vote(id(x), wants, weight=2)
            for v in outs:
                comps.union(id(x), id(v))
        elif cls == Layout.FLATTEN:
            x = node.inputs[0]
            if x.rank >= 3 and not _flatten_folds(graph, node) and not _order_free(x.shape, moved_perm(x.rank)):
                comps.vote(id(x), False)
        elif cls == Layout.RESHAPE:
            x, y = node.inputs[0], node.output
            in_moved = moved_perm(x.rank) if x.rank >= 3 else identity(x.rank)
            out_moved = moved_perm(y.rank) if y.rank >= 3 else identity(y.rank)
            flexible = _reshape_ok(node, in_moved, out_moved) is not None
            if not flexible:
                for v in (x, y):
                    if v.rank >= 3:
                        comps.vote(id(v), False)
        elif cls == Layout.TRANSPOSE:
            pass
        else:
            for v in list(node.inputs) + outs:
                if v.rank >= 3:
                    comps.vote(id(v), False)

    def label(value: Value) -> Perm:
        if value.rank < 3:
            return identity(value.rank)
        return moved_perm(value.rank) if comps.moved(id(value)) else identity(value.rank)

    # a transpose whose output no op has a preference for (it feeds a Flatten -> Dense, say)
    # takes the order that makes it a no-op: Flatten(data_format="channels_first") after a
    # channels-first conv, or a source's own NHWC -> NCHW permute. Likewise a reshape's output
    # takes an order that the reshape produces from its input without a transpose (ViT's
    # (N, C, H, W) -> (N, C, H * W) of a channels-last conv is (N, H * W, C)). In graph
    # order, so that a settled value settles the ones after it.
    output_comps = {comps.find(id(v)) for v in graph.outputs if v.rank >= 3}
    for node in graph.nodes:
        if node.op not in ("transpose", "reshape"):
            continue
        out = node.outputs[0]
        if out.rank < 3 or out in graph.outputs or comps.voted(id(out)):
            continue
        if node.op == "reshape" and comps.find(id(out)) in output_comps:
            continue  # an output keeps the source's order unless an op wants another
        held = label(node.inputs[0])
        for moved in (False, True):
            wanted = moved_perm(out.rank) if moved else identity(out.rank)
            if node.op == "transpose":
                free = relative(held, tuple(node.attrs["perm"][w] for w in wanted)) == identity(out.rank)
            else:
                free = _reshape_ok(node, held, wanted) is not None
            if free:
                comps.settle(id(out), moved)
                break

    for value in graph.inputs:
        if keep_io:
            value.perm = identity(value.rank)
        else:
            value.perm = label(value)
        value.shape = tuple(value.shape[p] for p in value.perm)

    _Materializer(graph, label, moved_perm, target).run()
    _fold_transposes(graph)
    for value in graph.values():
        if value.perm is not None and value.perm == identity(value.rank):
            value.perm = None
    moved = sum(1 for v in graph.values() if v.perm is not None)
    return LayoutReport(target, keep_io, count_transposes(graph), moved)


def count_transposes(graph: Graph) -> int:
    return sum(1 for n in graph.nodes if n.op == "transpose")


def _insert_io_boundaries(graph: Graph) -> None:
    """Pin graph inputs and outputs to the source's order by putting identity
    transposes between them and the rest of the graph."""
    for value in graph.inputs:
        if value.rank >= 3 and value.users:
            users = list(value.users)
            t = graph.add_node("transpose", [value], {"perm": identity(value.rank)}, name=f"{value.name}_io", index=0)
            for user in users:
                for i, v in enumerate(user.inputs):
                    if v is value:
                        graph.set_input(user, i, t.output)
    for i, value in enumerate(list(graph.outputs)):
        if value.rank >= 3:
            t = graph.add_node("transpose", [value], {"perm": identity(value.rank)}, name=f"{value.name}_io")
            t.output.source = value.source
            graph.outputs[i] = t.output
    graph.toposort()


class _Materializer:
    def __init__(self, graph: Graph, label, moved_perm, target: str = "channels_first") -> None:
        self.graph = graph
        self.label = label
        self.moved_perm = moved_perm
        self.target = target
        self.cache: dict[tuple[int, Perm], Value] = {}

    def run(self) -> None:
        for node in list(self.graph.nodes):
            cls = get_op(node.op).layout
            handler = {
                Layout.ELEMENTWISE: self.elementwise,
                Layout.AXIS: self.elementwise,
                Layout.SPATIAL: self.spatial,
                Layout.TRANSPOSE: self.transpose,
                Layout.FLATTEN: self.flatten,
                Layout.RESHAPE: self.reshape,
            }.get(cls, self.opaque)
            handler(node)
        self.graph.toposort()

    # -- helpers ------------------------------------------------------------------------
    def held(self, value: Value) -> Perm:
        return value.perm if value.perm is not None else identity(value.rank)

    def feed(self, node: Node, index: int, wanted: Perm) -> None:
        """Make input `index` of `node` arrive in `wanted` order, adding a transpose if needed."""
        value = node.inputs[index]
        actual = self.held(value)
        if actual == wanted:
            return
        key = (id(value), wanted)
        if key not in self.cache:
            t = self.graph.add_node(
                "transpose",
                [value],
                {"perm": relative(actual, wanted)},
                name=f"{value.name}_t",
                index=self.graph.nodes.index(node),
            )
            t.output.perm = wanted
            self.cache[key] = t.output
        self.graph.set_input(node, index, self.cache[key])

    def set_output(self, node: Node, perms: list[Perm]) -> None:
        for value, perm in zip(node.outputs, perms):
            value.perm = perm
            value.shape = tuple(value.shape[p] for p in perm)

    # -- per layout class --------------------------------------------------------------
    def elementwise(self, node: Node) -> None:
        opdef = get_op(node.op)
        x = node.inputs[0]
        rank = x.rank
        same_rank_out = [v for v in node.outputs if v.rank == rank]
        if rank < 3:
            perm = identity(rank)
        elif same_rank_out:
            perm = self.label(same_rank_out[0])
        else:
            perm = self.held(x)
        if perm != identity(rank) and any(v.rank != rank and v.rank > 0 for v in node.inputs):
            perm = identity(rank)  # a lower-rank operand broadcasts against the source order (a scalar in any)
        for i, v in enumerate(node.inputs):
            if v.rank == rank:
                self.feed(node, i, perm)
        source_axes = node.attrs.get("axes", ())
        for name in opdef.axis_attrs:
            old = node.attrs[name]
            node.attrs[name] = _remap_axes(old, perm)
            for wname in opdef.axes_weights:
                w = node.weights.get(wname)
                if w is not None and w.ndim > 1 and not isinstance(old, int):
                    new_positions = [perm.index(a) for a in sorted(old)]
                    node.weights[wname] = np.ascontiguousarray(w.transpose(np.argsort(new_positions)))
        for name in opdef.broadcast_weights:
            if name in node.weights and perm != identity(rank):
                w = node.weights[name]
                node.weights[name] = np.ascontiguousarray(w.transpose([p - 1 for p in perm[1:]]))
        out_perms = []
        for v in node.outputs:
            if v.rank == rank:
                out_perms.append(perm)
            else:
                out_perms.append(_reduced_perm(perm, source_axes) if v.rank < rank else identity(v.rank))
        self.set_output(node, out_perms)

    def spatial(self, node: Node) -> None:
        """A spatial op runs in its component's order. PyTorch has channels-first layers
        only (Keras takes either data_format): for that target, a spatial op whose
        component kept the other order is transposed in and out here."""
        x = node.inputs[0]
        perm = self.label(x)
        fmt = node.attrs["data_format"]
        if perm != identity(x.rank):
            fmt = "channels_first" if fmt == "channels_last" else "channels_last"
        if fmt != self.target and self.target == "channels_first":
            perm = identity(x.rank) if perm != identity(x.rank) else self.moved_perm(x.rank)
            fmt = self.target
        self.feed(node, 0, perm)
        for i in range(1, len(node.inputs)):
            self.feed(node, i, identity(node.inputs[i].rank))
        node.attrs["data_format"] = fmt
        self.set_output(node, [perm if v.rank == x.rank else identity(v.rank) for v in node.outputs])

    def transpose(self, node: Node) -> None:
        x = node.inputs[0]
        actual = self.held(x)
        wanted = self.label(node.output)
        source_perm = node.attrs["perm"]
        # emitted_out = src_in.transpose(source_perm).transpose(wanted)
        composed = tuple(source_perm[w] for w in wanted)
        node.attrs["perm"] = relative(actual, composed)
        node.output.perm = wanted
        node.output.shape = tuple(x.shape[p] for p in node.attrs["perm"])

    def flatten(self, node: Node) -> None:
        x = node.inputs[0]
        actual = self.held(x)
        source_shape = tuple(x.shape[actual.index(i)] for i in range(x.rank))
        if x.rank >= 3 and actual != identity(x.rank) and _order_free(source_shape, actual):
            self.set_output(node, [identity(node.output.rank)])
            return
        if x.rank >= 3 and actual != identity(x.rank) and _flatten_folds(self.graph, node):
            src_shape = tuple(x.shape[actual.index(i)] for i in range(x.rank))[1:]
            order = (
                np.arange(int(np.prod(src_shape))).reshape(src_shape).transpose([p - 1 for p in actual[1:]]).reshape(-1)
            )
            denses, between = _flatten_readers(self.graph, node.output)  # type: ignore[misc]
            for dense in dict.fromkeys(denses):
                dense.weights["weight"] = np.ascontiguousarray(dense.weights["weight"][:, order])
            for value in [node.output, *between]:
                value.source = None  # its elements are in the emitted order: not comparable
            self.set_output(node, [identity(2)])
            return
        self.feed(node, 0, identity(x.rank))
        self.set_output(node, [identity(node.output.rank)])

    def reshape(self, node: Node) -> None:
        x, y = node.inputs[0], node.output
        wanted = self.label(y)
        actual = self.held(x)
        source_shape = tuple(x.shape[actual.index(i)] for i in range(x.rank))  # x.shape is the emitted one
        for in_perm, out_perm in ((actual, wanted), (identity(x.rank), wanted), (actual, identity(y.rank))):
            target = _reshape_ok(node, in_perm, out_perm, source_shape)
            if target is not None:
                break
        else:
            in_perm, out_perm, target = identity(x.rank), identity(y.rank), tuple(node.attrs["shape"])
        self.feed(node, 0, in_perm)
        if out_perm != identity(y.rank):
            node.attrs["shape"] = target
        self.set_output(node, [out_perm])

    def opaque(self, node: Node) -> None:
        for i, v in enumerate(node.inputs):
            self.feed(node, i, identity(v.rank))
        self.set_output(node, [identity(v.rank) for v in node.outputs])


def _remap_axes(axes, perm: Perm):
    if isinstance(axes, int):
        return perm.index(axes)
    return tuple(sorted(perm.index(a) for a in axes))


def _reduced_perm(perm: Perm, axes) -> Perm:
    """The order of a reduction's output (keepdims=False) when its input is held in `perm`."""
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    kept = [p for p in perm if p not in axes]
    ranks = sorted(kept)
    return tuple(ranks.index(p) for p in kept)


def _fold_transposes(graph: Graph) -> None:
    """Compose chained transposes, drop identity transposes and dead ones."""
    changed = True
    while changed:
        changed = False
        for node in list(graph.nodes):
            if node.op != "transpose" or node not in graph.nodes:
                continue
            x = node.inputs[0]
            perm = node.attrs["perm"]
            if perm == identity(len(perm)):
                out = node.output
                if out in graph.outputs and x in graph.inputs:
                    continue
                if out in graph.outputs:
                    # x takes the output's place: its perm and name must be the output's
                    if len(x.users) > 1 or x in graph.outputs:
                        continue
                    x.perm, x.source = out.perm, out.source
                elif x.source is None:
                    x.source = out.source
                graph.bypass(node)
                changed = True
                continue
            parent = x.producer
            if parent is not None and parent.op == "transpose":
                first = parent.attrs["perm"]
                graph.set_input(node, 0, parent.inputs[0])
                node.attrs["perm"] = tuple(first[p] for p in perm)
                if not parent.output.users and parent.output not in graph.outputs:
                    graph.remove_node(parent)
                changed = True
