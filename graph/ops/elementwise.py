"""Element-wise op kinds: activations, arithmetic, and the softmax family."""

from __future__ import annotations

from .schema import Layout, OpDef, attr, broadcast_shapes, define, same_as_input

_F = (int, float)


def _broadcast(node):
    shape = broadcast_shapes([v.shape for v in node.inputs], where=node.name)
    return [(shape, node.inputs[0].dtype)]


def _unary(name: str, *attrs, doc: str) -> OpDef:
    return define(OpDef(name, same_as_input, attrs=attrs, layout=Layout.ELEMENTWISE, doc=doc, family="activation"))


# -- activations ----------------------------------------------------------------------------
_unary(
    "relu",
    attr("max_value", *_F, default=None),
    attr("threshold", *_F, default=0.0),
    attr("negative_slope", *_F, default=0.0),
    doc="max_value if x >= max_value; x if threshold <= x; negative_slope * (x - threshold) otherwise",
)
_unary("elu", attr("alpha", *_F, default=1.0), doc="x if x > 0 else alpha * (exp(x) - 1)")
_unary("selu", doc="scale * elu(x, alpha) with the fixed SELU constants")
_unary("gelu", attr("approximate", bool, default=False), doc="x * Phi(x); tanh approximation if approximate")
_unary("silu", doc="x * sigmoid(x) (swish)")
_unary("hard_silu", doc="x * relu6(x + 3) / 6 (hard swish)")
_unary(
    "hard_sigmoid",
    attr("slope", *_F, default=1.0 / 6.0),
    attr("offset", *_F, default=0.5),
    doc="clip(slope * x + offset, 0, 1); Keras 3 and torch use 1/6 and 0.5, Keras 2 used 0.2 and 0.5",
)
_unary("softplus", doc="log(1 + exp(x))")
_unary("softsign", doc="x / (1 + |x|)")
_unary("tanh", doc="tanh(x)")
_unary("sigmoid", doc="1 / (1 + exp(-x))")
_unary("log_sigmoid", doc="log(sigmoid(x))")
_unary("exp", doc="exp(x)")
_unary("mish", doc="x * tanh(softplus(x))")
_unary("identity", doc="x")
_unary("abs", doc="|x|")
_unary("neg", doc="-x")
_unary("sqrt", doc="sqrt(x)")
_unary("rsqrt", doc="1 / sqrt(x)")
_unary("log", doc="log(x)")
_unary("square", doc="x * x")
_unary("erf", doc="erf(x)")
_unary("sin", doc="sin(x)")
_unary("cos", doc="cos(x)")
_unary("clip", attr("min", *_F, default=None), attr("max", *_F, default=None), doc="clamp(x, min, max)")
_unary("scale_shift", attr("scale", *_F, default=1.0), attr("offset", *_F, default=0.0), doc="x * scale + offset")
_unary("celu", attr("alpha", *_F, default=1.0), doc="max(x, 0) + alpha * (exp(min(x, 0) / alpha) - 1)")
_unary("squareplus", attr("b", *_F, default=4.0), doc="(x + sqrt(x * x + b)) / 2")
_unary("soft_shrink", attr("threshold", *_F, default=0.5), doc="x - t if x > t; x + t if x < -t; 0 otherwise")
_unary("hard_shrink", attr("threshold", *_F, default=0.5), doc="x if |x| > t else 0")
_unary("tanh_shrink", doc="x - tanh(x)")
_unary("sparse_plus", doc="0 if x <= -1; (x + 1)**2 / 4 if -1 < x < 1; x otherwise")


def _infer_glu(node):
    x = node.inputs[0]
    (axis,) = node.attrs["axis"]
    shape = list(x.shape)
    if shape[axis] is not None:
        if shape[axis] % 2:
            from ..errors import GraphError

            raise GraphError(f"{node.name}: glu needs an even size on axis {axis}, got shape {x.shape}")
        shape[axis] //= 2
    return [(tuple(shape), x.dtype)]


define(
    OpDef(
        "glu",
        _infer_glu,
        attrs=(attr("axis", tuple),),
        layout=Layout.AXIS,
        axis_attrs=("axis",),
        doc="a * sigmoid(b) where a, b are the two halves of x along `axis` (a one-element tuple)",
        family="activation",
    )
)

define(
    OpDef(
        "prelu",
        same_as_input,
        weights=("alpha",),
        broadcast_weights=("alpha",),
        layout=Layout.ELEMENTWISE,
        doc="x if x >= 0 else alpha * x; alpha has the input's non-batch shape with 1 on shared axes",
        family="activation",
    )
)

for _name in ("softmax", "log_softmax"):
    define(
        OpDef(
            _name,
            same_as_input,
            attrs=(attr("axis", tuple),),
            layout=Layout.AXIS,
            axis_attrs=("axis",),
            doc=f"{_name} over the given axes",
            family="activation",
        )
    )

# -- arithmetic -----------------------------------------------------------------------------
for _name, _doc in (
    ("add", "sum of all inputs"),
    ("mul", "product of all inputs"),
    ("maximum", "element-wise maximum of all inputs"),
    ("minimum", "element-wise minimum of all inputs"),
    ("average", "mean of all inputs"),
    ("sub", "a - b"),
    ("div", "a / b"),
    ("pow", "a ** b"),
):
    define(OpDef(_name, _broadcast, layout=Layout.ELEMENTWISE, doc=_doc, family="arithmetic"))


# -- comparison and selection ---------------------------------------------------------------
def _infer_compare(node):
    return [(broadcast_shapes([v.shape for v in node.inputs], where=node.name), "bool")]


define(
    OpDef(
        "compare",
        _infer_compare,
        attrs=(attr("mode", str, choices=("equal", "not_equal", "less", "less_equal", "greater", "greater_equal")),),
        layout=Layout.ELEMENTWISE,
        doc="a <mode> b element-wise, broadcasting (torch.eq/ne/lt/le/gt/ge); a bool tensor",
        family="arithmetic",
    )
)


def _infer_where(node):
    cond, a, b = node.inputs
    return [(broadcast_shapes([cond.shape, a.shape, b.shape], where=node.name), a.dtype)]


define(
    OpDef(
        "where",
        _infer_where,
        layout=Layout.ELEMENTWISE,
        doc="a where the bool condition is True, else b (inputs: condition, a, b), all three broadcasting",
        family="arithmetic",
    )
)
