"""PyTorch code for BatchNorm, LayerNorm, GroupNorm and the other normalisations."""

from __future__ import annotations

import numpy as np

from ...graph import Node
from ..registry import register
from .codegen import TorchEmitter, call, py_literal
from .conv import compact

_BN = {2: "BatchNorm1d", 3: "BatchNorm1d", 4: "BatchNorm2d", 5: "BatchNorm3d"}

_KERAS_BN = '''class Keras{name}(nn.{name}):
    """nn.{name} that, in training, updates running_var with the biased batch variance, as
    Keras does (PyTorch's own uses the unbiased one); the same module in eval mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        var, mean = torch.var_mean(x, dim=[0] + list(range(2, x.dim())), unbiased=False)
        running_mean, running_var, momentum = self.running_mean, self.running_var, self.momentum
        if running_mean is not None and running_var is not None and momentum is not None:
            with torch.no_grad():
                running_mean.lerp_(mean, momentum)
                running_var.lerp_(var, momentum)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
'''


@register("ir->torch", "batch_norm")
def batch_norm_to_torch(node: Node, em: TorchEmitter) -> None:
    x = node.inputs[0]
    axis = node.attrs["axis"]
    c = node.weights["running_mean"].shape[0]
    state = {k: node.weights[k] for k in ("weight", "bias", "running_mean", "running_var")}
    state["num_batches_tracked"] = np.array(0, dtype=np.int64)
    cls = f"nn.{_BN[x.rank]}"
    if node.attrs["biased_running_var"]:
        em.functional()
        cls = em.helper(f"Keras{_BN[x.rank]}", _KERAS_BN.replace("{name}", _BN[x.rank]))
    mod = em.module(
        node, call(cls, int(c), eps=float(node.attrs["epsilon"]), momentum=float(node.attrs["momentum"])), state
    )
    v = em.var(x)
    em.assign(node, f"{mod}({v})" if axis == 1 else f"{mod}({v}.movedim({axis}, 1)).movedim(1, {axis})")


_CHANNEL_LN = '''class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over dim 1 of a channels-first tensor (Keras LayerNormalization on the channel axis)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).square().mean(1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.weight is not None:
            x = x * self.weight.view(shape)
        if self.bias is not None:
            x = x + self.bias.view(shape)
        return x
'''

_KERAS_RMS = '''def keras_rms_scaling(x: torch.Tensor, weight: torch.Tensor | None, dims: tuple[int, ...], eps: float) -> torch.Tensor:
    """Keras LayerNormalization(rms_scaling=True): x * rsqrt(var(x) + eps) * weight (no centring)."""
    x = x * torch.rsqrt(x.var(dim=dims, unbiased=False, keepdim=True) + eps)
    return x if weight is None else x * weight
'''


_LN_OVER = '''def layer_norm_over(x: torch.Tensor, dims: tuple[int, ...], weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """Layer normalisation over axes that nn.LayerNorm cannot take (not the trailing ones)."""
    mean = x.mean(dims, keepdim=True)
    var = (x - mean).square().mean(dims, keepdim=True)
    x = (x - mean) * torch.rsqrt(var + eps)
    if weight is not None:
        x = x * weight
    if bias is not None:
        x = x + bias
    return x
'''


@register("ir->torch", "layer_norm")
def layer_norm_to_torch(node: Node, em: TorchEmitter) -> None:
    x = node.inputs[0]
    axes = tuple(node.attrs["axes"])
    eps = float(node.attrs["epsilon"])
    shape = tuple(int(x.shape[a]) for a in axes)
    w, b = node.weights.get("weight"), node.weights.get("bias")
    v = em.var(x)
    if node.attrs["rms_scaling"]:
        helper = em.helper("keras_rms_scaling", _KERAS_RMS)
        weight = "None"
        if w is not None:
            full = tuple(x.shape[i] if i in axes else 1 for i in range(1, x.rank))
            weight = em.module(node, f"nn.Parameter(torch.ones({py_literal(full)}))", {"": w.reshape(full)})
        em.assign(node, f"{helper}({v}, {weight}, {py_literal(axes)}, {py_literal(eps)})")
        return
    state = {}
    kwargs: dict = {"eps": eps}
    if w is None and b is None:
        kwargs["elementwise_affine"] = False
    else:
        state["weight"] = w if w is not None else np.ones(shape, np.float32)
        if b is not None:
            state["bias"] = b
        else:
            kwargs["bias"] = False
    trailing = axes == tuple(range(x.rank - len(axes), x.rank))
    if trailing:
        mod = em.module(node, call("nn.LayerNorm", compact(shape) if len(shape) == 1 else shape, **kwargs), state)
        em.assign(node, f"{mod}({v})")
    elif axes == (1,):
        em.helper("ChannelLayerNorm", _CHANNEL_LN)
        mod = em.module(node, call("ChannelLayerNorm", shape[0], **kwargs), state)
        em.assign(node, f"{mod}({v})")
    else:
        helper = em.helper("layer_norm_over", _LN_OVER)
        full = tuple(x.shape[i] if i in axes else 1 for i in range(1, x.rank))
        weight = (
            em.module(node, f"nn.Parameter(torch.ones({py_literal(full)}))", {"": w.reshape(full)}, suffix="weight")
            if w is not None
            else "None"
        )
        bias = (
            em.module(node, f"nn.Parameter(torch.zeros({py_literal(full)}))", {"": b.reshape(full)}, suffix="bias")
            if b is not None
            else "None"
        )
        em.assign(node, f"{helper}({v}, {py_literal(axes)}, {weight}, {bias}, {py_literal(eps)})")


