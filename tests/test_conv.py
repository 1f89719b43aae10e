"""Keras convolutions -> PyTorch at parity: Conv1D/2D/3D, depthwise, separable and
transposed forms, over strides, paddings (TensorFlow's asymmetric "same"), dilation,
groups, channels-first layers, both layouts and all three file formats."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import convert_tf_keras, forward_source, randomize_weights


def one_layer(keras, layer, shape: tuple, name: str = "m"):
    """A functional model around one layer, with seeded random kernels and biases."""
    x = keras.Input(shape, name="x")
    model = keras.Model(x, layer(x), name=name)
    randomize_weights(model)
    return model


L = "keras.layers"
CONV_CASES = {
    # Conv1D
    "c1_valid": ("Conv1D", dict(filters=4, kernel_size=3), (9, 3)),
    "c1_same_s2_odd": ("Conv1D", dict(filters=4, kernel_size=3, strides=2, padding="same"), (9, 3)),
    "c1_same_s2_even_k4": ("Conv1D", dict(filters=4, kernel_size=4, strides=2, padding="same"), (8, 3)),
    "c1_causal_d2": ("Conv1D", dict(filters=4, kernel_size=3, padding="causal", dilation_rate=2), (9, 3)),
    "c1_same_d2": ("Conv1D", dict(filters=2, kernel_size=2, padding="same", dilation_rate=2), (9, 3)),
    "c1_groups": ("Conv1D", dict(filters=4, kernel_size=3, groups=2, use_bias=False), (9, 4)),
    "c1_causal_s2": ("Conv1D", dict(filters=3, kernel_size=3, strides=2, padding="causal"), (9, 2)),
    "c1_causal_first": (
        "Conv1D",
        dict(filters=4, kernel_size=4, padding="causal", data_format="channels_first"),
        (3, 9),
    ),
    "c1_first": (
        "Conv1D",
        dict(filters=4, kernel_size=3, strides=2, padding="same", data_format="channels_first"),
        (3, 9),
    ),
    # Conv2D
    "c2_valid_rect": ("Conv2D", dict(filters=4, kernel_size=(3, 2), strides=(1, 2)), (7, 9, 3)),
    "c2_same_s2_odd": ("Conv2D", dict(filters=4, kernel_size=3, strides=2, padding="same"), (7, 9, 3)),
    "c2_same_s2_even_k4": ("Conv2D", dict(filters=4, kernel_size=4, strides=2, padding="same"), (8, 6, 3)),
    "c2_same_s1_k4": ("Conv2D", dict(filters=4, kernel_size=4, padding="same"), (7, 6, 2)),
    "c2_same_s3_mixed": ("Conv2D", dict(filters=3, kernel_size=(2, 5), strides=(3, 2), padding="same"), (7, 9, 2)),
    "c2_dilation": ("Conv2D", dict(filters=4, kernel_size=3, dilation_rate=(2, 1), padding="same"), (7, 9, 3)),
    "c2_groups_nobias": ("Conv2D", dict(filters=6, kernel_size=3, groups=2, use_bias=False), (7, 9, 4)),
    "c2_activation": ("Conv2D", dict(filters=4, kernel_size=3, activation="tanh"), (7, 9, 3)),
    "c2_first": (
        "Conv2D",
        dict(filters=4, kernel_size=3, strides=2, padding="same", data_format="channels_first"),
        (3, 7, 9),
    ),
    "c2_first_dilation": (
        "Conv2D",
        dict(filters=3, kernel_size=2, dilation_rate=(1, 3), padding="same", data_format="channels_first"),
        (2, 7, 9),
    ),
    "c2_groups_first": (
        "Conv2D",
        dict(filters=4, kernel_size=(2, 3), groups=2, padding="same", data_format="channels_first"),
        (4, 7, 8),
    ),
    "c2_k1_s2_odd": ("Conv2D", dict(filters=4, kernel_size=1, strides=2, padding="same"), (7, 9, 3)),
    "c2_k5_s3_same": ("Conv2D", dict(filters=2, kernel_size=5, strides=3, padding="same"), (7, 11, 2)),
    # Conv3D
    "c3_same_s2": ("Conv3D", dict(filters=3, kernel_size=3, strides=2, padding="same"), (5, 6, 7, 2)),
    "c3_valid_d2": ("Conv3D", dict(filters=3, kernel_size=2, dilation_rate=2, activation="relu"), (5, 6, 7, 2)),
    "c3_groups_nobias": (
        "Conv3D",
        dict(filters=4, kernel_size=(2, 1, 3), groups=2, use_bias=False, padding="same"),
        (4, 5, 6, 2),
    ),
    "c3_first": (
        "Conv3D",
        dict(filters=3, kernel_size=(1, 2, 3), padding="same", data_format="channels_first"),
        (2, 5, 6, 7),
    ),
    # depthwise and separable
    "dw1_mult2": ("DepthwiseConv1D", dict(kernel_size=3, depth_multiplier=2, padding="same"), (9, 3)),
    "dw2_mult3_s2": ("DepthwiseConv2D", dict(kernel_size=3, strides=2, depth_multiplier=3, padding="same"), (7, 9, 2)),
    "dw2_first": (
        "DepthwiseConv2D",
        dict(kernel_size=(3, 2), depth_multiplier=2, data_format="channels_first"),
        (2, 7, 9),
    ),
    "dw1_first_s2": (
        "DepthwiseConv1D",
        dict(kernel_size=2, strides=2, padding="same", data_format="channels_first"),
        (3, 9),
    ),
    "dw2_d2": ("DepthwiseConv2D", dict(kernel_size=3, dilation_rate=2, padding="same"), (7, 9, 2)),
    "dw2_nobias_relu": ("DepthwiseConv2D", dict(kernel_size=3, use_bias=False, activation="relu"), (7, 9, 3)),
    "sep1_mult2": (
        "SeparableConv1D",
        dict(filters=5, kernel_size=3, depth_multiplier=2, strides=2, padding="same"),
        (9, 3),
    ),
    "sep1_first": (
        "SeparableConv1D",
        dict(filters=3, kernel_size=2, depth_multiplier=2, padding="same", data_format="channels_first"),
        (3, 8),
    ),
    "sep2": ("SeparableConv2D", dict(filters=4, kernel_size=3, padding="same", activation="relu"), (7, 9, 3)),
    "sep2_mult2_d2": (
        "SeparableConv2D",
        dict(filters=4, kernel_size=2, depth_multiplier=2, dilation_rate=2, use_bias=False),
        (7, 9, 3),
    ),
    "sep2_first": (
        "SeparableConv2D",
        dict(filters=4, kernel_size=3, strides=2, padding="same", data_format="channels_first"),
        (3, 7, 9),
    ),
}

TRANSPOSE_CASES = {
    "t1_valid_s2_k3": ("Conv1DTranspose", dict(filters=3, kernel_size=3, strides=2), (7, 2)),
    "t1_same_s2_k4": ("Conv1DTranspose", dict(filters=3, kernel_size=4, strides=2, padding="same"), (7, 2)),
    "t1_same_s3_k2": ("Conv1DTranspose", dict(filters=3, kernel_size=2, strides=3, padding="same"), (6, 2)),
    "t1_valid_outpad": ("Conv1DTranspose", dict(filters=3, kernel_size=3, strides=2, output_padding=1), (7, 2)),
    "t1_same_d2": ("Conv1DTranspose", dict(filters=3, kernel_size=3, padding="same", dilation_rate=2), (7, 2)),
    "t2_valid_s1": ("Conv2DTranspose", dict(filters=3, kernel_size=3), (5, 6, 2)),
    "t2_same_s2_k3": ("Conv2DTranspose", dict(filters=3, kernel_size=3, strides=2, padding="same"), (5, 6, 2)),
    "t2_same_s2_k4": ("Conv2DTranspose", dict(filters=3, kernel_size=4, strides=2, padding="same"), (5, 6, 2)),
    "t2_same_s2_k2": ("Conv2DTranspose", dict(filters=3, kernel_size=2, strides=2, padding="same"), (5, 6, 2)),
    "t2_valid_s2_k2": ("Conv2DTranspose", dict(filters=3, kernel_size=2, strides=2), (5, 6, 2)),
    "t2_valid_s2_k1": ("Conv2DTranspose", dict(filters=3, kernel_size=1, strides=2), (5, 6, 2)),
    "t2_same_outpad": (
        "Conv2DTranspose",
        dict(filters=3, kernel_size=3, strides=2, padding="same", output_padding=(0, 1)),
        (5, 6, 2),
    ),
    "t2_valid_outpad_rect": (
        "Conv2DTranspose",
        dict(filters=3, kernel_size=(3, 4), strides=(2, 3), output_padding=(1, 2)),
        (5, 6, 2),
    ),
    "t2_same_d2": (
        "Conv2DTranspose",
        dict(filters=3, kernel_size=3, padding="same", dilation_rate=2, use_bias=False),
        (5, 6, 2),
    ),
    "t2_first": (
        "Conv2DTranspose",
        dict(filters=3, kernel_size=3, strides=2, padding="same", data_format="channels_first"),
        (2, 5, 6),
    ),
    "t2_activation": ("Conv2DTranspose", dict(filters=3, kernel_size=3, strides=2, activation="sigmoid"), (5, 6, 2)),
    "t1_same_s3_k5_first": (
        "Conv1DTranspose",
        dict(filters=3, kernel_size=5, strides=3, padding="same", data_format="channels_first"),
        (2, 7),
    ),
    "t2_same_s3_k5_outpad": (
        "Conv2DTranspose",
        dict(filters=3, kernel_size=5, strides=3, padding="same", output_padding=2),
        (4, 5, 2),
    ),
    "t3_first": (
        "Conv3DTranspose",
        dict(filters=2, kernel_size=(2, 3, 2), strides=2, padding="same", data_format="channels_first"),
        (2, 3, 4, 5),
    ),
    "t3_same_s2": ("Conv3DTranspose", dict(filters=2, kernel_size=3, strides=2, padding="same"), (3, 4, 5, 2)),
    "t3_valid_outpad": (
        "Conv3DTranspose",
        dict(filters=2, kernel_size=2, strides=(1, 2, 3), output_padding=(0, 1, 2)),
        (3, 4, 5, 2),
    ),
}


def _build(keras, case: tuple, name: str):
    cls, kwargs, shape = case
    return one_layer(keras, getattr(keras.layers, cls)(**kwargs, name=name), shape, name=name)


@pytest.mark.parametrize("case", list(CONV_CASES), ids=list(CONV_CASES))
def test_conv_parity(keras, convert, case):
    result = convert(_build(keras, CONV_CASES[case], case))
    assert result.parity.worst_rel <= 1e-4
    forward = forward_source(result)
    assert "permute(" not in forward  # channels-first in and out: no runtime transpose
    assert "nn.Conv" in (result.out / "model.py").read_text()


@pytest.mark.parametrize("case", list(TRANSPOSE_CASES), ids=list(TRANSPOSE_CASES))
def test_conv_transpose_parity(keras, convert, case):
    result = convert(_build(keras, TRANSPOSE_CASES[case], case))
    assert result.parity.worst_rel <= 1e-4
    assert "permute(" not in forward_source(result)
    assert "nn.ConvTranspose" in (result.out / "model.py").read_text()


KEEP_CASES = ["c1_same_s2_odd", "c2_same_s2_odd", "c2_first", "c3_first", "dw2_mult3_s2", "sep2_first"]


@pytest.mark.parametrize("case", KEEP_CASES)
def test_conv_layout_keep(keras, convert, case):
    """layout="keep": the emitted model takes and returns the source's own axis order."""
    model = _build(keras, CONV_CASES[case], case)
    result = convert(model, layout="keep")
    assert result.parity.worst_rel <= 1e-4
    assert "perm" not in result.manifest["inputs"][0]
    assert "perm" not in result.manifest["outputs"][0]
    assert result.manifest["inputs"][0]["shape"] == [None, *CONV_CASES[case][2]]


