"""Keras pooling -> PyTorch at parity: Max/AveragePooling 1D/2D/3D over valid and
TensorFlow "same" padding (average pooling excludes the padded elements), odd sizes,
strides other than the pool size, channels-first layers, and the global pools."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import convert_tf_keras, forward_source


def one_layer(keras, layer, shape: tuple, name: str):
    x = keras.Input(shape, name="x")
    return keras.Model(x, layer(x), name=name)


POOL_CASES = {
    "max1_valid": ("MaxPooling1D", dict(pool_size=2), (9, 3)),
    "max1_same_s1_k2": ("MaxPooling1D", dict(pool_size=2, strides=1, padding="same"), (9, 3)),
    "avg1_same_s2_k3_odd": ("AveragePooling1D", dict(pool_size=3, strides=2, padding="same"), (9, 3)),
    "avg1_same_s2_k3_even": ("AveragePooling1D", dict(pool_size=3, strides=2, padding="same"), (8, 3)),
    "avg1_same_s1_k4": ("AveragePooling1D", dict(pool_size=4, strides=1, padding="same"), (9, 3)),
    "avg1_first": (
        "AveragePooling1D",
        dict(pool_size=3, strides=2, padding="same", data_format="channels_first"),
        (3, 8),
    ),
    "max2_valid": ("MaxPooling2D", dict(pool_size=2), (7, 9, 3)),
    "max2_valid_s1": ("MaxPooling2D", dict(pool_size=3, strides=1), (7, 9, 3)),
    "max2_same_odd": ("MaxPooling2D", dict(pool_size=2, padding="same"), (7, 9, 3)),
    "max2_same_k3_s2": ("MaxPooling2D", dict(pool_size=3, strides=2, padding="same"), (8, 9, 3)),
    "max2_valid_rect": ("MaxPooling2D", dict(pool_size=(3, 2), strides=(2, 3)), (7, 9, 3)),
    "max2_first": (
        "MaxPooling2D",
        dict(pool_size=3, strides=2, padding="same", data_format="channels_first"),
        (3, 8, 9),
    ),
    "avg2_valid": ("AveragePooling2D", dict(pool_size=2), (7, 9, 3)),
    "avg2_same_odd": ("AveragePooling2D", dict(pool_size=2, padding="same"), (7, 9, 3)),
    "avg2_same_k3_s2": ("AveragePooling2D", dict(pool_size=3, strides=2, padding="same"), (8, 9, 3)),
    "avg2_same_k3_s1": ("AveragePooling2D", dict(pool_size=3, strides=1, padding="same"), (7, 9, 3)),
    "avg2_same_k2_s1": ("AveragePooling2D", dict(pool_size=2, strides=1, padding="same"), (7, 9, 3)),
    "avg2_same_mixed": ("AveragePooling2D", dict(pool_size=(2, 3), strides=(1, 2), padding="same"), (7, 8, 3)),
    "avg2_same_k4_s3": ("AveragePooling2D", dict(pool_size=4, strides=3, padding="same"), (7, 11, 2)),
    "avg2_first": (
        "AveragePooling2D",
        dict(pool_size=2, strides=1, padding="same", data_format="channels_first"),
        (3, 7, 9),
    ),
    "max3_valid": ("MaxPooling3D", dict(pool_size=2), (5, 6, 7, 2)),
    "max3_same": ("MaxPooling3D", dict(pool_size=(2, 3, 2), strides=(1, 2, 2), padding="same"), (5, 6, 7, 2)),
    "avg3_same": ("AveragePooling3D", dict(pool_size=3, strides=2, padding="same"), (5, 6, 7, 2)),
    "avg3_first": ("AveragePooling3D", dict(pool_size=2, padding="same", data_format="channels_first"), (2, 5, 6, 7)),
}

GLOBAL_CASES = {
    f"{mode}{rank}d{'_keep' if keep else ''}{'_first' if first else ''}": (
        f"Global{'Average' if mode == 'avg' else 'Max'}Pooling{rank}D",
        dict(keepdims=keep, **({"data_format": "channels_first"} if first else {})),
        ((2, 3, 4, 5)[: rank + 1] if first else (5, 4, 3, 2)[:rank] + (3,)),
    )
    for mode in ("avg", "max")
    for rank in (1, 2, 3)
    for keep in (False, True)
    for first in (False, True)
    if not (first and rank == 3 and keep)  # keep the matrix small
}


def _build(keras, case: tuple, name: str):
    cls, kwargs, shape = case
    return one_layer(keras, getattr(keras.layers, cls)(**kwargs, name=name), shape, name)


@pytest.mark.parametrize("case", list(POOL_CASES), ids=list(POOL_CASES))
def test_pool_parity(keras, convert, case):
    result = convert(_build(keras, POOL_CASES[case], case))
    assert result.parity.worst_rel <= 1e-4
    forward = forward_source(result)
    assert "permute(" not in forward
    assert "Pool" in (result.out / "model.py").read_text()


def test_average_pool_excludes_padding(keras, convert):
    """On a constant input, an average that counted TF's padded zeros would shrink at the edges."""
    model = _build(keras, POOL_CASES["avg2_same_k2_s1"], "avg")
    x = np.ones((1, 7, 9, 3), "float32")
    result = convert(model, inputs=[x])
    assert result.parity.worst_rel <= 1e-4
    import importlib.util

    spec = importlib.util.spec_from_file_location("emitted_avg", result.out / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import torch

    y = module.load()(torch.ones(1, 3, 7, 9))
    assert torch.allclose(y, torch.ones_like(y))


@pytest.mark.parametrize("case", list(GLOBAL_CASES), ids=list(GLOBAL_CASES))
def test_global_pool_parity(keras, convert, case):
    result = convert(_build(keras, GLOBAL_CASES[case], case))
    assert result.parity.worst_rel <= 1e-4
    out = result.manifest["outputs"][0]
    keep = GLOBAL_CASES[case][1]["keepdims"]
    rank = len(GLOBAL_CASES[case][2]) + 1
    assert len(out["shape"]) == (rank if keep else 2)
    assert "permute(" not in forward_source(result)


@pytest.mark.parametrize("case", ["max2_same_k3_s2", "avg2_same_k2_s1", "avg1_first", "avg3_same", "avg2d_keep"])
def test_pool_layout_keep(keras, convert, case):
    spec = POOL_CASES.get(case) or GLOBAL_CASES[case]
    result = convert(_build(keras, spec, case), layout="keep")
    assert result.parity.worst_rel <= 1e-4
    assert "perm" not in result.manifest["inputs"][0] and "perm" not in result.manifest["outputs"][0]


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("case", ["avg2_same_k3_s2", "max1_same_s1_k2", "max3_same", "max2d_keep"])
def test_pool_file_formats(keras, convert, case, fmt):
    spec = POOL_CASES.get(case) or GLOBAL_CASES[case]
    result = convert(_build(keras, spec, case), fmt=fmt)
    assert result.parity.worst_rel <= 1e-4


@pytest.mark.parametrize("case", ["avg2_same_k3_s2", "max1_same_s1_k2", "max3_same", "avg2d_first", "max2d_keep"])
def test_pool_tf_keras2_h5(tmp_path, case):
    tf_keras = pytest.importorskip("tf_keras")
    cls, kwargs, shape = POOL_CASES.get(case) or GLOBAL_CASES[case]
    model = one_layer(tf_keras, getattr(tf_keras.layers, cls)(**kwargs, name=case), shape, case)
    parity = convert_tf_keras(model, tmp_path)
    assert parity.passed and parity.worst_rel <= 1e-4, parity.to_dict()


@pytest.mark.parametrize(
    "case",
    [
        ("MaxPooling2D", {"pool_size": 2, "padding": "same"}),
        ("AveragePooling2D", {"pool_size": 2, "padding": "same"}),
        ("MaxPooling2D", {"pool_size": 3, "strides": 2, "padding": "same"}),
        ("MaxPooling1D", {"pool_size": 3, "strides": 2, "padding": "same"}),
        ("AveragePooling1D", {"pool_size": (1,), "strides": 3, "padding": "same"}),
    ],
    ids=["max2d_k2", "avg2d_k2", "max2d_k3_s2", "max1d_k3_s2", "avg1d_k1_s3"],
)
def test_pool_same_dynamic_size(keras, convert, case):
    """'same' pooling on inputs whose size is only known at run time, fed odd sizes."""
    cls, kwargs = case
    rank = int(cls[-2])
    model = one_layer(keras, getattr(keras.layers, cls)(**kwargs, name="pool"), (None,) * rank + (3,), "dyn")
    x = np.random.default_rng(2).standard_normal((2, *(7, 9, 5)[:rank], 3)).astype("float32")
    result = convert(model, inputs=[x])
    assert result.parity.worst_rel <= 1e-4
    forward = forward_source(result)
    assert ("pad_same(" in forward) == (kwargs["pool_size"] == 3)


def test_avg_pool_same_dynamic_size_refused_clearly(keras, tmp_path):
    import ktorch
    from ktorch.graph.errors import KtorchError

    model = one_layer(
        keras, keras.layers.AveragePooling2D(3, strides=2, padding="same", name="pool"), (None, None, 3), "dyn"
    )
    model.save(tmp_path / "dyn.h5")
    with pytest.raises(KtorchError, match=r"pool.*unknown spatial size.*fixed spatial size"):
        ktorch.convert(tmp_path / "dyn.h5", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_same_pooling_padding_exhaustive_1d():
    """Every 1-D size/window/stride up to 10/4/3 against TensorFlow's own SAME pooling: the
    torch padding, ceil_mode and output slice chosen by the writer give the same numbers."""
    import tensorflow as tf
    import torch

    from ktorch.graph import Graph
    from ktorch.translate.keras_reader.conv import same_padding
    from ktorch.translate.torch_writer.pooling import _pool_padding

    rng = np.random.default_rng(5)
    checked = 0
    for n in range(1, 11):
        x = rng.standard_normal((1, n, 2)).astype("float32")
        for k in range(1, 5):
            for s in range(1, 4):
                for mode in ("max", "avg"):
                    g = Graph()
                    v = g.add_input("x", (None, 2, n))
                    attrs = {
                        "mode": mode,
                        "rank": 1,
                        "pool_size": (k,),
                        "strides": (s,),
                        "data_format": "channels_first",
                    }
                    node = g.add_node("pool", [v], {**attrs, "padding": (same_padding(n, k, s, 1),)})
                    padding, ceil_mode, slices = _pool_padding(node)
                    pool = (torch.nn.MaxPool1d if mode == "max" else torch.nn.AvgPool1d)(
                        k, s, padding, ceil_mode=ceil_mode, **({} if mode == "max" else {"count_include_pad": False})
                    )
                    got = pool(torch.from_numpy(x.transpose(0, 2, 1).copy())).numpy()
                    if slices is not None:
                        got = got[:, :, slices[0][0] : slices[0][1]]
                    ref = (tf.nn.max_pool1d if mode == "max" else tf.nn.avg_pool1d)(x, k, s, "SAME").numpy()
                    np.testing.assert_allclose(
                        got.transpose(0, 2, 1), ref, rtol=1e-6, atol=1e-6, err_msg=f"n={n} k={k} s={s} {mode}"
                    )
                    checked += 1
    assert checked == 10 * 4 * 3 * 2


def test_symmetric_ceil_mode_pool_from_torch_sources():
    """A pool read from PyTorch/ONNX (symmetric padding, ceil_mode, padding counted) is
    written back as the same nn.AvgPool2d, not refused."""
    from ktorch.graph import Graph
    from ktorch.translate.torch_writer.pooling import _pool_padding

    g = Graph()
    x = g.add_input("x", (None, 3, 7, 8))
    attrs = {"mode": "avg", "rank": 2, "pool_size": (3, 3), "strides": (2, 2), "padding": ((1, 1), (1, 1))}
    node = g.add_node(
        "pool", [x], {**attrs, "ceil_mode": True, "count_include_pad": True, "data_format": "channels_first"}
    )
    assert _pool_padding(node) == (1, True, None)
    assert node.output.shape == (None, 3, 4, 5)  # torch's own sizes for 7 and 8 with ceil_mode


@pytest.mark.parametrize("activation, folded", [("relu", True), ("sigmoid", True), (None, False)])
def test_zero_padding_before_max_pool(keras, convert, activation, folded):
    """Keras's ResNet stem: ZeroPadding2D + MaxPooling2D after a ReLU becomes one MaxPool2d
    with padding (PyTorch pads a max pool with -inf, the same maximum when nothing is below
    zero); after a layer that may be negative the zeros can win, so the pad stays."""
    x = keras.Input((9, 10, 3), name="x")
    y = keras.layers.Conv2D(4, 3, activation=activation, name="conv")(x)
    y = keras.layers.ZeroPadding2D(1, name="pad")(y)
    y = keras.layers.MaxPooling2D(3, strides=2, name="pool")(y)
    model = keras.Model(x, y, name=f"pad_pool_{activation}")
    np.random.seed(0)
    model.get_layer("conv").set_weights(
        [np.random.randn(3, 3, 3, 4).astype("float32"), np.full(4, -2.0, "float32")]
    )  # many negatives
    forward = forward_source(convert(model))
    assert ("F.pad(" not in forward) == folded, forward
