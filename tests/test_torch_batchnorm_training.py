"""PyTorch BatchNorm -> Keras in training (issue 14): torch normalises with the biased batch
variance but updates running_var with the unbiased one (n / (n - 1), n the elements per channel);
the emitted TorchBatchNormalization does the same, so training-mode outputs and the moving
statistics agree step after step, on TensorFlow and on the torch backend. momentum=None (a
cumulative average) has no Keras counterpart: a training setup refuses it, a plain conversion warns.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

import ktorch  # noqa: E402
from ktorch.graph.errors import KtorchError  # noqa: E402
from ktorch.verify.runners import import_emitted  # noqa: E402

nn = torch.nn

# (module class, input shape): n = 4, 4 * 5, 2 * 3 * 3 and 2 * 2 * 2 * 3 elements per channel
CASES = {
    "1d-features": (nn.BatchNorm1d, (4, 6)),
    "1d-sequence": (nn.BatchNorm1d, (4, 6, 5)),
    "2d": (nn.BatchNorm2d, (2, 6, 3, 3)),
    "3d": (nn.BatchNorm3d, (2, 6, 2, 2, 3)),
}


def batch_norm(cls, channels: int, seed: int = 0, **kwargs):
    """A BatchNorm with random statistics and affine weights, in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    m = cls(channels, momentum=0.3, **kwargs)
    with torch.no_grad():
        m.running_mean.copy_(torch.randn(channels, generator=gen) * 0.5)
        m.running_var.copy_(torch.rand(channels, generator=gen) * 1.5 + 0.5)
        m.weight.copy_(torch.randn(channels, generator=gen) * 0.3 + 1.0)
        m.bias.copy_(torch.randn(channels, generator=gen) * 0.3)
    return m.eval()


def keras_layout(x: np.ndarray, keras_model) -> np.ndarray:
    """The torch input as the emitted model takes it (channels last where it was laid out so)."""
    same = tuple(keras_model.inputs[0].shape[1:]) == x.shape[1:]
    return x if same or x.ndim < 3 else np.moveaxis(x, 1, -1)


