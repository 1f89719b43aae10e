"""PyTorch dropout calls (frozen parameters and caller-given regularizers: training.py).

torch.export of a module in eval mode keeps every dropout as an ATen call with
`train=False` (`aten.dropout` for nn.Dropout and F.dropout, `aten.feature_dropout` for
nn.Dropout1d/2d/3d, `aten.alpha_dropout`, `aten.feature_alpha_dropout`), named after its
module by nn_module_stack: they become `dropout` nodes with the exact rate. The program's
parameters keep `requires_grad`: a module whose parameters are all frozen becomes a frozen
node (Keras `trainable=False`). PyTorch has no regularizer attached to a parameter (weight
decay lives in the optimizer), so `ktorch.convert(..., regularizers={"fc.weight": ("l2", 1e-4)})`
names them; they become `kernel_regularizer=` and friends in Keras.
"""

from __future__ import annotations

from ...graph import Value
from ..registry import register
from .calls import AtenCall


def _dropout(call: AtenCall, *, channels: bool, alpha: bool) -> Value:
    x = call.value("input")
    if call.args.get("train"):
        raise call.unsupported("a module in training mode; export after model.eval()")
    if float(call.args["p"]) == 0.0:
        return x  # does nothing, in training too (torchvision's attention_dropout=0.0)
    shared = tuple(range(2, x.rank)) if channels else ()
    return call.emit("dropout", [x], {"rate": float(call.args["p"]), "shared_axes": shared, "alpha": alpha})


@register("torch->ir", "aten.dropout")
def dropout_to_ir(call: AtenCall) -> Value:
    return _dropout(call, channels=False, alpha=False)


@register("torch->ir", "aten.feature_dropout")
def feature_dropout_to_ir(call: AtenCall) -> Value:
    """nn.Dropout1d/2d/3d: whole channels (axis 1) dropped, one decision per (example, channel)."""
    return _dropout(call, channels=True, alpha=False)


@register("torch->ir", "aten.alpha_dropout")
def alpha_dropout_to_ir(call: AtenCall) -> Value:
    return _dropout(call, channels=False, alpha=True)


@register("torch->ir", "aten.feature_alpha_dropout")
def feature_alpha_dropout_to_ir(call: AtenCall) -> Value:
    return _dropout(call, channels=True, alpha=True)
