"""ktorch.json: one builder for every direction (see DESIGN.md, "Output directory contract")."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .graph import Graph
from .graph.ir import Value
from .graph.queries import id_range, layout_name
from .version import __version__

Perm = tuple[int, ...]


@dataclass
class SourceIO:
    """Each graph input's and output's shape, dtype and data format as the source has them,
    recorded before the passes move them (keyed by the Value's id)."""

    shapes: dict[int, tuple[tuple[Any, ...], str]]
    formats: dict[int, str | None]

    @classmethod
    def record(cls, graph: Graph, io_format: Callable[[Value], str | None]) -> SourceIO:
        values = [*graph.inputs, *graph.outputs]
        return cls({id(v): (tuple(v.shape), v.dtype) for v in values}, {id(v): io_format(v) for v in values})


def layout_of(rank: int, fmt: str | None, perm: Perm | None) -> str | None:
    """The emitted tensor's layout name: the source's data format, moved by `perm` if any."""
    return None if fmt is None else layout_name(rank, (fmt == "channels_first") != (perm is not None))


def io_specs(
    values: Sequence[Value],
    graph: Graph,
    names: dict[str, str],
    source_io: SourceIO,
    *,
    perm_of: Callable[[Value], Perm | None],
    layout: Callable[[int, str | None, Perm | None], str | None],
    ranges: bool,
) -> list[dict[str, Any]]:
    """`inputs` / `outputs` of the manifest: {name, emitted_name, shape, dtype, [perm], [layout],
    [range]}, shapes in the source's axis order (`emitted = source.transpose(perm)`)."""
    specs = []
    fields = graph.meta.get("output_names") if list(values) == list(graph.outputs) else None  # a ModelOutput's
    sizes = graph.meta.get("input_sizes") if list(values) == list(graph.inputs) else None  # {name: axis} per input
    for i, v in enumerate(values):
        shape, dtype = source_io.shapes.get(id(v), (tuple(v.shape), v.dtype))
        if v.perm is not None and id(v) not in source_io.shapes:
            shape = tuple(v.shape[v.perm.index(i)] for i in range(len(v.shape)))
        perm = perm_of(v)
        spec: dict[str, Any] = {
            "name": fields[i] if fields else v.source or v.name,
            "emitted_name": names.get(v.name, v.name),
            "shape": list(shape),
            "dtype": dtype,
        }
        if perm is not None:
            spec["perm"] = list(perm)
        if sizes and i < len(sizes) and sizes[i]:  # axes (in the source's order) that take any size, by name
            spec["dynamic"] = dict(sizes[i])
        name = layout(len(shape), source_io.formats.get(id(v)), perm)
        if name is not None:
            spec["layout"] = name
        if v in graph.inputs and spec["name"] in graph.meta.get("padding_masks", ()):
            spec["padding_mask"] = True  # seeded inputs for it are padding masks (verify.runners.padding_masks)
        vocab = id_range(v) if ranges and v in graph.inputs else None
        if vocab is not None:
            spec["range"] = list(vocab)
        specs.append(spec)
    return specs


def model_info(graph: Graph, rendered: Any, target: str) -> dict[str, Any]:
    """`model`: what the emitted model is and how many numbers it holds, as its framework counts
    them. PyTorch: `parameters` (elements of `model.parameters()`, trainable or not) and `buffers`
    (of `model.buffers()`: BatchNorm running statistics, num_batches_tracked, constants). Keras:
    `parameters` is `model.count_params()`, trainable and non-trainable weights alike (Keras keeps
    BatchNorm's moving statistics as non-trainable weights; it has no buffers)."""
    if target == "torch":
        parameters, buffers = rendered.counts()
        info: dict[str, Any] = {
            "name": graph.name,
            "class_name": rendered.class_name,
            "nodes": len(graph.nodes),
            "parameters": parameters,
            "buffers": buffers,
        }
        if graph.meta.get("compute_dtype"):  # a source computing in float16/bfloat16 (a mixed precision policy)
            info["compute_dtype"] = graph.meta["compute_dtype"]
            info["dtype_policies"] = list(graph.meta.get("dtype_policies", []))  # the Keras policies met
            # how the emitted model computes: forward under torch.autocast(dtype) (a mixed policy,
            # float32 weights), or in its weights' dtype (bfloat16/float16 variables)
            info["autocast"] = graph.meta.get("autocast")
            info["weights_dtype"] = sorted({str(a.dtype) for a in rendered.state.values() if a.dtype.kind in "fV"})
        if graph.meta.get("inference_identities"):  # augmentation layers dropped as inference identities
            info["inference_identities"] = list(graph.meta["inference_identities"])
        return info
    parameters = int(sum(a.size for arrays in rendered.weights.values() for a in arrays))
    info = {
        "name": graph.name,
        "nodes": len(graph.nodes),
        "layers": rendered.layer_count,
        "custom_layers": rendered.custom_layers,
        "parameters": parameters,
    }
    if graph.meta.get("frozen_parameters"):  # learned tensors the reader could only fold into constants
        info["frozen_parameters"] = list(graph.meta["frozen_parameters"])
    if graph.meta.get("unused_parameters"):  # parameters the source's forward never reads: no weight
        info["unused_parameters"] = list(graph.meta["unused_parameters"])
    return info


def build_manifest(
    *,
    direction: str,
    source: dict[str, Any],
    model: dict[str, Any],
    layout_mode: str,
    transposes: int,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    values: dict[str, Any] | None,
    route: dict[str, str] | None = None,
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest, its keys in the documented order; `parity` is filled in by verification."""
    manifest: dict[str, Any] = {
        "ktorch_version": __version__,
        "direction": direction,
        **({"route": route} if route is not None else {}),
        "source": source,
        "model": model,
        "layout": {"mode": layout_mode, "transposes": transposes},
        "inputs": inputs,
        "outputs": outputs,
    }
    if values is not None:
        manifest["values"] = values
    if training is not None:  # train.py and the migrated optimizer state, with what was not translated
        manifest["training"] = training
    manifest["parity"] = None
    return manifest
