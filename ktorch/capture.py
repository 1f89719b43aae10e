"""Capturing a PyTorch source as a torch.export program: .pt2 files, nn.Modules, ExportedPrograms,
`package.module:factory` strings (imports and runs that code), pickled modules (only with
--trust-code), state dicts loaded with weights_only=True, and directories ktorch emitted for
PyTorch (their model.py is imported and `load()`ed).
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .graph.errors import KtorchError, ModelFileError, UntrustedCodeError
from .sources import PICKLE_SUFFIXES, is_factory_string, is_module, is_torch_source
from .translate.output import read_manifest


class ImportOrderError(KtorchError):
    """TensorFlow was imported before Triton; torch.export would crash."""

    exit_code = 3


def prepare_torch(src: Any = None) -> None:
    """Load torch.export's native dependencies before TensorFlow when `src` (if given) is
    a PyTorch source (see verify.runners.preload_before_tensorflow: the other order crashes)."""
    if src is None or is_torch_source(src):
        from .verify.runners import preload_before_tensorflow

        preload_before_tensorflow()


def tensorflow_first() -> bool:
    """TensorFlow was loaded before Triton in this process: torch.export would crash."""
    import importlib.util

    return (
        "tensorflow" in sys.modules and "triton" not in sys.modules and importlib.util.find_spec("triton") is not None
    )


def _example_inputs(shapes: Sequence[Sequence[int]], dtypes: Sequence[str] | None, seed: int) -> tuple:
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = []
    for i, shape in enumerate(shapes):
        dtype = (dtypes[i] if dtypes and i < len(dtypes) else dtypes[-1] if dtypes else "float32") or "float32"
        tdtype = getattr(torch, dtype)
        if tdtype.is_floating_point:
            out.append(torch.randn(*shape, generator=gen).to(tdtype))
        else:
            out.append(torch.randint(0, 2, tuple(shape), generator=gen).to(tdtype))
    return tuple(out)


def export_module(module: Any, example_inputs: Any) -> Any:
    """torch.export with a dynamic batch axis (falls back to the examples' static batch
    when the model cannot be exported with a symbolic batch, e.g. a batch of 1). A dict of
    examples is passed as keyword arguments; `use_cache` is off during the capture
    (verify/torch_structure.capture_settings), and what changed is kept in `program.ktorch_capture`."""
    import torch

    from .verify.torch_structure import capture_settings, dynamic_batch, split_example

    module = module.eval()
    args, kwargs = split_example(example_inputs)
    dims, dynamic = dynamic_batch(args, kwargs)
    with capture_settings(module) as changed:
        program = None
        if dynamic:
            try:
                program = torch.export.export(module, args, kwargs, dynamic_shapes=dims)
            except Exception as exc:  # noqa: BLE001 - torch raises many kinds; a static export may still work
                warnings.warn(
                    f"exporting with a dynamic batch failed ({type(exc).__name__}); exporting with the examples' batch size",
                    stacklevel=2,
                )
        if program is None:
            program = torch.export.export(module, args, kwargs)
    program.ktorch_capture = {**changed, **({"kwargs": list(kwargs)} if kwargs else {})}
    return program


def _load_pickled_module(path: Path, trust_code: bool) -> Any:
    """A whole module saved with torch.save(model): unpickling runs code from the file, so it
    is refused unless the user trusts the file (--trust-code)."""
    import torch

    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    if not trust_code:
        try:
            torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - weights_only refuses arbitrary pickled objects
            raise UntrustedCodeError(
                f"{path}: holds pickled Python objects (a whole module saved with torch.save(model)); "
                "unpickling runs code from the file, so ktorch does not do it by default. Pass --trust-code "
                "if you trust this file, or save a torch.export program (.pt2) instead"
            ) from None
        raise ModelFileError(
            f"{path}: holds only weights (a state dict); convert the module that uses them: "
            f"`ktorch convert package.module:factory --input-shape ... --weights {path.name}`"
        )
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise ModelFileError(f"{path}: cannot be loaded by torch.load ({type(exc).__name__}: {exc})") from None
    if not is_module(obj):
        raise ModelFileError(f"{path}: holds a {type(obj).__name__}, not a torch.nn.Module")
    return obj


def _load_weights(module: Any, weights: str | Path) -> None:
    import torch

    path = Path(weights)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: does not match the model's state_dict ({str(exc).splitlines()[0]})") from None


def capture(
    src: Any,
    *,
    example_inputs: Sequence[Any] | None = None,
    input_shapes: Sequence[Sequence[int]] | None = None,
    input_dtypes: Sequence[str] | None = None,
    weights: str | Path | None = None,
    seed: int = 0,
    trust_code: bool = False,
) -> tuple[Any, str, str]:
    """(ExportedProgram, a description of the source, a model name) for any supported source."""
    import torch

    if hasattr(src, "graph_signature"):
        return src, "ExportedProgram", "model"
    if isinstance(src, (str, Path)) and Path(src).suffix.lower() == ".pt2" and not is_factory_string(src):
        path = Path(src)
        if not path.is_file():
            raise ModelFileError(f"{path}: no such file")
        import logging
        import zipfile

        if not zipfile.is_zipfile(path):
            raise ModelFileError(
                f"{path}: not a torch.export program (not a zip archive; it may be truncated); save one with torch.export.save"
            )
        export_log = logging.getLogger("torch.export")
        level = export_log.level
        export_log.setLevel(logging.CRITICAL)  # torch logs its own traceback before raising
        try:
            program = torch.export.load(str(path))
        except Exception as exc:  # noqa: BLE001
            raise ModelFileError(
                f"{path}: not a torch.export program ({type(exc).__name__}: {exc}); save one with torch.export.save"
            ) from None
        finally:
            export_log.setLevel(level)
        return program, path.name, path.stem
    if isinstance(src, (str, Path)) and Path(src).is_dir():
        return _capture_emitted(Path(src), example_inputs, seed)
    if isinstance(src, (str, Path)) and Path(src).suffix.lower() in PICKLE_SUFFIXES and not is_factory_string(src):
        module, name, desc = _load_pickled_module(Path(src), trust_code), Path(src).stem, Path(src).name
    elif is_factory_string(src):
        module_name, _, factory = str(src).partition(":")
        if "" not in sys.path and "." not in sys.path:
            sys.path.insert(0, ".")
        try:
            obj = getattr(importlib.import_module(module_name), factory)
        except (ImportError, AttributeError) as exc:
            raise ModelFileError(f"{src}: cannot import {factory!r} from {module_name!r} ({exc})") from None
        module = obj() if callable(obj) and not is_module(obj) else obj
        if not is_module(module):
            raise ModelFileError(f"{src}: {factory}() returned a {type(module).__name__}, not a torch.nn.Module")
        name, desc = factory, str(src)
    elif is_module(src):
        module, name, desc = src, type(src).__name__, f"{type(src).__module__}.{type(src).__qualname__}"
    else:
        raise ModelFileError(
            f"{src!r}: expected a .pt2 file, a 'package.module:factory' string, an nn.Module or a ktorch output directory"
        )
    if weights is not None:
        _load_weights(module, weights)
    if example_inputs is None:
        if not input_shapes:
            raise ModelFileError(
                f"{desc}: pass the input shapes (--input-shape 1,3,224,224) or example_inputs to export the model"
            )
        # a batch of at least 2 lets torch.export keep the batch axis symbolic
        shapes = [[max(int(s[0]), 2), *s[1:]] if len(s) else list(s) for s in input_shapes]
        example_inputs = _example_inputs(shapes, input_dtypes, seed)
    examples = example_inputs if isinstance(example_inputs, dict) else tuple(example_inputs)
    return export_module(module, examples), desc, name


def _capture_emitted(directory: Path, example_inputs: Sequence[Any] | None, seed: int) -> tuple[Any, str, str]:
    """A directory ktorch emitted for PyTorch: import its model.py and export `load()`."""
    from .verify.runners import import_emitted

    manifest = read_manifest(directory)
    module = import_emitted(directory).load()
    if example_inputs is None:
        shapes, dtypes = [], []
        for spec in manifest["inputs"]:
            shape = [2 if i == 0 else (8 if d is None else int(d)) for i, d in enumerate(spec["shape"])]
            perm = spec.get("perm")
            shapes.append([shape[p] for p in perm] if perm else shape)
            dtypes.append(
                "float32"
                if spec.get("range") is None and str(spec.get("dtype", "float32")).startswith("float")
                else "int64"
            )
        example_inputs = _example_inputs(shapes, dtypes, seed)
        for i, spec in enumerate(manifest["inputs"]):
            if spec.get("range") is not None:
                import torch

                low, high = spec["range"]
                example_inputs[i].copy_(torch.randint(low, high, tuple(example_inputs[i].shape)))
    name = manifest.get("model", {}).get("name") or directory.name
    return export_module(module, tuple(example_inputs)), f"{directory.name}/model.py", str(name)
