"""What the PyTorch reader's translators receive: an `AtenCall` (one ATen call) or a
`ModuleCall` (all calls of one module), the constants and symbolic batch sizes among their
arguments, and `Deferred` module outputs. This module imports nothing from the reader, so
that the op families (which import it) and the reader (which imports them) form no cycle."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from ...graph import Graph, Value
from ...graph.errors import KtorchError, UnsupportedOpError
from ..codegen import identifier as python_identifier

if TYPE_CHECKING:
    from .reader import TorchReader

# node names from module paths ("layer1.0.conv1" -> "layer1_0_conv1"); a leading digit stays
identifier = partial(python_identifier, digit_prefix=False)


TORCH_DTYPES = {
    "torch.float32": "float32",
    "torch.float64": "float64",
    "torch.float16": "float16",
    "torch.bfloat16": "bfloat16",
    "torch.int64": "int64",
    "torch.int32": "int32",
    "torch.int16": "int16",
    "torch.int8": "int8",
    "torch.uint8": "uint8",
    "torch.bool": "bool",
}


class TorchOpError(KtorchError):
    """An ATen call has arguments that ktorch cannot translate."""


@dataclass(frozen=True)
class Const:
    """A tensor known at conversion time: a parameter, a buffer, or a folded constant."""

    name: str
    array: np.ndarray
    trainable: bool = False  # an nn.Parameter (a buffer or folded constant is not)
    # entries picked from a learned table by a constant index (a relative-position bias
    # table gathered by its index buffer): array == table.array.reshape(-1)[index]
    table: Const | None = None
    index: np.ndarray | None = None

    @property
    def learned(self) -> bool:
        """A parameter, or entries picked from one: training must still reach it."""
        return self.trainable or self.table is not None

    def reshaped(self, shape: tuple[int, ...]) -> Const:
        """The same constant with its array (and index) reshaped."""
        index = None if self.index is None else self.index.reshape(shape)
        return Const(self.name, self.array.reshape(shape), self.trainable, self.table, index)


class SymbolicBatch:
    """The symbolic batch size (x.size(0) on a dynamic batch)."""

    def __repr__(self) -> str:
        return "BATCH"


BATCH = SymbolicBatch()


class SymSize:
    """A size the export keeps symbolic besides the batch (x.size(1) of token ids, a product of
    such sizes): `text` is torch's expression for it. Translators that need the number fail
    naming it; a reshape takes the size from torch's own output shape instead."""

    def __init__(self, text: str, ref: tuple[Value, int] | None = None) -> None:
        self.text = text
        self.ref = ref  # (graph value, axis) whose run-time length it is, where it is one input's size

    def __repr__(self) -> str:
        return self.text


@dataclass(frozen=True)
class SizeTable:
    """A tensor that depends only on sizes the export keeps symbolic (arange(seq), the position
    ids sliced to the length, a causal mask, rotary cos/sin): its value at the largest size
    (`array`), and for each axis whose length is such a size, the graph value and axis whose
    run-time length it takes. It becomes a constant cut to that length at run time."""

    name: str
    array: np.ndarray
    axes: tuple[tuple[int, Value, int], ...]  # (axis of the table, reference value, its axis)
    # entries picked from a learned table (T5's relative-position bias, looked up by buckets that
    # depend on the length): array == table.array.reshape(-1)[index]; the index is cut at run
    # time and the table read by it, so that it stays a trainable weight
    table: Const | None = None
    index: np.ndarray | None = None


def dtype_name(dtype: Any) -> str:
    return TORCH_DTYPES.get(str(dtype), "float32")


def aten_key(target: Any) -> str:
    """'aten.<name>' for an ATen overload (in-place `relu_` folds onto `relu`), else the
    callable's qualified name."""
    packet = getattr(target, "overloadpacket", None)
    if packet is not None:
        name = packet.__name__
        if name.endswith("_") and not name.startswith("_"):
            name = name[:-1]
        namespace = getattr(target, "namespace", "aten")
        return f"{namespace}.{name}"
    return getattr(target, "__name__", str(target))


