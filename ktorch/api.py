"""The public API: convert and inspect. The CLI is a thin shell over these."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .graph import Graph
from .graph.errors import ModelFileError
from .options import DEFAULT_TARGET, Layout, normalize_dynamic, normalize_layout
from .pipeline import Options
from .pipeline import convert as run_pipeline
from .result import ConversionResult
from .sources import KERAS_SUFFIXES, detect_source, source_kind
from .verify.training import register_reference

__all__ = ["KERAS_SUFFIXES", "ConversionResult", "convert", "detect_source", "inspect", "read_graph"]


def read_graph(src: str | Path, *, trust_code: bool = False) -> Graph:
    """The intermediate graph of a Keras or ONNX file, before any pass."""
    path = Path(src)
    if detect_source(path) == "onnx":
        from .translate.onnx_reader import read_onnx

        return read_onnx(path)
    from .translate.keras_reader import ReadOptions, read_keras

    return read_keras(path, ReadOptions(trust_code=trust_code))


def convert(
    src: Any,
    out: str | Path | None = None,
    *,
    to: str | None = None,
    example_inputs: Any = None,
    input_shapes: list | None = None,
    input_dtypes: list | None = None,
    weights: str | Path | None = None,
    layout: str | Layout = "native",
    verify: bool = True,
    force: bool = False,
    tolerance: float | None = None,
    trust_code: bool = False,
    inputs: list | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    regularizers: dict[str, Any] | None = None,
    route: str = "auto",
    custom_objects: str | None = None,
    optimizer: Any = None,
    loss: Any = None,
    lr_scheduler: Any = None,
    steps_per_epoch: int | None = None,
    dynamic: str | list[str] | None = None,
    train_steps: int = 0,
) -> ConversionResult:
    """Convert a Keras model file into a PyTorch output directory, a PyTorch model (.pt2 file,
    nn.Module, 'package.module:factory', a ktorch PyTorch output directory) into a Keras one,
    or an ONNX model into either (see docs/design.md). `to` ("torch" or "keras") states the
    target; the source decides it when omitted (PyTorch for ONNX). `example_inputs` /
    `input_shapes` / `input_dtypes` / `weights` / `dynamic` only apply to PyTorch sources that
    still need torch.export. The batch is always dynamic (a model whose code fixes it is refused,
    naming that code); `dynamic` ("seq", "height", "width", a comma-separated string of them, or
    "auto" for all) also keeps those sizes symbolic where the model allows any size: token ids
    (B, S), channels-first sequences (B, C, L) and images (B, C, H, W) then take any length or
    resolution, and the Keras Input says None there. ktorch.json's `source.dynamic` lists the sizes
    kept with their ranges, `source.static` the requested ones the model fixes, with the reason. The
    result's `keras_model` is the emitted Keras model. `tolerance` defaults to
    the verification profile of the outputs' dtype (1e-4 relative for float32).
    `regularizers` (PyTorch -> Keras) names the weight regularizers the Keras model trains
    with, by parameter: `{"fc.weight": ("l2", 1e-4), "conv1.weight": ("l1l2", 1e-5, 1e-4)}` ->
    `kernel_regularizer=keras.regularizers.L2(0.0001)` (Keras's L2 is l2 * sum(w**2), no 1/2).

    PyTorch -> Keras training setup: `optimizer` (a torch.optim optimizer, after any number of
    steps, or text such as "adamw:lr=1e-3,weight_decay=0.01"), `lr_scheduler` (a
    torch.optim.lr_scheduler scheduler or text such as "step:step_size=10,gamma=0.5"; stepped once
    per batch, or once per epoch of `steps_per_epoch` batches) and `loss` (a torch.nn loss or text
    such as "cross_entropy:label_smoothing=0.1") become train.py and a compiled model.keras that
    takes torch's steps, with the optimizer's state migrated (pass the nn.Module itself as `src`).

    Keras sources: `route` "direct" reads the file with ktorch's Keras reader; "export" loads it
    with Keras on its torch backend and captures it with torch.export (KerasHub backbones, custom
    layers, subclassed models; `custom_objects` names a module of custom classes, imported only
    with `trust_code`); "auto" (default) tries the direct reader first. ktorch.json says which.

    `train_steps` K > 0 also checks training parity once the output is written (as `ktorch verify
    --train-steps K`: K identical training steps on both sides, comparing the loss, every weight and
    the optimizer state); ktorch.json's `training.parity` records the result, or that it was not checked.

    Raises ParityError (after writing the output, with the failed result recorded in
    ktorch.json) when verification finds an error above the tolerance.
    """
    from .directions import DIRECTIONS

    if to not in (None, "torch", "keras"):
        raise ValueError(f"to must be 'torch' or 'keras', not {to!r}")
    kind = source_kind(src)
    target = to or DEFAULT_TARGET[kind]
    layout = normalize_layout(layout, target=target)  # "native" | "keep"; the target's own name means native
    if kind != "onnx" and target == kind:
        what = (
            "a PyTorch model; it converts to Keras (to='keras')"
            if kind == "torch"
            else ("not a PyTorch source (.pt2, nn.Module, 'package.module:factory' or a ktorch PyTorch directory)")
        )
        raise ModelFileError(f"{src}: is {what}")
    if dynamic and kind != "torch":
        raise ValueError("dynamic= names sizes of a PyTorch export; it applies to PyTorch -> Keras conversions only")
    if regularizers and kind != "torch":
        raise ValueError("regularizers= names PyTorch parameters; it applies to PyTorch -> Keras conversions only")
    training = {"optimizer": optimizer, "lr_scheduler": lr_scheduler, "loss": loss, "steps_per_epoch": steps_per_epoch}
    with_training = any(v is not None for v in training.values())
    if with_training and kind != "torch":
        raise ValueError(
            "optimizer=, loss=, lr_scheduler= describe PyTorch training; they apply to PyTorch -> Keras only"
        )
    options = Options(
        keep_layout=layout is Layout.KEEP, verify=verify, force=force, tolerance=tolerance, trust_code=trust_code,
        inputs=inputs, seed=seed, progress=progress, example_inputs=example_inputs, input_shapes=input_shapes,
        input_dtypes=input_dtypes, weights=weights, regularizers=regularizers, dynamic=normalize_dynamic(dynamic),
        training=training if with_training else None, train_steps=train_steps,
    )  # fmt: skip
    if kind == "keras":
        from .export_route import convert_keras

        return convert_keras(src, out, options, route=route, custom_objects=custom_objects)
    return run_pipeline(DIRECTIONS[f"{kind}->{target}"], src, out, options)


def keras_training_reference(src: Path, manifest: dict[str, Any]) -> Any:
    """`ktorch verify --train-steps` on a Keras -> PyTorch output: the conversion that expresses the
    trained Keras model in the emitted names (the verifier does not import the pipeline itself)."""
    from .directions import keras_training_reference as reference

    return reference(src, manifest)


def torch_training_reference(module: Any, manifest: dict[str, Any]) -> Any:
    """`--train-steps` on a PyTorch -> Keras output: the source's training objects rebuilt and its
    parameters traced into the emitted Keras weights (ktorch/directions.py)."""
    from .directions import TorchTrainingReference

    return TorchTrainingReference(module, manifest)


register_reference("keras->torch", keras_training_reference)
register_reference("torch->keras", torch_training_reference)


def inspect(src: str | Path, *, trust_code: bool = False) -> list[dict[str, Any]]:
    """The source model's layers, with output shapes and whether each is supported,
    without converting anything. Unsupported layers are listed, not raised."""
    path = Path(src)
    kind = detect_source(path)
    if kind == "onnx":
        from .translate.onnx_reader.inspect import inspect_onnx

        return inspect_onnx(path)
    if kind == "torch":
        return inspect_torch(path)
    from .translate.keras_reader.inspect import inspect_keras

    return inspect_keras(path, trust_code=trust_code)


def inspect_torch(src: Any) -> list[dict[str, Any]]:
    """The ATen calls of a PyTorch source (.pt2 or a ktorch PyTorch directory), each with its
    module, output shape and whether a translator exists; nothing is converted."""
    from .capture import capture, prepare_torch
    from .translate.registry import lookup
    from .translate.torch_reader.reader import (
        IGNORED,
        PASS_THROUGH,
        aten_key,
        module_of,
    )

    prepare_torch(src)
    program, _, _ = capture(src)
    rows: list[dict[str, Any]] = []
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in {
            s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"
        }:
            rows.append(
                {"name": node.name, "class": "input", "shape": tuple(node.meta["val"].shape), "status": "input"}
            )
        if node.op != "call_function":
            continue
        key = aten_key(node.target)
        if not key.startswith("aten.") or key in IGNORED:
            continue
        module, cls = module_of(node)
        val = node.meta.get("val")
        shape = tuple(val.shape) if hasattr(val, "shape") else None
        ok = key in PASS_THROUGH or lookup("torch->ir", key) is not None
        rows.append(
            {
                "name": module or node.name,
                "class": f"{key} ({cls.rsplit('.', 1)[-1] or 'forward'})",
                "shape": shape,
                "status": "ok" if ok else "no translator",
            }
        )
    return rows