_RMS_OVER = '''def rms_norm_over(x: torch.Tensor, dims: tuple[int, ...], weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """RMS normalisation over axes that nn.RMSNorm cannot take (not the trailing ones)."""
    x = x * torch.rsqrt(x.square().mean(dims, keepdim=True) + eps)
    return x if weight is None else x * weight
'''


@register("ir->torch", "rms_norm")
def rms_norm_to_torch(node: Node, em: TorchEmitter) -> None:
    x = node.inputs[0]
    axes = tuple(node.attrs["axes"])
    eps = float(node.attrs["epsilon"])
    w = node.weights.get("weight")
    v = em.var(x)
    if axes == tuple(range(x.rank - len(axes), x.rank)):
        shape = tuple(int(x.shape[a]) for a in axes)
        kwargs: dict = {"eps": eps}
        state = {"weight": w} if w is not None else {}
        if w is None:
            kwargs["elementwise_affine"] = False
        mod = em.module(node, call("nn.RMSNorm", compact(shape) if len(shape) == 1 else shape, **kwargs), state)
        em.assign(node, f"{mod}({v})")
        return
    helper = em.helper("rms_norm_over", _RMS_OVER)
    full = tuple(x.shape[i] if i in axes else 1 for i in range(1, x.rank))
    weight = (
        em.module(node, f"nn.Parameter(torch.ones({py_literal(full)}))", {"": w.reshape(full)})
        if w is not None
        else "None"
    )
    em.assign(node, f"{helper}({v}, {py_literal(axes)}, {weight}, {py_literal(eps)})")


@register("ir->torch", "group_norm")
def group_norm_to_torch(node: Node, em: TorchEmitter) -> None:
    x = node.inputs[0]
    axis = node.attrs["axis"]
    c = int(x.shape[axis])
    state = {"weight": node.weights["weight"], "bias": node.weights["bias"]}
    mod = em.module(node, call("nn.GroupNorm", node.attrs["groups"], c, eps=float(node.attrs["epsilon"])), state)
    v = em.var(x)
    em.assign(node, f"{mod}({v})" if axis == 1 else f"{mod}({v}.movedim({axis}, 1)).movedim(1, {axis})")


@register("ir->torch", "l2_normalize")
def l2_normalize_to_torch(node: Node, em: TorchEmitter) -> None:
    axes = node.attrs["axes"]
    dim = axes[0] if len(axes) == 1 else tuple(axes)
    em.assign(
        node,
        f"{em.functional()}.normalize({em.var(node.inputs[0])}, dim={py_literal(dim)}, eps={py_literal(float(node.attrs['epsilon']))})",
    )


def _broadcast_buffer(
    node: Node, em: TorchEmitter, name: str, array: np.ndarray, axes: tuple[int, ...], *, learned: bool = False
) -> str:
    """A constant (nn.Buffer) or trained (nn.Parameter) tensor shaped to broadcast against the input."""
    x = node.inputs[0]
    shape = tuple(int(x.shape[i]) if i in axes else 1 for i in range(x.rank))
    kind = "nn.Parameter" if learned else "nn.Buffer"
    return em.module(node, f"{kind}(torch.zeros({py_literal(shape)}))", {"": array.reshape(shape)}, suffix=name)


@register("ir->torch", "standardize")
def standardize_to_torch(node: Node, em: TorchEmitter) -> None:
    axes = tuple(node.attrs["axis"])
    mean = _broadcast_buffer(node, em, "mean", node.weights["mean"], axes)
    std = _broadcast_buffer(node, em, "std", node.weights["std"], axes)
    v = em.var(node.inputs[0])
    em.assign(node, f"{mean} + {v} * {std}" if node.attrs["invert"] else f"({v} - {mean}) / {std}")


@register("ir->torch", "channel_affine")
def channel_affine_to_torch(node: Node, em: TorchEmitter) -> None:
    axes = (node.attrs["axis"],)
    learned = node.attrs["learned"]
    expr = em.var(node.inputs[0])
    # a lone learned scale (LayerScale's gamma) is named after its layer, as people write it
    lone = learned and len(node.weights) == 1
    if "scale" in node.weights:
        scale = _broadcast_buffer(node, em, "" if lone else "scale", node.weights["scale"], axes, learned=learned)
        expr = f"{expr} * {scale}"
    if "offset" in node.weights:
        offset = _broadcast_buffer(node, em, "" if lone else "offset", node.weights["offset"], axes, learned=learned)
        expr = f"{expr} + {offset}"
    em.assign(node, expr)
