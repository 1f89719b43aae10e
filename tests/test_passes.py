"""Graph passes on hand-built graphs: no-op removal, padding folding, activation fusion,
dead-code elimination, JSON round trip and validation."""

from __future__ import annotations

import numpy as np
import pytest

from ktorch.graph import Graph, GraphError, from_json, to_json, validate
from ktorch.graph.passes import eliminate_dead, fold_padding, fuse_activations, remove_noops


def conv_attrs(padding=((0, 0), (0, 0))):
    return {
        "rank": 2,
        "filters": 4,
        "kernel_size": (3, 3),
        "strides": (1, 1),
        "dilation": (1, 1),
        "padding": padding,
        "data_format": "channels_last",
    }


def conv_weights():
    rng = np.random.default_rng(0)
    return {"weight": rng.standard_normal((4, 2, 3, 3)).astype("float32"), "bias": np.zeros(4, "float32")}


def test_fold_padding_into_conv():
    g = Graph("g")
    x = g.add_input("x", (None, 8, 8, 2))
    p = g.add_node("pad", [x], {"pads": ((1, 2), (3, 3)), "data_format": "channels_last"}, source="pad").output
    y = g.add_node("conv", [p], conv_attrs(((0, 1), (0, 0))), conv_weights(), source="conv").output
    g.outputs = [y]
    shape = y.shape
    assert fold_padding(g) == 1
    conv = g.nodes[0]
    assert [n.op for n in g.nodes] == ["conv"] and conv.inputs[0] is x
    assert conv.attrs["padding"] == ((1, 3), (3, 3))
    validate(g)
    assert conv.output.shape == shape


def test_fold_padding_keeps_a_shared_or_nonzero_pad():
    g = Graph("g")
    x = g.add_input("x", (None, 8, 8, 2))
    p = g.add_node("pad", [x], {"pads": ((1, 1), (1, 1)), "data_format": "channels_last"}).output
    a = g.add_node("conv", [p], conv_attrs(), conv_weights()).output
    b = g.add_node("relu", [p]).output
    g.outputs = [a, b]
    assert fold_padding(g) == 0
    g2 = Graph("g2")
    x2 = g2.add_input("x", (None, 8, 8, 2))
    p2 = g2.add_node("pad", [x2], {"pads": ((1, 1), (1, 1)), "value": 1.0, "data_format": "channels_last"}).output
    g2.outputs = [g2.add_node("conv", [p2], conv_attrs(), conv_weights()).output]
    assert fold_padding(g2) == 0


def pool_graph(producer: str, pads=((1, 1), (1, 1)), pool_padding=((0, 0), (0, 0))):
    g = Graph("g")
    x = g.add_input("x", (None, 8, 8, 2))
    if producer == "relu":
        x = g.add_node("relu", [x], {"max_value": None, "threshold": 0.0, "negative_slope": 0.0}, source="relu").output
    elif producer == "leaky_relu":
        x = g.add_node("relu", [x], {"max_value": None, "threshold": 0.0, "negative_slope": 0.1}, source="relu").output
    p = g.add_node("pad", [x], {"pads": pads, "data_format": "channels_last"}, source="pad").output
    attrs = {
        "mode": "max",
        "rank": 2,
        "pool_size": (3, 3),
        "strides": (2, 2),
        "padding": pool_padding,
        "data_format": "channels_last",
    }
    g.outputs = [g.add_node("pool", [p], attrs, source="pool").output]
    return g


def test_fold_zero_padding_into_max_pool_of_a_relu():
    g = pool_graph("relu")
    shape = g.outputs[0].shape
    assert fold_padding(g) == 1
    assert [n.op for n in g.nodes] == ["relu", "pool"]
    assert g.nodes[1].attrs["padding"] == ((1, 1), (1, 1))
    validate(g)
    assert g.outputs[0].shape == shape


@pytest.mark.parametrize(
    "producer, pads, pool_padding",
    [
        ("input", ((1, 1), (1, 1)), ((0, 0), (0, 0))),  # may be negative: a zero can win the max
        ("leaky_relu", ((1, 1), (1, 1)), ((0, 0), (0, 0))),  # negative slope: values below 0
        ("relu", ((2, 2), (1, 1)), ((0, 0), (0, 0))),  # a window only in padding: 0 vs -inf
        ("relu", ((1, 1), (1, 1)), ((1, 0), (0, 0))),  # 2 + the pool's own: over half the window
    ],
)
def test_keep_zero_padding_before_max_pool(producer, pads, pool_padding):
    g = pool_graph(producer, pads, pool_padding)
    assert fold_padding(g) == 0
    assert "pad" in [n.op for n in g.nodes]