def bind_arguments(target: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Positional and keyword arguments of an ATen call by schema name, defaults filled in."""
    schema = target._schema
    bound: dict[str, Any] = {}
    positional = list(args)
    for arg in schema.arguments:
        if not arg.kwarg_only and positional:
            bound[arg.name] = positional.pop(0)
        elif arg.name in kwargs:
            bound[arg.name] = kwargs[arg.name]
        elif arg.has_default_value():
            bound[arg.name] = arg.default_value
        else:
            bound[arg.name] = None
    return bound


@dataclass
class AtenCall:
    """One ATen call, as its translator sees it."""

    reader: TorchReader
    key: str  # "aten.conv2d"
    fx_name: str
    args: dict[str, Any]  # by schema name; Values, Consts, BATCH, Python values
    module: str  # innermost module path ("layer1.0.conv1"), "" at top level
    module_class: str  # its class name ("Conv2d")
    leaf: bool  # the call is the whole of a torch.nn leaf module
    meta_shapes: list[tuple]  # output shapes torch recorded (batch axis as None)
    meta_dtypes: list[str]
    # an in-place write (copy_, fill_, masked_fill_) into a tensor the model computes: that
    # tensor as it is now, and the views (ATen key, their arguments after the tensor) from it
    # down to the written one; the translator returns (the tensor after the write, the view)
    written: Value | None = None
    views: tuple[tuple[str, tuple], ...] = ()
    # computed from parameters and buffers only (EVA's cat of q_bias, a zero k_bias buffer and
    # v_bias): no axis is the batch, so axis 0 is an ordinary axis of the tensor
    unbatched: bool = False

    @property
    def graph(self) -> Graph:
        return self.reader.graph

    @property
    def owner(self) -> str | None:
        """For functional code that uses a submodule's parameters (Swin's
        F.linear(x, self.qkv.weight, self.qkv.bias)): that submodule's path."""
        if self.leaf:
            return None
        weight = self.args.get("weight")
        if isinstance(weight, Const) and weight.trainable and weight.name.endswith(".weight"):
            owner = weight.name[: -len(".weight")]
            return owner if owner != self.module else None
        return None

    @property
    def name(self) -> str:
        """The base name of the nodes this call emits."""
        if self.leaf:
            return identifier(self.module)
        if self.owner:
            return identifier(self.owner)
        op = self.key.split(".", 1)[1].strip("_")
        return identifier(f"{self.module}_{op}" if self.module else op)

    @property
    def where(self) -> str:
        return (
            f"{self.fx_name} ({self.key}{' in ' + self.module + ' (' + self.module_class + ')' if self.module else ''})"
        )

    def error(self, message: str) -> TorchOpError:
        return TorchOpError(f"{self.where}: {message}")

    def unsupported(self, reason: str) -> UnsupportedOpError:
        return UnsupportedOpError([(self.module or self.fx_name, self.key, reason)], where="the PyTorch reader")

    # -- arguments ----------------------------------------------------------------------
    def value(self, name: str) -> Value:
        """A tensor argument as a graph value (a constant becomes a `constant` node)."""
        v = self.args.get(name)
        if isinstance(v, Const):
            return self.reader.constant_value(v)
        if isinstance(v, SizeTable):
            return self.reader.size_table_value(v)
        if not isinstance(v, Value):
            raise self.error(f"argument {name!r} is {v!r}, expected a tensor")
        return v

    def const(self, name: str, *, optional: bool = False) -> np.ndarray | None:
        v = self.args.get(name)
        if v is None and optional:
            return None
        if not isinstance(v, Const):
            raise self.unsupported(f"argument {name!r} must be a parameter or constant known at export time")
        return v.array

    def ints(self, name: str, rank: int) -> tuple[int, ...]:
        v = self.args.get(name)
        if isinstance(v, int):
            return (v,) * rank
        v = tuple(int(i) for i in v)
        return v * rank if len(v) == 1 else v

    def axis(self, name: str, rank: int) -> int:
        return self.axis_of(self.args[name], rank)

    def axis_of(self, dim: int, rank: int) -> int:
        a = int(dim)
        a = a + rank if a < 0 else a
        if not 0 <= a < rank:
            raise self.error(f"dim {dim} is out of range for rank {rank}")
        return a

    # -- emission -----------------------------------------------------------------------
    def emit(
        self,
        op: str,
        inputs: list[Value],
        attrs: dict[str, Any] | None = None,
        weights: dict[str, np.ndarray] | None = None,
        *,
        suffix: str = "",
    ) -> Value:
        node = self.graph.add_node(
            op,
            inputs,
            attrs,
            weights,
            name=self.name + suffix,
            source=self.module if self.leaf else self.owner or self.name,
            source_class=self.module_class if self.leaf else self.key,  # functional code: the ATen op
        )
        return node.outputs[0] if len(node.outputs) == 1 else node.outputs  # type: ignore[return-value]

    def emit_all(self, op: str, inputs: list[Value], attrs: dict[str, Any] | None = None) -> list[Value]:
        node = self.graph.add_node(
            op, inputs, attrs, name=self.name, source=self.name, source_class=self.module_class or self.key
        )
        return list(node.outputs)


