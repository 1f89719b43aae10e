"""Keras code for training-time layers: Dropout, SpatialDropout1D/2D/3D, AlphaDropout,
GaussianNoise, GaussianDropout, ActivityRegularization. The layer arguments that carry a
node's training facts (`trainable=False`, `kernel_regularizer=`) are in training.py.
"""

from __future__ import annotations

from typing import Any

from ...graph import Node
from ..registry import register
from .codegen import KerasEmitter


@register("ir->keras", "dropout")
def dropout_to_keras(node: Node, em: KerasEmitter) -> None:
    """Dropout / AlphaDropout; a decision shared over all spatial axes as SpatialDropout*D
    (channels-last, or channels-first with data_format); any other sharing as noise_shape."""
    x = node.inputs[0]
    rate = float(node.attrs["rate"])
    shared = tuple(node.attrs["shared_axes"])
    kwargs: dict[str, Any] = {}
    if not node.attrs["alpha"] and 3 <= x.rank <= 5 and shared == tuple(range(1, x.rank - 1)):
        cls = f"layers.SpatialDropout{x.rank - 2}D"
    elif not node.attrs["alpha"] and 4 <= x.rank <= 5 and shared == tuple(range(2, x.rank)):
        cls, kwargs = f"layers.SpatialDropout{x.rank - 2}D", {"data_format": "channels_first"}
    else:
        cls = "layers.AlphaDropout" if node.attrs["alpha"] else "layers.Dropout"
        if shared:
            kwargs["noise_shape"] = tuple(1 if i in shared else None for i in range(x.rank))
    em.assign(node, f"{em.layer(node, cls, rate=rate, **kwargs)}({em.var(x)})")


@register("ir->keras", "gaussian_noise")
def gaussian_noise_to_keras(node: Node, em: KerasEmitter) -> None:
    em.assign(
        node, f"{em.layer(node, 'layers.GaussianNoise', stddev=float(node.attrs['stddev']))}({em.var(node.inputs[0])})"
    )


@register("ir->keras", "gaussian_dropout")
def gaussian_dropout_to_keras(node: Node, em: KerasEmitter) -> None:
    em.assign(
        node, f"{em.layer(node, 'layers.GaussianDropout', rate=float(node.attrs['rate']))}({em.var(node.inputs[0])})"
    )


@register("ir->keras", "activity_regularization")
def activity_regularization_to_keras(node: Node, em: KerasEmitter) -> None:
    kwargs = {k: float(node.attrs[k]) for k in ("l1", "l2") if node.attrs[k]}
    em.assign(node, f"{em.layer(node, 'layers.ActivityRegularization', **kwargs)}({em.var(node.inputs[0])})")
