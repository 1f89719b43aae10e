"""Transposes folded away: into constants (permuted once at conversion time) and into the
order an input is taken in."""

from __future__ import annotations

import numpy as np

from ..ir import Graph


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
