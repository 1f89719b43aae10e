"""Keras spatial reshaping -> PyTorch at parity: ZeroPadding, Cropping and UpSampling
1D/2D/3D (symmetric and asymmetric specs, channels-first layers) and Resizing (nearest and
bilinear, up and down, antialias)."""

from __future__ import annotations

import pytest
from conftest import convert_tf_keras, forward_source

CF = {"data_format": "channels_first"}

CASES = {
    # zero padding
    "pad1_int": ("ZeroPadding1D", {"padding": 2}, (5, 3)),
    "pad1_asym": ("ZeroPadding1D", {"padding": (0, 3)}, (5, 3)),
    "pad1_first": ("ZeroPadding1D", {"padding": (1, 2), **CF}, (3, 5)),
    "pad2_int": ("ZeroPadding2D", {"padding": 1}, (5, 6, 3)),
    "pad2_sym_pair": ("ZeroPadding2D", {"padding": (1, 2)}, (5, 6, 3)),
    "pad2_asym": ("ZeroPadding2D", {"padding": ((0, 1), (2, 3))}, (5, 6, 3)),
    "pad2_first": ("ZeroPadding2D", {"padding": ((1, 0), (0, 2)), **CF}, (3, 5, 6)),
    "pad3_asym": ("ZeroPadding3D", {"padding": ((0, 1), (1, 1), (2, 0))}, (3, 4, 5, 2)),
    "pad3_first": ("ZeroPadding3D", {"padding": 1, **CF}, (2, 3, 4, 5)),
    # cropping
    "crop1_int": ("Cropping1D", {"cropping": 1}, (7, 3)),
    "crop1_asym": ("Cropping1D", {"cropping": (0, 2)}, (7, 3)),
    "crop2_sym_pair": ("Cropping2D", {"cropping": (1, 2)}, (7, 9, 3)),
    "crop2_asym": ("Cropping2D", {"cropping": ((0, 2), (3, 1))}, (7, 9, 3)),
    "crop2_first": ("Cropping2D", {"cropping": ((2, 0), (1, 3)), **CF}, (3, 7, 9)),
    "crop3_asym": ("Cropping3D", {"cropping": ((1, 0), (0, 2), (1, 1))}, (4, 5, 6, 2)),
    "crop3_first": ("Cropping3D", {"cropping": ((0, 1), (1, 0), (2, 1)), **CF}, (2, 4, 5, 6)),
    # upsampling
    "up1": ("UpSampling1D", {"size": 3}, (5, 3)),
    "up2_nearest": ("UpSampling2D", {"size": (2, 3)}, (4, 5, 3)),
    "up2_bilinear": ("UpSampling2D", {"size": (2, 3), "interpolation": "bilinear"}, (4, 5, 3)),
    "up2_first": ("UpSampling2D", {"size": 2, **CF}, (3, 4, 5)),
    "up2_bilinear_first": ("UpSampling2D", {"size": (3, 2), "interpolation": "bilinear", **CF}, (3, 4, 5)),
    "up3": ("UpSampling3D", {"size": (1, 2, 3)}, (3, 4, 5, 2)),
    "up3_first": ("UpSampling3D", {"size": 2, **CF}, (2, 3, 4, 5)),
    # resizing
    "resize_bilinear_up": ("Resizing", {"height": 11, "width": 8}, (5, 6, 3)),
    "resize_bilinear_down": ("Resizing", {"height": 4, "width": 3}, (9, 7, 3)),
    "resize_nearest_up": ("Resizing", {"height": 11, "width": 13, "interpolation": "nearest"}, (5, 6, 3)),
    "resize_nearest_down": ("Resizing", {"height": 4, "width": 5, "interpolation": "nearest"}, (9, 7, 3)),
    "resize_nearest_mixed": ("Resizing", {"height": 13, "width": 3, "interpolation": "nearest"}, (5, 7, 3)),
    "resize_first": ("Resizing", {"height": 3, "width": 10, **CF}, (3, 7, 5)),
    "resize_antialias_down": ("Resizing", {"height": 4, "width": 3, "antialias": True}, (9, 7, 3)),
    "resize_antialias_mixed": ("Resizing", {"height": 13, "width": 3, "antialias": True}, (5, 8, 3)),
    "resize_antialias_first": ("Resizing", {"height": 3, "width": 4, "antialias": True, **CF}, (3, 9, 10)),
    "resize_crop_aspect": ("Resizing", {"height": 4, "width": 6, "crop_to_aspect_ratio": True}, (9, 7, 3)),
    "resize_crop_aspect_wide": (
        "Resizing",
        {"height": 6, "width": 2, "crop_to_aspect_ratio": True, "interpolation": "nearest"},
        (5, 8, 3),
    ),
    "resize_pad_aspect": (
        "Resizing",
        {"height": 6, "width": 3, "pad_to_aspect_ratio": True, "fill_value": 0.5},
        (5, 8, 3),
    ),
    "resize_pad_aspect_first": ("Resizing", {"height": 3, "width": 9, "pad_to_aspect_ratio": True, **CF}, (3, 6, 7)),
    "resize_antialias_up": ("Resizing", {"height": 11, "width": 9, "antialias": True}, (5, 6, 3)),
}


