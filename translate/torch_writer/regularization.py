"""PyTorch code for training-time behaviour: dropout and noise layers, activity
regularization, and the class members that carry the source's training setup.

A node's `training` facts (graph/training.py) become readable members of the emitted
nn.Module: `requires_grad_(False)` in `__init__` for frozen layers, a `train()` override that
keeps frozen batch norms in eval mode (Keras 3 normalises a non-trainable
BatchNormalization with its moving statistics even in training), `regularization_loss()`
to add to the training loss, and `apply_constraints()` to call after each optimizer step.
"""

from __future__ import annotations

import numpy as np

from ...graph import Graph, Node
from ...graph.errors import GraphError
from ...graph.training import KERAS_EPSILON, is_frozen
from ..registry import register
from .codegen import TorchEmitter, call, py_literal

_SHARED_DROPOUT = '''class SharedDropout(nn.Module):
    """Dropout with one keep/drop decision shared along `dims` (Keras Dropout with a noise_shape)."""

    def __init__(self, p: float, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.p = p
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        shape = [1 if i in self.dims else size for i, size in enumerate(x.shape)]
        keep = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, dims={self.dims}"
'''

_GAUSSIAN_NOISE = '''class GaussianNoise(nn.Module):
    """Keras GaussianNoise: adds N(0, stddev**2) noise while training; the identity in eval mode."""

    def __init__(self, stddev: float) -> None:
        super().__init__()
        self.stddev = stddev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.stddev == 0.0:
            return x
        return x + torch.randn_like(x) * self.stddev

    def extra_repr(self) -> str:
        return f"stddev={self.stddev}"
'''

_GAUSSIAN_DROPOUT = '''class GaussianDropout(nn.Module):
    """Keras GaussianDropout: multiplies by N(1, p / (1 - p)) noise while training; the identity in eval mode."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * (1.0 + torch.randn_like(x) * (self.p / (1.0 - self.p)) ** 0.5)

    def extra_repr(self) -> str:
        return f"p={self.p}"
'''

_DROPOUT_ND = {3: "nn.Dropout1d", 4: "nn.Dropout2d", 5: "nn.Dropout3d"}


@register("ir->torch", "dropout")
def dropout_to_torch(node: Node, em: TorchEmitter) -> None:
    """nn.Dropout / nn.AlphaDropout; channel dropout (shared over all spatial axes of a
    channels-first tensor) as nn.Dropout1d/2d/3d / nn.FeatureAlphaDropout; any other shared
    axes as the SharedDropout helper."""
    x = node.inputs[0]
    rate = float(node.attrs["rate"])
    shared = tuple(node.attrs["shared_axes"])
    alpha = node.attrs["alpha"]
    if not shared:
        expr = call("nn.AlphaDropout" if alpha else "nn.Dropout", rate)
    elif x.rank in _DROPOUT_ND and shared == tuple(range(2, x.rank)):
        expr = call("nn.FeatureAlphaDropout" if alpha else _DROPOUT_ND[x.rank], rate)
    elif not alpha:
        expr = call(em.helper("SharedDropout", _SHARED_DROPOUT), rate, shared)
    else:
        raise GraphError(f"{node.name}: alpha dropout shared along axes {shared} has no PyTorch module")
    em.assign(node, f"{em.module(node, expr)}({em.var(x)})")


@register("ir->torch", "gaussian_noise")
def gaussian_noise_to_torch(node: Node, em: TorchEmitter) -> None:
    mod = em.module(node, call(em.helper("GaussianNoise", _GAUSSIAN_NOISE), float(node.attrs["stddev"])))
    em.assign(node, f"{mod}({em.var(node.inputs[0])})")


@register("ir->torch", "gaussian_dropout")
def gaussian_dropout_to_torch(node: Node, em: TorchEmitter) -> None:
    mod = em.module(node, call(em.helper("GaussianDropout", _GAUSSIAN_DROPOUT), float(node.attrs["rate"])))
    em.assign(node, f"{mod}({em.var(node.inputs[0])})")


@register("ir->torch", "activity_regularization")
def activity_regularization_to_torch(node: Node, em: TorchEmitter) -> None:
    """No statement of its own: in training mode forward keeps the tensor for regularization_loss()."""
    v = em.var(node.inputs[0])
    em.value_names[id(node.output)] = v
    em.lines.append("if self.training:")
    em.lines.append(f"    self.activations[{node.name!r}] = {v}")


# -- class members --------------------------------------------------------------------------


def _parameter(node: Node, weight: str, em: TorchEmitter) -> str:
    """`self.<path>` of the emitted parameter that holds `node`'s weight."""
    array = node.weights[weight]
    own = em.node_state.get(id(node), [])
    for keys in (own, list(em.state)):
        for key in keys:
            held = em.state[key]
            if held.size == array.size and np.shares_memory(held, array):
                return f"self.{key}"
        for key in keys:
            held = em.state[key]
            if held.size == array.size and np.array_equal(held.reshape(array.shape), array):
                return f"self.{key}"
    raise GraphError(f"{node.name}: cannot find the emitted parameter of its weight {weight!r}")


def _term(factors: dict[str, float], x: str) -> str | None:
    parts = []
    if factors.get("l1"):
        parts.append(f"{py_literal(float(factors['l1']))} * {x}.abs().sum()")
    if factors.get("l2"):
        parts.append(f"{py_literal(float(factors['l2']))} * {x}.square().sum()")
    return " + ".join(parts) or None


