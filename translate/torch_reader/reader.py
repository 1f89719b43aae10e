"""torch.export ExportedProgram -> intermediate graph.

The reader walks the ATen graph of an ExportedProgram in order. Parameters, buffers and
lifted constants become `Const`s (numpy arrays) that translators take as weights; every
other call is handed to the translator registered for its ATen op under "torch->ir"
(key: "aten.<name>", in-place variants folded onto their functional names). A call whose
tensor arguments are all constants is evaluated once, here, and becomes a constant too.

The `nn_module_stack` metadata names the innermost module of each call; a call that is the
whole of a torch.nn leaf module (Conv2d, Linear, BatchNorm2d, ReLU, ...) is named after
the module's path (`layer1.0.conv1` -> `layer1_0_conv1`), functional code after its
enclosing module and the op (`layer1_0_add`). Axis 0 of every tensor is the batch axis,
kept dynamic.
"""

from __future__ import annotations

import contextlib
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...graph import Graph, Value
from ...graph.errors import GraphError, KtorchError, UnsupportedOpError
from ..registry import lookup
from .calls import (
    BATCH,
    AtenCall,
    BatchExpr,
    BatchRange,
    Const,
    Deferred,
    ModuleCall,
    SizeTable,
    SymbolicBatch,
    SymSize,
    TorchOpError,
    aten_key,
    batch_factor,
    bind_arguments,
    dtype_name,
    identifier,
    learned_rows,
)

PASS_THROUGH = {
    "aten.contiguous",
    "aten.clone",
    "aten.alias",
    "aten.detach",
    "aten.lift_fresh_copy",
    "aten.lift_fresh",
    "aten.identity",
}
IGNORED = {
    "aten._assert_scalar",
    "aten._assert_tensor_metadata",
    "aten.sym_constrain_range_for_size",
    "aten._assert_async",
}
CONTAINERS = ("Sequential", "ModuleList", "ModuleDict")


