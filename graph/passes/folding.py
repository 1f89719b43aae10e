"""Transposes folded away: into constants (permuted once at conversion time) and into the
order an input is taken in."""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Value


def fold_constant_transposes(graph: Graph) -> int:
    """Permute constant arrays once instead of transposing them in the model."""
    folded = 0
    for node in list(graph.nodes):
        if node.op != "transpose" or node.inputs[0].producer is None or node.inputs[0].producer.op != "constant":
            continue
        const = node.inputs[0].producer
        if len(node.inputs[0].users) != 1:
            continue
        const.weights["value"] = np.ascontiguousarray(const.weights["value"].transpose(node.attrs["perm"]))
        out = const.output
        out.shape = tuple(node.output.shape)
        out.perm = node.output.perm
        graph.replace_uses(node.output, out)
        graph.remove_node(node)
        folded += 1
    return folded


def absorb_input_transposes(graph: Graph) -> dict[int, tuple[int, ...]]:
    """Take each input that only feeds transposes of one permutation P in P's order,
    removing the transposes. Returns {id(input): P}: the new input is source.transpose(P)."""
    taken: dict[int, tuple[int, ...]] = {}
    for value in graph.inputs:
        users = list(value.users)
        if value.rank < 3 or not users or value in graph.outputs or any(u.op != "transpose" for u in users):
            continue
        perms = {tuple(u.attrs["perm"]) for u in users}
        if len(perms) != 1:
            continue
        (perm,) = perms
        value.shape = tuple(value.shape[p] for p in perm)
        for user in users:
            graph.replace_uses(user.output, value)
            graph.remove_node(user)
        taken[id(value)] = perm
    return taken


_BATCH_LETTERS = "bhgfeca"  # batch axes of a matmul (b: the model's batch), then rows, inner, columns


def _only_user(value: Value) -> Node | None:
    return value.users[0] if len(value.users) == 1 else None


def _matmul_terms(node: Node) -> list[str] | None:
    """Einsum terms (a, b, out) of a batched matmul whose operands have one rank and
    batch axes of one size (einsum does not broadcast a size-1 axis), else None."""
    a, b = node.inputs
    rank = a.rank
    if rank < 3 or b.rank != rank or rank - 2 > len(_BATCH_LETTERS):
        return None
    for da, db in zip(a.shape[1 : rank - 2], b.shape[1 : rank - 2]):
        if da is None or db is None or da != db:
            return None
    batch = _BATCH_LETTERS[: rank - 2]
    return [batch + "ij", batch + "jk", batch + "ik"]


_PICKS = ("select", "squeeze")  # ops that drop one axis: a transpose moves past them


def _scalar_op(node: Node) -> bool:
    """x * 0.35 and friends: an element-wise op with a one-number constant (Swin's q * scale)."""
    if node.op not in ("mul", "div", "add", "sub") or len(node.inputs) != 2:
        return False
    other = node.inputs[1].producer
    return other is not None and other.op == "constant" and other.weights["value"].size == 1


def _reaches_einsum(value: Value) -> bool:
    """Whether `value` flows, through axis-dropping picks (and one-number scalings) only,
    into one matmul or einsum."""
    user = _only_user(value)
    while user is not None and (user.op in _PICKS or user.op == "transpose" or _scalar_op(user)):
        user = _only_user(user.output)
    return user is not None and user.op in ("matmul", "einsum")


def _sink_transpose(graph: Graph, node: Node) -> bool:
    """transpose -> select/squeeze becomes select/squeeze -> (smaller) transpose, for each
    reader, when every reader leads to an einsum that can absorb the transpose (timm's
    qkv.permute(2, 0, 3, 1, 4).unbind(0)). Returns whether it moved."""
    perm = node.attrs["perm"]
    users = list(node.output.users)
    if (
        perm[0] != 0
        or not users
        or node.output in graph.outputs
        or not all(
            (_scalar_op(u) and u.inputs[0] is node.output or u.op in _PICKS and u.attrs["axis"] != 0)
            and _reaches_einsum(u.output)
            for u in users
        )
    ):
        return False
    x = node.inputs[0]
    for user in users:
        out = user.output
        graph.set_input(user, 0, x)
        if user.op in _PICKS:
            axis = perm[user.attrs["axis"]]  # the axis of x that the pick drops
            rest = tuple(q - (q > axis) for q in perm if q != axis)
            user.attrs["axis"] = axis
            out.shape = tuple(d for i, d in enumerate(x.shape) if i != axis)
        else:  # a one-number scaling: the same transpose after it
            rest = perm
            out.shape = x.shape
        moved = graph.add_node("transpose", [out], {"perm": rest}, name=f"{out.name}_order")
        graph.replace_uses(out, moved.output, except_node=moved)
        moved.output.perm, moved.output.source = out.perm, out.source
        out.perm = None if out.perm is None else tuple(out.perm[q] for q in inverse_perm(rest))
        if out in graph.outputs:
            graph.outputs = [moved.output if v is out else v for v in graph.outputs]
    graph.remove_node(node)
    return True


