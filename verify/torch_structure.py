"""Models as people have them: structured inputs and outputs of a PyTorch source.

Hugging Face models take keyword tensors (`input_ids`, `attention_mask`), return a
`ModelOutput` (a dict-like pytree, possibly nested: `hidden_states` is a tuple) and, for
decoders, a key/value cache that torch.export cannot return. This module holds what the
capture and the verifier share about that:

- example inputs given as a dict are passed as keyword arguments;
- `use_cache` is switched off while the model runs for ktorch (and restored afterwards),
  where the model's config has it;
- outputs are flattened in pytree order, named after their fields (`last_hidden_state`,
  `hidden_states_0`), which become the Keras model's output names and the manifest's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any


def split_example(example_inputs: Any) -> tuple[tuple, dict[str, Any]]:
    """(positional, keyword) example tensors: a dict is passed as keyword arguments."""
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    return tuple(example_inputs), {}


# the sizes besides the batch that an export may keep symbolic, by name, and the axis each
# names in an input of a given rank (PyTorch's layouts: token ids (B, S), channels-first
# sequences (B, C, L), images (B, C, H, W))
DYNAMIC_AXES: dict[str, dict[int, int]] = {"seq": {2: 1, 3: 2}, "height": {4: 2}, "width": {4: 3}}


def dynamic_axes(rank: int, names: Sequence[str]) -> dict[int, str]:
    """Axis -> size name for an input of `rank`, for the requested `names`."""
    return {DYNAMIC_AXES[n][rank]: n for n in names if rank in DYNAMIC_AXES.get(n, {})}


def dynamic_batch(args: tuple, kwargs: dict[str, Any], names: Sequence[str] = ()) -> tuple[Any, bool]:
    """torch.export `dynamic_shapes` giving axis 0 of every tensor one symbolic batch size,
    and whether every example has a batch of at least 2 (torch.export specialises 1). The
    sizes in `names` ("seq", "height", "width", see DYNAMIC_AXES) are one `Dim.AUTO` each: the
    export keeps them symbolic where the model allows any size and specialises them where not."""
    import torch

    batch = torch.export.Dim("batch")

    def dims(x: Any) -> Any:
        if not getattr(x, "ndim", 0):
            return None
        return {0: batch, **{axis: torch.export.Dim.AUTO for axis in dynamic_axes(x.ndim, names)}}

    tensors = [*args, *kwargs.values()]
    big = bool(tensors) and all(getattr(x, "ndim", 0) and x.shape[0] >= 2 for x in tensors)
    if kwargs:  # split_example passes a dict's tensors as keywords only
        return {k: dims(v) for k, v in kwargs.items()}, big
    return tuple(dims(x) for x in args), big


@contextlib.contextmanager
def capture_settings(module: Any, settings: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Switch off what torch.export refuses while the model runs (a Hugging Face decoder's
    `use_cache=True` returns a DynamicCache); yields what was changed, for the manifest,
    and restores the module's settings afterwards. `settings` (a manifest's record)
    applies those exactly instead."""
    config = getattr(module, "config", None)
    changed: dict[str, Any] = {}
    wanted = {"use_cache": False} if settings is None else {k: v for k, v in settings.items() if k == "use_cache"}
    saved = {}
    for key, value in wanted.items():
        if config is not None and hasattr(config, key) and getattr(config, key) != value:
            saved[key] = getattr(config, key)
            setattr(config, key, value)
            changed[key] = value
    try:
        yield changed
    finally:
        for key, value in saved.items():
            setattr(config, key, value)


def _children(spec: Any) -> list[Any]:
    if hasattr(spec, "children"):
        return list(spec.children())
    return list(spec.children_specs)  # torch < 2.9


def output_names(spec: Any) -> list[str] | None:
    """Field names of the leaves of a pytree spec (`last_hidden_state`, `hidden_states_0`),
    or None when no level of it is a mapping (a tensor or a plain tuple keeps its order only)."""
    named = False

    def walk(node: Any, prefix: str) -> list[str]:
        nonlocal named
        if node.is_leaf():
            return [prefix or "output"]
        children = _children(node)
        context = node.context
        if (
            isinstance(context, (list, tuple))
            and len(context) == len(children)
            and all(isinstance(k, str) for k in context)
        ):
            named = True
            keys = [str(k) for k in context]
        elif hasattr(node.type, "_fields") and len(node.type._fields) == len(children):  # a namedtuple
            named = True
            keys = list(node.type._fields)
        else:
            keys = [str(i) for i in range(len(children))]
        names = []
        for key, child in zip(keys, children):
            names += walk(child, f"{prefix}_{key}" if prefix else (key if named else f"output_{key}"))
        return names

    names = walk(spec, "")
    return names if named and len(set(names)) == len(names) else None


def name_outputs(graph: Any, program: Any) -> None:
    """Outputs of a structured result (a Hugging Face ModelOutput, a dict) keep their field
    names: graph.meta["output_names"] lists them, one per graph output, in order (the
    manifest's output names and the keys of the Keras model's dict of outputs)."""
    spec = getattr(getattr(program, "call_spec", None), "out_spec", None)
    names = output_names(spec) if spec is not None else None
    if names and len(names) == len(graph.outputs):
        graph.meta["output_names"] = list(names)


def flat_outputs(out: Any) -> list[Any]:
    """The tensors of a structured output (ModelOutput, dict, tuple, nested), in pytree order."""
    import torch
    import torch.utils._pytree as pytree

    return [leaf for leaf in pytree.tree_leaves(out) if isinstance(leaf, torch.Tensor)]


def run_structured(source: Any, tensors: Sequence[Any], capture: dict[str, Any] | None = None) -> list[Any]:
    """Run an ExportedProgram (called as it was captured: positional or keyword inputs) or an
    nn.Module (keyword inputs named in `capture["kwargs"]`, with the capture's settings)
    and return its output tensors, flattened."""
    import torch
    import torch.utils._pytree as pytree

    capture = capture or {}
    if hasattr(source, "graph_signature"):
        spec = source.call_spec.in_spec
        args, kwargs = pytree.tree_unflatten(list(tensors), spec) if spec is not None else (tuple(tensors), {})
        module = source.module()
        with torch.no_grad():
            return flat_outputs(module(*args, **kwargs))
    names = capture.get("kwargs") or []
    kwargs = dict(zip(names, tensors[len(tensors) - len(names) :])) if names else {}
    args = tuple(tensors[: len(tensors) - len(names)])
    with torch.no_grad(), capture_settings(source, capture):
        return flat_outputs(source(*args, **kwargs))