def test_conv_same_stride2_dynamic_size(keras, convert):
    """'same' with stride 2 on inputs of unknown size: padded at run time, extra pixel at the end."""
    model = one_layer(
        keras, keras.layers.Conv2D(4, 3, strides=2, padding="same", name="conv"), (None, None, 3), name="dyn"
    )
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 7, 10, 3)).astype("float32")
    result = convert(model, inputs=[x])
    assert result.parity.worst_rel <= 1e-4
    assert "pad_same(" in forward_source(result)


def test_conv_same_padding_code(keras, convert):
    """TF's asymmetric 'same' padding (k=4, s=1: one pixel before, two after) is one explicit
    pad; symmetric padding goes into the layer's `padding=`."""
    result = convert(_build(keras, CONV_CASES["c2_same_s1_k4"], "asym"))
    forward = forward_source(result)
    assert "F.pad(x, (1, 2, 1, 2))" in forward
    assert forward.count("self.asym(") == 1
    result = convert(_build(keras, CONV_CASES["c2_same_s2_odd"], "sym"))
    assert "F.pad(" not in forward_source(result)
    assert "padding=1" in (result.out / "model.py").read_text()


FORMAT_CASES = ["c1_causal_d2", "c2_same_s2_odd", "dw2_mult3_s2", "sep2_first"]
FORMAT_TRANSPOSE_CASES = ["t2_same_s2_k4", "t1_valid_outpad"]


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("case", FORMAT_CASES + FORMAT_TRANSPOSE_CASES)
def test_conv_file_formats(keras, convert, case, fmt):
    spec = CONV_CASES.get(case) or TRANSPOSE_CASES[case]
    result = convert(_build(keras, spec, case), fmt=fmt)
    assert result.parity.worst_rel <= 1e-4
    assert result.manifest["source"]["format"]