def inverse_perm(perm: tuple[int, ...]) -> tuple[int, ...]:
    out = [0] * len(perm)
    for i, q in enumerate(perm):
        out[q] = i
    return tuple(out)


def fold_transposes_into_einsum(graph: Graph) -> int:
    """Write a batched matmul next to transposes (attention's q/k/v moved to (batch, heads,
    tokens, dims) and back) as one einsum that reads its operands and writes its result in
    the order they already have: `bihd,bjhd->bhij` instead of three transposes and a matmul.
    A transpose is absorbed when the matmul (or einsum) is its only reader, or its input's
    only reader; the batch axis stays axis 0. Returns the number of transposes removed."""
    for node in list(graph.nodes):  # a reshape to the shape it has (HF's attn_output.reshape) hides a transpose
        x = node.inputs[0] if node.op == "reshape" else None
        if (
            x is not None
            and node.output not in graph.outputs
            and x.shape == node.output.shape
            and None not in x.shape[1:]
            and x.producer is not None
            and x.producer.op in ("matmul", "einsum")
        ):
            x.source = x.source or node.output.source
            graph.bypass(node)
    moved = False
    while True:  # transposes sink past the picks between them and the einsum that absorbs them
        sunk = [n for n in list(graph.nodes) if n.op == "transpose" and _sink_transpose(graph, n)]
        if not sunk:
            break
        moved = True
        for node in list(graph.nodes):  # a sunk transpose meets another: one transpose
            after = _only_user(node.output) if node.op == "transpose" else None
            if after is not None and after.op == "transpose" and node.output not in graph.outputs:
                graph.set_input(after, 0, node.inputs[0])
                after.attrs["perm"] = tuple(node.attrs["perm"][q] for q in after.attrs["perm"])
                graph.remove_node(node)
    for node in list(graph.nodes):  # a pick of an axis left where it was
        identity = node.op == "transpose" and node.attrs["perm"] == tuple(range(len(node.attrs["perm"])))
        if moved and identity and node.output not in graph.outputs:
            node.inputs[0].source = node.inputs[0].source or node.output.source
            graph.bypass(node)
    if moved:
        graph.toposort()
    removed = 0
    changed = True
    while changed:
        changed = False
        for node in list(graph.nodes):
            if node not in graph.nodes or node.op not in ("matmul", "einsum"):
                continue
            if node.op == "matmul":
                terms = _matmul_terms(node)
            else:
                lhs, _, rhs = node.attrs["equation"].partition("->")
                terms = [*lhs.split(","), rhs]
            if terms is None or "." in "".join(terms):
                continue
            absorbed = 0
            inputs = list(node.inputs)
            for i, v in enumerate(inputs):
                t = v.producer
                if t is None or t.op != "transpose" or _only_user(v) is not node or t.attrs["perm"][0] != 0:
                    continue
                perm = t.attrs["perm"]
                term = [""] * len(perm)
                for axis, p in enumerate(perm):  # the transposed tensor's axis `axis` is the input's axis p
                    term[p] = terms[i][axis]
                terms[i] = "".join(term)
                inputs[i] = t.inputs[0]
                absorbed += 1
            out = node.output
            after = _only_user(out)
            fold_out = (
                after is not None
                and after.op == "transpose"
                and after.attrs["perm"][0] == 0
                and out not in graph.outputs
                and after.output not in graph.outputs
            )
            if fold_out:
                terms[-1] = "".join(terms[-1][p] for p in after.attrs["perm"])
                absorbed += 1
            if not absorbed:
                continue
            dropped = [v.producer for v, new in zip(node.inputs, inputs) if v is not new]
            for i, new in enumerate(inputs):
                if node.inputs[i] is not new:
                    graph.set_input(node, i, new)
            for t in dropped:
                if not t.output.users and t.output not in graph.outputs:
                    graph.remove_node(t)
            node.op = "einsum"
            node.attrs = {"equation": ",".join(terms[:-1]) + "->" + terms[-1]}
            if fold_out:
                out.shape, out.perm = after.output.shape, after.output.perm
                out.source = out.source or after.output.source
                graph.replace_uses(after.output, out)
                graph.remove_node(after)
            removed += absorbed
            changed = True
    return removed
