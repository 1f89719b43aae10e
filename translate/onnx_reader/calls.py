"""What the ONNX reader's translators receive: an `OnnxCall` (one ONNX node, with its
decoded attributes and input values), the constants among its inputs, `Deferred` tensors,
and the helpers they share. This module imports nothing from the reader, so that the op
families (which import it) and the reader (which imports them) form no cycle."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from ...graph import Graph, Value
from ...graph.errors import KtorchError, UnsupportedOpError
from ..codegen import identifier as python_identifier

if TYPE_CHECKING:
    from .reader import OnnxReader

# node names from ONNX names ("/layer1/layer1.0/conv1/Conv" -> "layer1_layer1_0_conv1_conv")
identifier = partial(python_identifier, digit_prefix=False, lower=True, collapse=True)


# the batch size in a folded shape computation (Shape -> Gather -> Concat -> Reshape)
BATCH = -987654321


# ONNX TensorProto element types -> graph dtype names
ONNX_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    16: "bfloat16",
}


class OnnxOpError(KtorchError):
    """An ONNX node has inputs or attributes that ktorch cannot translate."""


@dataclass(frozen=True)
class Const:
    """A tensor known at conversion time: an initializer, a Constant, or a folded node."""

    name: str
    array: np.ndarray


class Deferred:
    """A tensor ONNX computes that the graph cannot hold as a Value as it is (its batch
    is not on axis 0: an RNN's time-major sequence, its (directions, batch, hidden)
    states, zeros shaped from the batch size). It stays one of these until a node reads it
    in a way that puts the batch back first; `apply` translates that node."""

    what = "a tensor with the batch off axis 0"

    def apply(self, call: OnnxCall) -> Any:
        raise self.refuse(call)

    def refuse(self, call: OnnxCall, reason: str = "") -> UnsupportedOpError:
        return call.unsupported(reason or f"this use of {self.what}")

    def materialize(self, name: str) -> Value:
        """The value for a graph output; refused by default."""
        raise UnsupportedOpError(
            [(name, "output", f"the output is {self.what}, which the emitted model cannot return batch first")],
            where="the ONNX reader",
            hint="Export the model so that the output has the batch on axis 0 (batch_first=True, h_n.transpose(0, 1)).",
        )


@dataclass
class OnnxCall:
    """One ONNX node, as its translator sees it."""

    reader: OnnxReader
    key: str  # "Conv"
    node_name: str  # the ONNX node's own name
    base: str  # the readable base name of the nodes this call emits
    inputs: list[Any]  # Values, Consts, or None for an omitted optional input
    attrs: dict[str, Any]  # decoded ONNX attributes
    opset: int
    expected: list[tuple | None] = field(default_factory=list)  # output shapes ONNX shape inference found
    outputs: list[str] = field(default_factory=list)  # the ONNX node's output names ("" for an omitted one)
    proto: Any = None  # the ONNX NodeProto

    def used(self, index: int) -> bool:
        """Whether output `index` is read by another node or is a graph output."""
        return index < len(self.outputs) and bool(self.outputs[index]) and self.reader.is_used(self.outputs[index])

    @property
    def graph(self) -> Graph:
        return self.reader.graph

    @property
    def where(self) -> str:
        return f"node {self.node_name!r} ({self.key})"

    def error(self, message: str) -> OnnxOpError:
        return OnnxOpError(f"{self.where}: {message}")

    def unsupported(self, reason: str) -> UnsupportedOpError:
        return UnsupportedOpError([(self.node_name, self.key, reason)], where="the ONNX reader")

    # -- inputs and attributes ------------------------------------------------------------
    def has(self, index: int) -> bool:
        return index < len(self.inputs) and self.inputs[index] is not None

    def value(self, index: int = 0) -> Value:
        v = self.inputs[index] if index < len(self.inputs) else None
        if not isinstance(v, Value):
            raise self.unsupported(f"input {index} must be a tensor computed by the model, got {type(v).__name__}")
        return v

    def const(self, index: int, *, optional: bool = False) -> np.ndarray | None:
        v = self.inputs[index] if index < len(self.inputs) else None
        if v is None and optional:
            return None
        if not isinstance(v, Const):
            raise self.unsupported(f"input {index} must be an initializer or a constant known at export time")
        return v.array

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def ints(self, name: str, rank: int, default: int) -> tuple[int, ...]:
        v = self.attrs.get(name)
        if v is None:
            return (default,) * rank
        return tuple(int(i) for i in v)

    def axis(self, axis: int, rank: int) -> int:
        if not -rank <= axis < rank:
            raise self.error(f"axis {axis} is out of range for rank {rank}")
        return axis % rank

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
            op, inputs, attrs, weights, name=self.base + suffix, source=self.base, source_class=self.key
        )
        return node.outputs[0]

    def emit_all(
        self,
        op: str,
        inputs: list[Value],
        attrs: dict[str, Any] | None = None,
        weights: dict[str, np.ndarray] | None = None,
    ) -> list[Value]:
        node = self.graph.add_node(op, inputs, attrs, weights, name=self.base, source=self.base, source_class=self.key)
        return list(node.outputs)


def float32_value(x: float) -> float:
    """A float attribute as the shortest decimal that rounds to the same float32 (ONNX
    stores float attributes as float32: 1e-5 arrives as 9.999999747378752e-06)."""
    return float(str(np.float32(x)))


def shape_of(info: Any, *, batch: bool) -> tuple:
    t = info.type.tensor_type
    if not t.HasField("shape"):
        return ()
    dims = []
    for i, d in enumerate(t.shape.dim):
        if batch and i == 0:
            dims.append(None)
        elif d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(None)
    return tuple(dims)


def evaluate_node(node: Any, arrays: list[np.ndarray | None], opset: int) -> list[np.ndarray]:
    """Run one node on constant inputs with ONNX's reference implementation."""
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    names = [f"in{i}" if a is not None else "" for i, a in enumerate(arrays)]
    ins = [helper.make_tensor_value_info(n, TensorProto.UNDEFINED, None) for n in names if n]
    outs = [helper.make_tensor_value_info(f"out{i}", TensorProto.UNDEFINED, None) for i in range(len(node.output))]
    one = helper.make_node(node.op_type, names, [o.name for o in outs], domain=node.domain)
    one.attribute.extend(node.attribute)
    graph = helper.make_graph([one], "fold", ins, outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(node.domain or "", opset)])
    try:
        results = ReferenceEvaluator(model).run(None, {n: a for n, a in zip(names, arrays) if n})
    except Exception as exc:  # noqa: BLE001 - the reference runtime raises many kinds
        raise UnsupportedOpError(
            [(node.name, node.op_type, f"cannot fold this constant expression ({exc})")], where="the ONNX reader"
        ) from None
    return [np.asarray(r) for r in results]