@pytest.fixture(scope="module")
def tf_keras():
    return pytest.importorskip("tf_keras")


TF_KERAS_CASES = (
    FORMAT_CASES
    + FORMAT_TRANSPOSE_CASES
    + ["c2_groups_nobias", "c3_same_s2", "dw1_mult2", "c2_first", "t3_valid_outpad"]
)


@pytest.mark.parametrize("case", TF_KERAS_CASES)
def test_conv_tf_keras2_h5(tf_keras, tmp_path, case):
    """tf.keras 2.x .h5 files: Keras 2 config (batch_input_shape, nested inbound_nodes)."""
    cls, kwargs, shape = CONV_CASES.get(case) or TRANSPOSE_CASES[case]
    model = one_layer(tf_keras, getattr(tf_keras.layers, cls)(**kwargs, name=case), shape, name=case)
    result = convert_tf_keras(model, tmp_path)
    assert result.passed and result.worst_rel <= 1e-4, result.to_dict()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel_size": 3, "strides": 2, "padding": "same"},
        {"kernel_size": 4, "strides": 2, "padding": "same"},
        {"kernel_size": 1, "strides": 2},
        {"kernel_size": 3, "strides": 2, "padding": "same", "output_padding": 0},
        {"kernel_size": 5, "strides": 3, "padding": "same"},
    ],
    ids=["same_k3", "same_k4", "valid_k1", "same_outpad0", "same_k5_s3"],
)
def test_conv_transpose_dynamic_size(keras, convert, kwargs):
    """Transposed convolutions on inputs of unknown size: TF's cropping does not depend on it."""
    model = one_layer(keras, keras.layers.Conv2DTranspose(3, name="up", **kwargs), (None, None, 2), name="dyn")
    x = np.random.default_rng(4).standard_normal((2, 5, 6, 2)).astype("float32")
    result = convert(model, inputs=[x])
    assert result.parity.worst_rel <= 1e-4
    assert result.parity.outputs[0].shape[1:3] == tuple(np.asarray(model(x)).shape[1:3])


