"""ONNX ModelProto -> intermediate graph.

The reader walks the ONNX graph's nodes in order (ONNX requires a topological order).
Initializers and `Constant` nodes become `Const`s (numpy arrays) that translators take as
weights; a node whose inputs are all constants is evaluated once, here, with ONNX's own
reference implementation, and becomes a constant too. Every other node is handed to the
translator registered for its op type under "onnx->ir" (key: "Conv", or "domain::Op" for
a non-default domain).

ONNX tensors are channels-first (NCHW), and the graph keeps that: spatial ops carry
data_format "channels_first"; the layout pass moves them for a channels-last target.
Axis 0 of every graph input is the batch axis, kept dynamic.

Names: torch.onnx.export names nodes after the module path ("/layer1/layer1.0/conv1/Conv"
-> `layer1_0_conv1`, "/layer1/layer1.0/Add" -> `layer1_0_add`); tf2onnx after the Keras
layer ("model_1/block_1_expand_1/Conv2D" -> `block_1_expand`). A node with a generated
name ("Conv__339") takes the name of its weight initializer.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import numpy as np

from ...graph import Graph, Value
from ...graph.errors import GraphError, KtorchError, ModelFileError, UnsupportedOpError
from ...graph.passes import fold_affine
from ..registry import lookup
from .calls import (
    BATCH,
    ONNX_DTYPES,
    Const,
    Deferred,
    OnnxCall,
    OnnxOpError,
    evaluate_node,
    float32_value,
    identifier,
    shape_of,
)

MIN_OPSET, MAX_OPSET = 13, 21
PASS_THROUGH = {"Identity", "Dropout"}


# ops named after their module alone (a layer); the others get the op appended ("layer1_0_add")
LAYER_OPS = {
    "Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "LayerNormalization", "InstanceNormalization",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Relu", "LeakyRelu", "PRelu", "Elu", "Selu",
    "Celu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Softplus", "Softsign", "Gelu", "Mish", "Clip",
    "Softmax", "LogSoftmax", "Resize", "Pad", "Flatten", "LSTM", "GRU", "MultiHeadAttention",
}  # fmt: skip


# why an op with no translator of its own is refused, where it is read as part of a pattern
_NO_TRANSLATOR = {
    "Tile": "no translator: a Tile is read only as tf2onnx writes Keras's UpSampling (Unsqueeze -> Tile -> "
    "[Transpose] -> Reshape repeating each element in place), and this one is not that",
}

_COUNTED = re.compile(r"_\d+$")  # "Relu_1": the second Relu of a module


def _decode_attr(attr: Any) -> Any:
    from onnx import helper, numpy_helper

    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, float):
        return float32_value(value)
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode("utf-8") for v in value]
    if hasattr(value, "dims") and hasattr(value, "data_type"):  # a TensorProto
        return numpy_helper.to_array(value)
    return value


class OnnxReader:
    """Builds a Graph from an ONNX ModelProto."""

    def __init__(self, model: Any, name: str = "model") -> None:
        self.model = model
        self.graph = Graph(name)
        self.env: dict[str, Any] = {}
        self.opset = _default_opset(model)
        self.static_batch: int | None = None
        self._naming = _Naming(model)
        self._expected: dict[str, tuple | None] = {}
        self._used = {i for n in model.graph.node for i in n.input if i} | {o.name for o in model.graph.output}

    def is_used(self, name: str) -> bool:
        return name in self._used

    # -- entry --------------------------------------------------------------------------
    def read(self) -> Graph:
        from onnx import numpy_helper

        g = self.model.graph
        self._shapes()
        for init in g.initializer:
            self.env[init.name] = Const(init.name, numpy_helper.to_array(init))
        self._check_supported()
        for inp in g.input:
            if inp.name in self.env:  # an initializer listed as an input (old exporters)
                continue
            self.env[inp.name] = self._add_input(inp)
        for node in g.node:
            self._call(node)
        outputs = []
        for out in g.output:
            v = self.env.get(out.name)
            if isinstance(v, Deferred):
                v = v.materialize(identifier(out.name))
            if isinstance(v, Const):
                raise UnsupportedOpError(
                    [(out.name, "output", "the output is a constant that does not depend on the inputs")],
                    where="the ONNX reader",
                )
            if not isinstance(v, Value):
                raise GraphError(f"output {out.name!r} of the ONNX graph is not computed by any node")
            if v in self.graph.inputs or v in outputs:
                v = self.graph.add_node("identity", [v], name=identifier(out.name)).output
            v.source = out.name
            outputs.append(v)
        self.graph.outputs = outputs
        self.graph.meta.update(
            {
                "source_framework": "onnx",
                "source_format": "onnx",
                "opset": self.opset,
                "producer": f"{self.model.producer_name} {self.model.producer_version}".strip(),
                "static_batch": self.static_batch,
            }
        )
        return self.graph

    def _shapes(self) -> None:
        """Output shapes from ONNX shape inference, to check each translation against."""
        from onnx import shape_inference

        try:
            inferred = shape_inference.infer_shapes(self.model)
        except Exception:  # noqa: BLE001 - shape inference is a cross-check only
            return
        for info in [*inferred.graph.value_info, *inferred.graph.output]:
            self._expected[info.name] = shape_of(info, batch=False)

    def _check_supported(self) -> None:
        constant = {name for name, v in self.env.items() if isinstance(v, Const)} | {""}
        problems = []
        for node in self.model.graph.node:
            key = op_key(node)
            if key in ("Constant", "Shape") or (node.input and all(i in constant for i in node.input)):
                constant.update(node.output)  # folded at conversion time
                continue
            if key in PASS_THROUGH or lookup("onnx->ir", key) is not None:
                continue
            problems.append((node.name or node.output[0], key, _NO_TRANSLATOR.get(key, "no translator")))
        if problems:
            unique = sorted(set(problems), key=problems.index)
            raise UnsupportedOpError(
                unique,
                where="the ONNX model",
                hint="Nothing was written. Add a translator with ktorch.translate.registry.register('onnx->ir', '<OpType>').",
            )

    def _add_input(self, info: Any) -> Value:
        shape = shape_of(info, batch=True)
        dims = info.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            self.static_batch = int(dims[0].dim_value)
        for i, d in enumerate(shape[1:], start=1):
            if d is None:
                raise UnsupportedOpError(
                    [
                        (
                            info.name,
                            "dynamic shape",
                            f"axis {i} of the input has no fixed size; only the batch axis (0) may be dynamic",
                        )
                    ],
                    where="the ONNX reader",
                    hint="Export with fixed sizes for every axis but the batch, or fix them with onnx.tools.update_model_dims.",
                )
        dtype = ONNX_DTYPES.get(info.type.tensor_type.elem_type, "float32")
        return self.graph.add_input(identifier(info.name), shape, dtype)

    # -- nodes ----------------------------------------------------------------------------
    def _call(self, node: Any) -> None:
        key = op_key(node)
        inputs = [None if i == "" else self.env.get(i) for i in node.input]
        for name, v in zip(node.input, inputs):
            if name and v is None:
                raise GraphError(f"node {node.name!r} ({key}): input {name!r} is not produced before it")
        if key == "Constant":
            self.env[node.output[0]] = Const(node.output[0], self._constant(node))
            return
        if key in PASS_THROUGH:
            for out, v in zip(node.output, inputs):
                self.env[out] = v
            return
        if (
            key in ("ConstantOfShape", "Expand")
            and all(isinstance(v, Const) for v in inputs)
            and BATCH in inputs[-1].array
        ):
            from .recurrent import (
                BatchFill,  # zeros shaped by the batch size (an RNN's initial state)
            )

            fill = (
                self._constant(node, "value", np.zeros(1, np.float32)) if key == "ConstantOfShape" else inputs[0].array
            )
            if fill.size and np.all(fill == fill.reshape(-1)[0]):
                self.env[node.output[0]] = BatchFill.of_shape(inputs[-1].array, fill)
                return
        if inputs and all(v is None or isinstance(v, Const) for v in inputs):
            for out, array in zip(
                node.output, evaluate_node(node, [v.array if v is not None else None for v in inputs], self.opset)
            ):
                self.env[out] = Const(out, array)
            return
        translator = lookup("onnx->ir", key)
        deferred = next((v for v in inputs if isinstance(v, Deferred)), None)
        if deferred is not None and not getattr(translator, "accepts_deferred", False):
            translator = deferred.apply  # the Deferred knows which reads put the batch back first
        if translator is None:
            raise UnsupportedOpError([(node.name, key, "no translator")], where="the ONNX reader")
        call = OnnxCall(
            reader=self,
            key=key,
            node_name=node.name or node.output[0],
            base=self._naming.name(node, inputs),
            inputs=inputs,
            attrs={a.name: _decode_attr(a) for a in node.attribute},
            opset=self.opset,
            expected=[self._expected.get(o) for o in node.output],
            outputs=list(node.output),
            proto=node,
        )
        try:
            result = translator(call)
        except (UnsupportedOpError, OnnxOpError):
            raise
        except KtorchError as exc:
            raise OnnxOpError(f"{call.where}: {exc}") from exc
        results = list(result) if isinstance(result, (list, tuple)) else [result]
        for out, v in zip(node.output, results):
            if out:
                self.env[out] = v
        self._check_shapes(call, results)

    def _constant(self, node: Any, attr: str = "value", default: np.ndarray | None = None) -> np.ndarray:
        attrs = {a.name: _decode_attr(a) for a in node.attribute}
        if attr in attrs:
            return np.asarray(attrs[attr])
        if default is not None:
            return default
        for name, dtype in (
            ("value_float", np.float32),
            ("value_floats", np.float32),
            ("value_int", np.int64),
            ("value_ints", np.int64),
        ):
            if name in attrs:
                return np.asarray(attrs[name], dtype=dtype)
        raise UnsupportedOpError([(node.name, "Constant", f"attribute(s) {sorted(attrs)}")], where="the ONNX reader")

    def _check_shapes(self, call: OnnxCall, results: list[Any]) -> None:
        for v, expected in zip(results, call.expected):
            if not isinstance(v, Value) or not expected:
                continue
            got = tuple(v.shape)
            if len(got) != len(expected) or any(
                a is not None and b is not None and a != b for a, b in list(zip(got, expected))[1:]
            ):
                raise GraphError(
                    f"{call.where}: the translation produced shape {got}, ONNX shape inference says {expected}"
                )


class _Naming:
    """Readable names from the node names of torch.onnx.export and tf2onnx."""

    def __init__(self, model: Any) -> None:
        firsts = [n.name.split("/")[0] for n in model.graph.node if "/" in n.name.strip("/")]
        self.prefix = ""
        if firsts and not any(n.name.startswith("/") for n in model.graph.node):
            top = max(set(firsts), key=firsts.count)
            if firsts.count(top) > len(firsts) // 2:  # tf2onnx's own nodes ("Transpose__486") have no scope
                self.prefix = top  # tf2onnx: every node sits under the Keras model's name scope
        self.suffix = (
            re.search(r"_\d+$", self.prefix).group(0) if self.prefix and re.search(r"_\d+$", self.prefix) else ""
        )

    def name(self, node: Any, inputs: list[Any]) -> str:
        scopes = next((m.value for m in node.metadata_props if m.key == "pkg.torch.onnx.name_scopes"), None)
        if scopes is not None:
            return self._dynamo(scopes, node.op_type, inputs)
        text = node.name or ""
        if not text or re.search(r"__\d+$", text) or text == node.op_type:
            # a generated name: use the weight's ("model_1/Conv1_1/convolution/merged_input:0")
            weight = next((v.name for v in inputs[1:] if isinstance(v, Const) and "/" in v.name), None)
            if weight is None:
                number = re.search(r"__(\d+)$", text)
                if (
                    number and node.op_type in LAYER_OPS
                ):  # a Keras layer named "pad" would clash with keras.ops.pad's own "pad"
                    return identifier(f"{node.op_type}_{number.group(1)}")
                return identifier(node.op_type)
            text = weight
        if text.startswith("/"):
            return self._torch(text, node.op_type)
        return self._tf(text, node.op_type)

    @staticmethod
    def _dynamo(scopes: str, op: str, inputs: list[Any]) -> str:
        """torch.onnx.export(dynamo=True) records the module path of each node
        ("['', 'layer1', 'layer1.0', 'layer1.0.conv1', 'conv2d']"); a layer's weight
        initializer is named after its module ("layer1.0.conv1.weight"), which also names
        a conv that a BatchNorm was folded into after the conv, not after the BatchNorm."""
        weight = next((v.name for v in inputs[1:] if isinstance(v, Const) and v.name.endswith(".weight")), None)
        if weight is not None and op in LAYER_OPS:
            return identifier(weight[: -len(".weight")])
        try:
            path = [p for p in ast.literal_eval(scopes) if p]
        except (ValueError, SyntaxError):
            path = []
        local = _COUNTED.sub("", path.pop()) if path else op
        module = path[-1] if path else ""
        if not module:
            return identifier(local)
        return identifier(module if op in LAYER_OPS else f"{module}_{local}")

    @staticmethod
    def _torch(text: str, op: str) -> str:
        parts = [p for p in text.split("/") if p]
        last = parts.pop() if parts else op
        path: list[str] = []
        for p in parts:
            if path and p.startswith(path[-1] + "."):
                path[-1] = p  # "layer1" then "layer1.0": an item of the container
            else:
                path.append(p)
        module = ".".join(path)
        if not module:
            return identifier(last)
        if op in LAYER_OPS:
            return identifier(module)
        return identifier(f"{module}_{_COUNTED.sub('', last)}")

    def _tf(self, text: str, op: str) -> str:
        parts = [p for p in text.split("/") if p]
        if self.prefix and parts and parts[0] == self.prefix:
            parts = parts[1:]
        if not parts:
            return identifier(op)
        layer = parts[0].split(":")[0]
        if self.suffix and layer.endswith(self.suffix):
            layer = layer[: -len(self.suffix)]
        return identifier(layer)


def op_key(node: Any) -> str:
    domain = node.domain or ""
    return node.op_type if domain in ("", "ai.onnx") else f"{domain}::{node.op_type}"


def _default_opset(model: Any) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return MAX_OPSET


def load_model(src: Any) -> Any:
    """A ModelProto from a path or a ModelProto, checked, at an opset ktorch reads."""
    import onnx

    if isinstance(src, (str, Path)):
        path = Path(src)
        if not path.is_file():
            raise ModelFileError(f"{path}: no such file")
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others
            raise ModelFileError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    else:
        model = src
    where = str(src) if isinstance(src, (str, Path)) else "the ONNX model"
    if not model.graph.node:
        raise ModelFileError(f"{where}: the ONNX graph has no nodes")
    opset = _default_opset(model)
    if opset < MIN_OPSET:
        from onnx import version_converter

        try:
            model = version_converter.convert_version(model, MIN_OPSET)
        except Exception as exc:  # noqa: BLE001
            raise ModelFileError(
                f"{where}: opset {opset} is older than {MIN_OPSET} and could not be upgraded ({exc}); re-export with opset {MIN_OPSET}-{MAX_OPSET}"
            ) from None
    elif opset > MAX_OPSET:
        raise ModelFileError(
            f"{where}: opset {opset} is newer than ktorch reads ({MIN_OPSET}-{MAX_OPSET}); re-export with opset_version={MAX_OPSET}"
        )
    return model


def _fuse_patterns(model: Any) -> Any:
    """A copy of `model` with exporters' op-by-op subgraphs rewritten into single ONNX
    ops (see patterns.py), or `model` itself when there is nothing to rewrite."""
    import onnx
    from onnx import shape_inference

    from .attention import fuse_attention
    from .patterns import fuse_layer_norm, fuse_repeat_upsample, fuse_tensordot

    if not any(n.op_type in ("Reciprocal", "Reshape") for n in model.graph.node):
        return model
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - without shapes, nothing is fused
        return model
    shapes = {info.name: shape_of(info, batch=False) for info in [*inferred.graph.input, *inferred.graph.value_info]}
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    fuse_layer_norm(copy, shapes)
    fuse_tensordot(copy)
    fuse_repeat_upsample(copy)
    if any(n.op_type == "Softmax" for n in copy.graph.node):
        fuse_attention(copy, shapes, _default_opset(copy))
    return copy


def read_onnx(src: Any, *, name: str | None = None) -> Graph:
    """Read an ONNX model (a path or a ModelProto) into a graph."""

    model = _fuse_patterns(load_model(src))
    if name is None:
        name = Path(src).stem if isinstance(src, (str, Path)) else (model.graph.name or "model")
    graph = OnnxReader(model, identifier(name) or "model").read()
    fold_affine(graph)
    return graph
