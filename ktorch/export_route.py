"""Keras -> PyTorch through torch.export: the route for what the Keras reader cannot read.

`ktorch.keras_export` captures the Keras model on its torch backend in a worker process;
here the program is lowered a little (the few ATen spellings Keras's torch backend uses
that the PyTorch reader does not translate), read by the PyTorch reader, re-formed into
the Keras layers it came from (BatchNormalization decomposed by the backend becomes one
batch_norm again; every op is named after its Keras layer path), laid out channels-first
(which removes the backend's NHWC <-> NCHW permutes) and written as PyTorch code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .directions import compose
from .graph import Graph, Node, Value
from .graph.errors import KtorchError, ParityError, UnsupportedOpError, UntrustedCodeError
from .graph.passes import (
    absorb_input_transposes,
    assign_layout,
    count_transposes,
    eliminate_dead,
    fold_bias_into_batch_norm,
    fold_constant_transposes,
    fold_padding,
    fuse_activations,
    remove_noops,
)
from .graph.queries import spatial_format
from .keras_export import Capture, capture_keras, model_classes
from .pipeline import Direction, Options, Read
from .pipeline import convert as run_pipeline
from .result import ConversionResult

ROUTES = ("direct", "export", "auto")
KERAS_HUB_PACKAGES = ("keras_hub", "keras_nlp", "keras_cv")


# -- route selection ----------------------------------------------------------------------------
def export_reason(src: Path) -> str | None:
    """Why the direct reader cannot take `src` at all (a KerasHub Backbone/Task, a subclassed
    model), or None when it should be tried first."""
    classes = model_classes(src)
    if not classes:
        return None
    module, cls = classes[0]
    package = module.split(".", 1)[0]
    if package in KERAS_HUB_PACKAGES:
        return f"the top-level object is a {cls} ({package}), not a Functional or Sequential model"
    if cls not in ("Functional", "Sequential", "Model") and not module.startswith("keras"):
        return f"the top-level object is a subclassed model ({cls})"
    return None


# -- lowering the program for the reader ----------------------------------------------------------
def _aliases() -> dict[Any, Any]:
    import torch

    aten = torch.ops.aten
    return {
        aten.subtract.Tensor: aten.sub.Tensor,
        aten.multiply.Tensor: aten.mul.Tensor,
        aten.divide.Tensor: aten.div.Tensor,
        aten.true_divide.Tensor: aten.div.Tensor,
        aten.broadcast_to.default: aten.expand.default,
    }


def _insert_call(graph: Any, like: Any, target: Any, *args: Any) -> Any:
    """A new fx call of `target` (at the graph's insertion point) with `like`'s metadata (its
    Keras layer) and the fake value it computes."""
    node = graph.call_function(target, args)
    node.meta.update({k: v for k, v in like.meta.items() if k != "val"})
    node.meta["val"] = _fake_call(target, args)
    return node


def _fake_call(target: Any, args: tuple) -> Any:
    """The output of `target` on the fake values of fx `args` (the metadata a new node needs)."""
    import torch.fx
    from torch._guards import detect_fake_mode

    vals = [a.meta["val"] if isinstance(a, torch.fx.Node) else a for a in args]
    mode = detect_fake_mode([v for v in vals if hasattr(v, "shape")])
    with mode:
        return target(*vals)


def lower_program(program: Any) -> dict[str, int]:
    """Rewrite the calls of Keras's torch backend that the PyTorch reader has no translator
    for into ones it has, exactly:

    - `subtract`/`multiply`/`divide`/`broadcast_to`: their canonical ATen names;
    - `where(ids < 0, ids + n, ids)` before an embedding (Keras wraps negative ids, as Python
      indexing does): `ids` (ids are valid, non-negative indices);
    - `where(cond, a, b)` on floats (a masked softmax): `a * cond + b * (1 - cond)`, exact
      for finite a and b;
    - `tile(x, [batch, 1, ...])` of a one-row x (a class token): `expand(x, [batch, -1, ...])`;
    - `permute(unsqueeze(x, 0), perm)` that keeps x's axes in order: `unsqueeze(x, perm.index(0))`.
    """
    import torch
    import torch.fx

    aten = torch.ops.aten
    graph = program.graph
    counts: dict[str, int] = defaultdict(int)
    aliases = _aliases()
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in aliases:
            node.target = aliases[node.target]
            counts["renamed"] += 1
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target == aten.tile.default and _tiles_batch_only(node):
            x, reps = node.args
            node.target = aten.expand.default  # the same rows for every example (ViT's class token)
            node.args = (x, [reps[0], *[-1] * (len(reps) - 1)])
            counts["tile"] += 1
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in (
            aten.moveaxis.intlist,
            aten.movedim.intlist,
            aten.moveaxis.int,
            aten.movedim.int,
        ):
            node.args = (node.args[0], _movedim_perm(node))
            node.target = aten.permute.default
            counts["moveaxis"] += 1
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target == aten.permute.default and _moves_new_leading_axis(node):
            x, perm = _past_same_dtype_casts(node.args[0]).args[0], node.args[1]
            with graph.inserting_before(node):
                out = _insert_call(graph, node, aten.unsqueeze.default, x, list(perm).index(0))
            node.replace_all_uses_with(out)
            counts["unsqueeze"] += 1
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in (
            aten.where.self,
            aten.where.ScalarSelf,
            aten.where.ScalarOther,
            aten.where.Scalar,
        ):
            continue
        cond, a, b = node.args
        if _is_negative_wrap(cond, a, b):
            node.replace_all_uses_with(b)
            counts["index_wrap"] += 1
            continue
        val = node.meta.get("val")
        if val is None or val.dtype.is_complex:
            continue
        zero_a, zero_b = _is_zero(a, program), _is_zero(b, program)
        dtype = val.dtype if val.dtype.is_floating_point else torch.int32  # bools and ints: exact in int32
        with graph.inserting_before(node):
            call = functools.partial(_insert_call, graph, node)
            mask = call(aten.to.dtype, cond, dtype)
            if dtype != val.dtype:
                a, b = (call(aten.to.dtype, v, dtype) if isinstance(v, torch.fx.Node) else v for v in (a, b))
            terms = [] if zero_a else [call(aten.mul.Tensor, mask, a)]
            if not zero_b:
                terms.append(call(aten.mul.Tensor, call(aten.rsub.Scalar, mask, 1), b))
            if len(terms) == 2:
                out = call(aten.add.Tensor, *terms)
            else:
                out = terms[0] if terms else call(aten.mul.Tensor, mask, 0)
            if dtype != val.dtype:
                out = call(aten.to.dtype, out, val.dtype)
        node.replace_all_uses_with(out)
        counts["where"] += 1
    for node in list(graph.nodes):  # after the wheres: an id wrap's `ids < 0` goes with its where
        if node.op == "call_function" and node.target in _COMPARISONS and node.users and _integer_operands(node):
            _lower_integer_comparison(graph, node)
            counts["compare"] += 1
    graph.eliminate_dead_code()
    program.graph_module.recompile()
    return dict(counts)


def _comparisons() -> dict[Any, tuple[int, int]]:
    """ATen comparisons -> (sign, offset): x > y is clamp(sign * (x - y) + offset, 0, 1) on integers."""
    import torch

    aten = torch.ops.aten
    table = {}
    for name, rule in (
        ("gt", (1, 0)),
        ("greater", (1, 0)),
        ("lt", (-1, 0)),
        ("less", (-1, 0)),
        ("ge", (1, 1)),
        ("greater_equal", (1, 1)),
        ("le", (-1, 1)),
        ("less_equal", (-1, 1)),
    ):
        packet = getattr(aten, name, None)
        for overload in ("Tensor", "Scalar"):
            if packet is not None and hasattr(packet, overload):
                table[getattr(packet, overload)] = rule
    return table


_COMPARISONS = _comparisons()


def _integer_operands(node: Any) -> bool:
    import torch.fx

    for a in node.args[:2]:
        if isinstance(a, torch.fx.Node):
            val = a.meta.get("val")
            if val is None or val.dtype.is_floating_point or val.dtype.is_complex:
                return False
        elif not isinstance(a, int) or isinstance(a, bool):
            return False
    return True


def _lower_integer_comparison(graph: Any, node: Any) -> None:
    """x > y on integers as clamp(x - y, 0, 1) cast to bool (and <, >=, <= alike): exact."""
    import torch
    import torch.fx

    aten = torch.ops.aten
    sign, offset = _COMPARISONS[node.target]
    x, y = node.args[:2]
    with graph.inserting_before(node):
        call = functools.partial(_insert_call, graph, node)

        def int32(v: Any) -> Any:
            return call(aten.to.dtype, v, torch.int32) if isinstance(v, torch.fx.Node) else v

        x, y = int32(x), int32(y)
        if not isinstance(x, torch.fx.Node):
            x, y, sign = y, x, -sign  # the tensor first
        diff = call(aten.sub.Tensor if isinstance(y, torch.fx.Node) else aten.sub.Scalar, x, y)
        if sign < 0:
            diff = call(aten.neg.default, diff)
        if offset:
            diff = call(aten.add.Scalar, diff, offset)
        out = call(aten.to.dtype, call(aten.clamp.default, diff, 0, 1), torch.bool)
    node.replace_all_uses_with(out)


def _movedim_perm(node: Any) -> list[int]:
    x, src, dst = node.args[:3]
    rank = x.meta["val"].ndim
    src = [s % rank for s in (src if isinstance(src, (list, tuple)) else [src])]
    dst = [d % rank for d in (dst if isinstance(dst, (list, tuple)) else [dst])]
    rest = [i for i in range(rank) if i not in src]
    perm = [-1] * rank
    for s, d in zip(src, dst):
        perm[d] = s
    it = iter(rest)
    return [p if p >= 0 else next(it) for p in perm]


def _moves_new_leading_axis(node: Any) -> bool:
    """permute(unsqueeze(x, 0), perm) where perm keeps x's axes in order: the new axis lands
    at perm.index(0) (Falcon's ALiBi: expand_dims(alibi, 0) then transpose [1, 2, 0, 3]), so
    it is unsqueeze(x, perm.index(0)), which keeps the batch axis first."""
    import torch
    import torch.fx

    inner, perm = _past_same_dtype_casts(node.args[0]), list(node.args[1])
    if not (isinstance(inner, torch.fx.Node) and inner.op == "call_function"):
        return False
    if inner.target != torch.ops.aten.unsqueeze.default or inner.args[1] not in (0, -len(perm)):
        return False
    return [p for p in perm if p != 0] == list(range(1, len(perm)))


def _past_same_dtype_casts(x: Any) -> Any:
    """The fx node behind `x`'s casts to its own dtype (the backend's `to.dtype_layout` noise)."""
    import torch
    import torch.fx

    while (
        isinstance(x, torch.fx.Node)
        and x.op == "call_function"
        and x.target in (torch.ops.aten.to.dtype_layout, torch.ops.aten.to.dtype, torch.ops.aten._to_copy.default)
        and isinstance(x.args[0], torch.fx.Node)
        and getattr(x.meta.get("val"), "dtype", None) is not None
        and x.meta["val"].dtype == getattr(x.args[0].meta.get("val"), "dtype", None)
    ):
        x = x.args[0]
    return x


def _tiles_batch_only(node: Any) -> bool:
    """tile(x, [batch, 1, ..., 1]) of an x with one row: an expand to the batch."""
    import torch.fx

    x, reps = node.args[0], node.args[1]
    val = x.meta.get("val") if isinstance(x, torch.fx.Node) else None
    if val is None or val.ndim != len(reps) or val.shape[0] != 1:
        return False
    return isinstance(reps[0], torch.fx.Node) and all(r == 1 for r in reps[1:])


def _is_negative_wrap(cond: Any, a: Any, b: Any) -> bool:
    import torch
    import torch.fx

    aten = torch.ops.aten
    if not all(isinstance(x, torch.fx.Node) for x in (cond, a)):
        return False
    return (
        cond.target == aten.lt.Scalar
        and cond.args[0] is b
        and cond.args[1] == 0
        and a.target in (aten.add.Tensor, aten.add.Scalar)
        and a.args[0] is b
    )


def _is_zero(x: Any, program: Any) -> bool:
    """Whether fx argument `x` is the number 0 (a literal, or a lifted 0-d constant)."""
    import torch
    import torch.fx

    if isinstance(x, (int, float)):
        return x == 0
    while isinstance(x, torch.fx.Node) and x.op == "call_function" and x.args:
        if x.target not in (
            torch.ops.aten.lift_fresh_copy.default,
            torch.ops.aten.to.dtype,
            torch.ops.aten.clone.default,
        ):
            return False
        x = x.args[0]
    if not isinstance(x, torch.fx.Node) or x.op != "placeholder":
        return False
    targets = {s.arg.name: s.target for s in program.graph_signature.input_specs if hasattr(s.arg, "name")}
    tensor = (getattr(program, "constants", {}) or {}).get(targets.get(x.name))
    return tensor is not None and tensor.numel() == 1 and float(tensor.reshape(())) == 0.0


# -- re-forming the Keras layers ------------------------------------------------------------------
def _ident(text: str) -> str:
    return re.sub(r"\W", "_", text).strip("_") or "x"


class LayerIndex:
    """Which Keras layer each graph node came from, and that layer's variables."""

    def __init__(self, graph: Graph, capture: Capture) -> None:
        info = capture.info
        self.classes: dict[str, str] = info.get("layers", {})
        self.configs: dict[str, dict] = info.get("configs", {})
        self.by_ident = sorted(((_ident(p), p) for p in self.classes), key=lambda t: -len(t[0]))
        self.layer_of: dict[int, str] = {}
        for node in graph.nodes:
            for prefix, path in self.by_ident:
                if node.name == prefix or node.name.startswith(prefix + "_"):
                    self.layer_of[id(node)] = path
                    break
        # Keras variable path ("conv1_bn/gamma") -> its value
        constants = getattr(capture.program, "constants", {}) or {}
        self.variables: dict[str, np.ndarray] = {}
        for name, entry in info.get("constants", {}).items():
            tensor = constants.get(name)
            if tensor is not None:
                self.variables[entry["path"]] = (
                    tensor.detach().cpu().float().numpy() if tensor.is_floating_point() else tensor.numpy()
                )

    def nodes(self, graph: Graph, path: str) -> list[Node]:
        return [n for n in graph.nodes if self.layer_of.get(id(n)) == path]

    def variable(self, path: str, name: str) -> np.ndarray | None:
        return self.variables.get(f"{path.replace('.', '/')}/{name}")


def _region(graph: Graph, nodes: list[Node]) -> tuple[list[Value], list[Value]]:
    """The non-constant values a set of nodes reads from outside, and those it gives out."""
    inside = {id(n) for n in nodes}
    ins: list[Value] = []
    outs: list[Value] = []
    for n in nodes:
        for v in n.inputs:
            p = v.producer
            if (p is None or id(p) not in inside) and not (p is not None and p.op == "constant") and v not in ins:
                ins.append(v)
        for v in n.outputs:
            if v in graph.outputs or any(id(u) not in inside for u in v.users):
                outs.append(v)
    return ins, outs


def reform_batch_norm(graph: Graph, index: LayerIndex, path: str) -> bool:
    """A BatchNormalization the backend decomposed ((x - mean) * scale + beta, the scale
    folded) becomes one batch_norm with the layer's own four variables."""
    nodes = index.nodes(graph, path)
    ins, outs = _region(graph, nodes)
    if len(ins) != 1 or len(outs) != 1 or not nodes:
        return False
    if any(n.op not in ("sub", "mul", "add", "div", "rsqrt", "sqrt", "constant", "reshape") for n in nodes):
        return False
    mean, var = index.variable(path, "moving_mean"), index.variable(path, "moving_variance")
    if mean is None or var is None:
        return False
    config = index.configs.get(path, {})
    x = ins[0]
    axis = int(config.get("axis", -1))
    axis = axis % x.rank
    gamma = index.variable(path, "gamma")
    beta = index.variable(path, "beta")
    weights = {
        "weight": gamma if gamma is not None else np.ones_like(mean),
        "bias": beta if beta is not None else np.zeros_like(mean),
        "running_mean": mean,
        "running_var": var,
    }
    momentum = round(1.0 - float(config.get("momentum", 0.99)), 6)
    last = nodes[-1]
    new = graph.add_node(
        "batch_norm",
        [x],
        # a Keras BatchNormalization updates its moving variance with the biased batch variance
        {"axis": axis, "epsilon": float(config.get("epsilon", 1e-3)), "momentum": momentum, "biased_running_var": True},
        weights,
        name=_ident(path),
        source=path,
        source_class="BatchNormalization",
        index=graph.nodes.index(last) + 1,
    )
    graph.replace_uses(outs[0], new.output)
    new.output.source = path
    return True


REFORMERS: dict[str, Callable[[Graph, LayerIndex, str], bool]] = {"BatchNormalization": reform_batch_norm}

# ops that are a layer of their own in the emitted module (named after the Keras layer)
MODULE_OPS = {
    "conv",
    "conv_transpose",
    "dense",
    "einsum_dense",
    "batch_norm",
    "layer_norm",
    "rms_norm",
    "group_norm",
    "embedding",
    "pool",
    "global_pool",
}


def reform_layers(graph: Graph, capture: Capture) -> dict[str, int]:
    """Mark every node with its Keras layer path (`node.source`), name the constants after the
    Keras variables they hold, and re-form the layers the backend decomposed."""
    eliminate_dead(graph)  # a dead copy of a variable must not take the variable's name
    index = LayerIndex(graph, capture)
    for node in graph.nodes:
        path = index.layer_of.get(id(node))
        if path is not None and node.op != "constant":
            node.source = path
    variables = capture.info.get("constants", {})
    taken = {n.name for n in graph.nodes}
    for node in graph.nodes:
        entry = variables.get(node.source or "") if node.op == "constant" else None
        if entry is None:
            continue
        node.attrs["trainable"] = bool(entry["trainable"])
        name = _ident(entry["path"])
        if name not in taken:
            taken.discard(node.name)
            node.name, node.source = name, entry["path"]
            taken.add(name)
    counts: dict[str, int] = defaultdict(int)
    for path, cls in index.classes.items():
        reformer = REFORMERS.get(cls)
        if reformer is not None and reformer(graph, index, path):
            counts[cls] += 1
    eliminate_dead(graph)
    return dict(counts)


def _const(v: Value) -> np.ndarray | None:
    p = v.producer
    return None if p is None or p.op != "constant" else np.asarray(p.weights["value"])


def _bias_vector(array: np.ndarray, out: Value, axis: int) -> np.ndarray | None:
    """`array` as a per-channel vector along `axis` of `out`, if it broadcasts as one."""
    size = out.shape[axis]
    if array.ndim > out.rank or size is None or array.size != size:
        return None
    padded = array.reshape((1,) * (out.rank - array.ndim) + array.shape)
    if padded.shape[axis] != size:
        return None
    return padded.reshape(size).astype(np.float32)


def fold_layer_biases(graph: Graph) -> int:
    """`dense(x) + b`, `conv(x) + b` (Keras adds the bias after the matmul/convolution on its
    torch backend) become the layer's own bias; `einsum(x, kernel) + b` becomes einsum_dense."""
    folded = 0
    for node in list(graph.nodes):
        if (
            node.op == "einsum"
            and len(node.inputs) == 2
            and _const(node.inputs[1]) is not None
            and _const(node.inputs[0]) is None
        ):
            kernel = _const(node.inputs[1])
            new = graph.add_node(
                "einsum_dense", [node.inputs[0]], {"equation": node.attrs["equation"]}, {"kernel": kernel},
                name=node.name, source=node.source, source_class=node.source_class, index=graph.nodes.index(node),
            )  # fmt: skip
            graph.replace_uses(node.output, new.output)
            graph.remove_node(node)
            node = new
        if (
            node.op not in ("dense", "conv", "einsum_dense")
            or len(node.output.users) != 1
            or node.output in graph.outputs
        ):
            continue
        add = node.output.users[0]
        if add.op != "add" or len(add.inputs) != 2 or add.source != node.source:
            continue
        other = add.inputs[1] if add.inputs[0] is node.output else add.inputs[0]
        array = _const(other)
        if array is None:
            continue
        if node.op == "einsum_dense":
            if "bias" in node.weights:
                continue
            out = node.output.shape
            trimmed = array.reshape(array.shape[next((i for i, d in enumerate(array.shape) if d != 1), array.ndim) :])
            if trimmed.ndim > len(out) or any(d != 1 and d != o for d, o in zip(trimmed.shape[::-1], out[::-1])):
                continue
            node.weights["bias"] = trimmed.astype(np.float32)
        else:
            if node.attrs.get("use_bias") and node.weights.get("bias") is not None:
                continue
            axis = (
                node.output.rank - 1
                if node.op == "dense"
                else (1 if node.attrs["data_format"] == "channels_first" else node.output.rank - 1)
            )
            vector = _bias_vector(array, node.output, axis)
            if vector is None:
                continue
            node.weights["bias"] = vector
            node.attrs["use_bias"] = True
        graph.replace_uses(add.output, node.output)
        graph.remove_node(add)
        folded += 1
    eliminate_dead(graph)
    return folded


def name_after_layers(graph: Graph, classes: dict[str, str]) -> None:
    """The one module op of a Keras layer (or its only op) takes the layer's name
    (`conv1_conv`), the other ops keep `<layer>_<op>`; values take their node's name."""
    groups: dict[str, list[Node]] = defaultdict(list)
    for node in graph.nodes:
        if node.op != "constant" and node.source in classes:
            groups[node.source].append(node)
    taken = {n.name for n in graph.nodes}
    for path, nodes in groups.items():
        main = [n for n in nodes if n.op in MODULE_OPS]
        pick = main[0] if len(main) == 1 else nodes[0] if len(nodes) == 1 else None
        if pick is None:
            continue
        pick.source_class = classes[path]
        name = _ident(path)
        if pick.name == name or name in taken:
            continue
        taken.discard(pick.name)
        pick.name = name
        taken.add(name)
        for v in pick.outputs:
            v.source = path
    used = {v.name for v in graph.values()}
    for node in graph.nodes:
        if len(node.outputs) != 1 or node.output.name == node.name or node.name in used:
            continue
        used.discard(node.output.name)
        node.output.name = node.name
        used.add(node.name)


# -- the direction -------------------------------------------------------------------------------
def read_keras_export(
    src: Any, options: Options, timings: dict[str, float], *, custom_objects: str | None = None
) -> Read:
    """Capture `src` in the worker, lower the program and read it into the graph."""
    from .translate.keras_reader.file import sha256
    from .translate.torch_reader import read_program

    path = Path(src)
    t0 = time.perf_counter()
    options.step(f"capturing {path.name} with torch.export (Keras on its torch backend, in a worker)")
    capture = capture_keras(path, custom_objects=custom_objects, trust_code=options.trust_code, seed=options.seed)
    timings["export"] = time.perf_counter() - t0
    options.step("reading the ATen graph")
    lowered = lower_program(capture.program)
    info = capture.info
    graph = read_program(capture.program, name=_ident(info["model"]["name"]))
    graph.meta.update(
        {
            "source_framework": "keras",
            "source_format": "keras (torch.export)",
            "keras_version": info.get("keras_version"),
        }
    )
    graph.meta["export_lowered"] = lowered
    used = {v.name for v in graph.values()}
    for v, spec in zip(graph.inputs, info["inputs"]):
        v.source = spec["name"]
        name = _ident(spec["name"]) if not spec["name"].startswith("keras_tensor") else "inputs"
        if name not in used:
            used.discard(v.name)
            v.name = name
            used.add(name)
    for v, spec in zip(graph.outputs, info["outputs"]):
        v.source = spec["name"]
    if info.get("output_keys"):  # dict outputs are named by their keys (translate.runtime.keras_outputs)
        graph.meta["output_names"] = list(info["output_keys"])
    # checked with tokenizer-like masks (left and right padding), see verify.runners.padding_masks
    masks = [spec["name"] for spec in info["inputs"] if spec.get("padding_mask")]
    if masks:
        graph.meta["padding_masks"] = masks
    source = {
        "file": path.name, "sha256": sha256(path), "format": "keras", "keras_version": info.get("keras_version"),
        "class": info["model"]["class"], "module": info["model"]["module"],
    }  # fmt: skip
    if custom_objects:
        source["custom_objects"] = custom_objects
    if graph.meta.get("static_batch") is not None:  # the program runs only this batch size
        source["batch"] = graph.meta["static_batch"]
        if info.get("static_batch"):
            source["batch_reason"] = info["static_batch"]["why"]
    if info.get("stored_values"):  # recomputed by their layer when Keras loads the file: the file's values
        source["stored_values"] = info["stored_values"]
    if info.get("attention"):  # KerasHub's attention captured on the path it takes on TensorFlow
        source["attention"] = info["attention"]
    state = {"path": path, "capture": capture, "custom_objects": custom_objects}
    return Read(graph, label=str(src), desc=path.name, source=source, state=state)


def rewrite_export(graph: Graph, read: Read, options: Options) -> int:
    """Re-form the Keras layers, lay the graph out channels-first (the backend's permutes go),
    fold the biases and activations into their layers, and name everything after the layers."""
    capture = read.state["capture"]
    remove_noops(graph)
    # an image input the backend permutes NHWC -> NCHW straight away is taken in NCHW
    read.state["taken"] = {} if options.keep_layout else absorb_input_transposes(graph)
    reformed = reform_layers(graph, capture)
    assign_layout(graph, "channels_first", keep_io=options.keep_layout)
    fold_constant_transposes(graph)
    fold_padding(graph)  # the backend's permutes stood between a ZeroPadding2D and its Conv2D
    reformed["biases"] = fold_layer_biases(graph)
    fold_bias_into_batch_norm(graph)
    fuse_activations(graph)
    name_after_layers(graph, capture.info.get("layers", {}))
    eliminate_dead(graph)
    graph.meta["export_reformed"] = reformed
    return count_transposes(graph)


def check_export_source(read: Read, staging: Path, manifest: dict[str, Any], options: Options) -> Any:
    """Keras (on TensorFlow here) runs the source; its KerasHub package or the user's module of
    custom objects is imported first, so that the file's classes load."""
    from .verify.parity import check_keras_to_torch

    path = read.state["path"]
    prepare_keras_source(path, custom_objects=read.state.get("custom_objects"), trust_code=options.trust_code)
    # seeded inputs unless given; a padding mask is left- and right-padded (manifest `padding_mask`)
    return check_keras_to_torch(
        path, staging, manifest=manifest, inputs=options.inputs, seed=options.seed, tolerance=options.tolerance,
        trust_code=options.trust_code,
    )  # fmt: skip


def export_direction(reason: str, custom_objects: str | None = None) -> Direction:
    """Keras -> PyTorch through torch.export, recording `reason` as the route's."""

    def read(src: Any, options: Options, timings: dict[str, float]) -> Read:
        result = read_keras_export(src, options, timings, custom_objects=custom_objects)
        result.route = {"name": "export", "reason": reason}
        return result

    return Direction(
        name="keras->torch", target="torch", read=read, io_format=spatial_format, rewrite=rewrite_export,
        check=check_export_source, mismatch="the emitted model differs from the source",
        perm_of=lambda value, read: compose(read.state.get("taken", {}).get(id(value)), value.perm),
        hint="; run `ktorch verify` for a report",
    )  # fmt: skip


def direct_direction(reason: str) -> Direction:
    """The Keras reader's own direction, recording the route."""
    from .directions import KERAS_TO_TORCH

    def read(src: Any, options: Options, timings: dict[str, float]) -> Read:
        result = KERAS_TO_TORCH.read(src, options, timings)
        result.route = {"name": "direct", "reason": reason}
        return result

    return dataclasses.replace(KERAS_TO_TORCH, read=read)


def prepare_keras_source(src: Path, *, custom_objects: str | None = None, trust_code: bool = False) -> None:
    """Make the classes a Keras file names loadable in this process: import the KerasHub
    package it references (which registers its classes) and the user's module."""
    import importlib
    import sys

    for module, _ in model_classes(Path(src)):
        package = module.split(".", 1)[0]
        if package in KERAS_HUB_PACKAGES:
            with contextlib.suppress(ImportError):
                importlib.import_module(package)
    if custom_objects and trust_code:
        if "" not in sys.path:
            sys.path.insert(0, "")
        importlib.import_module(custom_objects)


def convert_keras(
    src: Any, out: Any, options: Options, *, route: str = "auto", custom_objects: str | None = None
) -> ConversionResult:
    """A Keras file to PyTorch: the direct reader first (route "auto"), the export route when
    it cannot read the file (see export_reason) or when asked for (route "export")."""
    if route not in ROUTES:
        raise ValueError(f"route must be one of {', '.join(ROUTES)}, not {route!r}")
    if custom_objects and not options.trust_code:
        raise UntrustedCodeError(
            f"custom_objects={custom_objects!r}: importing it runs its code; pass trust_code=True (--trust-code)"
        )
    if route == "export":
        return run_pipeline(export_direction("requested (route 'export')", custom_objects), src, out, options)
    reason = None if route == "direct" else export_reason(Path(src))
    if reason is not None:
        options.step(f"export route: {reason}")
        return run_pipeline(export_direction(reason, custom_objects), src, out, options)
    why = "requested (route 'direct')" if route == "direct" else "the Keras reader reads every layer"
    try:
        return run_pipeline(direct_direction(why), src, out, options)
    except KtorchError as exc:
        text = str(exc).splitlines()[0]
        readable = any(k in text for k in ("not a model", "subclass"))
        # the fallback on a layer the direct reader cannot translate stays opt-in (--route export) until
        # its results are checked on the whole suite: it hid the direct reader's list of layers
        if route == "direct" or not readable or isinstance(exc, (ParityError, UnsupportedOpError)):
            raise
        direct_error = exc
    if isinstance(direct_error, UnsupportedOpError) and direct_error.items:
        name, cls, _ = direct_error.items[0]
        more = f" and {len(direct_error.items) - 1} more" if len(direct_error.items) > 1 else ""
        reason = f"the direct reader cannot translate {name} ({cls}){more}"
    else:
        reason = f"the direct reader cannot read it: {str(direct_error).splitlines()[0]}"
    options.step(f"export route: {reason}")
    try:
        return run_pipeline(export_direction(reason, custom_objects), src, out, options)
    except KtorchError as exc:
        # the export route could not do it either (Keras cannot load the file, the program has an
        # op without a translator, or its result differs): the direct reader's error, which lists
        # every layer it cannot read, is the one to act on; the export route's is its cause
        raise direct_error from exc
