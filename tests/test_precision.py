"""Reduced precision, Keras -> PyTorch: models built under Keras dtype policies (mixed_float16 and
mixed_bfloat16: float32 variables, float16/bfloat16 computation; bfloat16 and float16: variables
and computation alike) convert, and the emitted module computes as Keras does: its weights in
their Keras dtype (load() keeps it), forward under torch.autocast for a mixed policy, the inputs
cast where Keras's layers cast them. Each is verified at its compute dtype's tolerance profile,
at the conversion and layer by layer with `ktorch verify`."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import randomize_batchnorm, randomize_weights

torch = pytest.importorskip("torch")

POLICIES = {  # policy -> (compute dtype, variable dtype, profile)
    "mixed_float16": ("float16", "float32", "fp16"),
    "mixed_bfloat16": ("bfloat16", "float32", "bf16"),
    "bfloat16": ("bfloat16", "bfloat16", "bf16"),
    "float16": ("float16", "float16", "fp16"),
}


def small_cnn(keras):
    inp = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(5, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name="small_cnn")


def transformer_block(keras):
    inp = keras.Input((6, 16), name="tokens")
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="norm1")(inp)
    x = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, name="attention")(x, x)
    x = keras.layers.Add(name="residual1")([inp, x])
    y = keras.layers.LayerNormalization(epsilon=1e-6, name="norm2")(x)
    y = keras.layers.Dense(32, activation="gelu", name="mlp_fc1")(y)
    y = keras.layers.Dense(16, name="mlp_fc2")(y)
    out = keras.layers.Add(name="residual2")([x, y])
    return keras.Model(inp, out, name="transformer_block")


def build(keras, factory, policy):
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = factory(keras)
    finally:
        keras.config.set_dtype_policy(old)
    randomize_weights(model, scale=0.3)
    randomize_batchnorm(model)
    return model


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("factory", [small_cnn, transformer_block], ids=["cnn", "transformer"])
def test_policy_converts_at_its_profile(keras, tmp_path, policy, factory):
    import ktorch
    from ktorch.verify import PROFILES

    compute, variables, profile = POLICIES[policy]
    model = build(keras, factory, policy)
    assert all(w.dtype == variables for w in model.weights)
    src = tmp_path / f"{model.name}.keras"
    model.save(src)
    result = ktorch.convert(src, tmp_path / "out")  # no tolerance given: the profile decides
    rtol = PROFILES[profile].rtol
    assert result.parity.passed
    assert [c.tolerance for c in result.parity.outputs] == [rtol]  # the compute dtype's, not float32's
    assert result.parity.worst_rel <= rtol

    info = result.manifest["model"]
    assert info["compute_dtype"] == compute and info["dtype_policies"] == [policy]
    assert info["autocast"] == (compute if variables == "float32" else None)
    assert info["weights_dtype"] == [variables]
    assert result.manifest["outputs"][0]["dtype"] == compute  # Keras returns the last layer's compute dtype

    code = (result.out / "model.py").read_text()
    assert "import ktorch" not in code and "from ktorch" not in code
    if variables == "float32":
        assert f"with torch.autocast({result.manifest['inputs'][0]['emitted_name']}.device.type, " in code
        assert f"dtype=torch.{compute}):" in code and "self.to(torch." not in code
    else:
        assert f"self.to(torch.{variables})" in code and "torch.autocast" not in code
    assert f".to(torch.{compute})" in code  # the input, cast where Keras's first layer casts it

    module = ktorch.verify.runners.import_emitted(result.out).load()
    floats = {str(p.dtype).removeprefix("torch.") for p in module.parameters()}
    assert floats == {variables}  # load() keeps the Keras variables' dtype
    x = np.random.default_rng(3).standard_normal((3, *model.input.shape[1:])).astype("float32")
    feed = torch.from_numpy(x.transpose(0, 3, 1, 2).copy() if x.ndim == 4 else x)
    with torch.no_grad():
        got = module(feed)
    assert str(got.dtype) == f"torch.{compute}"
    expected = np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(model(x), "float32")))
    err = np.max(np.abs(got.float().numpy() - expected)) / np.max(np.abs(expected))
    assert err <= rtol, err  # another batch than the conversion's

    report = ktorch.verify.verify_conversion(src, result.out)
    assert report.exit_code == 0, report.error
    run = report.runs[0]
    assert run.profile == profile and run.rtol == rtol
    assert run.layers and all(layer.propagated.passed and layer.isolated.passed for layer in run.layers)


def test_float32_output_layer_in_a_mixed_model(keras, tmp_path):
    """Keras's mixed-precision guide ends the model with float32 layers: such a layer casts its
    input to float32, computes in float32 (its variables are not autocast) and returns float32;
    the emitted model casts where Keras does and runs the float32 Dense with autocast off."""
    import ktorch

    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        inp = keras.Input((10,), name="features")
        x = keras.layers.Dense(16, activation="relu", name="hidden")(inp)
        x = keras.layers.Dense(4, dtype="float32", name="logits")(x)
        out = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)
        model = keras.Model(inp, out, name="mixed_head")
    finally:
        keras.config.set_dtype_policy(old)
    randomize_weights(model)
    model.save(tmp_path / "mixed_head.keras")
    result = ktorch.convert(tmp_path / "mixed_head.keras", tmp_path / "out")
    assert result.manifest["outputs"][0]["dtype"] == "float32"
    assert result.parity.passed and result.parity.outputs[0].tolerance == ktorch.verify.PROFILES["fp16"].rtol
    code = (result.out / "model.py").read_text()
    assert "_float32 = hidden.to(torch.float32)" in code  # where Keras casts the float32 layer's input
    assert "with torch.autocast(features.device.type, enabled=False):  # a float32 layer" in code
    assert "return probabilities.to(torch.float32)" in code
    module = ktorch.verify.runners.import_emitted(result.out).load()
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((2, 10)).astype("float32"))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        hidden = module.hidden(x.half())
        assert hidden.dtype == torch.float16
    with torch.no_grad():
        logits = module.logits(torch.relu(hidden).float())
        expected = np.asarray(model.get_layer("logits")(np.maximum(hidden.float().numpy(), 0)))
    assert np.max(np.abs(logits.numpy() - expected)) <= 1e-5 * np.max(np.abs(expected))  # a float32 Dense, exactly
    report = ktorch.verify.verify_conversion(tmp_path / "mixed_head.keras", result.out)
    assert report.exit_code == 0 and report.runs[0].profile == "fp16"


def test_profile_from_the_compute_dtype():
    """A float32 output of a float16-computing model is judged at float16's tolerance."""
    from ktorch.verify import select_profile

    assert select_profile("cpu", ["float32"]).name == "cpu-fp32"
    assert select_profile("cpu", ["float32"], compute="float16").name == "fp16"
    assert select_profile("cuda", ["float32"], compute="bfloat16", tf32=True).name == "bf16"
    assert select_profile("cuda", ["float16"], compute="bfloat16").name == "bf16"  # the looser wins
