"""torchvision classification models -> Keras from `.pt2` files at parity (<= 1e-4 relative
to the output's scale): random seeded weights (no download), random BatchNorm running
statistics, small inputs, a dynamic batch. The fast run covers resnet18, mobilenet_v2 and
shufflenet (a channel shuffle needs real transposes); the rest of the zoo is `slow`."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from test_torch_to_keras import randomize_bn

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

FAST = ["resnet18", "mobilenet_v2", "shufflenet_v2_x0_5"]
SLOW = [
    "resnet50",
    "squeezenet1_0",
    "mnasnet0_5",
    "regnet_x_400mf",
    "efficientnet_b0",
    "mobilenet_v3_small",
    "densenet121",
    "googlenet",
    "convnext_tiny",
    "vit_b_16",
]
KWARGS = {"googlenet": {"aux_logits": False, "init_weights": False}, "vit_b_16": {"image_size": 32}}
SIZES = {"vit_b_16": 32}
STANDARD_CNNS = {
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "squeezenet1_0",
    "mnasnet0_5",
    "regnet_x_400mf",
    "efficientnet_b0",
    "mobilenet_v3_small",
    "densenet121",
    "googlenet",
}


def export_pt2(name: str, path, size: int = 64):
    torch.manual_seed(0)
    model = randomize_bn(getattr(torchvision.models, name)(weights=None, **KWARGS.get(name, {})).eval())
    if name.startswith("vit"):  # torchvision zeroes the head: give it weights, or every output is 0
        torch.nn.init.normal_(model.heads.head.weight, std=0.5)
        torch.nn.init.normal_(model.heads.head.bias, std=0.5)
    x = torch.randn(2, 3, size, size)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, path)
    return model


def check_model(name: str, tmp_path, size: int = 64):
    import ktorch

    src = tmp_path / f"{name}.pt2"
    model = export_pt2(name, src, size)
    start = time.perf_counter()
    result = ktorch.convert(src, tmp_path / f"{name}_keras")
    elapsed = time.perf_counter() - start
    assert result.parity.passed and result.parity.worst_rel <= 1e-4, result.parity
    print(
        f"\n{name} ({size}x{size}): worst relative error {result.parity.worst_rel:.2e}, converted and verified in {elapsed:.1f} s"
    )
    manifest = json.loads((result.out / "ktorch.json").read_text())
    assert manifest["parity"]["passed"] and manifest["direction"] == "torch->keras"
    if name in STANDARD_CNNS:
        assert manifest["layout"]["transposes"] == 0, "a standard CNN runs channels-last with no transpose"
    if name.startswith("vit"):  # the channels-last patches reshape straight to (N, tokens, C)
        assert manifest["layout"]["transposes"] == 0 and "layers.Permute(" not in (result.out / "model.py").read_text()
    # the emitted model keeps a dynamic batch: run it on a batch of 3 against PyTorch
    x = np.random.default_rng(3).standard_normal((3, 3, size, size)).astype("float32")
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = np.asarray(result.keras_model(x.transpose(0, 2, 3, 1), training=False))
    assert np.max(np.abs(got - expected)) <= 1e-4 * np.max(np.abs(expected))
    return result, elapsed, model


@pytest.mark.parametrize("name", FAST)
def test_torchvision_fast(name, tmp_path):
    result, _, _ = check_model(name, tmp_path)
    code = (result.out / "model.py").read_text()
    assert "import torch" not in code and "tensorflow" not in code
    if name == "resnet18":  # one Keras layer per PyTorch module, named after the module path
        for layer in (
            "conv1",
            "bn1",
            "layer1_0_conv1",
            "layer1_0_bn2",
            "layer2_0_downsample_0",
            "layer4_1_conv2",
            "fc",
        ):
            assert f'name="{layer}"' in code, layer
        assert code.count("layers.Conv2D(") == 20 and code.count("= TorchBatchNormalization(") == 20


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_torchvision_slow(name, tmp_path):
    check_model(name, tmp_path, size=SIZES.get(name, 64))


@pytest.mark.slow
def test_swin_t(tmp_path):
    """Shifted-window attention folds the windows into the batch ((B, H, W, C) ->
    (B * windows, 49, C)), rolls the image and adds a relative position bias and a mask:
    the emitted model holds the windows on an axis of their own, after a dynamic batch."""
    result, elapsed, model = check_model("swin_t", tmp_path)
    print(f"\nswin_t -> Keras at 64x64: {elapsed:.1f} s, worst relative error {result.parity.worst_rel:.2e}")
    code = (result.out / "model.py").read_text()
    assert "keras.ops.roll(" in code and "target_shape=(9, 49, 96)" in code
    for batch in (1, 2):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 64, 64)).astype("float32")
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = np.asarray(result.keras_model(x.transpose(0, 2, 3, 1), training=False))
        assert got.shape == expected.shape
        assert np.max(np.abs(got - expected)) <= 1e-4 * np.max(np.abs(expected)), batch


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_conversion_time_224(name, tmp_path):
    """The conversion time at 224 x 224 (export, read, write, verify), printed for the record."""
    result, elapsed, _ = check_model(name, tmp_path, size=224)
    steps = ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items())
    print(f"\n{name} -> Keras at 224x224: {elapsed:.1f} s ({steps})")
    assert elapsed < 600
