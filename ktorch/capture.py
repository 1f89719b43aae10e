"""Capturing a PyTorch source as a torch.export program: .pt2 files, nn.Modules, ExportedPrograms,
`package.module:factory` strings (imports and runs that code), pickled modules (only with
--trust-code), state dicts loaded with weights_only=True, and directories ktorch emitted for
PyTorch (their model.py is imported and `load()`ed).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
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


class BatchPinnedError(KtorchError):
    """The model cannot be exported with a symbolic batch size: some op fixes it."""

    exit_code = 2


def _at_least_two(example: Any) -> Any:
    """A batch of 1 repeated to 2: torch.export specialises a size of 1, and the export's
    example only has to show the model's shapes."""
    import torch

    if isinstance(example, torch.Tensor) and example.ndim and example.shape[0] == 1:
        return torch.cat([example, example])
    return example


def _user_frame(exc: BaseException) -> str | None:
    """The innermost frame of the model's own code (not torch, not ktorch) in a traceback."""
    import traceback

    import torch

    skip = (str(Path(torch.__file__).parent), str(Path(__file__).parent))
    frames = [
        f
        for e in (exc, exc.__cause__, exc.__context__)
        if e is not None
        for f in traceback.extract_tb(e.__traceback__)
        if f.line and not f.filename.startswith(skip) and not f.filename.startswith("<")
    ]
    frames = [f for f in frames if f.name not in ("<module>", "export_module")]
    if not frames:
        return None
    f = frames[-1]
    return f"`{f.line.strip()}` ({Path(f.filename).name}:{f.lineno}, in {f.name})"


def _guard_frame(module: Any, args: tuple, kwargs: dict[str, Any], dims: Any) -> str | None:
    """Where the model's code fixes the batch size, from torch.export.draft_export's report
    of the guards it had to add (the report torch's own error message points to)."""
    import logging

    import torch

    log = logging.getLogger("torch.export")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        draft = torch.export.draft_export(module, args, kwargs, dynamic_shapes=dims)
    except Exception as exc:  # noqa: BLE001 - the draft raises where the model's code does
        return _user_frame(exc)
    finally:
        log.setLevel(level)
    report = getattr(draft, "_report", None)
    for failure in getattr(report, "failures", []) or []:
        data = failure.data if isinstance(failure.data, dict) else {}
        frames = [f for f in data.get("user_stack") or [] if f.get("name") not in ("_wrapped_call_impl", "_call_impl")]
        if frames:
            f = frames[-1]
            filename = (getattr(report, "str_to_filename", None) or {}).get(f.get("filename"))
            place = f"{Path(filename).name}:{f.get('line')}" if isinstance(filename, str) else f"line {f.get('line')}"
            return f"`{f.get('loc', '').strip()}` ({place}, in {f.get('name')})"
    return None


def _bound(number: Any) -> int | None:
    """A range end as an int; None for infinity (torch's int_oo)."""
    try:
        return int(number) if number is not None and abs(int(number)) < 2**62 else None
    except (TypeError, ValueError, AttributeError, OverflowError):
        return None


def dynamic_sizes(program: Any) -> tuple[dict[str, dict[str, Any]], list[dict[str, int]]]:
    """The sizes besides the batch that an ExportedProgram keeps symbolic, by name ("seq",
    "height", "width"; "axis<k>" for any other): {name: {min, max (None: unbounded), example,
    symbol (torch's)}},
    and for each user input, {name: axis} of its symbolic axes."""
    from .verify.torch_structure import DYNAMIC_AXES

    ranges = getattr(program, "range_constraints", {}) or {}
    users = set(program.graph_signature.user_inputs)
    found: dict[str, dict[str, Any]] = {}
    axes: list[dict[str, int]] = []
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in users:
            continue
        val = node.meta.get("val")
        named: dict[str, int] = {}
        for axis, size in enumerate(getattr(val, "shape", ())[1:], start=1):
            if isinstance(size, int):
                continue
            name = next((n for n, by_rank in DYNAMIC_AXES.items() if by_rank.get(val.ndim) == axis), f"axis{axis}")
            named[name] = axis
            bound = ranges.get(size.node.expr)
            found.setdefault(
                name,
                {
                    "min": _bound(bound and bound.lower) or 0,
                    "max": _bound(bound and bound.upper),
                    "example": _bound(getattr(size.node, "hint", None)),
                    "symbol": str(size.node.expr),
                },
            )
        axes.append(named)
    return found, axes


