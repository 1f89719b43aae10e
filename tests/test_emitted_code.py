"""The emitted PyTorch code is a real, idiomatic, trainable model."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import ktorch
from ktorch.verify.runners import import_emitted

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture(scope="module")
def small_cnn(tmp_path_factory):
    out = tmp_path_factory.mktemp("emitted") / "small_cnn_torch"
    ktorch.convert(SAMPLES / "small_cnn.h5", out)
    return out


def test_imports_only_torch_safetensors_and_stdlib(small_cnn):
    tree = ast.parse((small_cnn / "model.py").read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0])
    assert roots <= {"__future__", "pathlib", "torch", "safetensors"}, roots


def test_is_formatted(small_cnn):
    if shutil.which("ruff") is None:
        pytest.skip("ruff is not installed")
    done = subprocess.run(
        ["ruff", "format", "--isolated", "--line-length=100", "--check", str(small_cnn / "model.py")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_reads_like_hand_written(small_cnn):
    code = (small_cnn / "model.py").read_text()
    assert "class SmallCnn(nn.Module):" in code
    assert "self.stem_conv = nn.Conv2d(3, 16, kernel_size=3, stride=2, bias=False)" in code
    assert "self.stem_bn = KerasBatchNorm2d(16, eps=0.001, momentum=0.01)" in code
    forward = code[code.index("def forward") : code.index("\ndef load")]
    assert "permute(" not in forward and "transpose(" not in forward
    # in place where nothing else reads the tensor, as torchvision writes ReLU(inplace=True), `out += identity`
    assert "stem_relu = F.relu(stem_bn, inplace=True)" in forward
    assert "block_add = block_dw.add_(stem_relu)" in forward
    assert (
        "dropout = self.dropout(flatten)" in forward and "self.dropout = nn.Dropout(0.5)" in code
    )  # kept for training
    assert "predictions = torch.softmax(self.predictions(dropout), dim=1)" in forward
    assert "image: float32[N, 3, 32, 32]" in code  # the docstring states the shapes


def test_trainable_with_keras_statistics(small_cnn, keras):
    net = import_emitted(small_cnn).load()
    bn = net.stem_bn
    source = keras.models.load_model(SAMPLES / "small_cnn.h5", compile=False).get_layer("stem_bn")
    np.testing.assert_allclose(bn.running_mean.numpy(), source.moving_mean.numpy())
    np.testing.assert_allclose(bn.running_var.numpy(), source.moving_variance.numpy())
    assert all(isinstance(p, torch.nn.Parameter) for p in net.parameters())
    net.train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randn(4, 3, 32, 32)
    before = net.predictions.weight.detach().clone()
    loss = -net(x)[:, 0].log().mean()
    loss.backward()
    optimizer.step()
    assert not torch.equal(before, net.predictions.weight)
    assert not torch.equal(bn.running_mean, torch.from_numpy(source.moving_mean.numpy()))  # train mode updates stats


def test_load_gives_channels_last_convolutions(small_cnn):
    """load() keeps the NCHW shapes but lays a CNN's weights out channels-last, where oneDNN
    and cuDNN need no reordering per call; the numbers are those of the plain layout."""
    net = import_emitted(small_cnn).load()
    weight = net.stem_conv.weight
    assert weight.dim() == 4 and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    plain = import_emitted(small_cnn).SmallCnn()
    plain.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(net(x), plain.eval()(x), rtol=1e-5, atol=1e-6)


def test_torch_jit_script_and_export(small_cnn):
    net = import_emitted(small_cnn).load()
    x = torch.randn(2, 3, 32, 32)
    expected = net(x)
    torch.testing.assert_close(torch.jit.script(net)(x), expected)
    exported = torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    torch.testing.assert_close(exported.module()(torch.cat([x, x])), torch.cat([expected, expected]))


@pytest.mark.slow
def test_torch_compile(small_cnn):
    net = import_emitted(small_cnn).load()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(torch.compile(net)(x), net(x), rtol=1e-4, atol=1e-5)


def test_load_puts_model_on_device_in_eval_mode(small_cnn):
    net = import_emitted(small_cnn).load(device="cpu")
    assert not net.training
    assert next(net.parameters()).device.type == "cpu"


def test_streaming_safetensors_writer_round_trips():
    from safetensors.numpy import load_file

    from ktorch.translate.safetensors_io import save_streaming

    rng = np.random.default_rng(0)
    tensors = {
        "conv.weight": rng.standard_normal((4, 3, 3, 3)).astype("float32"),
        "bn.num_batches_tracked": np.array(0, np.int64),
        "ids": rng.integers(0, 9, (2, 3)).astype("int32"),
        "empty": np.zeros((0, 3), np.float32),
        "fortran": np.asfortranarray(rng.standard_normal((5, 6))),
        "half": rng.standard_normal(7).astype("float16"),
        "mask": np.array([True, False, True]),
    }
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/w.safetensors"
        save_streaming(tensors, path)
        back = load_file(path)
    assert set(back) == set(tensors)
    for name, array in tensors.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
        np.testing.assert_array_equal(back[name], array)
