"""A table of a Keras model's layers, with support status, for `ktorch inspect`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...graph.errors import KtorchError
from ..registry import lookup
from .file import open_keras_file
from .reader import MODEL_CLASSES, UNTRUSTED_CLASSES, KerasReader, ReadOptions


def inspect_keras(path: Path, *, trust_code: bool = False) -> list[dict[str, Any]]:
    """One row per layer (nested models expanded): name, class, status and, when the
    whole model can be read, its output shapes."""
    rows: list[dict[str, Any]] = []
    with open_keras_file(path) as kfile:

        def walk(cfg: dict[str, Any], prefix: str) -> None:
            for layer in cfg.get("config", {}).get("layers", []):
                cls = layer.get("class_name", "?")
                name = prefix + str(layer.get("config", {}).get("name") or layer.get("name"))
                if cls in MODEL_CLASSES:
                    walk(layer, name + "/")
                    continue
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
        if all(r["status"] in ("ok", "input") for r in rows):
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
