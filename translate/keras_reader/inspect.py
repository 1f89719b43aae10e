"""A table of a Keras model's layers, with support status, for `ktorch inspect`."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from ...graph import Value
from ...graph.errors import KtorchError, UnsupportedOpError
from ..registry import lookup
from .file import open_keras_file
from .reader import MODEL_CLASSES, UNTRUSTED_CLASSES, KerasReader, ReadOptions, translator_key


class _PartialReader(KerasReader):
    """Reads the layers it can, in order, and stops at the first one it cannot (layers without a
    translator do not stop it up front; code it may not run still does)."""

    def __init__(self, kfile: Any, options: ReadOptions, recorded: dict[str, tuple]) -> None:
        super().__init__(kfile, options)
        self.recorded = recorded  # output shapes the config records, by layer path

    def check_supported(self, cfg: dict[str, Any]) -> None:
        with contextlib.suppress(UnsupportedOpError):
            super().check_supported(cfg)

    def _call_layer(
        self, layer: dict[str, Any], prefix: tuple[str, ...], args: list, kwargs: dict, call_index: int
    ) -> list[Value]:
        """An unsupported layer whose output shape the config records stands in as a placeholder,
        so the layers after it still get their shapes."""
        try:
            return super()._call_layer(layer, prefix, args, kwargs, call_index)
        except UnsupportedOpError:
            path = "/".join((*prefix, self._layer_name(layer)))
            if path not in self.recorded:
                raise
            value = self.graph.add_input(f"unsupported_{len(self.graph.inputs)}", self.recorded[path])
            self.graph.inputs.remove(value)  # a stand-in, not a model input
            value.source = path
            return [value]


def _recorded_shapes(cfg: dict[str, Any], prefix: str, shapes: dict[str, tuple]) -> None:
    """Output shapes that a Keras 3 config records on the tensors a layer passes to the next ones."""

    def visit(item: Any, model_prefix: str) -> None:
        if isinstance(item, dict):
            if item.get("class_name") == "__keras_tensor__":
                conf = item.get("config", {})
                history, shape = conf.get("keras_history"), conf.get("shape")
                if history and shape is not None and history[2] == 0:
                    shapes.setdefault(model_prefix + str(history[0]), tuple(shape))
                return
            for v in item.values():
                visit(v, model_prefix)
        elif isinstance(item, list):
            for v in item:
                visit(v, model_prefix)

    for layer in cfg.get("config", {}).get("layers", []):
        name = str(layer.get("config", {}).get("name") or layer.get("name"))
        if layer.get("class_name") in MODEL_CLASSES:
            _recorded_shapes(layer, prefix + name + "/", shapes)
        visit(layer.get("inbound_nodes", []), prefix)


def inspect_keras(path: Path, *, trust_code: bool = False) -> list[dict[str, Any]]:
    """One row per layer (nested models expanded): name, class, status and its output
    shape, when the readable part of the model (or, for Keras 3 files, the config) gives it."""
    rows: list[dict[str, Any]] = []
    with open_keras_file(path) as kfile:

        def walk(cfg: dict[str, Any], prefix: str) -> None:
            for layer in cfg.get("config", {}).get("layers", []):
                cls = layer.get("class_name", "?")
                name = prefix + str(layer.get("config", {}).get("name") or layer.get("name"))
                if cls in MODEL_CLASSES:
                    walk(layer, name + "/")
                    continue
                cls = translator_key(layer, kfile.keras2)  # ops.Mean, tf.math.reduce_mean
                if cls == "InputLayer":
                    status = "input"
                elif cls in UNTRUSTED_CLASSES and not trust_code:
                    status = "refused: holds Python code (--trust-code)"
                elif lookup("keras->ir", cls) is None:
                    status = "UNSUPPORTED"
                else:
                    status = "ok"
                rows.append({"name": name, "class": cls, "status": status, "shape": None})

        walk(kfile.config, "")
        if not all(r["status"] in ("ok", "input") for r in rows):
            # the unsupported layers stop a full read: read up to the first of them, and take
            # the other shapes from the config where it records them
            recorded: dict[str, tuple] = {}
            _recorded_shapes(kfile.config, "", recorded)
            reader = _PartialReader(kfile, ReadOptions(trust_code=trust_code), recorded)
            with contextlib.suppress(KtorchError):
                reader.read()
            shapes = {v.source: tuple(v.shape) for v in reader.graph.values() if v.source}
            for name, shape in recorded.items():
                shapes.setdefault(name, shape)
            for r in rows:
                shape = shapes.get(r["name"])
                r["shape"] = None if shape is None else tuple(None if d is None or d == -1 else d for d in shape)
        else:
            try:
                graph = KerasReader(kfile, ReadOptions(trust_code=trust_code)).read()
            except KtorchError as exc:
                for r in rows:
                    r["status"] = r["status"] if r["status"] != "ok" else "ok"
                rows.append({"name": "(model)", "class": "", "status": f"error: {exc}", "shape": None})
            else:
                shapes = {v.source: v.shape for v in graph.values() if v.source}
                for r in rows:
                    r["shape"] = shapes.get(r["name"])
    return rows