def _stack_entries(node: Any) -> list[tuple[str, str]]:
    """(raw path, class name) of every module around a node, outermost first."""
    out = []
    for path, cls in (node.meta.get("nn_module_stack") or {}).values():
        out.append((str(path), cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"))
    return out


def _clean_path(path: str) -> str:
    path = re.sub(r"@\d+", "", path)
    if path.startswith("L__self__"):
        path = path[len("L__self__") :].lstrip("_.")
    return path


def module_of(node: Any) -> tuple[str, str]:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "", ""
    path, cls = list(stack.values())[-1]
    cls_name = cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"
    path = re.sub(r"@\d+", "", str(path))
    if path.startswith("L__self__"):
        path = path[len("L__self__") :].lstrip("_.")
    return path, cls_name


# subclasses of torch.nn leaf modules that ktorch writes into an emitted model.py (a round
# trip reads them back as the leaf modules they extend)
EMITTED_LEAVES = frozenset({"KerasBatchNorm1d", "KerasBatchNorm2d", "KerasBatchNorm3d"})


def _is_leaf(cls_name: str) -> bool:
    short = cls_name.rsplit(".", 1)[-1]
    return (cls_name.startswith("torch.nn.modules.") and short not in CONTAINERS) or short in EMITTED_LEAVES


@dataclass
class ReadOptions:
    fold_constants: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class TorchReader:
    """Builds a Graph from an ExportedProgram."""

    def __init__(self, program: Any, name: str = "model", options: ReadOptions | None = None) -> None:
        self.program = program
        self.options = options or ReadOptions()
        self.graph = Graph(name)
        self.env: dict[str, Any] = {}
        self._const_values: dict[str, Value] = {}
        self._leaf_calls: dict[str, int] = {}
        self._scalars = 0
        self._frozen: set[str] = set()  # learned tables that a folded computation froze into a constant
        self._unbatched: set[Value] = set()  # values computed from parameters and buffers only: no batch axis
        self.static_batch: int | None = None  # the batch size of an export without a dynamic batch
        self.example_batch: int | None = None  # the batch size of the export's example inputs
        # sizes the export keeps symbolic besides the batch: symbol -> (graph input, axis) holding it
        self._size_refs: dict[Any, tuple[Value, int]] = {}
        self._batch_symbols: set[Any] = set()  # the export's symbols for the batch size

    # -- constants ------------------------------------------------------------------------
    def per_example_value(self, const: Const) -> Value:
        """A constant with a size-1 axis 0 repeated for every example of the batch."""
        return self._constant_node(const, per_example=True).output

    def _constant_node(self, const: Const, per_example: bool = False) -> Any:
        """A `constant` node; for entries picked from a learned table, a `table_lookup` node
        reading the table by a constant index node (the table stays a trainable weight, and
        the pick happens at run time)."""
        if const.table is not None:
            index = self._constant_node(Const(f"{const.table.name}_index", const.index), per_example).output
            return self._table_lookup(index, const.table)
        return self.graph.add_node(
            "constant",
            [],
            {"trainable": const.trainable, "per_example": per_example},
            {"value": const.array},
            name=identifier(const.name),
            source=const.name,
            source_class="Parameter",
        )

    def constant_value(self, const: Const, rank: int | None = None) -> Value:
        """A `constant` node holding `const` (one per constant and rank); with `rank`, the
        array gets leading size-1 axes so that it broadcasts like a same-rank operand."""
        if rank is not None and const.array.ndim < rank:
            const = const.reshaped((1,) * (rank - const.array.ndim) + const.array.shape)
        key = f"{const.name}:{const.array.shape}"  # a parameter may be used as it is and reshaped
        if key not in self._const_values:
            self._const_values[key] = self._constant_node(const).output
        return self._const_values[key]

    def scalar_value(self, number: float, rank: int, dtype: str = "float32") -> Value:
        """A Python number as a size-1 constant of `rank` (the Keras writer inlines it)."""
        self._scalars += 1
        return self.constant_value(Const(f"scalar_{self._scalars}", np.full((1,) * rank, number, dtype=dtype)))

    def size_table_value(self, table: SizeTable, rank: int | None = None) -> Value:
        """A SizeTable as a graph value: the constant at the largest size, cut on each of its
        size axes to the run-time length of the reference value's axis (`size_like`)."""
        shift = max(0, (rank or 0) - table.array.ndim)
        if table.table is not None:  # the index is cut, and the learned table read by it
            value = self.constant_value(Const(f"{table.name}_index", table.index), rank)
        else:  # named "<fx name>_table": a bare fx name (add_3) may be a name Keras gives its own ops
            value = self.constant_value(Const(f"{table.name}_table", table.array), rank)
        for axis, ref, ref_axis in table.axes:
            if axis + shift == 0:
                raise UnsupportedOpError(
                    [(table.name, "size table", "a tensor whose first axis has a dynamic length")],
                    where="the PyTorch reader",
                )
            value = self.graph.add_node(
                "size_like",
                [value, ref],
                {"axis": axis + shift, "ref_axis": ref_axis, "mode": "slice"},
                name=f"{identifier(table.name)}_cut",
                source=table.name,
                source_class="size_like",
            ).output
        if table.table is not None:
            value = self._table_lookup(value, table.table).output
        return value

    def _table_lookup(self, index: Value, table: Const) -> Any:
        """A `table_lookup` node: the learned `table` (a trainable weight) read at `index`."""
        return self.graph.add_node(
            "table_lookup",
            [index],
            weights={"table": table.array},
            name=identifier(table.name),
            source=table.name,
            source_class="Parameter",
        )

    # -- entry --------------------------------------------------------------------------
    def read(self) -> Graph:
        from torch.export.graph_signature import InputKind, OutputKind

        ep = self.program
        sig = ep.graph_signature
        state = ep.state_dict
        constants = getattr(ep, "constants", {}) or {}
        kinds = {spec.arg.name: spec for spec in sig.input_specs if hasattr(spec.arg, "name")}
        self._live = _live_nodes(ep.graph)
        self._constant = _constant_nodes(
            ep.graph, {name for name, spec in kinds.items() if spec.kind != InputKind.USER_INPUT}
        )
        self._batch_only = _batch_only_nodes(ep.graph, self._constant)
        self._batch_values: dict[str, dict[int, Any]] = {}
        self._variants = self._size_variants()
        self._size_only = (
            _size_only_nodes(ep.graph, self._constant | self._batch_only, self._batch_symbols)
            if self._variants
            else set()
        )
        self._size_values: dict[str, dict[str, Any]] = {}
        self._size_picks: dict[str, dict[str, Const]] = {}  # size-only calls that pick from a learned table
        # constants that in-place calls write into, and the views they write through
        self._aliased = {a.name for n in ep.graph.nodes if _mutates(n) and n.name in self._live for a in _view_chain(n)}
        self._tensors: dict[str, Any] = {}
        self._groups, self._owner = self._module_groups()
        self._check_supported()
        from .training import tied_parameters

        tied = tied_parameters(ep)
        for node in ep.graph.nodes:
            if node.op == "call_function" and node.name not in self._live:
                continue  # computes nothing the outputs use (HF mask helpers leave such code)
            if node.op == "placeholder":
                spec = kinds.get(node.name)
                if spec is None or spec.kind == InputKind.USER_INPUT:
                    self.env[node.name] = self._add_input(node)
                elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
                    source = state if spec.target in state else constants
                    tensor = source[spec.target]
                    name = tied.get(spec.target, spec.target)  # a tied parameter: named after the first
                    self.env[node.name] = Const(name, _to_numpy(tensor), spec.kind == InputKind.PARAMETER)
                else:
                    raise UnsupportedOpError(
                        [(node.name, str(spec.kind), "this kind of program input is not supported")],
                        where="the PyTorch reader",
                    )
            elif node.op == "call_function" and node.name in self._owner:
                if node.name not in self.env:
                    self._translate_module(self._owner[node.name])
            elif node.op == "call_function" and node.name in self._batch_only:
                self.env[node.name] = self._batch_only_call(node)
            elif node.op == "call_function" and node.name in self._size_only:
                self.env[node.name] = self._size_only_call(node)
            elif node.op == "call_function":
                self.env[node.name] = self._call(node)
            elif node.op == "get_attr":
                self.env[node.name] = Const(node.target, _to_numpy(getattr(ep.graph_module, node.target)))
            elif node.op == "output":
                outs = [self._resolve(a) for a in node.args[0]]
                user = [o for o, spec in zip(outs, sig.output_specs) if spec.kind == OutputKind.USER_OUTPUT]
                values = []
                for i, o in enumerate(user):
                    if isinstance(o, Const):
                        o = self.constant_value(o)
                    if isinstance(o, Deferred):
                        o = o.materialize(self, f"output_{i}")
                    if not isinstance(o, Value):
                        raise GraphError(f"output {i} of the program is {o!r}, not a tensor")
                    if o in self.graph.inputs or o in values:
                        o = self.graph.add_node("identity", [o], name=f"output_{i}").output
                    values.append(o)
                self.graph.outputs = values
        for v in self.graph.outputs:
            v.source = v.source or v.name
        self.graph.meta.update(
            {
                "source_framework": "pytorch",
                "source_format": "torch.export",
                "static_batch": self.static_batch,
                "example_batch": self.example_batch,
            }
        )
        from .training import mark_frozen

        mark_frozen(self.graph, self.program)
        kept = {
            n.source
            for n in self.graph.nodes
            if n.op == "table_lookup" or (n.op == "constant" and n.attrs["trainable"])
        }
        kept |= {f"{n.source}.{w}" for n in self.graph.nodes if n.source for w in n.weights}
        params = [spec for spec in sig.input_specs if spec.kind == InputKind.PARAMETER]
        read = {  # a tied parameter is read through any of its names
            tied.get(spec.target, spec.target)
            for spec in params
            if any(u.name in self._live for u in _users(ep.graph, spec.arg.name))
        }
        # read by no computation (Wav2Vec2's masked_spec_embed outside training)
        unused = sorted({tied.get(spec.target, spec.target) for spec in params} - read)
        if unused:
            self.graph.meta["unused_parameters"] = unused
        frozen = sorted(self._frozen - kept)
        if frozen:  # folded with other numbers into a constant: say so (ktorch.json, the summary)
            self.graph.meta["frozen_parameters"] = frozen
        return self.graph

    def _check_supported(self) -> None:
        problems = []
        for node in self.program.graph.nodes:
            if node.op != "call_function" or node.name in self._owner or node.name not in self._live:
                continue
            if node.name in self._constant or node.name in self._batch_only or node.name in self._size_only:
                continue  # evaluated once at conversion time
            key = aten_key(node.target)
            if (
                key in PASS_THROUGH
                or key in IGNORED
                or key in _PYTHON_OPS
                or key in _SYM_OPS
                or lookup("torch->ir", key) is not None
            ):
                continue
            module, cls = module_of(node)
            problems.append(
                (
                    module or node.name,
                    key,
                    f"no translator (called in {cls.rsplit('.', 1)[-1] or 'the top-level forward'})",
                )
            )
        if problems:
            unique = sorted(set(problems), key=problems.index)
            raise UnsupportedOpError(
                unique,
                where="the PyTorch program",
                hint="Nothing was written. Add a translator with ktorch.translate.registry.register('torch->ir', 'aten.<op>').",
            )

    def _module_groups(self) -> tuple[dict[str, tuple[str, list]], dict[str, str]]:
        """Calls of modules that a "module.<Class>" translator takes as a whole."""
        groups: dict[str, tuple[str, list]] = {}
        owner: dict[str, str] = {}
        for node in self.program.graph.nodes:
            if node.op != "call_function":
                continue
            if aten_key(node.target) in _SYM_OPS:
                continue  # size arithmetic may be shared by several modules
            for path, cls in _stack_entries(node):
                short = cls.rsplit(".", 1)[-1]
                if lookup("torch->ir", f"module.{short}") is not None:
                    groups.setdefault(path, (short, []))[1].append(node)
                    owner[node.name] = path
                    break
        return groups, owner

    def _translate_module(self, path: str) -> None:
        import torch.fx

        short, nodes = self._groups[path]
        names = {n.name for n in nodes}
        inputs: list[Value] = []
        for n in nodes:
            for arg in _flatten(list(n.args) + list(n.kwargs.values())):
                if isinstance(arg, torch.fx.Node) and arg.name not in names:
                    v = self.env.get(arg.name)
                    if isinstance(v, Value) and v not in inputs:
                        inputs.append(v)
        outputs = [n for n in nodes if any(u.name not in names for u in n.users)]
        module = _clean_path(path)
        prefix = module + "." if module else ""
        state = {k[len(prefix) :]: _to_numpy(t) for k, t in self.program.state_dict.items() if k.startswith(prefix)}
        call = ModuleCall(self, module, short, inputs, nodes, outputs, state)
        translator: Callable = lookup("torch->ir", f"module.{short}")  # type: ignore[assignment]
        results = translator(call)
        if len(results) != len(outputs):
            raise GraphError(
                f"{module} ({short}): the translator returned {len(results)} values for {len(outputs)} outputs"
            )
        for n in nodes:
            self.env[n.name] = None
        for n, v in zip(outputs, results):
            self.env[n.name] = v
            val = n.meta.get("val")
            if isinstance(v, Value) and hasattr(val, "shape"):
                expected = _shape(val, batch=True, where=n.name)
                if len(expected) != v.rank or any(
                    a is not None and b is not None and a != b for a, b in zip(v.shape, expected)
                ):
                    raise GraphError(
                        f"{module} ({short}): the translation produced shape {v.shape}, PyTorch computes {expected}"
                    )

    def _add_input(self, node: Any) -> Value:
        val = node.meta.get("val")
        if val is None or not hasattr(val, "shape"):
            raise UnsupportedOpError(
                [(node.name, type(val).__name__, "only tensor inputs are supported")], where="the PyTorch reader"
            )
        shape = _shape(val, batch=True, where=f"input {node.name!r}")
        if isinstance(val.shape[0], int):  # a dynamic batch is a torch.SymInt, no int
            self.static_batch = int(val.shape[0])
        if self.example_batch is None:
            with contextlib.suppress(TypeError, ValueError):
                self.example_batch = int(val.shape[0])  # of a SymInt: the size in the export's example
        value = self.graph.add_input(identifier(node.name), shape, dtype_name(val.dtype))
        for axis, size in enumerate(val.shape[1:], start=1):
            expr = getattr(getattr(size, "node", None), "expr", None)
            if expr is not None and getattr(expr, "is_Symbol", False):
                self._size_refs.setdefault(expr, (value, axis))
        return value

    # -- calls ----------------------------------------------------------------------------
    def _resolve(self, arg: Any) -> Any:
        import torch.fx

        if isinstance(arg, torch.fx.Node):
            return self.env[arg.name]
        if isinstance(arg, (list, tuple)):
            return type(arg)(self._resolve(a) for a in arg)
        if isinstance(arg, dict):
            return {k: self._resolve(v) for k, v in arg.items()}
        return arg

    def _call(self, node: Any) -> Any:
        key = aten_key(node.target)
        args = self._resolve(node.args)
        kwargs = self._resolve(node.kwargs)
        if key in IGNORED:
            return None
        if key in _PYTHON_OPS:
            return _PYTHON_OPS[key](*args)
        if key in _SYM_OPS:
            return _SYM_OPS[key](self, node, *args)
        bound = bind_arguments(node.target, args, kwargs)
        if key in PASS_THROUGH:
            return bound.get("input", bound.get("self", args[0] if args else None))
        flat = _flatten(list(bound.values()))
        if key in FACTORIES and node.name in self._constant and self.options.fold_constants:
            return self._fold(node, args, kwargs)
        deferred = next((a for a in flat if isinstance(a, Deferred)), None)
        if deferred is not None:
            return deferred.apply(self, node, key, bound)
        computed = (
            any(isinstance(a, Const) for a in flat) or node.name in self._constant
        )  # arange(7) has no tensor argument
        if key == "aten.embedding" and learned_rows(bound) is not None:
            computed = False  # rows of a learned table (BERT's position embeddings): they stay a trainable weight
        if self.options.fold_constants and not any(isinstance(a, (Value, *_BATCHED)) for a in flat) and computed:
            folded = self._fold(node, args, kwargs)
            if folded is not LEARNED:
                return folded
            # arithmetic on a learned tensor (a weight-normed kernel, a conv applied to a fixed
            # position grid): translated, so that the parameters stay weights training reaches;
            # where its translator cannot take constants, folded (and the tensor listed as frozen)
            try:
                return self._translate_unbatched(node, key, bound)
            except KtorchError:
                return self._fold(node, args, kwargs, keep_learned=False)
        shapes = _meta_shapes(node)
        chain = _view_chain(node) if _mutates(node) and key in WRITES else []
        if chain and isinstance(self.env.get(chain[-1].name), Value):
            # an in-place write into a tensor the model computes: later readers see the result
            views = tuple((aten_key(n.target), tuple(n.args[1:])) for n in reversed(chain[:-1]))
            new, view = self.translate(node, key, bound, shapes, written=self.env[chain[-1].name], views=views)
            self.env[chain[-1].name] = new
            return view
        values = [a for a in flat if isinstance(a, Value)]
        if values and all(v in self._unbatched for v in values) and not any(isinstance(a, _BATCHED) for a in flat):
            return self._translate_unbatched(node, key, bound)  # further arithmetic on parameters only
        return self.translate(node, key, bound, shapes)

    def _translate_unbatched(self, node: Any, key: str, bound: dict[str, Any]) -> Any:
        """A call on parameters and buffers only (EVA's torch.cat((q_bias, k_bias, v_bias))):
        translated with no axis taken for the batch, its results remembered as such, so that
        a call on them (F.linear's computed bias) is one too."""
        result = self.translate(node, key, bound, _meta_shapes(node, batch=False), unbatched=True)
        self._unbatched.update(v for v in _flatten([result]) if isinstance(v, Value))
        return result

    def translate(self, node: Any, key: str, bound: dict[str, Any], meta_shapes: list[tuple], **extra: Any) -> Any:
        """Hand one ATen call to its translator; `meta_shapes` are the shapes its outputs
        must have in the graph (the batch axis as None); `extra` fills AtenCall's other fields."""
        translator: Callable = lookup("torch->ir", key)  # type: ignore[assignment]
        if translator is None:
            raise UnsupportedOpError([(node.name, key, "no translator")], where="the PyTorch reader")
        module, cls = module_of(node)
        leaf = _is_leaf(cls) and bool(module)
        if leaf:
            # a module called several times: each call is its own (weightless) layer
            count = self._leaf_calls.get(module + key, 0)
            self._leaf_calls[module + key] = count + 1
        val = node.meta.get("val")
        vals = list(val) if isinstance(val, (list, tuple)) else [val]
        call = AtenCall(
            reader=self,
            key=key,
            fx_name=node.name,
            args=bound,
            module=module,
            module_class=cls.rsplit(".", 1)[-1],
            leaf=leaf,
            meta_shapes=meta_shapes,
            meta_dtypes=[dtype_name(getattr(v, "dtype", None)) for v in vals],
            **extra,
        )
        try:
            result = translator(call)
        except (UnsupportedOpError, TorchOpError):
            raise
        except KtorchError as exc:
            raise TorchOpError(f"{call.where}: {exc}") from exc
        except (TypeError, AttributeError) as exc:
            sizes = [a for a in _flatten(list(bound.values())) if isinstance(a, SymSize)]
            if sizes:  # a tensor argument that only a run-time size determines
                raise call.unsupported(f"takes {sizes[0]!r}, which depends on a size known only at run time") from exc
            dynamic = any(None in s[1:] for s in meta_shapes if s) or any(
                isinstance(a, Value) and None in a.shape[1:] for a in _flatten(list(bound.values()))
            )
            if not dynamic or isinstance(exc, AttributeError):
                raise
            raise call.unsupported(
                "needs sizes that the export keeps dynamic (a sequence length or image size known only at run time)"
            ) from exc
        self._check_shapes(call, result[1] if call.written is not None else result)
        return result

    _BATCH_SIZES = (2, 3)

    def _batch_only_call(self, node: Any) -> Any:
        """A call that depends on constants and the batch size only (Hugging Face's mask
        helpers: arange(batch), index, cumsum, ...). It is evaluated at conversion time for
        two batch sizes; where every example gets the same rows, it is that (1, ...)
        constant. A call with a translator (expand to the batch) is also translated."""
        import torch
        import torch.fx

        def concrete(arg: Any, b: int) -> Any:
            if isinstance(arg, torch.fx.Node):
                if arg.name in self._batch_values:
                    return self._batch_values[arg.name][b]
                v = self.env.get(arg.name)
                return torch.from_numpy(np.array(v.array)) if isinstance(v, Const) else v
            if isinstance(arg, (list, tuple)):
                return type(arg)(concrete(a, b) for a in arg)
            return arg

        key = aten_key(node.target)
        if key == "aten.sym_size":
            values = {b: b for b in self._BATCH_SIZES}
        else:
            try:
                with torch.no_grad():
                    values = {
                        b: node.target(*concrete(node.args, b), **concrete(dict(node.kwargs), b))
                        for b in self._BATCH_SIZES
                    }
            except Exception:  # noqa: BLE001 - an operand only its translator understands
                return self._call(node)
        self._batch_values[node.name] = values
        if key in _SYM_OPS or key in _PYTHON_OPS or key in PASS_THROUGH:
            return self._call(node)  # a pass-through keeps what its input is (a translated value stays one)
        if lookup("torch->ir", key) is not None:
            try:
                return self._call(node)
            except KtorchError:
                pass  # an operand is batch-dependent data only the evaluation below knows
        a, b = (values[n] for n in self._BATCH_SIZES)
        if not _same_rows(a, b):
            if all(
                isinstance(t, torch.Tensor)
                and t.shape[:1] == (n,)
                and t.numel() == n
                and torch.equal(t.flatten(), torch.arange(n))
                for n, t in values.items()
            ):
                return BatchRange(a.ndim)
            return BatchExpr(f"{node.name} (depends on the batch size)")
        args = _flatten(list(node.args) + list(node.kwargs.values()))
        learned = [self.env.get(a.name) for a in args if isinstance(a, torch.fx.Node)]
        self._frozen.update(
            c.name if c.table is None else c.table.name for c in learned if isinstance(c, Const) and c.learned
        )
        return Const(node.name, _to_numpy(a[:1]))

    # the sizes a size-only call is evaluated at: the batch at 2 and 3, every other symbolic size
    # at the largest length its tables need (the range's end, at most _SIZE_CAP) and one shorter
    _SIZE_CAP = 512

    def _size_variants(self) -> dict[str, dict[Any, int]]:
        ep = self.program
        users = set(ep.graph_signature.user_inputs)
        batch, other = set(), {}
        for node in ep.graph.nodes:
            val = node.meta.get("val") if node.op == "placeholder" and node.name in users else None
            for axis, size in enumerate(getattr(val, "shape", ())):
                expr = getattr(getattr(size, "node", None), "expr", None)
                if expr is None or not getattr(expr, "is_Symbol", False):
                    continue
                if axis == 0:
                    batch.add(expr)
                else:
                    other.setdefault(expr, size.node.hint)
        self._batch_symbols = batch
        if not other:
            return {}
        ranges = getattr(ep, "range_constraints", {}) or {}
        big, small = {}, {}
        for sym, hint in other.items():
            bound = ranges.get(sym)
            try:
                high = int(bound.upper) if bound is not None else self._SIZE_CAP
            except (TypeError, ValueError, AttributeError, OverflowError):
                high = self._SIZE_CAP
            low = int(bound.lower) if bound is not None else 2
            big[sym] = max(min(high, self._SIZE_CAP), int(hint))
            small[sym] = int(hint) - 1 if int(hint) - 1 >= max(low, 2) else int(hint) + 1
        return {
            "big": {**dict.fromkeys(batch, 2), **big},
            "big3": {**dict.fromkeys(batch, 3), **big},
            "small": {**dict.fromkeys(batch, 2), **small},
        }

    def _size_only_call(self, node: Any) -> Any:
        """A call that depends on constants and sizes only, one of them a size the export keeps
        symbolic besides the batch (arange(seq), position ids sliced to the length, a causal mask,
        rotary tables). Evaluated at conversion time at the largest length and a shorter one:
        where the shorter result is the start of the longer one on each axis of that length, it
        is a SizeTable, cut at run time; the batch is handled as in _batch_only_call."""
        import torch
        import torch.fx

        variants = self._variants
        key = aten_key(node.target)

        def concrete(arg: Any, name: str, swap: Callable[[Const], Any] | None = None) -> Any:
            if isinstance(arg, torch.fx.Node):
                if swap is not None and arg.name in self._size_picks:
                    return swap(self._size_picks[arg.name][name])
                if arg.name in self._size_values:
                    return self._size_values[arg.name][name]
                if arg.name in self._batch_values:
                    return self._batch_values[arg.name][3 if name == "big3" else 2]
                v = self.env.get(arg.name)
                if swap is not None and isinstance(v, Const) and v.learned:
                    return swap(v)
                return torch.from_numpy(np.array(v.array)) if isinstance(v, Const) else v
            if isinstance(arg, (list, tuple)):
                return type(arg)(concrete(a, name, swap) for a in arg)
            return arg

        def run_at(name: str) -> Callable:
            def run(swap: Callable[[Const], Any] | None = None) -> Any:
                with torch.no_grad():
                    return node.target(*concrete(node.args, name, swap), **concrete(dict(node.kwargs), name, swap))

            return run

        if not variants:
            return self._call(node)
        try:
            if key == "aten.sym_size":
                expr = node.meta["val"].node.expr
                values = {n: int(expr.subs(assign)) for n, assign in variants.items()}
            else:
                values = {n: run_at(n)() for n in variants}
        except Exception as exc:  # noqa: BLE001 - report it where a translator meets the value
            return SymSize(f"{node.name} (could not be evaluated: {type(exc).__name__})")
        self._size_values[node.name] = values
        learned = {n: [a for a in self._size_args(node, n) if isinstance(a, Const) and a.learned] for n in variants}
        if any(learned.values()):
            # entries of a learned table picked by indices that depend on the length (T5's
            # relative-position bias): the index is what is cut at run time
            picks = {n: _picked(run_at(n), learned[n], values[n]) for n in variants}
            if any(p is None for p in picks.values()):
                return SymSize(f"{node.name} (computes with a learned tensor at sizes known only at run time)")
            self._size_picks[node.name] = {
                n: Const(node.name, _to_numpy(values[n]), table=p[0], index=p[1]) for n, p in picks.items()
            }
            values = {n: torch.from_numpy(p[1]) for n, p in picks.items()}  # the tables below are of indices
        big, big3, small = values["big"], values["big3"], values["small"]
        if not isinstance(big, torch.Tensor):
            if big == small and big == big3:
                return big
            expr = getattr(getattr(node.meta.get("val"), "node", None), "expr", None)
            return SymSize(str(node.meta.get("val", node.name)), self._size_refs.get(expr))
        if big.shape == big3.shape and torch.equal(big, big3):
            table = big
        elif _same_rows(big, big3):
            table, small = big[:1], small[:1]
        else:
            return BatchExpr(f"{node.name} (depends on the batch size)")
        axes = []
        cut = []
        for axis, (n_big, n_small) in enumerate(zip(table.shape, small.shape)):
            if n_big == n_small:
                cut.append(slice(None))
                continue
            sym = next(
                (s for s in self._size_refs if variants["big"].get(s) == n_big and variants["small"].get(s) == n_small),
                None,
            )
            if sym is None:
                return SymSize(f"{node.name} (a length that is not one of the inputs' sizes)")
            ref, ref_axis = self._size_refs[sym]
            axes.append((axis, ref, ref_axis))
            cut.append(slice(0, n_small))
        if table.ndim != small.ndim or not torch.equal(table[tuple(cut)], small):
            return SymSize(f"{node.name} (its values change with the length, not only its size)")
        picked = self._size_picks.get(node.name, {}).get("big")
        if not axes:
            if picked is not None:
                index = _to_numpy(table)
                return Const(node.name, picked.table.array.reshape(-1)[index], table=picked.table, index=index)
            return Const(node.name, _to_numpy(table))
        for _, ref, ref_axis in axes:  # the emitted model takes lengths up to the tables' length
            sym = next(s for s, r in self._size_refs.items() if r == (ref, ref_axis))
            self.graph.meta.setdefault("size_tables", {})[str(sym)] = variants["big"][sym]
        if picked is not None:
            index = _to_numpy(table)
            array = picked.table.array.reshape(-1)[index]
            return SizeTable(node.name, array, tuple(axes), table=picked.table, index=index)
        return SizeTable(node.name, _to_numpy(table), tuple(axes))

    def _size_args(self, node: Any, name: str) -> list[Any]:
        """The constants among a size-only call's arguments at size variant `name`: its learned
        parameters, and the learned entries earlier size-only calls picked."""
        import torch.fx

        out = []
        for a in _flatten(list(node.args) + list(node.kwargs.values())):
            if not isinstance(a, torch.fx.Node):
                continue
            if a.name in self._size_picks:
                out.append(self._size_picks[a.name][name])
            elif isinstance(self.env.get(a.name), Const):
                out.append(self.env[a.name])
        return out

    def _check_shapes(self, call: AtenCall, result: Any) -> None:
        outs = (
            [result]
            if isinstance(result, Value)
            else [r for r in (result or []) if isinstance(r, Value)]
            if isinstance(result, (list, tuple))
            else []
        )
        for v, expected in zip(outs, call.meta_shapes):
            if not expected:
                continue
            got = tuple(v.shape)
            if len(got) != len(expected) or any(
                a is not None and b is not None and a != b for a, b in zip(got, expected)
            ):
                raise GraphError(f"{call.where}: the translation produced shape {got}, PyTorch computes {expected}")

    def _fold(self, node: Any, args: Any, kwargs: Any, *, keep_learned: bool = True) -> Any:
        """Evaluate a call on constants. The tensors that an in-place call writes into (and
        the views it writes through) are kept as torch tensors, so that the write reaches
        every later reader, as in PyTorch."""
        import torch
        import torch.fx

        def unwrap(a: Any, fx: Any, swap: Callable[[Const], Any] | None = None) -> Any:
            if isinstance(fx, torch.fx.Node) and fx.name in self._tensors:
                return self._tensors[fx.name]
            if isinstance(a, Const):
                t = swap(a) if swap is not None and a.learned else torch.from_numpy(np.array(a.array))
                val = fx.meta.get("val") if isinstance(fx, torch.fx.Node) else None
                return (
                    t.reshape(()) if getattr(val, "ndim", None) == 0 and t.numel() == 1 else t
                )  # _to_numpy made it 1-d
            if isinstance(a, (list, tuple)):
                fxs = fx if isinstance(fx, (list, tuple)) and len(fx) == len(a) else [None] * len(a)
                return type(a)(unwrap(i, f, swap) for i, f in zip(a, fxs))
            return a

        fx_kwargs = dict(node.kwargs)

        def run(swap: Callable[[Const], Any] | None = None) -> Any:
            with torch.no_grad():
                return node.target(
                    *unwrap(args, node.args, swap), **{k: unwrap(v, fx_kwargs.get(k), swap) for k, v in kwargs.items()}
                )

        if aten_key(node.target) in FACTORIES:  # x.new_zeros(size): only the dtype of x matters
            args = (torch.zeros((), dtype=node.meta["val"].dtype), *args[1:])
        out = run()
        if node.name in self._aliased and isinstance(out, torch.Tensor):
            self._tensors[node.name] = out
        if _mutates(node):
            for n in _view_chain(node):  # refresh the constants the write changed
                if n.name in self._tensors:
                    self.env[n.name] = Const(n.name, _to_numpy(self._tensors[n.name]))
        if isinstance(out, torch.Tensor):
            learned = [a for a in _flatten(list(args) + list(kwargs.values())) if isinstance(a, Const) and a.learned]
            plain = [a for a in learned if a.table is None]
            if (
                aten_key(node.target) in RELAYOUT
                and len(plain) == len(learned) == 1
                and plain[0].array.size == out.numel()
            ):
                # a parameter only reshaped (ConvNeXt's gamma.reshape(1, -1, 1, 1)): still that learned weight
                return Const(plain[0].name, _to_numpy(out), True)
            if learned and node.name not in self._aliased and not _mutates(node):
                picked = _picked(run, learned, out)
                if picked is not None:
                    return Const(node.name, _to_numpy(out), table=picked[0], index=picked[1])
                if not _depends_on_values(run, learned, out):
                    return Const(node.name, _to_numpy(out))  # x.new_zeros(...), zeros_like(w): no weight in it
                if (
                    keep_learned
                    and aten_key(node.target) not in FACTORIES
                    and lookup("torch->ir", aten_key(node.target)) is not None
                ):
                    return LEARNED
                self._frozen.update(a.name if a.table is None else a.table.name for a in learned)
            return Const(f"{node.name}", _to_numpy(out))
        if isinstance(out, (list, tuple)):
            return [
                Const(f"{node.name}_{i}", _to_numpy(o)) if isinstance(o, torch.Tensor) else o for i, o in enumerate(out)
            ]
        return out


def _meta_shapes(node: Any, *, batch: bool = True) -> list[tuple]:
    """The graph shapes of a call's outputs, from the example values torch recorded (() for a
    non-tensor); with `batch`, axis 0 is the batch (None)."""
    val = node.meta.get("val")
    vals = list(val) if isinstance(val, (list, tuple)) else [val]
    return [_shape(v, batch=batch, where=node.name) if hasattr(v, "shape") else () for v in vals]


def _depends_on_values(run: Callable, learned: list[Const], out: Any) -> bool:
    """Whether a call's result changes when its learned arguments take other values (it does
    not for zeros_like(weight) or a size read from it)."""
    import torch

    gen = torch.Generator().manual_seed(0)

    def other(c: Const) -> Any:
        t = torch.from_numpy(np.array(c.array))
        return t + torch.rand(t.shape, generator=gen).to(t.dtype) + 1 if t.is_floating_point() else t

    try:
        changed = run(other)
    except Exception:  # noqa: BLE001 - values it cannot take: it reads them
        return True
    return not (isinstance(changed, torch.Tensor) and changed.shape == out.shape and torch.equal(changed, out))


def _picked(run: Callable, learned: list[Const], out: Any) -> tuple[Const, np.ndarray] | None:
    """(table, index) when a call on constants only picks entries of one learned table
    (indexing, slicing, views, permutes, concatenation of its own pieces): out ==
    table.reshape(-1)[index]. Found by running the call on the table's element numbers, and
    checked on the real values and on random ones, so that arithmetic is never mistaken for
    a pick. None otherwise (the result is then folded, and the table frozen in it)."""
    import torch

    tables = {c.name if c.table is None else c.table.name: c if c.table is None else c.table for c in learned}
    if len(tables) != 1:
        return None
    (table,) = tables.values()

    def number(c: Const) -> np.ndarray:
        return np.arange(table.array.size).reshape(table.array.shape) if c.table is None else c.index

    probe = torch.from_numpy(np.random.default_rng(0).standard_normal(table.array.size))
    try:
        index = run(lambda c: torch.from_numpy(number(c)))
        if not isinstance(index, torch.Tensor) or index.shape != out.shape:
            return None
        if index.is_floating_point():  # a zero mask added (T5's position bias): exact below 2**24
            if table.array.size > 2**24 or not bool((index == index.round()).all()):
                return None
            index = index.to(torch.int64)
        if index.dtype != torch.int64:
            return None
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= table.array.size):
            return None
        probed = run(lambda c: probe[torch.from_numpy(number(c))])
    except Exception:  # noqa: BLE001 - an op that takes no integer tensors computes, it does not pick
        return None
    flat = torch.from_numpy(table.array.reshape(-1))
    if not (isinstance(probed, torch.Tensor) and torch.equal(probed, probe[index]) and torch.equal(out, flat[index])):
        return None
    return table, np.ascontiguousarray(index.numpy())


# `_fold`'s answer for a call that computes with a learned tensor: translate it instead
LEARNED = object()

# arguments that carry the batch size: a call that takes one is not on parameters only
_BATCHED = (SymbolicBatch, BatchExpr, BatchRange, SizeTable)

# ops that only lay out the elements of their tensor anew: applied to a parameter, the result
# is still that parameter (a trainable weight), not a frozen constant
RELAYOUT = {
    "aten.view", "aten.reshape", "aten._unsafe_view", "aten.unsqueeze", "aten.squeeze", "aten.permute",
    "aten.transpose", "aten.t", "aten.flatten", "aten.unflatten", "aten.contiguous", "aten.clone",
    "aten.alias", "aten.detach", "aten.view_as", "aten.reshape_as",
}  # fmt: skip
# in-place writes whose result every later reader of the written tensor sees (writes.py)
WRITES = {"aten.copy", "aten.fill", "aten.masked_fill"}
# x.new_zeros(size) and friends read only the dtype of x: with a static size, a constant
FACTORIES = {"aten.new_zeros", "aten.new_ones", "aten.new_full", "aten.new_empty"}
# ops whose output is a view of their first argument (an in-place op on it writes through)
VIEWS = {
    "aten.slice",
    "aten.select",
    "aten.view",
    "aten.narrow",
    "aten.unsqueeze",
    "aten.squeeze",
    "aten.permute",
    "aten.transpose",
    "aten.t",
    "aten.expand",
    "aten.alias",
    "aten.diagonal",
    "aten.as_strided",
    "aten.unflatten",
}


def _is_factory(n: Any) -> bool:
    size = n.args[1] if len(n.args) > 1 else n.kwargs.get("size")
    return aten_key(n.target) in FACTORIES and isinstance(size, (list, tuple)) and all(isinstance(d, int) for d in size)


def _mutates(n: Any) -> bool:
    """An in-place call (fill_, copy_, add_ ...) that writes into its first argument."""
    schema = getattr(n.target, "_schema", None)
    return n.op == "call_function" and bool(getattr(schema, "is_mutable", False)) and bool(n.args)


def _view_chain(n: Any) -> list[Any]:
    """The fx nodes a mutation writes into: its first argument and the views it was taken from."""
    import torch.fx

    chain = []
    a = n.args[0]
    while isinstance(a, torch.fx.Node):
        chain.append(a)
        if a.op != "call_function" or aten_key(a.target) not in VIEWS or not a.args:
            break
        a = a.args[0]
    return chain


def _constant_nodes(graph: Any, constant_inputs: set[str]) -> set[str]:
    """Names of the calls that depend on parameters, buffers and literals only (never on
    a user input or the symbolic batch size): the reader folds them."""
    import torch.fx

    constant = set(constant_inputs)
    for n in graph.nodes:
        if n.op != "call_function" or aten_key(n.target) in _SYM_OPS:
            continue
        if _is_factory(n):
            constant.add(n.name)
            continue
        args = [a for a in _flatten(list(n.args) + list(n.kwargs.values())) if isinstance(a, torch.fx.Node)]
        if all(a.name in constant for a in args):
            constant.add(n.name)
    return constant


def _batch_only_nodes(graph: Any, constant: set[str]) -> set[str]:
    """Names of the calls that depend on constants and the batch size (x.size(0)) only,
    not on the data and not on constants alone."""
    import torch.fx

    batch: set[str] = set()
    for n in graph.nodes:
        if n.op != "call_function" or n.name in constant:
            continue
        args = [a for a in _flatten(list(n.args) + list(n.kwargs.values())) if isinstance(a, torch.fx.Node)]
        batch_size = (
            aten_key(n.target) == "aten.sym_size"
            and len(n.args) > 1
            and n.args[1] == 0
            and args[:1]
            and args[0].op == "placeholder"
        )
        if batch_size or (
            args and all(a.name in constant or a.name in batch for a in args) and any(a.name in batch for a in args)
        ):
            batch.add(n.name)
    return batch


def _same_rows(a: Any, b: Any) -> bool:
    """Whether `a` and `b`, a call's results at batch 2 and at batch 3, give every example the
    same rows (Hugging Face's masks before they meet the data): then they are a[:1]."""
    import torch

    return (
        isinstance(a, torch.Tensor)
        and isinstance(b, torch.Tensor)
        and a.ndim > 0
        and tuple(a.shape[:1]) == (2,)
        and tuple(b.shape[:1]) == (3,)
        and bool((a == a[:1]).all())
        and bool((b == b[:1]).all())
        and torch.equal(a[:1], b[:1])
    )


def _size_only_nodes(graph: Any, known: set[str], batch: set[Any]) -> set[str]:
    """Names of the calls that depend on constants and sizes only, one of them a size kept
    symbolic besides the batch (x.size(1) of a dynamic length); lookups in a table
    (aten.embedding) are translated instead, so that a learned table stays a weight."""
    import torch.fx

    sizes: set[str] = set()
    for n in graph.nodes:
        if (
            n.op != "call_function"
            or n.name in known
            or (aten_key(n.target) == "aten.embedding" and _batch_first(n, batch))
        ):
            continue
        args = [a for a in _flatten(list(n.args) + list(n.kwargs.values())) if isinstance(a, torch.fx.Node)]
        root = (
            aten_key(n.target) == "aten.sym_size"
            and len(n.args) > 1
            and n.args[1] != 0
            and getattr(n.meta.get("val"), "node", None) is not None  # a torch.SymInt
        )
        if root or (
            args and all(a.name in known or a.name in sizes for a in args) and any(a.name in sizes for a in args)
        ):
            sizes.add(n.name)
    return sizes


def _batch_first(n: Any, batch: set[Any]) -> bool:
    """Whether an embedding's indices keep a batch (or size-1) first axis (BERT's position ids,
    (1, length)): then it is translated as an Embedding layer on the ids cut at run time. Indices
    whose first axis is a length (T5's (query, key) buckets) are picked at conversion time."""
    indices = n.args[1] if len(n.args) > 1 else n.kwargs.get("indices")
    val = getattr(indices, "meta", {}).get("val")
    if val is None or not len(val.shape) or isinstance(val.shape[0], int):
        return True
    return getattr(getattr(val.shape[0], "node", None), "expr", None) in batch


def _live_nodes(graph: Any) -> set[str]:
    """Names of the nodes the program's outputs depend on."""
    import torch.fx

    live: set[str] = set()
    frontier = [n for n in graph.nodes if n.op == "output"]
    mutations = [n for n in graph.nodes if _mutates(n) and not n.users]
    while frontier:
        while frontier:
            n = frontier.pop()
            if n.name in live:
                continue
            live.add(n.name)
            frontier.extend(a for a in _flatten(list(n.args) + list(n.kwargs.values())) if isinstance(a, torch.fx.Node))
        # an in-place write (Swin's mask: zeros, then fill_ on slices of it) into a live tensor
        for n in mutations:
            if n.name not in live and any(a.name in live for a in _view_chain(n)):
                frontier.append(n)
    return live


def _users(graph: Any, name: str) -> list[Any]:
    node = next((n for n in graph.nodes if n.name == name), None)
    return list(node.users) if node is not None else []


def _flatten(obj: Any) -> list[Any]:
    if isinstance(obj, (list, tuple)):
        return [i for o in obj for i in _flatten(o)]
    return [obj]


def _to_numpy(tensor: Any) -> np.ndarray:
    import torch

    t = tensor.detach().cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return np.ascontiguousarray(t.numpy())


def _shape(val: Any, *, batch: bool, where: str) -> tuple:
    """A torch shape as a graph shape: the batch axis and every symbolic size (a size the
    export kept dynamic: a sequence length, an image side) are None."""
    dims: list[int | None] = []
    for i, d in enumerate(val.shape):
        if i == 0 and batch:
            dims.append(None)
            continue
        dims.append(int(d) if isinstance(d, int) else None)  # int() of a torch.SymInt would give its example size
    if batch and not dims:
        raise UnsupportedOpError([(where, "scalar", "a 0-d tensor has no batch axis")], where="the PyTorch reader")
    return tuple(dims)


def _getitem(seq: Any, index: int) -> Any:
    return seq[index]


def _sym_size(reader: TorchReader, node: Any, x: Any, dim: int) -> Any:
    if isinstance(x, Value):
        d = dim % x.rank
        if d and x.shape[d] is None:
            return SymSize(str(node.meta.get("val", node.name)))
        return BATCH if d == 0 else x.shape[d]
    if isinstance(x, Const):
        return x.array.shape[dim]
    if hasattr(x, "size"):  # a MergedBatch
        return x.size(dim)
    raise GraphError(f"{node.name}: size() of {x!r}")


def _scaled_batch(fn: Callable, args: tuple) -> Any:
    """batch * k, k * batch and (batch * k) // d (d dividing k) as a multiple of the batch."""
    factors = [batch_factor(a) for a in args]
    if len(args) != 2 or sum(f is not None for f in factors) != 1:
        return None
    f, other = (factors[0], args[1]) if factors[0] is not None else (factors[1], args[0])
    if not isinstance(other, int) or isinstance(other, bool):
        return None
    if fn is operator.mul:
        f = f * other
    elif fn in (operator.floordiv, operator.truediv) and factors[0] is not None and other and f % other == 0:
        f = f // other
    else:
        return None
    return BATCH if f == 1 else BatchExpr(f"batch * {f}", f) if f > 0 else None


def _sym_arith(fn: Callable) -> Callable:
    def apply(reader: TorchReader, node: Any, *args: Any) -> Any:
        if any(isinstance(a, SymSize) for a in args):
            return SymSize(str(node.meta.get("val", node.name)))
        if any(isinstance(a, (SymbolicBatch, BatchExpr)) for a in args):
            scaled = _scaled_batch(fn, args)
            return scaled if scaled is not None else BatchExpr(f"{getattr(fn, '__name__', 'op')}{tuple(args)}")
        return fn(*args)

    return apply


_PYTHON_OPS: dict[str, Callable] = {"getitem": _getitem}
_SYM_OPS: dict[str, Callable] = {
    "aten.sym_size": _sym_size,
    "mul": _sym_arith(operator.mul),
    "add": _sym_arith(operator.add),
    "sub": _sym_arith(operator.sub),
    "floordiv": _sym_arith(operator.floordiv),
    "truediv": _sym_arith(operator.truediv),
    "sym_int": _sym_arith(int),
    "sym_float": _sym_arith(float),
}


def read_program(program: Any, *, name: str = "model", options: ReadOptions | None = None) -> Graph:
    """Read an ExportedProgram into a graph (axis 0 of every input is the dynamic batch)."""
    return TorchReader(program, name, options).read()