class Deferred:
    """A module output that no graph value can hold as PyTorch shapes it (an RNN's
    (layers, batch, hidden) final states: the batch is on axis 1). A "module.<Class>"
    translator may return one; every later ATen call that reads it is handed to `apply`
    instead of a translator, and `materialize` gives a graph value for a model output."""

    def apply(self, reader: TorchReader, node: Any, key: str, args: dict[str, Any]) -> Any:
        raise NotImplementedError

    def materialize(self, reader: TorchReader, name: str) -> Value:
        raise NotImplementedError


@dataclass
class ModuleCall:
    """All ATen calls of one module call, for a translator registered as
    "module.<ClassName>" that translates the module as a whole (nn.MultiheadAttention)."""

    reader: TorchReader
    module: str  # "encoder.layers.encoder_layer_0.self_attention"
    module_class: str
    inputs: list[Value]  # the tensors the module reads from outside, in order of use
    nodes: list[Any]  # its fx nodes, in order
    outputs: list[Any]  # the fx nodes whose values are used outside the module
    state: dict[str, np.ndarray]  # its parameters and buffers, by name inside the module

    @property
    def graph(self) -> Graph:
        return self.reader.graph

    @property
    def name(self) -> str:
        return identifier(self.module)

    def unsupported(self, reason: str) -> UnsupportedOpError:
        return UnsupportedOpError([(self.module, self.module_class, reason)], where="the PyTorch reader")

    def targets(self, key: str) -> list[Any]:
        """The module's fx nodes calling ATen op `key` ("aten.transpose")."""
        return [n for n in self.nodes if aten_key(n.target) == key]

    def emit(
        self,
        op: str,
        inputs: list[Value],
        attrs: dict[str, Any] | None = None,
        weights: dict[str, np.ndarray] | None = None,
    ) -> Value:
        node = self.graph.add_node(
            op, inputs, attrs, weights, name=self.name, source=self.module, source_class=self.module_class
        )
        return node.outputs[0]

    def swap_time_and_batch(self, value: Value, suffix: str) -> Value:
        """(T, B, F) <-> (B, T, F): the transpose around a batch_first=False RNN or attention."""
        node = self.graph.add_node(
            "transpose",
            [value],
            {"perm": (1, 0, 2)},
            name=f"{self.name}_{suffix}",
            source=self.module,
            source_class="transpose",
        )
        return node.output


class BatchExpr:
    """Arithmetic on the symbolic batch size (x.size(0) * heads). A product of the batch
    size and a whole number keeps that `factor` (a reshape may merge the batch axis with
    an axis of that size: Swin's windows); any other expression fails only in a translator
    that uses it, naming the op."""

    def __init__(self, text: str, factor: int | None = None) -> None:
        self.text = text
        self.factor = factor

    def __repr__(self) -> str:
        return self.text


class BatchRange:
    """arange(batch size) with `ndim - 1` unit axes after it: the index of every example
    (Hugging Face's mask helpers index with it)."""

    def __init__(self, ndim: int) -> None:
        self.ndim = ndim

    def __repr__(self) -> str:
        return f"BatchRange({self.ndim})"


def batch_factor(size: Any) -> int | None:
    """k where `size` is k times the symbolic batch size (BATCH: 1), else None."""
    if size is BATCH:
        return 1
    return size.factor if isinstance(size, BatchExpr) else None


def learned_rows(bound: dict[str, Any]) -> tuple[int, int] | None:
    """(start, count) when an embedding looks up consecutive rows start..start+count-1 of a
    learned table (nn.Parameter) with constant indices shaped (1, ..., count): the position
    embeddings of BERT and GPT-2. Folding them would freeze a learned table into a constant."""
    weight, indices = bound.get("weight"), bound.get("indices")
    if not (isinstance(weight, Const) and weight.trainable and isinstance(indices, Const)):
        return None
    ids = indices.array
    if ids.ndim < 2 or ids.size == 0 or ids.shape[-1] != ids.size or not np.issubdtype(ids.dtype, np.integer):
        return None
    start = int(ids.reshape(-1)[0])
    if start < 0 or not np.array_equal(ids.reshape(-1), np.arange(start, start + ids.size)):
        return None
    return start, int(ids.size)