def _torch_from_writer(graph, node, x_torch):
    """Run one IR node through the PyTorch writer's own code: build the declared module,
    load its state and evaluate the emitted forward expression."""
    import types

    import torch

    from ktorch.translate.registry import lookup
    from ktorch.translate.torch_writer import families  # noqa: F401  (registers the writers)
    from ktorch.translate.torch_writer.codegen import TorchEmitter

    em = TorchEmitter(graph, "M")
    em.bind(node.inputs[0])
    lookup("ir->torch", node.op)(node, em)
    (declared,) = em.modules
    module = eval(declared.expr, {"nn": torch.nn})
    module.load_state_dict({k.split(".", 1)[1]: torch.from_numpy(np.asarray(v)) for k, v in em.state.items()})
    (line,) = em.lines
    with torch.no_grad():
        scope = {
            "self": types.SimpleNamespace(**{declared.attr: module}),
            "F": torch.nn.functional,
            em.var(node.inputs[0]): x_torch,
        }
        return eval(line.split(" = ", 1)[1], scope).numpy()


def test_conv1d_transpose_exhaustive(keras):
    """Every input length/kernel/stride up to 5/4/3, valid and same, with and without each
    legal output_padding: the reader's crops and the writer's ConvTranspose1d (plus trim)
    against Keras's own conv_transpose on TensorFlow."""
    import torch

    from ktorch.graph import Graph
    from ktorch.graph.passes import assign_layout
    from ktorch.translate.keras_reader.calls import LayerCall
    from ktorch.translate.keras_reader.conv import conv1d_transpose_from_keras

    rng = np.random.default_rng(6)
    checked = 0
    for n in range(1, 6):
        x = rng.standard_normal((1, n, 2)).astype("float32")
        for k in range(1, 5):
            kernel = rng.standard_normal((k, 3, 2)).astype("float32")
            bias = rng.standard_normal(3).astype("float32")
            for s in range(1, 4):
                for padding in ("valid", "same"):
                    for out_pad in [None, *range(s)]:
                        try:
                            ref = (
                                np.asarray(keras.ops.conv_transpose(x, kernel, s, padding, output_padding=out_pad))
                                + bias
                            )
                        except Exception:  # noqa: BLE001 - TensorFlow rejects this combination: no Keras model has it
                            continue
                        g = Graph()
                        v = g.add_input("x", (None, n, 2))
                        config = {
                            "filters": 3,
                            "kernel_size": [k],
                            "strides": [s],
                            "padding": padding,
                            "output_padding": out_pad,
                        }
                        call = LayerCall(
                            g,
                            "up",
                            "Conv1DTranspose",
                            config,
                            [v],
                            {},
                            [("kernel", kernel), ("bias", bias)],
                            keras2=False,
                        )
                        out = conv1d_transpose_from_keras(call)
                        assert out.shape[1] == ref.shape[1], (n, k, s, padding, out_pad)
                        assign_layout(g, "channels_first")
                        node = next(nd for nd in g.nodes if nd.op == "conv_transpose")
                        got = _torch_from_writer(g, node, torch.from_numpy(x.transpose(0, 2, 1).copy()))
                        np.testing.assert_allclose(
                            got.transpose(0, 2, 1), ref, rtol=1e-5, atol=1e-5, err_msg=str((n, k, s, padding, out_pad))
                        )
                        checked += 1
    assert checked > 300