@pytest.mark.parametrize("case", list(CASES))
def test_training_steps_match_torch(case, tmp_path: Path) -> None:
    """Three training-mode calls on new batches: the outputs (normalised with the biased batch
    variance) and the running mean and variance (updated with the unbiased one) agree at 1e-5; an
    inference call afterwards agrees too."""
    cls, shape = CASES[case]
    m = batch_norm(cls, shape[1])
    rng = np.random.default_rng(1)
    example = torch.from_numpy(rng.standard_normal(shape).astype("float32"))
    result = ktorch.convert(m, tmp_path / "out", to="keras", example_inputs=(example,))
    assert result.parity.passed
    code = (tmp_path / "out" / "model.py").read_text()
    assert "class TorchBatchNormalization(layers.BatchNormalization):" in code
    assert "import ktorch" not in code and "from ktorch" not in code
    model = import_emitted(tmp_path / "out").load()
    (layer,) = [lay for lay in model.layers if isinstance(lay, keras.layers.BatchNormalization)]
    assert type(layer).__name__ == "TorchBatchNormalization" and layer.momentum == pytest.approx(0.7)
    m.train()
    for _ in range(3):
        x = (rng.standard_normal(shape) * 2.0 + 0.5).astype("float32")
        expected = m(torch.from_numpy(x)).detach().numpy()
        got = np.asarray(model(keras_layout(x, model), training=True))
        np.testing.assert_allclose(got, keras_layout(expected, model), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(layer.moving_mean), m.running_mean.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(layer.moving_variance), m.running_var.numpy(), rtol=1e-5, atol=1e-6)
    m.eval()
    x = rng.standard_normal(shape).astype("float32")
    expected = m(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(np.asarray(model(keras_layout(x, model), training=False)), keras_layout(expected, model),
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_frozen_layer_and_masks(tmp_path: Path) -> None:
    """trainable=False normalises with the moving statistics and leaves them (as
    layers.BatchNormalization does); a mask is refused."""
    m = batch_norm(nn.BatchNorm1d, 6)
    ktorch.convert(m, tmp_path / "out", to="keras", example_inputs=(torch.randn(4, 6),))
    model = import_emitted(tmp_path / "out").load()
    layer = model.layers[-1]
    layer.trainable = False
    before = np.asarray(layer.moving_variance).copy()
    x = np.random.default_rng(0).standard_normal((4, 6)).astype("float32")
    np.testing.assert_allclose(np.asarray(layer(x, training=True)), m(torch.from_numpy(x)).detach().numpy(), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(layer.moving_variance), before)
    with pytest.raises(ValueError, match="masks are not supported"):
        layer(x, training=True, mask=np.ones((4,), bool))


def test_torch_backend_training_step(tmp_path: Path) -> None:
    """Under KERAS_BACKEND=torch (where a variable's tensor is updated in place) one training call
    moves the statistics as torch does."""
    m = batch_norm(nn.BatchNorm2d, 6)
    x = np.random.default_rng(2).standard_normal((2, 6, 3, 3)).astype("float32")
    ktorch.convert(m, tmp_path / "out", to="keras", example_inputs=(torch.from_numpy(x),))
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import os, sys
        os.environ["KERAS_BACKEND"] = "torch"
        sys.path.insert(0, {str(tmp_path / "out")!r})
        import numpy as np, keras, model
        assert keras.backend.backend() == "torch"
        net = model.load()
        x = np.load({str(tmp_path / "x.npy")!r})
        same = tuple(net.inputs[0].shape[1:]) == x.shape[1:]
        net(x if same else np.moveaxis(x, 1, -1), training=True)
        layer = net.layers[-1]
        np.save({str(tmp_path / "var.npy")!r}, keras.ops.convert_to_numpy(layer.moving_variance))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    m.train()(torch.from_numpy(x))
    np.testing.assert_allclose(np.load(tmp_path / "var.npy"), m.running_var.numpy(), rtol=1e-5)


def test_round_trip_keeps_torch_batchnorm(tmp_path: Path) -> None:
    """PyTorch -> Keras -> PyTorch: TorchBatchNormalization reads back as a plain nn.BatchNorm2d (the
    unbiased update is PyTorch's own), not KerasBatchNorm2d."""
    net = nn.Sequential(nn.Conv2d(3, 6, 3), batch_norm(nn.BatchNorm2d, 6)).eval()
    there = ktorch.convert(net, tmp_path / "keras", to="keras", example_inputs=(torch.randn(2, 3, 6, 6),))
    back = ktorch.convert(there.out, tmp_path / "torch")
    assert back.parity.passed
    code = (back.out / "model.py").read_text()
    assert "nn.BatchNorm2d(6, eps=1e-05, momentum=0.3)" in code and "KerasBatchNorm2d" not in code


def test_cumulative_momentum(tmp_path: Path) -> None:
    """momentum=None: a training setup is refused with the layer named; a plain conversion warns
    (inference is exact, Keras's moving statistics stay fixed in training)."""
    net = nn.Sequential(nn.Linear(5, 6), batch_norm(nn.BatchNorm1d, 6))
    net[1].momentum = None
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(KtorchError, match=r"1: BatchNorm with momentum=None .* give it a momentum"):
        ktorch.convert(net, tmp_path / "a", to="keras", example_inputs=(torch.randn(4, 5),), optimizer=opt)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ktorch.convert(net, tmp_path / "b", to="keras", example_inputs=(torch.randn(4, 5),))
    assert result.parity.passed
    assert any("1: BatchNorm with momentum=None" in str(w.message) for w in caught), [str(w.message) for w in caught]
    # saved as a program, momentum=None reads as momentum 0: the conversion says it cannot tell
    program = torch.export.export(net.eval(), (torch.randn(4, 5),))
    torch.export.save(program, tmp_path / "net.pt2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ktorch.convert(tmp_path / "net.pt2", tmp_path / "c", to="keras")
    assert result.parity.passed
    said = [str(w.message) for w in caught]
    assert any("BatchNorm with momentum 0 in the program" in m and "momentum=None" in m for m in said), said


def test_no_running_stats_is_refused(tmp_path: Path) -> None:
    """track_running_stats=False normalises with batch statistics in eval mode too: refused, saying so."""
    from ktorch.graph.errors import UnsupportedOpError

    net = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6, track_running_stats=False)).eval()
    with pytest.raises(UnsupportedOpError, match="track_running_stats=False"):
        ktorch.convert(net, tmp_path / "out", to="keras", example_inputs=(torch.randn(4, 5),))
