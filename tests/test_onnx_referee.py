"""ONNX Runtime as a referee: when the source and the emitted model disagree, the source's
own ONNX export run on ONNX Runtime says which side is right."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import randomize_batchnorm, randomize_weights
from safetensors.numpy import load_file, save_file

import ktorch
from ktorch.onnx_io import export
from ktorch.verify.onnx_referee import referee


@pytest.fixture
def converted(tmp_path, keras):
    layers = keras.layers
    inputs = keras.Input((12, 12, 3))
    x = layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(5, name="head")(x)
    model = keras.Model(inputs, outputs, name="referee_cnn")
    randomize_weights(model, seed=11, scale=0.4)
    randomize_batchnorm(model, seed=11)
    src = tmp_path / "referee_cnn.keras"
    model.save(src)
    result = ktorch.convert(src, tmp_path / "referee_cnn_torch")
    assert result.parity.passed
    return src, result.out


def plant_mismatch(directory, key: str = "head.weight", factor: float = 1.05) -> None:
    """Scale one weight of the emitted model by `factor` (a translation bug, planted)."""
    path = directory / "model.safetensors"
    state = load_file(str(path))
    assert key in state, sorted(state)
    state[key] = (state[key] * np.float32(factor)).astype(np.float32)
    save_file(state, str(path))


def test_referee_agrees_when_nothing_is_wrong(converted):
    src, out = converted
    report = referee(src, out, exporter=export)
    assert report.verdict == "agree"
    (output,) = report.outputs
    assert output.emitted.passed and output.ort_vs_source.passed and output.ort_vs_emitted.passed
    assert report.exporter.startswith("tf2onnx")


def test_referee_sides_with_the_source_on_a_planted_mismatch(converted):
    src, out = converted
    plant_mismatch(out)
    report = referee(src, out, exporter=export)
    (output,) = report.outputs
    assert not output.emitted.passed  # the planted bug shows
    assert output.ort_vs_source.passed and output.ort_vs_source.max_rel <= 1e-4
    assert not output.ort_vs_emitted.passed
    assert output.verdict == "source" and report.verdict == "source"
    assert "agrees with the SOURCE" in report.summary()


def test_verify_cli_referee_option(converted, capsys):
    from ktorch.cli import main

    src, out = converted
    plant_mismatch(out, key="conv.weight", factor=1.05)
    code = main(["verify", str(src), str(out), "--referee", "onnxruntime", "--mode", "outputs", "--json", "-"])
    assert code == 1  # verify's own verdict: a numeric mismatch
    data = json.loads(capsys.readouterr().out)
    assert data["referee"]["verdict"] == "source"
    assert data["referee"]["outputs"][0]["onnxruntime_vs_source"]["passed"] is True


def test_referee_for_a_pytorch_source(tmp_path):
    """torch.export program -> Keras; the referee exports the program with torch.onnx.export."""
    import torch
    from torch import nn

    torch.manual_seed(12)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    ).eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    program = torch.export.export(net, (torch.randn(2, 3, 10, 10),))
    src = tmp_path / "net.pt2"
    torch.export.save(program, str(src))
    result = ktorch.convert(src, tmp_path / "net_keras", to="keras")
    assert result.parity.passed
    report = referee(src, result.out, exporter=export)
    assert report.exporter.startswith("torch.onnx.export")
    assert report.verdict == "agree"
    assert report.outputs[0].ort_vs_source.max_rel <= 1e-4 and report.outputs[0].ort_vs_emitted.max_rel <= 1e-4


def test_export_of_an_emitted_pytorch_directory(converted):
    """A directory ktorch emitted for PyTorch exports with torch.onnx.export (a round trip
    Keras -> PyTorch -> ONNX), checked on ONNX Runtime against the emitted module."""

    from ktorch.verify.onnx_referee import run_onnx

    src, out = converted
    result = export(out, out.parent / "from_torch.onnx")
    assert result.parity.passed and result.parity.worst_rel <= 1e-4
    # and it computes what the Keras source computes (inputs NHWC -> NCHW for the PyTorch export)
    import keras

    x = np.random.default_rng(3).standard_normal((3, 12, 12, 3)).astype("float32")
    expected = np.asarray(keras.models.load_model(src)(x))
    (got,) = run_onnx(out.parent / "from_torch.onnx", [x.transpose(0, 3, 1, 2)])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
