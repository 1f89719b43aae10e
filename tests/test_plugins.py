"""The plugin API: a user's translator for a custom Keras layer, from Python and the CLI."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import ktorch
import ktorch.plugins
from ktorch.graph.errors import UnsupportedOpError

LAYER_SOURCE = '''
import keras

@keras.saving.register_keras_serializable(package="ktorch_test")
class AffineShift(keras.layers.Layer):
    """y = x * scale + 1.5, a custom layer with a config option."""

    def __init__(self, scale=2.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, x):
        return x * self.scale + 1.5

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
'''

PLUGIN_SOURCE = """
import ktorch.plugins

@ktorch.plugins.keras_layer("AffineShift", replace=True)
def affine_shift_from_keras(call):
    return call.emit("scale_shift", [call.x], {"scale": float(call.get("scale")), "offset": 1.5})
"""


@pytest.fixture
def custom_model(tmp_path, keras, monkeypatch):
    (tmp_path / "custom_layers.py").write_text(LAYER_SOURCE)
    (tmp_path / "custom_translators.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import custom_layers

    inputs = keras.Input((4,), name="x")
    h = keras.layers.Dense(3, name="dense")(inputs)
    outputs = custom_layers.AffineShift(scale=3.0, name="shift")(h)
    path = tmp_path / "custom.keras"
    keras.Model(inputs, outputs, name="custom").save(path)
    yield path
    ktorch.plugins.unregister("keras->ir", "AffineShift")


def test_without_plugin_the_layer_is_reported(custom_model, tmp_path):
    ktorch.plugins.unregister("keras->ir", "AffineShift")
    with pytest.raises(UnsupportedOpError, match="shift.*AffineShift") as info:
        ktorch.convert(custom_model, tmp_path / "out", verify=False)
    assert "ktorch.plugins.keras_layer" in str(info.value)


def test_plugin_translator_converts_at_parity(custom_model, tmp_path):
    import custom_translators  # noqa: F401  (registers the translator)

    result = ktorch.convert(custom_model, tmp_path / "out")
    assert result.parity.passed and result.parity.worst_rel < 1e-5
    code = (tmp_path / "out" / "model.py").read_text()
    assert "* 3.0 + 1.5" in code


def test_plugin_from_the_command_line(custom_model, tmp_path):
    env_path = f"{tmp_path}"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {env_path!r})
        import custom_layers  # the Keras class, so that Keras can run the source
        from ktorch.cli import main
        sys.exit(main(["convert", {str(custom_model)!r}, "-o", {str(tmp_path / "cli_out")!r}, "--plugin", "custom_translators"]))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    manifest = (tmp_path / "cli_out" / "ktorch.json").read_text()
    assert '"passed": true' in manifest


def test_duplicate_registration_is_an_error():
    from ktorch.graph.errors import GraphError

    with pytest.raises(GraphError, match="registered twice"):
        ktorch.plugins.keras_layer("Dense")(lambda call: None)


def test_torch_module_plugin(tmp_path):
    """PyTorch -> Keras: a module whose code uses an op ktorch cannot read (torch.sign) is
    translated as a whole by a plugin."""
    import torch

    class MySoftsign(torch.nn.Module):
        def forward(self, x):
            return torch.sign(x) * torch.abs(x) / (1 + torch.abs(x))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)
            self.act = MySoftsign()

        def forward(self, x):
            return self.act(self.fc(x))

    torch.manual_seed(0)
    net = Net().eval()
    example = (torch.randn(2, 4),)
    with pytest.raises(UnsupportedOpError, match="sign"):
        ktorch.convert(net, tmp_path / "without", example_inputs=example, to="keras", verify=False)

    @ktorch.plugins.torch_module("MySoftsign")
    def my_softsign_to_ir(call):
        return [call.emit("softsign", call.inputs[:1])]

    try:
        result = ktorch.convert(net, tmp_path / "with", example_inputs=example, to="keras")
    finally:
        ktorch.plugins.unregister("torch->ir", "module.MySoftsign")
    assert result.parity.passed and result.parity.worst_rel < 1e-5
    assert "softsign" in (tmp_path / "with" / "model.py").read_text()
