"""What a source is, decided once and cheaply (no framework is imported to ask).

Kinds: "keras" (.h5/.hdf5/.keras files, a directory ktorch emitted for Keras), "torch" (a .pt2 program, an nn.Module or
ExportedProgram, a `package.module:factory` string, a pickled module, or a directory ktorch
emitted for PyTorch) and "onnx" (an .onnx file or an in-memory ModelProto).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .graph.errors import ModelFileError
from .translate.output import read_manifest

KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")
ONNX_SUFFIX = ".onnx"
PICKLE_SUFFIXES = (".pt", ".pth")
ACCEPTED = (
    "a Keras .h5/.hdf5/.keras file, an .onnx file, a torch.export .pt2 file, "
    "'package.module:factory', or a directory ktorch wrote"
)


def is_factory_string(src: Any) -> bool:
    """`package.module:factory` (and not an existing path)."""
    if not isinstance(src, str) or ":" not in src or Path(src).exists():
        return False
    module, _, factory = src.partition(":")
    return bool(module) and factory.isidentifier() and all(p.isidentifier() for p in module.split("."))


def is_module(obj: Any) -> bool:
    """An nn.Module (asked without importing torch: one exists only once torch is imported)."""
    if isinstance(obj, (str, Path)) or "torch" not in sys.modules:
        return False
    try:
        import torch

        return isinstance(obj, torch.nn.Module)
    except ImportError:  # pragma: no cover
        return False


def is_onnx_source(src: Any) -> bool:
    """An .onnx path or an in-memory ModelProto."""
    if hasattr(src, "graph") and hasattr(src, "opset_import"):
        return True
    return isinstance(src, (str, Path)) and Path(src).suffix.lower() == ONNX_SUFFIX


def is_torch_source(src: Any) -> bool:
    """Whether `src` is something the PyTorch reader reads."""
    if hasattr(src, "graph_signature") or is_module(src) or is_factory_string(src):
        return True
    if isinstance(src, (str, Path)):
        path = Path(src)
        if path.suffix.lower() in (".pt2", *PICKLE_SUFFIXES):
            return True
        if path.is_dir() and (path / "ktorch.json").is_file() and (path / "model.py").is_file():
            try:
                return read_manifest(path).get("direction") == "keras->torch"
            except (OSError, ValueError):
                return False
    return False


def is_keras_output(path: Path) -> bool:
    """A directory ktorch wrote for Keras (model.py with build()/load(), model.weights.h5): a
    Keras source, read back for a PyTorch -> Keras -> PyTorch round trip."""
    if not (path.is_dir() and (path / "ktorch.json").is_file() and (path / "model.py").is_file()):
        return False
    try:
        return read_manifest(path).get("direction", "").endswith("->keras")
    except (OSError, ValueError):
        return False


def detect_source(path: Path) -> str:
    """Which reader a source path needs: 'keras', 'torch' or 'onnx'."""
    if path.suffix.lower() == ONNX_SUFFIX:
        return "onnx"
    if is_torch_source(path):
        return "torch"
    if is_keras_output(path):
        return "keras"
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, but not one ktorch wrote; expected {ACCEPTED}")
    if path.suffix.lower() in KERAS_SUFFIXES:
        return "keras"
    if path.exists():
        with open(path, "rb") as f:
            head = f.read(8)
        if head.startswith(b"\x89HDF") or head.startswith(b"PK\x03\x04"):
            return "keras"
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    raise ModelFileError(f"{path}: unknown model format; expected {ACCEPTED}")


def source_kind(src: Any) -> str:
    """'keras', 'torch' or 'onnx' for any source the API takes (objects too)."""
    if is_onnx_source(src):
        return "onnx"
    if is_torch_source(src):
        return "torch"
    if not isinstance(src, (str, Path)):
        raise ModelFileError(f"{type(src).__name__}: not a model ktorch reads; expected {ACCEPTED}, or an nn.Module")
    return detect_source(Path(src))


def source_paths(src: Any) -> list[Path]:
    """The files or directories a source occupies on disk (none for objects and factories)."""
    if isinstance(src, (str, Path)) and not is_factory_string(str(src)) and Path(src).exists():
        return [Path(src)]
    return []


def default_output(src: Any, target: str) -> Path:
    """SRC without its suffix + '_torch' / '_keras', beside SRC; for objects and factories,
    the class or factory name in the current directory."""
    if isinstance(src, (str, Path)) and not is_factory_string(str(src)):
        path = Path(src) if Path(src).name not in ("", "..") else Path(src).resolve()  # "." has no name
        stem = path.name.rstrip("/") if path.is_dir() else path.stem
        return path.with_name(f"{stem}_{target}")
    if is_factory_string(src):
        name = str(src).partition(":")[2]
    elif hasattr(src, "graph_signature") or is_onnx_source(src):
        name = "model"
    else:
        name = type(src).__name__
    return Path(f"{name}_{target}")