def one_layer(keras, layer, shape: tuple, name: str):
    x = keras.Input(shape, name="x")
    return keras.Model(x, layer(x), name=name)


def _build(keras, case: str):
    cls, kwargs, shape = CASES[case]
    return one_layer(keras, getattr(keras.layers, cls)(**kwargs, name=case), shape, case)


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_reshaping_parity(keras, convert, case):
    result = convert(_build(keras, case))
    assert result.parity.worst_rel <= 1e-4
    assert "permute(" not in forward_source(result)


@pytest.mark.parametrize(
    "case", ["pad2_asym", "crop2_first", "up2_bilinear", "resize_nearest_mixed", "pad1_first", "up1"]
)
def test_reshaping_layout_keep(keras, convert, case):
    result = convert(_build(keras, case), layout="keep")
    assert result.parity.worst_rel <= 1e-4
    assert "perm" not in result.manifest["inputs"][0] and "perm" not in result.manifest["outputs"][0]


def test_emitted_code(keras, convert):
    """Cropping is a slice, padding one F.pad in torch's last-axis-first order, upsampling a
    named nn.Upsample."""
    forward = forward_source(convert(_build(keras, "crop2_asym")))
    assert "x[:, :, :-2, 3:-1]" in forward
    forward = forward_source(convert(_build(keras, "pad2_asym")))
    assert "F.pad(x, (2, 3, 0, 1))" in forward
    code = (convert(_build(keras, "up2_bilinear")).out / "model.py").read_text()
    assert 'self.up2_bilinear = nn.Upsample(scale_factor=(2, 3), mode="bilinear", align_corners=False)' in code


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("case", ["pad2_asym", "crop3_asym", "up2_bilinear", "resize_nearest_down"])
def test_reshaping_file_formats(keras, convert, case, fmt):
    result = convert(_build(keras, case), fmt=fmt)
    assert result.parity.worst_rel <= 1e-4


TF_KERAS_CASES = ["pad1_asym", "pad2_asym", "crop1_asym", "crop2_first", "up2_bilinear", "up3", "up1"]
TF_KERAS_CASES += ["resize_nearest_down", "resize_bilinear_up", "resize_crop_aspect"]  # tf.keras has no antialias


@pytest.mark.parametrize("case", TF_KERAS_CASES)
def test_reshaping_tf_keras2_h5(tmp_path, case):
    tf_keras = pytest.importorskip("tf_keras")
    cls, kwargs, shape = CASES[case]
    model = one_layer(tf_keras, getattr(tf_keras.layers, cls)(**kwargs, name=case), shape, case)
    parity = convert_tf_keras(model, tmp_path)
    assert parity.passed and parity.worst_rel <= 1e-4, parity.to_dict()


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        ("UpSampling2D", {"size": 2, "interpolation": "bicubic"}),
        ("Resizing", {"height": 4, "width": 4, "interpolation": "lanczos3"}),
    ],
    ids=["upsampling_bicubic", "resizing_lanczos"],
)
def test_inexact_interpolation_refused(keras, tmp_path, cls, kwargs):
    """TensorFlow's bicubic/lanczos differ from PyTorch's: refused with the layer named, nothing written."""
    import ktorch
    from ktorch.graph.errors import KtorchError

    model = one_layer(keras, getattr(keras.layers, cls)(**kwargs, name="smooth"), (5, 6, 3), "inexact")
    model.save(tmp_path / "inexact.h5")
    with pytest.raises(KtorchError, match=r"smooth.*no exact PyTorch equivalent.*plugins"):
        ktorch.convert(tmp_path / "inexact.h5", tmp_path / "out")
    assert not (tmp_path / "out").exists()