def _norms(x: str, axes: tuple[int, ...]) -> str:
    dim = axes[0] if len(axes) == 1 else axes
    return f"{x}.square().sum(dim={py_literal(dim)}, keepdim=True).sqrt()"


def _constraint_lines(x: str, spec: dict) -> list[str]:
    kind = spec["kind"]
    eps = py_literal(KERAS_EPSILON)
    if kind == "non_neg":
        return [f"{x}.clamp_(min=0.0)"]
    norms = _norms(x, tuple(spec["axes"]))
    if kind == "max_norm":
        return [
            f"norms = {norms}",
            f"{x}.mul_(norms.clamp(0.0, {py_literal(float(spec['max_value']))}) / ({eps} + norms))",
        ]
    if kind == "unit_norm":
        return [f"{x}.div_({eps} + {norms})"]
    rate = float(spec["rate"])
    low, high = py_literal(float(spec["min_value"])), py_literal(float(spec["max_value"]))
    desired = f"{py_literal(rate)} * norms.clamp({low}, {high})"
    if rate != 1.0:
        desired += f" + (1.0 - {py_literal(rate)}) * norms"
    return [f"norms = {norms}", f"{x}.mul_(({desired}) / ({eps} + norms))"]


def training_members(graph: Graph, em: TorchEmitter, cls: str) -> tuple[list[str], list[str]]:
    """Lines for the end of `__init__` and the methods after `forward` (class-body indented)."""
    init: list[str] = []
    methods: list[str] = []
    frozen = [n for n in graph.nodes if is_frozen(n)]
    frozen_attrs = list(dict.fromkeys(a for n in frozen for a in em.node_modules.get(id(n), [])))
    if frozen_attrs:
        init.append("# frozen in the source (Keras trainable=False / requires_grad=False): no gradient, no update")
        init += [f"self.{a}.requires_grad_(False)" for a in frozen_attrs]
    constant = [
        _parameter(node, weight, em)
        for node in graph.nodes
        if not is_frozen(node)
        for weight in node.training.get("constant", [])
    ]
    if constant:
        init.append("# torch's second recurrent bias, which the source (one bias) does not have: it stays zero")
        init += [f"{param}.requires_grad_(False)" for param in constant]
    activity = [n for n in graph.nodes if n.op == "activity_regularization"]
    if activity:
        # a dict attribute written in forward: torch.jit.script (deprecated) refuses it; export and compile take it
        init.append(
            "self.activations: dict[str, torch.Tensor] = {}  # the outputs activity regularizers read, kept in training"
        )

    frozen_bn = list(dict.fromkeys(a for n in frozen if n.op == "batch_norm" for a in em.node_modules.get(id(n), [])))
    if frozen_bn:
        methods += [
            "",
            f"def train(self, mode: bool = True) -> {cls}:",
            '    """As nn.Module.train, but the frozen batch norms stay in eval mode: Keras 3 normalises a',
            "    non-trainable BatchNormalization with its moving statistics, and never updates them,",
            '    even in training."""',
            "    super().train(mode)",
            *[f"    self.{a}.eval()" for a in frozen_bn],
            "    return self",
        ]

    terms: list[str] = []
    seen: set[str] = set()
    for node in graph.nodes:
        if is_frozen(node):
            continue  # Keras adds the regularization losses of trainable weights only
        for weight, factors in node.training.get("regularizers", {}).items():
            param = _parameter(node, weight, em)
            term = _term(factors, param)
            if term is not None and param not in seen:
                seen.add(param)
                terms.append(term)
                # by parameter name in the manifest: a round trip back to Keras restores them
                graph.meta.setdefault("parameter_regularizers", {})[param.removeprefix("self.")] = dict(factors)
    activity_lines: list[str] = []
    for node in activity:
        term = _term(node.attrs, "y")
        if term is not None:
            activity_lines += [
                f"y = self.activations[{node.name!r}]",
                f"loss = loss + ({term}) / y.shape[0]",
            ]
    if terms or activity_lines:
        body = [f"loss = {terms[0]}" if terms else "loss = torch.zeros(())"]
        body += [f"loss = loss + {t}" for t in terms[1:]]
        if activity_lines:
            body.append("# activity regularizers: on the outputs of the last forward in training mode, per example")
            body += activity_lines
        methods += [
            "",
            "def regularization_loss(self) -> torch.Tensor:",
            '    """The source\'s regularization losses (Keras L1/L2 kernel, bias and activity regularizers,',
            '    l1 * sum(|w|) + l2 * sum(w**2)): add it to the training loss."""',
            *[f"    {line}" for line in body],
            "    return loss",
        ]

    projections: list[str] = []
    for node in graph.nodes:
        if is_frozen(node):
            continue  # Keras's optimizer constrains the variables it trains
        for weight, spec in node.training.get("constraints", {}).items():
            param = _parameter(node, weight, em)
            projections += _constraint_lines(param, spec)
    if projections:
        methods += [
            "",
            "@torch.no_grad()",
            "def apply_constraints(self) -> None:",
            '    """The source\'s weight constraints (Keras kernel/bias constraints): call after every',
            '    optimizer step, as Keras projects the weights after each update."""',
            *[f"    {line}" for line in projections],
        ]
    return init, methods