def test_conv1d_padding_exhaustive(keras):
    """Every input length/kernel/stride/dilation up to 7/4/3/2 with valid, same and causal
    padding: the reader's TF padding and the writer's Conv1d (F.pad where asymmetric) against Keras's conv on TensorFlow (causal: left padding, as Conv1D does)."""
    import torch

    from ktorch.graph import Graph
    from ktorch.graph.passes import assign_layout
    from ktorch.translate.keras_reader.calls import LayerCall
    from ktorch.translate.keras_reader.conv import conv1d_from_keras

    rng = np.random.default_rng(7)
    checked = 0
    for n in range(1, 8):
        x = rng.standard_normal((1, n, 2)).astype("float32")
        for k in range(1, 5):
            kernel = rng.standard_normal((k, 2, 3)).astype("float32")
            for s, d in [(1, 1), (2, 1), (3, 1), (1, 2)]:
                k_eff = (k - 1) * d + 1
                for padding in ("valid", "same", "causal"):
                    if padding == "causal":
                        padded = np.pad(x, ((0, 0), (k_eff - 1, 0), (0, 0)))
                        ref = (
                            np.asarray(keras.ops.conv(padded, kernel, s, "valid", dilation_rate=d))
                            if padded.shape[1] >= k_eff
                            else None
                        )
                    else:
                        ref = (
                            np.asarray(keras.ops.conv(x, kernel, s, padding, dilation_rate=d))
                            if padding == "same" or n >= k_eff
                            else None
                        )
                    if ref is None:
                        continue
                    g = Graph()
                    v = g.add_input("x", (None, n, 2))
                    config = {
                        "filters": 3,
                        "kernel_size": [k],
                        "strides": [s],
                        "dilation_rate": [d],
                        "padding": padding,
                        "use_bias": False,
                    }
                    out = conv1d_from_keras(
                        LayerCall(g, "conv", "Conv1D", config, [v], {}, [("kernel", kernel)], keras2=False)
                    )
                    assert out.shape[1] == ref.shape[1], (n, k, s, d, padding)
                    assign_layout(g, "channels_first")
                    node = next(nd for nd in g.nodes if nd.op == "conv")
                    got = _torch_from_writer(g, node, torch.from_numpy(x.transpose(0, 2, 1).copy()))
                    np.testing.assert_allclose(
                        got.transpose(0, 2, 1), ref, rtol=1e-5, atol=1e-5, err_msg=str((n, k, s, d, padding))
                    )
                    checked += 1
    assert checked > 150


