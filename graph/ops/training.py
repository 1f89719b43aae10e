"""Op kinds that act only while training: dropout and noise layers, activity regularization.

In inference mode every one of them is the identity. They stay in the graph (the passes do
not fold them like `identity`) so that the emitted model trains like the source model.
"""

from __future__ import annotations

from .schema import Layout, OpDef, attr, define, same_as_input

_F = (int, float)

define(
    OpDef(
        "dropout",
        same_as_input,
        attrs=(
            attr("rate", *_F),
            attr("shared_axes", tuple, default=()),
            attr("alpha", bool, default=False),
        ),
        layout=Layout.AXIS,
        axis_attrs=("shared_axes",),
        doc="in training, zero each element with probability `rate` and scale the rest by 1 / (1 - rate); "
        "one keep/drop decision is shared along `shared_axes` (spatial dropout: all spatial axes; Keras "
        "noise_shape 1s). alpha: SELU-preserving alpha dropout (Keras AlphaDropout, torch nn.AlphaDropout). "
        "The identity at inference",
        family="training",
    )
)
define(
    OpDef(
        "gaussian_noise",
        same_as_input,
        attrs=(attr("stddev", *_F),),
        layout=Layout.ELEMENTWISE,
        doc="in training, x + N(0, stddev**2) noise (Keras GaussianNoise); the identity at inference",
        family="training",
    )
)
define(
    OpDef(
        "gaussian_dropout",
        same_as_input,
        attrs=(attr("rate", *_F),),
        layout=Layout.ELEMENTWISE,
        doc="in training, x * N(1, rate / (1 - rate)) noise (Keras GaussianDropout); the identity at inference",
        family="training",
    )
)
define(
    OpDef(
        "activity_regularization",
        same_as_input,
        attrs=(attr("l1", *_F, default=0.0), attr("l2", *_F, default=0.0)),
        layout=Layout.ELEMENTWISE,
        doc="the identity; in training it adds (l1 * sum|x| + l2 * sum(x**2)) / batch size to the loss "
        "(Keras ActivityRegularization and a layer's activity_regularizer, Keras 3 divides by the batch)",
        family="training",
    )
)