@pytest.mark.parametrize("shared", [False, True])
def test_fold_bias_into_batch_norm(shared):
    from ktorch.graph.passes import fold_bias_into_batch_norm

    g = Graph("g")
    x = g.add_input("x", (None, 8, 8, 2))
    weights = conv_weights()
    weights["bias"] = np.arange(4, dtype="float32")
    conv = g.add_node("conv", [x], {**conv_attrs(), "use_bias": True}, weights, source="conv")
    mean = np.ones(4, "float32")
    bn_weights = {
        "weight": np.ones(4, "float32"),
        "bias": np.zeros(4, "float32"),
        "running_mean": mean,
        "running_var": np.ones(4, "float32"),
    }
    y = g.add_node("batch_norm", [conv.output], {"axis": 3, "epsilon": 1e-3}, bn_weights, source="bn").output
    g.outputs = [y]
    if shared:  # the same layer called again elsewhere keeps its bias
        g.outputs.append(g.add_node("conv", [x], {**conv_attrs(), "use_bias": True}, weights, source="conv").output)
    assert fold_bias_into_batch_norm(g) == (0 if shared else 1)
    if not shared:
        assert "bias" not in conv.weights and conv.attrs["use_bias"] is False
        np.testing.assert_array_equal(g.nodes[1].weights["running_mean"], [1, 0, -1, -2])
        assert conv.output.source is None
        validate(g)


def test_remove_noops_and_dead_code():
    g = Graph("g")
    x = g.add_input("x", (None, 4))
    d = g.add_node("identity", [x], source="dropout").output
    y = g.add_node("relu", [d], source="act").output
    g.add_node("sigmoid", [d], source="unused")
    g.outputs = [y]
    assert remove_noops(g) == 1
    assert eliminate_dead(g) == 1
    assert [n.op for n in g.nodes] == ["relu"] and g.nodes[0].inputs[0] is x
    validate(g)


def test_fuse_activation_only_from_the_same_layer():
    g = Graph("g")
    x = g.add_input("x", (None, 4))
    w = {"weight": np.ones((3, 4), "float32"), "bias": np.zeros(3, "float32")}
    h = g.add_node("dense", [x], {"units": 3}, w, source="d1").output
    h = g.add_node("relu", [h], source="d1").output
    z = g.add_node("dense", [h], {"units": 3}, dict(w, weight=np.ones((3, 3), "float32")), source="d2").output
    z = g.add_node("tanh", [z], source="separate_activation_layer").output
    g.outputs = [z]
    assert fuse_activations(g) == 1
    assert [n.op for n in g.nodes] == ["dense", "dense", "tanh"]
    assert g.nodes[0].attrs["activation"] == {
        "op": "relu",
        "attrs": {"max_value": None, "threshold": 0.0, "negative_slope": 0.0},
    }
    validate(g)


def test_json_round_trip_and_validation():
    g = Graph("g")
    x = g.add_input("x", (None, 8, 8, 2))
    y = g.add_node(
        "conv", [x], conv_attrs(((1, 1), (1, 1))), conv_weights(), source="conv", source_class="Conv2D"
    ).output
    g.outputs = [g.add_node("global_pool", [y], {"mode": "avg", "data_format": "channels_last"}).output]
    text = to_json(g)
    back = from_json(text, {"conv": g.nodes[0].weights})
    validate(back)
    assert to_json(back) == text
    assert np.array_equal(back.nodes[0].weights["weight"], g.nodes[0].weights["weight"])
    back.nodes[1].outputs[0].shape = (None, 5)
    with pytest.raises(GraphError, match="inferred"):
        validate(back)


def test_catalogue_rejects_bad_attributes():
    g = Graph("g")
    x = g.add_input("x", (None, 4))
    with pytest.raises(GraphError, match="no attribute"):
        g.add_node("relu", [x], {"alpha": 1.0})
    with pytest.raises(GraphError, match="unknown op kind"):
        g.add_node("frobnicate", [x])
    with pytest.raises(GraphError, match="needs attribute 'units'"):
        g.add_node("dense", [x], {})
