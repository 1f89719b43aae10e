"""The Keras code ktorch emits (PyTorch -> Keras) under TensorFlow's XLA compiler:
`jit_compile=True` gives the same numbers as eager execution, for inference and for a
training step (issue 7: emitted code must work with the frameworks' compilers)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")
nn = torch.nn


class SmallNet(nn.Module):
    """Conv with PyTorch padding on a stride 2, BatchNorm, in-place ReLU, max pool with
    padding, a residual addition, adaptive pooling and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        x = self.relu(x + self.conv2(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(scope="module")
def emitted(tmp_path_factory):
    import keras

    import ktorch

    if keras.backend.backend() != "tensorflow":
        pytest.skip("XLA's jit_compile is TensorFlow's")
    torch.manual_seed(0)
    net = SmallNet().eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    out = tmp_path_factory.mktemp("jit") / "small_keras"
    result = ktorch.convert(net, out, example_inputs=(torch.randn(2, 3, 32, 32),), to="keras", force=True)
    assert result.parity is not None and result.parity.passed
    return result


def load(result):
    from ktorch.verify.runners import import_emitted

    return import_emitted(result.out).load()


def test_jit_compile_inference_matches_eager(emitted):
    model = load(emitted)
    x = np.random.default_rng(0).standard_normal((3, 32, 32, 3)).astype("float32")
    eager = np.asarray(model(x, training=False))
    compiled = tf.function(lambda t: model(t, training=False), jit_compile=True)
    np.testing.assert_allclose(np.asarray(compiled(tf.constant(x))), eager, rtol=1e-5, atol=1e-5)
    model.compile(jit_compile=True)
    np.testing.assert_allclose(model.predict(x, verbose=0), eager, rtol=1e-5, atol=1e-5)


def test_jit_compile_training_step_matches_eager(emitted):
    import keras

    x = np.random.default_rng(1).standard_normal((4, 32, 32, 3)).astype("float32")
    y = np.random.default_rng(2).standard_normal((4, 4)).astype("float32")
    trained = []
    for jit in (False, True):
        model = load(emitted)
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", jit_compile=jit)
        model.train_on_batch(x, y)
        trained.append([np.asarray(w) for w in model.weights])
    for eager, xla in zip(*trained):
        np.testing.assert_allclose(xla, eager, rtol=1e-4, atol=1e-5)
    assert not np.allclose(trained[1][0], np.asarray(load(emitted).weights[0]))  # the step changed the weights


def test_no_scratch_weights_left_behind(emitted):
    """The Keras writer spills the weights to a scratch file while it builds the model
    (so that they are never held twice); only model.py, the weights and ktorch.json remain."""
    assert sorted(p.name for p in emitted.out.iterdir()) == ["ktorch.json", "model.py", "model.weights.h5"]


def test_streaming_reader_round_trip(tmp_path):
    from ktorch.translate.safetensors_io import StreamingReader, save_streaming

    rng = np.random.default_rng(0)
    tensors = {
        "0:dense": rng.standard_normal((3, 4)).astype("float32"),
        "1:dense": rng.standard_normal((4,)).astype("float64"),
        "0:ids": np.arange(6, dtype="int64").reshape(2, 3),
        "0:flag": np.array([True, False]),
        "0:transposed": rng.standard_normal((5, 2)).astype("float32").T,  # not contiguous
    }
    save_streaming(tensors, tmp_path / "w.safetensors")
    with StreamingReader(tmp_path / "w.safetensors") as reader:
        for name, expected in tensors.items():
            got = reader.get_tensor(name)
            assert got.dtype == expected.dtype and got.shape == expected.shape
            np.testing.assert_array_equal(got, expected)
