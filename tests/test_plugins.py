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

PLUGIN_SOURCE = '''
import ktorch.plugins

@ktorch.plugins.keras_layer("AffineShift", replace=True)
def affine_shift_from_keras(call):
    return call.emit("scale_shift", [call.x], {"scale": float(call.get("scale")), "offset": 1.5})
'''


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
        sys.exit(main(["convert", {str(custom_model)!r}, "-o", {str(tmp_path / 'cli_out')!r}, "--plugin", "custom_translators"]))
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
