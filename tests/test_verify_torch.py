"""`ktorch verify` in the PyTorch -> Keras direction (source: a torch.export .pt2 file;
emitted: a Keras functional model.py, stepped statement by statement)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ktorch
from ktorch.verify import verify_conversion

torch = pytest.importorskip("torch")


class SmallNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, Path]:
    torch.manual_seed(0)
    net = SmallNet().eval()
    with torch.no_grad():
        net.bn.running_mean.normal_(0.0, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.bias.normal_(0.0, 0.5)
    root = tmp_path_factory.mktemp("torch_direction")
    src = root / "small_net.pt2"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.export.save(torch.export.export(net, (torch.randn(2, 3, 12, 12),), dynamic_shapes=({0: batch},)), str(src))
    out = root / "small_net_keras"
    ktorch.convert(src, out, to="keras", verify=False)
    return src, out


def test_torch_to_keras_verifies(converted):
    src, out = converted
    report = verify_conversion(src, out, batches=(1, 3))
    assert report.passed, report.summary()
    assert report.direction == "torch->keras"
    assert [r.batch for r in report.runs] == [1, 3]
    assert report.runs[0].outputs[0].max_rel < 1e-5


def test_torch_to_keras_planted_epsilon_fails(converted, tmp_path):
    import shutil

    src, out = converted
    planted = tmp_path / "planted"
    shutil.copytree(out, planted)
    code = (planted / "model.py").read_text()
    assert code.count("epsilon=1e-05") == 1, code
    (planted / "model.py").write_text(code.replace("epsilon=1e-05", "epsilon=0.001"))
    report = verify_conversion(src, planted)
    assert report.exit_code == 1, report.summary()
    manifest = json.loads((planted / "ktorch.json").read_text())
    assert {"conv", "bn", "fc"} <= set(manifest["values"])  # the layer map recorded at conversion
    assert report.first_divergence[1].source == "bn"


def test_torch_to_keras_layers_with_a_layer_map(converted, tmp_path):
    """Given a layer map (source module path -> emitted variable, with its layout perm),
    the Keras build() is stepped eagerly and each layer isolated."""
    import shutil

    src, out = converted
    planted = tmp_path / "mapped"
    shutil.copytree(out, planted)
    manifest = json.loads((planted / "ktorch.json").read_text())
    code = (planted / "model.py").read_text()
    for name in ("conv", "fc"):
        assert f"{name} = layers." in code, code
    assert "bn = TorchBatchNormalization(" in code, code  # PyTorch's running-variance update
    manifest["values"] = {
        "conv": {"emitted": "conv", "perm": [0, 2, 3, 1]},
        "bn": {"emitted": "bn", "perm": [0, 2, 3, 1]},
        "fc": {"emitted": "fc"},
    }
    (planted / "ktorch.json").write_text(json.dumps(manifest))
    report = verify_conversion(src, planted)
    assert report.passed, report.summary()
    run = report.runs[0]
    assert [layer.source for layer in run.layers] == ["conv", "bn", "fc"]
    assert [layer.class_name for layer in run.layers] == ["Conv2d", "BatchNorm2d", "Linear"]
    (planted / "model.py").write_text(code.replace("epsilon=1e-05", "epsilon=0.001"))
    report = verify_conversion(src, planted)
    assert report.exit_code == 1
    run, layer = report.first_divergence
    assert layer.source == "bn" and [r.source for r in run.layers if not r.isolated.passed] == ["bn"]


class InplaceNet(torch.nn.Module):
    """torchvision style: a ReLU(inplace=True) overwrites the BatchNorm's output tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.relu = torch.nn.ReLU(inplace=True)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_fixed_batch_export_and_inplace_relu_verify_layer_by_layer(tmp_path):
    torch.manual_seed(1)
    net = InplaceNet().eval()
    with torch.no_grad():
        net.bn.running_mean.normal_(0.0, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    src = tmp_path / "inplace.pt2"
    torch.export.save(torch.export.export(net, (torch.randn(1, 3, 9, 9),)), str(src))  # batch fixed at 1
    out = tmp_path / "inplace_keras"
    ktorch.convert(src, out, to="keras", verify=False)
    report = verify_conversion(src, out, batches=(2,))
    assert report.passed, report.summary()
    assert [r.batch for r in report.runs] == [1] and any("fixed batch" in w for w in report.warnings)
    layers = {layer.source: layer for layer in report.runs[0].layers}
    assert {"conv", "bn", "relu", "fc"} <= set(layers)
    # the BatchNorm's captured output is its own, not the ReLU's that overwrote it in place
    assert layers["bn"].isolated.max_rel < 1e-5 and layers["bn"].propagated.max_rel < 1e-5