def _squeezed(code: str) -> str:
    return "".join(code.split()).replace(",)", ")")


def test_emitted_conv_code(keras, convert):
    """The module declarations read as written by hand: positional channels, keyword options,
    depthwise as groups, separable as two named convs, TF's extra 'same' row trimmed."""
    L = keras.layers
    x = keras.Input((7, 9, 4), name="image")
    y = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    y = L.SeparableConv2D(6, 3, strides=2, padding="same", use_bias=False, name="sep")(y)
    y = L.Conv2DTranspose(3, 3, strides=2, padding="same", activation="relu", name="up")(y)
    model = keras.Model(x, y, name="golden")
    randomize_weights(model)
    result = convert(model)
    code = _squeezed((result.out / "model.py").read_text())  # the formatter may wrap long lines
    assert _squeezed("self.dw = nn.Conv2d(4, 8, kernel_size=3, padding=1, groups=4)") in code
    assert (
        _squeezed("self.sep_depthwise = nn.Conv2d(8, 8, kernel_size=3, stride=2, padding=1, groups=8, bias=False)")
        in code
    )
    assert _squeezed("self.sep_pointwise = nn.Conv2d(8, 6, kernel_size=1, bias=False)") in code
    assert _squeezed("self.up = nn.ConvTranspose2d(6, 3, kernel_size=3, stride=2)") in code
    forward = forward_source(result)
    assert "up = F.relu(self.up(sep_pointwise)[:, :, :-1, :-1], inplace=True)" in forward


def test_grouped_conv_transpose_writer():
    """A grouped transposed convolution (from a PyTorch or ONNX source) keeps its groups."""
    import torch

    from ktorch.graph import Graph

    rng = np.random.default_rng(8)
    ref = torch.nn.ConvTranspose2d(4, 6, kernel_size=3, stride=2, padding=1, output_padding=1, groups=2)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape)).astype("float32")))
    g = Graph()
    v = g.add_input("x", (None, 4, 5, 6))
    attrs = {
        "rank": 2,
        "filters": 6,
        "kernel_size": (3, 3),
        "strides": (2, 2),
        "dilation": (1, 1),
        "groups": 2,
        "padding": ((1, 1), (1, 1)),
        "output_padding": (1, 1),
        "data_format": "channels_first",
    }
    weights = {"weight": ref.weight.detach().numpy(), "bias": ref.bias.detach().numpy()}
    node = g.add_node("conv_transpose", [v], attrs, weights, name="up")
    x = torch.from_numpy(rng.standard_normal((2, 4, 5, 6)).astype("float32"))
    got = _torch_from_writer(g, node, x)
    with torch.no_grad():
        np.testing.assert_allclose(got, ref(x).numpy(), rtol=1e-5, atol=1e-5)
