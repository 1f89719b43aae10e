"""Attention.

* nn.MultiheadAttention, translated from the whole module call, is one
  `multi_head_attention` node (a Keras MultiHeadAttention): batch_first either way, kdim /
  vdim, a bool key_padding_mask (or the float one nn.TransformerEncoder makes from it), a
  causal attn_mask, the attention weights (per head or averaged) when they are used.
* F.scaled_dot_product_attention (Hugging Face's attention, or a model's own) is written out
  as matmul / scale / mask / softmax / matmul nodes; masks known at conversion time become
  additive constants (dropped where they mask nothing), bool mask tensors an additive term
  with PyTorch's safe softmax (a query with no key to attend gets zero weights).
* Hugging Face's Conv1D (GPT-2's projections) is a Dense; the masks its masking utilities
  build from an attention_mask input (mask[arange(batch), positions] & causal) are a reshape
  and a logical AND.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...graph import Value
from ...graph.errors import UnsupportedOpError
from ..registry import register
from .calls import (
    AtenCall,
    BatchRange,
    Const,
    Deferred,
    ModuleCall,
    SizeTable,
    aten_key,
    bind_arguments,
)

_THROUGH = (
    "aten.transpose",
    "aten.contiguous",
    "aten.clone",
    "aten.alias",
    "aten.detach",
    "aten.dropout",
)


def _trace_input(call: ModuleCall, node: Any) -> tuple[Any, bool]:
    """Follow a projection's input back to the fx node outside the module; True if a
    (0, 1) transpose was on the way (batch_first=True: PyTorch moves time first)."""
    names = {n.name for n in call.nodes}
    swapped = False
    while getattr(node, "name", None) in names:
        key = aten_key(node.target)
        if key not in _THROUGH:
            raise call.unsupported(f"a projection input computed by {key} inside the module")
        if key == "aten.transpose" and sorted(int(d) % 3 for d in node.args[1:3]) == [
            0,
            1,
        ]:
            swapped = not swapped
        node = node.args[0]
    return node, swapped


def _mask_from_constant(call: ModuleCall, mask: np.ndarray) -> np.ndarray:
    """A constant attn_mask as a bool "may attend" array: bool masks are True where
    attention is NOT allowed; float masks are added to the scores (0 or -inf only)."""
    if mask.dtype == np.bool_:
        return ~mask
    if not np.all((mask == 0) | np.isneginf(mask)):
        raise call.unsupported("an additive float attn_mask with values other than 0 and -inf")
    return mask == 0


class FloatMask(Deferred):
    """The float form of a bool padding mask that nn.TransformerEncoder/Decoder build with
    F._canonical_mask: zeros_like(mask, dtype=float), then masked_fill(mask, -inf). It stays
    the bool mask until an nn.MultiheadAttention reads it as its key_padding_mask."""

    def __init__(self, mask: Value, filled: bool) -> None:
        self.mask = mask
        self.filled = filled

    def apply(self, reader: Any, node: Any, key: str, args: dict[str, Any]) -> Any:
        if (
            key == "aten.masked_fill"
            and not self.filled
            and args.get("mask") is self.mask
            and args.get("value") == -math.inf
        ):
            return FloatMask(self.mask, True)
        raise self.refuse(node.name, key)

    def materialize(self, reader: Any, name: str) -> Value:
        raise self.refuse(name, "output")

    @staticmethod
    def refuse(where: str, key: str) -> UnsupportedOpError:
        return UnsupportedOpError(
            [
                (
                    where,
                    key,
                    "a float mask made from a bool one is only read by nn.MultiheadAttention (as its key_padding_mask)",
                )
            ],
            where="the PyTorch reader",
        )


@register("torch->ir", "aten.zeros_like", "aten.ones_like", "aten.full_like")
def filled_like_to_ir(call: AtenCall) -> Any:
    """zeros_like / ones_like / full_like(x): the same numbers for every example, in x's shape
    (KerasHub's Gemma wipes an attention output with `where(none_attended, zeros_like(a), a)`);
    zeros_like of a bool mask as float starts F._canonical_mask's float padding mask."""
    x = call.args.get("self")
    dtype = call.meta_dtypes[0]
    if call.key == "aten.zeros_like" and isinstance(x, Value) and x.dtype == "bool" and dtype.startswith("float"):
        return FloatMask(x, False)
    number = {"aten.zeros_like": 0, "aten.ones_like": 1}.get(call.key, call.args.get("fill_value"))
    shape = call.meta_shapes[0]
    if not isinstance(number, (int, float)) or not shape or shape[0] is not None or None in shape[1:]:
        raise call.unsupported(
            f"{call.key.removeprefix('aten.')} of a tensor of shape {shape} (batch first, other sizes fixed)"
        )
    return call.reader.per_example_value(Const(call.name, np.full((1, *shape[1:]), number, dtype=np.dtype(dtype))))


@register("torch->ir", "module.MultiheadAttention")
def multihead_attention_to_ir(call: ModuleCall) -> list[Value]:
    """nn.MultiheadAttention as one `multi_head_attention` node (a Keras MultiHeadAttention):
    batch_first either way, a bool key_padding_mask, a constant attn_mask (the causal one
    becomes use_causal_mask), and the attention weights when they are used."""
    st = call.state
    reader = call.reader
    if "bias_k" in st or "bias_v" in st:
        raise call.unsupported("bias_k / bias_v")
    linears = call.targets("aten.linear")
    out_proj = [n for n in linears if getattr(n.args[1], "name", "").endswith("out_proj_weight")]
    projections = [n for n in linears if n not in out_proj]
    if len(out_proj) != 1 or len(projections) not in (1, 2, 3):
        raise call.unsupported(
            f"{len(projections)} input projections and {len(out_proj)} output projections (add_zero_attn?)"
        )
    traced = [_trace_input(call, n.args[0]) for n in projections]
    swapped = {s for _, s in traced}
    if len(swapped) != 1:
        raise call.unsupported("query, key and value in different layouts")
    batch_first = swapped.pop()
    sources = [reader.env.get(n.name) for n, _ in traced]
    if not all(isinstance(v, Value) and v.rank == 3 for v in sources):
        raise call.unsupported("unbatched (length, features) inputs; add a batch axis")
    query = sources[0]
    key = sources[1] if len(sources) > 1 else query
    value = sources[2] if len(sources) > 2 else key
    if "in_proj_weight" in st:
        w = st["in_proj_weight"]
        e = w.shape[0] // 3
        ws = [w[:e], w[e : 2 * e], w[2 * e :]]
    else:
        ws = [st["q_proj_weight"], st["k_proj_weight"], st["v_proj_weight"]]
    embed = int(ws[0].shape[0])
    b = st.get("in_proj_bias")
    use_bias = b is not None
    # heads: PyTorch's first view in the module is q.view(tgt_len, bsz * num_heads, head_dim)
    views = [
        n for n in call.targets("aten.view") if hasattr(n.meta.get("val"), "shape") and len(n.meta["val"].shape) == 3
    ]
    if not views:
        raise call.unsupported("cannot find the per-head view of the queries")
    num_heads = embed // int(views[0].meta["val"].shape[-1])
    head_dim = embed // num_heads
    weights = {
        "query_weight": ws[0], "key_weight": ws[1], "value_weight": ws[2],
        "output_weight": st["out_proj.weight"],
    }  # fmt: skip
    if use_bias:
        weights.update(
            query_bias=b[:embed],
            key_bias=b[embed : 2 * embed],
            value_bias=b[2 * embed :],
        )
        weights["output_bias"] = st.get("out_proj.bias", np.zeros(embed, np.float32))
    weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
    # masks: a bool (batch, source) key_padding_mask tensor, a constant attn_mask
    names = {n.name for n in call.nodes}
    prefix = call.module + "." if call.module else ""
    mask_values, mask_consts = [], []
    for n in call.nodes:
        for arg in _flat(list(n.args) + list(n.kwargs.values())):
            if getattr(arg, "name", None) in names or not hasattr(arg, "name"):
                continue
            v = reader.env.get(arg.name)
            if isinstance(v, FloatMask) and v.filled:
                v = v.mask  # nn.TransformerEncoder's float key_padding_mask: its bool source
            if isinstance(v, Value) and v not in sources and v not in mask_values:
                mask_values.append(v)
            elif isinstance(v, Const) and not v.name.startswith(prefix) and all(v is not c for c in mask_consts):
                mask_consts.append(v)
    sdpa = call.targets("aten.scaled_dot_product_attention")
    causal = any(bool(bind_arguments(n.target, n.args, n.kwargs).get("is_causal")) for n in sdpa)
    mask_inputs: list[Value] = []
    mask_names: list[str] = []
    for c in mask_consts:
        allowed = _mask_from_constant(call, c.array)
        if (
            allowed.ndim == 2
            and allowed.shape[0] == allowed.shape[1]
            and np.array_equal(allowed, np.tril(np.ones_like(allowed)))
        ):
            causal = True
        else:
            raise call.unsupported("a constant attn_mask other than the causal one")
    for v in mask_values:
        if v.dtype != "bool" or v.rank != 2:
            raise call.unsupported(
                f"a key_padding_mask of dtype {v.dtype} and shape {v.shape}; pass a bool (batch, source) mask"
            )
        as_float = call.graph.add_node(
            "cast",
            [v],
            {"dtype": "float32"},
            name=f"{call.name}_padding",
            source=call.module,
            source_class="cast",
        ).output
        attend = call.graph.add_node(
            "sequence_mask",
            [as_float],
            {"value": 1.0},
            name=f"{call.name}_attend",
            source=call.module,
            source_class="key_padding_mask",
        ).output
        mask_inputs.append(attend)
        mask_names.append("value_mask")
    if not batch_first:
        moved = {}
        for v in dict.fromkeys([query, key, value]):
            moved[id(v)] = call.swap_time_and_batch(v, "batch_first")
        query, key, value = moved[id(query)], moved[id(key)], moved[id(value)]
    # which outputs are used: the attention output (after out_proj), the weights
    after_proj: set[str] = set()
    frontier = [out_proj[0]]
    while frontier:
        n = frontier.pop()
        if n.name in names and n.name not in after_proj:
            after_proj.add(n.name)
            frontier.extend(n.users)
    score_outputs = [n for n in call.outputs if n.name not in after_proj]
    return_scores = "none"
    if score_outputs:
        rank = len(score_outputs[0].meta["val"].shape)
        return_scores = "mean" if rank == 3 else "heads"
    attrs = {
        "num_heads": num_heads, "key_dim": head_dim, "value_dim": head_dim, "output_dim": int(st["out_proj.weight"].shape[0]),
        "use_bias": use_bias, "causal": causal, "mask_inputs": tuple(mask_names), "return_scores": return_scores,
    }  # fmt: skip
    node = call.graph.add_node(
        "multi_head_attention",
        [query, value, key, *mask_inputs],
        attrs,
        weights,
        name=call.name,
        source=call.module,
        source_class=call.module_class,
    )
    out = node.outputs[0]
    if not batch_first:
        out = call.swap_time_and_batch(out, "time_first")
    return [out if n.name in after_proj else node.outputs[1] for n in call.outputs]


def _flat(obj: Any) -> list[Any]:
    if isinstance(obj, (list, tuple)):
        return [i for o in obj for i in _flat(o)]
    return [obj]


def _known_mask(call: AtenCall, mask: Any) -> np.ndarray | None:
    """The array of a mask known at conversion time (a constant, or one repeated for every
    example of the batch), else None."""
    if isinstance(mask, Const):
        return mask.array
    producer = mask.producer if isinstance(mask, Value) else None
    while producer is not None and producer.op == "tile":  # a constant expanded to the batch
        producer = producer.inputs[0].producer
    if producer is not None and producer.op == "constant":
        return producer.weights["value"]
    return None


def _additive(call: AtenCall, mask: Any, rank: int, safe_rows: list[Value]) -> Value | None:
    """attn_mask as a float term added to the scores (None where it masks nothing): a bool
    mask is True where attention is allowed (False: -inf), a float mask is added as is."""
    if isinstance(mask, SizeTable) and mask.table is not None:
        return call.reader.size_table_value(mask, rank)  # a learned bias (T5's relative positions): trainable
    if isinstance(mask, SizeTable):  # built from a dynamic length (a causal mask): cut to it at run time
        array = mask.array
        if array.dtype == np.bool_:
            if array.all():
                return None
            array = np.where(array, 0.0, -np.inf)
        table = SizeTable(f"{call.name}_mask", array.astype(np.float32), mask.axes)
        return call.reader.size_table_value(table, rank)
    if isinstance(mask, Const) and mask.learned:  # a learned bias (a relative-position table): stays trainable
        return call.reader.constant_value(mask, rank)
    array = _known_mask(call, mask)
    batch = call.reader.static_batch
    if (
        array is not None
        and batch
        and rank == array.ndim == 4
        and array.shape[0] == batch
        and (array == array[:1]).all()
    ):
        array = array[:1]  # a static-batch export's mask, the same for every example
    if array is not None:
        if array.dtype == np.bool_:
            if array.all():
                return None
            array = np.where(array, 0.0, -np.inf).astype(np.float32)
        elif not array.any():
            return None
        array = array.reshape((1,) * (rank - array.ndim) + array.shape).astype(np.float32)
        return call.reader.constant_value(Const(f"{call.name}_mask", array))
    if mask.dtype == "bool":
        as_float = call.emit("cast", [mask], {"dtype": "float32"}, suffix="_mask_float")
        # PyTorch's safe softmax: a query that may attend to no key gets zero weights
        row_ok = call.emit(
            "reduce",
            [as_float],
            {"mode": "max", "axes": (as_float.rank - 1,), "keepdims": True},
            suffix="_mask_rows",
        )
        while row_ok.rank < rank:
            row_ok = call.emit(
                "expand_dims",
                [row_ok],
                {"axis": 1},
                suffix=f"_mask_rows_{row_ok.rank}d",
            )
        safe_rows.append(row_ok)
        blocked = call.emit(
            "sub",
            [call.reader.scalar_value(1.0, mask.rank), as_float],
            suffix="_mask_blocked",
        )
        mask = call.emit(
            "mul",
            [
                blocked,
                call.reader.scalar_value(float(np.finfo(np.float32).min), mask.rank),
            ],
            suffix="_mask",
        )
    while mask.rank < rank:
        mask = call.emit("expand_dims", [mask], {"axis": 1}, suffix=f"_mask_{mask.rank}d")
    return mask


@register("torch->ir", "aten.scaled_dot_product_attention")
def sdpa_to_ir(call: AtenCall) -> Value:
    """softmax(q k^T * scale + mask) v, written out: matmul, scale, mask, softmax, matmul."""
    q, k, v = call.value("query"), call.value("key"), call.value("value")
    if q.rank < 3:
        raise call.unsupported("attention on tensors without a batch axis")
    if call.args.get("enable_gqa") and q.rank == 4 and k.shape[1] != q.shape[1]:
        raise call.unsupported("grouped-query attention (enable_gqa with fewer key heads)")
    if float(call.args.get("dropout_p") or 0.0) > 0:
        raise call.unsupported("attention dropout (dropout_p > 0): export after model.eval() with dropout_p=0")
    perm = tuple(range(k.rank - 2)) + (k.rank - 1, k.rank - 2)
    kt = call.emit("transpose", [k], {"perm": perm}, suffix="_keys")
    scores = call.emit("matmul", [q, kt], suffix="_scores")
    scale = call.args.get("scale") or 1.0 / math.sqrt(int(q.shape[-1]))
    scores = call.emit(
        "mul",
        [scores, call.reader.scalar_value(float(scale), scores.rank)],
        suffix="_scaled",
    )
    terms = []
    safe_rows: list[Value] = []  # where a query may attend to no key, its weights are zero
    if call.args.get("attn_mask") is not None:
        terms.append(_additive(call, call.args["attn_mask"], scores.rank, safe_rows))
    if call.args.get("is_causal"):
        length, source = int(q.shape[-2]), int(k.shape[-2])
        causal = np.where(np.tril(np.ones((length, source), bool)), 0.0, -np.inf).astype(np.float32)
        terms.append(
            call.reader.constant_value(
                Const(
                    f"{call.name}_causal",
                    causal.reshape((1,) * (scores.rank - 2) + causal.shape),
                )
            )
        )
    for i, term in enumerate(t for t in terms if t is not None):
        scores = call.emit("add", [scores, term], suffix=f"_masked{i or ''}")
    weights = call.emit("softmax", [scores], {"axis": (scores.rank - 1,)}, suffix="_weights")
    for row_ok in safe_rows:
        weights = call.emit("mul", [weights, row_ok], suffix="_weights_safe")
    return call.emit("matmul", [weights, v])


@register("torch->ir", "module.Conv1D")
def hf_conv1d_to_ir(call: ModuleCall) -> list[Value]:
    """Hugging Face's Conv1D (GPT-2's projections): a Linear with a transposed (in, out)
    weight, written as x.view(-1, in) @ W + b viewed back; one Dense on the sequence."""
    st = call.state
    if set(st) != {"weight", "bias"} or len(call.inputs) != 1 or len(call.outputs) != 1:
        raise call.unsupported("a Conv1D module other than transformers.pytorch_utils.Conv1D (weight, bias; one input)")
    # a transposed view, not a copy: the Keras writer transposes it back to (in, out)
    w = np.asarray(st["weight"], dtype=np.float32).T
    attrs = {"units": int(w.shape[0]), "use_bias": True}
    return [
        call.emit(
            "dense",
            [call.inputs[0]],
            attrs,
            {"weight": w, "bias": np.ascontiguousarray(st["bias"], dtype=np.float32)},
        )
    ]


# -- attention masks that Hugging Face's masking utilities build from attention_mask ----------
@register("torch->ir", "aten.index")
def index_to_ir(call: AtenCall) -> Value:
    """x[arange(batch), positions] with x a (batch, length) padding mask and positions the
    constant 0..length-1 (broadcast to a 4-D mask): the mask itself, reshaped; and
    x[arange(batch), i] with i one position per example (CLIP's pooler: the EOS token's
    hidden state): a gather along axis 1."""
    x = call.args.get("self")
    indices = list(call.args.get("indices") or [])
    if (
        isinstance(x, Value)
        and len(indices) == 2
        and isinstance(indices[0], BatchRange)
        and indices[0].ndim == 1
        and isinstance(indices[1], Value)
        and indices[1].rank == 1
        and x.rank >= 2
    ):
        position = call.emit("reshape", [indices[1]], {"shape": (1,) * (x.rank - 1)}, suffix="_index")
        picked = call.emit("gather", [x, position], {"axis": 1})
        return call.emit("squeeze", [picked], {"axis": 1}, suffix="_squeeze")
    if (
        isinstance(x, Value)
        and x.rank == 2
        and len(indices) == 2
        and isinstance(indices[0], BatchRange)
        and isinstance(indices[1], SizeTable)
        and indices[1].array.shape[-1] == indices[1].array.size
        and np.array_equal(indices[1].array.reshape(-1), np.arange(indices[1].array.size))
        and [a for a, _, _ in indices[1].axes] == [indices[1].array.ndim - 1]
    ):
        # the same with a dynamic length: the positions are 0..length-1 at any length
        rank = max(indices[0].ndim, indices[1].array.ndim)
        return call.emit("reshape", [x], {"shape": (1,) * (rank - 2) + (-1,)})
    if not (
        isinstance(x, Value)
        and x.rank == 2
        and len(indices) == 2
        and isinstance(indices[0], BatchRange)
        and isinstance(indices[1], Const)
    ):
        raise call.unsupported("indexing other than mask[arange(batch), positions] (a padding mask read by position)")
    positions = indices[1].array
    if (
        x.shape[1] is None
        or not np.array_equal(positions.reshape(-1), np.arange(int(x.shape[1])))
        or positions.shape[-1] != positions.size
    ):
        raise call.unsupported("indexing a padding mask by positions other than 0..length-1 along the last axis")
    rank = max(indices[0].ndim, positions.ndim)
    return call.emit("reshape", [x], {"shape": (1,) * (rank - 2) + (int(x.shape[1]),)})


@register("torch->ir", "aten.__and__", "aten.bitwise_and", "aten.logical_and")
def mask_and_to_ir(call: AtenCall) -> Value:
    """a & b of bool masks; an all-True constant operand only broadcasts the other. For
    logical_and, a non-bool operand counts as its `!= 0` (Qwen3's int padding mask and its bool
    sliding window)."""
    a, b = call.args.get("self", call.args.get("input")), call.args.get("other")
    if isinstance(a, (Const, SizeTable)):
        a, b = b, a
    if call.key == "aten.logical_and":
        if isinstance(a, Value) and a.dtype != "bool":
            a = call.emit("cast", [a], {"dtype": "bool"}, suffix="_bool")
        if isinstance(b, Value) and b.dtype != "bool":
            b = call.emit("cast", [b], {"dtype": "bool"}, suffix="_other_bool")
            call.args = {**call.args, "other": b}
        if isinstance(b, Const) and b.array.dtype != np.bool_:
            b = Const(b.name, b.array != 0)
    if not isinstance(a, Value) or a.dtype != "bool":
        raise call.unsupported("& of tensors that are not bool masks")
    if isinstance(b, SizeTable):  # a mask built from a dynamic length (a causal mask cut to it)
        if b.array.dtype == np.bool_ and b.array.all():
            return a  # all True: it only broadcasts the other, which the ops after it do too
        return call.emit("mask_merge", [a, call.reader.size_table_value(b, a.rank)], {"mode": "and"})
    if isinstance(b, Const):
        if b.array.dtype != np.bool_:
            raise call.unsupported("& with a constant that is not a bool mask")
        if not b.array.all():  # e.g. the causal mask
            return call.emit(
                "mask_merge",
                [a, call.reader.constant_value(b, a.rank)],
                {"mode": "and"},
            )
        target = call.meta_shapes[0]
        reps = tuple(1 if d is None or s == d else int(d) for s, d in zip(a.shape, target))
        return a if all(r == 1 for r in reps) else call.emit("tile", [a], {"reps": reps})
    return call.emit("mask_merge", [a, call.value("other")], {"mode": "and"})