def _takes_another_size(program: Any, args: tuple, kwargs: dict[str, Any]) -> bool:
    """Whether the program runs at other values of its dynamic sizes (the verifier's candidates):
    the examples cut or repeated along those axes, run once each."""
    import torch

    from .verify.torch_source import other_sizes

    sizes, axes = dynamic_sizes(program)
    tensors = [*args, *kwargs.values()]

    def resized(x: Any, named: dict[str, int], choice: dict[str, int]) -> Any:
        for name, axis in named.items():
            x = x.index_select(axis, torch.arange(choice[name]) % x.shape[axis])
        return x

    for choice in other_sizes({"source": {"dynamic": sizes}}):
        moved = [resized(t, named, choice) for t, named in zip(tensors, axes)] + tensors[len(axes) :]
        new_args, new_kwargs = tuple(moved[: len(args)]), dict(zip(kwargs, moved[len(args) :]))
        try:
            with torch.no_grad():
                program.module()(*new_args, **new_kwargs)
            return True
        except AssertionError as exc:  # torch: "Guard failed"
            if "Guard failed" not in str(exc):
                return True  # the model's own assertion: not a size question
    return False


def export_module(module: Any, example_inputs: Any, dynamic: Sequence[str] = ()) -> Any:
    """torch.export with a dynamic batch axis, and the sizes named in `dynamic` ("seq",
    "height", "width") symbolic where the model allows any size. A batch of 1 in the examples
    is repeated to 2 (torch.export specialises 1); a model whose code fixes the batch size
    raises BatchPinnedError naming that code. A dict of examples is passed as keyword
    arguments; `use_cache` is off during the capture (verify/torch_structure.capture_settings).
    What changed, and which sizes stayed static, is kept in `program.ktorch_capture`."""
    import torch

    from .verify.torch_structure import DYNAMIC_AXES, capture_settings, dynamic_batch, split_example

    module = module.eval()
    auto = "auto" in dynamic
    dynamic = tuple(DYNAMIC_AXES) if auto else tuple(dynamic)
    args, kwargs = split_example(example_inputs)
    args = tuple(_at_least_two(a) for a in args)
    kwargs = {k: _at_least_two(v) for k, v in kwargs.items()}
    record: dict[str, Any] = {}
    with capture_settings(module) as changed:
        program = None
        if dynamic:
            dims, _ = dynamic_batch(args, kwargs, dynamic)
            try:
                program = torch.export.export(module, args, kwargs, dynamic_shapes=dims)
            except Exception as exc:  # noqa: BLE001 - torch raises many kinds; the batch alone may still work
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                record["static"] = {n: f"the export failed ({type(exc).__name__}: {first})" for n in dynamic}
        if program is None:
            dims, dynamic_ok = dynamic_batch(args, kwargs)
            try:
                program = torch.export.export(module, args, kwargs, dynamic_shapes=dims if dynamic_ok else None)
            except Exception as exc:
                static = None
                with contextlib.suppress(Exception):
                    static = torch.export.export(module, args, kwargs)
                if static is None:
                    raise  # the model does not export at all: torch's own error says why
                where = _user_frame(exc) or _guard_frame(module, args, kwargs, dims)
                raise BatchPinnedError(
                    f"{type(module).__name__}: the model fixes its batch size"
                    + (f" at {where}" if where else "")
                    + f"; torch.export cannot keep the batch symbolic ({type(exc).__name__}), so a Keras model "
                    "that takes any batch size cannot be written. Compute that size from the input (x.size(0) or -1), "
                    "or export a fixed-batch program yourself (torch.export.export(model, args)) and convert the .pt2: "
                    "its Keras model then takes only that batch size"
                ) from None
    symbolic = dynamic_sizes(program)[0] if dynamic else {}
    if symbolic and not _takes_another_size(program, args, kwargs):
        # symbolic in the program, yet its guards refuse every other size tried (a ViT whose
        # patch count must match its position table): the example's sizes, said in ktorch.json
        with capture_settings(module):
            program = torch.export.export(module, args, kwargs, dynamic_shapes=dynamic_batch(args, kwargs)[0])
        record["static"] = dict.fromkeys(symbolic, "the model takes no other size than the example's")
    if dynamic:
        kept, _ = dynamic_sizes(program)
        ranks = {t.ndim for t in [*args, *kwargs.values()] if hasattr(t, "ndim")}
        record["static"] = {
            **{
                n: "the model needs a fixed size (the export specialised it)"
                if any(r in DYNAMIC_AXES[n] for r in ranks)
                else "no input has this axis"
                for n in dynamic
                if n not in kept and (not auto or any(r in DYNAMIC_AXES[n] for r in ranks))
            },
            **record.get("static", {}),
        }
        if not record["static"]:
            del record["static"]
    program.ktorch_capture = {**changed, **record, **({"kwargs": list(kwargs)} if kwargs else {})}
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
    dynamic: Sequence[str] = (),
) -> tuple[Any, str, str]:
    """(ExportedProgram, a description of the source, a model name) for any supported source;
    `dynamic` names the sizes besides the batch to keep symbolic where the model allows it."""
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
        return _capture_emitted(Path(src), example_inputs, seed, dynamic)
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
    return export_module(module, examples, dynamic), desc, name


def _capture_emitted(
    directory: Path, example_inputs: Sequence[Any] | None, seed: int, dynamic: Sequence[str] = ()
) -> tuple[Any, str, str]:
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
    return export_module(module, tuple(example_inputs), dynamic), f"{directory.name}/model.py", str(name)
