"""The export route (Keras -> PyTorch through torch.export, issue 13): KerasHub backbones and
custom layers that the Keras reader cannot read, captured by Keras on its torch backend in a
worker process, converted to readable PyTorch named after the Keras layers, and verified
against Keras on TensorFlow at two batch sizes."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import randomize_batchnorm, randomize_weights

keras_hub = pytest.importorskip("keras_hub")


def _convert(model: Any, tmp_path: Path, name: str, **kwargs: Any) -> Any:
    import ktorch
    from ktorch.verify.parity import check_keras_to_torch

    src = tmp_path / f"{name}.keras"
    model.save(src)
    result = ktorch.convert(src, tmp_path / f"{name}_torch", **kwargs)
    assert result.parity is not None and result.parity.passed, result.parity
    again = check_keras_to_torch(src, result.out, batch=3, trust_code=kwargs.get("trust_code", False), seed=1)
    assert again.passed and again.batch == 3, again
    return result


def _forward(out: Path) -> str:
    code = (out / "model.py").read_text()
    return code[code.index("def forward") : code.index("def load")]


def test_resnet_backbone(tmp_path: Path) -> None:
    keras_hub.models.ResNetBackbone  # noqa: B018  (registers the class)
    model = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(32, 32, 3),
    )  # fmt: skip
    randomize_batchnorm(model)
    result = _convert(model, tmp_path, "resnet")
    m = result.manifest
    assert m["route"]["name"] == "export" and "ResNetBackbone" in m["route"]["reason"]
    assert m["layout"]["transposes"] == 0
    code = (result.out / "model.py").read_text()
    assert "import ktorch" not in code and "from ktorch" not in code
    assert "self.conv1_conv = nn.Conv2d(3, 64, kernel_size=3, stride=2" in code
    # a Keras BatchNormalization keeps Keras's moving-variance update (the biased batch variance)
    assert "self.stack1_block0_0_bn = KerasBatchNorm2d(16" in code
    forward = _forward(result.out)
    assert not re.search(r"\.permute\(|\.transpose\(|\.contiguous\(", forward), forward
    assert "stack0_block0_2_bn = self.stack0_block0_2_bn(stack0_block0_2_conv)" in forward


def test_bert_backbone(tmp_path: Path) -> None:
    model = keras_hub.models.BertBackbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=16
    )
    result = _convert(model, tmp_path, "bert")
    m = result.manifest
    assert m["route"]["name"] == "export"
    assert [spec["name"] for spec in m["inputs"]] == ["padding_mask", "segment_ids", "token_ids"]
    assert m["inputs"][2]["range"] == [0, 100]
    code = (result.out / "model.py").read_text()
    assert "import ktorch" not in code
    assert "self.token_embedding = nn.Embedding(100, 16)" in code
    assert "self.transformer_layer_0_feedforward_intermediate_dense = nn.Linear(16, 32)" in code
    assert "self.transformer_layer_1_feedforward_layer_norm = nn.LayerNorm(16, eps=1e-12)" in code
    assert "self.transformer_layer_0_self_attention_layer_query_kernel = nn.Parameter" in code
    assert "torch.where" not in code


@pytest.mark.slow
def test_gpt2_backbone(tmp_path: Path) -> None:
    model = keras_hub.models.GPT2Backbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=16
    )
    result = _convert(model, tmp_path, "gpt2")
    code = (result.out / "model.py").read_text()
    assert "import ktorch" not in code and "nn.LayerNorm(16" in code


CUSTOM_MODULE = '''
import keras


@keras.saving.register_keras_serializable(package="route_layers")
class ScaledDense(keras.layers.Layer):
    """x @ kernel * scale, then tanh: a layer the Keras reader has no translator for."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")
        self.scale = self.add_weight(shape=(self.units,), name="scale", initializer="ones")

    def call(self, x):
        return keras.ops.tanh(keras.ops.matmul(x, self.kernel) * self.scale)

    def get_config(self):
        return {**super().get_config(), "units": self.units}
'''


def _custom_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keras: Any) -> Any:
    (tmp_path / "route_layers.py").write_text(textwrap.dedent(CUSTOM_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the export worker imports it too
    import route_layers

    inputs = keras.Input((6,), name="features")
    x = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    outputs = route_layers.ScaledDense(4, name="scaled")(x)
    model = keras.Model(inputs, outputs, name="custom")
    randomize_weights(model)
    return model


def test_custom_layer_with_custom_objects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keras: Any) -> None:
    model = _custom_model(tmp_path, monkeypatch, keras)
    result = _convert(model, tmp_path, "custom", custom_objects="route_layers", trust_code=True, route="export")
    assert result.manifest["route"]["name"] == "export"  # the Keras reader has no translator for ScaledDense
    assert "requested" in result.manifest["route"]["reason"]  # the Keras reader has no translator for ScaledDense
    code = (result.out / "model.py").read_text()
    assert "self.hidden = nn.Linear(6, 8)" in code
    assert "self.scaled = nn.Linear(8, 4, bias=False)" in code and "self.scaled_scale = nn.Parameter" in code
    assert "scaled_tanh = torch.tanh(scaled_mul)" in code


def test_missing_custom_class_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keras: Any) -> None:
    import ktorch
    from ktorch.graph.errors import UntrustedCodeError
    from ktorch.keras_export import MissingClassError

    model = _custom_model(tmp_path, monkeypatch, keras)
    src = tmp_path / "custom.keras"
    model.save(src)
    with pytest.raises(UntrustedCodeError, match="trust"):
        ktorch.convert(src, tmp_path / "untrusted", route="export", custom_objects="route_layers", verify=False)
    sys.modules.pop("route_layers", None)
    keras.saving.get_custom_objects().pop("route_layers>ScaledDense", None)
    monkeypatch.delenv("PYTHONPATH")
    with pytest.raises(MissingClassError, match=r"uses class ScaledDense.*--custom-objects") as info:
        ktorch.convert(src, tmp_path / "missing", route="export", verify=False)
    assert "\n" not in str(info.value)


def test_direct_route_stays_first(tmp_path: Path, keras: Any) -> None:
    import ktorch

    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(inputs))
    src = tmp_path / "plain.keras"
    model.save(src)
    result = ktorch.convert(src, tmp_path / "plain_torch")
    assert result.manifest["route"]["name"] == "direct"
    from ktorch.translate.output import read_manifest

    assert read_manifest(result.out)["route"]["name"] == "direct"
    np.testing.assert_equal(result.parity.passed, True)


def _dict_io_model(keras: Any) -> Any:
    """Dict inputs and outputs whose declared order differs from their sorted order."""
    token = keras.Input((4,), name="zz_features")
    extra = keras.Input((2,), name="aa_features")
    x = keras.layers.Concatenate(name="joined")([token, extra * 3.0])
    outputs = {
        "zeta_out": keras.layers.Dense(3, name="zeta")(x),
        "alpha_out": keras.layers.Dense(3, name="alpha")(x),  # same shape: only pairing by name tells them apart
    }
    model = keras.Model({"zz_features": token, "aa_features": extra}, outputs, name="dict_io")
    randomize_weights(model)
    return model


@pytest.mark.parametrize("route", ["direct", pytest.param("export", marks=pytest.mark.slow)])
def test_dict_outputs_are_paired_by_name(tmp_path: Path, keras: Any, route: str) -> None:
    """Keras on TensorFlow returns a dict of outputs in the declared order, Keras on torch sorts
    the keys and `model.outputs` is sorted: the conversion, its check and `ktorch verify` must
    pair the outputs by name all the same."""
    import ktorch
    from ktorch.verify import verify_conversion
    from ktorch.verify.runners import keras_outputs, output_keys

    model = _dict_io_model(keras)
    assert [t.name for t in model.outputs] != [t.name for t in keras_outputs(model.output, output_keys(model.output))]
    src = tmp_path / "dict_io.keras"
    model.save(src)
    result = ktorch.convert(src, tmp_path / "dict_io_torch", route=route)
    assert result.parity.passed, result.parity
    m = result.manifest
    assert [spec["name"] for spec in m["outputs"]] == ["zeta_out", "alpha_out"]  # by key, as declared
    assert [spec["name"] for spec in m["inputs"]] == ["aa_features", "zz_features"]  # Keras's flat order
    for mode in ("outputs", "both"):
        report = verify_conversion(src, result.out, batches=(3,), mode=mode)
        assert report.exit_code == 0 and report.error is None, (mode, report.status, report.error)
    # the emitted module returns them in the manifest's order
    rng = np.random.default_rng(0)
    aa, zz = rng.standard_normal((2, 2)).astype("float32"), rng.standard_normal((2, 4)).astype("float32")
    expected = model({"zz_features": zz, "aa_features": aa})
    import torch

    from ktorch.verify.runners import import_emitted

    emitted = import_emitted(result.out).load(result.out / "model.safetensors")
    with torch.no_grad():
        got = emitted(torch.from_numpy(aa), torch.from_numpy(zz))
    for name, value in zip(["zeta_out", "alpha_out"], got):
        np.testing.assert_allclose(value.numpy(), keras.ops.convert_to_numpy(expected[name]), rtol=1e-5, atol=1e-6)


def test_keras_outputs_pairs_dicts_by_name() -> None:
    from ktorch.verify.runners import keras_outputs, output_keys

    declared = {"zeta": "z", "alpha": "a"}
    assert output_keys(declared) == ["zeta", "alpha"] and output_keys(["z"]) is None
    returned_sorted = {"alpha": 1, "zeta": 2}  # Keras on torch sorts the keys
    assert keras_outputs(returned_sorted, output_keys(declared)) == [2, 1]
    assert keras_outputs(returned_sorted, ["nope", "other"], ["zeta", "alpha"]) == [2, 1]  # first order that fits
    assert keras_outputs(returned_sorted) == [1, 2]  # no names: Keras's flat order (sorted keys)
    assert keras_outputs([1, (2, {"b": 3, "a": 4})]) == [1, 2, 4, 3]


@pytest.mark.slow
def test_llama_left_padding(tmp_path: Path) -> None:
    """KerasHub's Llama attention takes a fused path (ops.dot_product_attention) on torch and a
    masked softmax on TensorFlow; on a left-padded row's first queries (every key masked) the
    fused path averages the values, the masked softmax gives zeros. The capture takes
    TensorFlow's path, and the conversion is checked with left- and right-padded masks."""
    from ktorch.verify.parity import check_keras_to_torch
    from ktorch.verify.runners import make_inputs

    model = keras_hub.models.LlamaBackbone(
        vocabulary_size=50, num_layers=1, hidden_dim=8, intermediate_dim=16, num_query_heads=2, num_key_value_heads=1
    )
    randomize_weights(model)
    src = tmp_path / "llama.keras"
    model.save(src)
    import ktorch

    result = ktorch.convert(src, tmp_path / "llama_torch")  # its check feeds a left-padded row
    assert result.parity.passed, result.parity
    m = result.manifest
    mask = next(spec for spec in m["inputs"] if spec["name"] == "padding_mask")
    assert mask.get("padding_mask") is True
    assert "masked softmax" in m["source"]["attention"]
    arrays = make_inputs(m["inputs"], seed=3, batch=4)
    padding = arrays[[spec["name"] for spec in m["inputs"]].index("padding_mask")]
    assert padding[0, 0] == 0 and padding[0, -1] == 1  # row 0 is left-padded
    assert padding[1, 0] == 1 and padding[1, -1] == 0  # row 1 is right-padded
    assert (padding.sum(axis=1) >= 1).all()
    again = check_keras_to_torch(src, result.out, inputs=arrays)
    assert again.passed and again.worst_rel < 1e-5, again


RECOMPUTING_MODULE = '''
import keras


@keras.saving.register_keras_serializable(package="recomputing_layers")
class DerivedTable(keras.layers.Layer):
    """Adds a table derived from a stored base, computed when built and again when loaded, by a
    computation that differs between backends (as DINOv2's bicubic resize of its position
    embeddings does)."""

    def build(self, input_shape):
        self.base = self.add_weight(shape=(input_shape[-1],), name="base", initializer="random_normal")
        self.table = self.add_weight(shape=(input_shape[-1],), name="table", initializer="zeros")
        self.table.assign(self.derive(self.base))

    def derive(self, base):
        shift = 0.25 if keras.backend.backend() == "torch" else 0.0
        return keras.ops.convert_to_tensor(base) * 2.0 + shift

    def load_own_variables(self, store):
        self.base.assign(store["0"])
        self.table.assign(self.derive(self.base))

    def call(self, x):
        return x + self.table
'''


@pytest.mark.slow
def test_variables_recomputed_at_load_keep_the_stored_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keras: Any
) -> None:
    """A layer that recomputes a variable when loaded, differently on torch than on TensorFlow:
    the capture holds the file's value (what Keras on TensorFlow recomputes), and says so."""
    import ktorch

    (tmp_path / "recomputing_layers.py").write_text(textwrap.dedent(RECOMPUTING_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    import recomputing_layers

    inputs = keras.Input((5,), name="features")
    model = keras.Model(inputs, recomputing_layers.DerivedTable(name="derived")(inputs), name="derived_model")
    src = tmp_path / "derived.keras"
    model.save(src)
    result = ktorch.convert(
        src, tmp_path / "derived_torch", route="export", custom_objects="recomputing_layers", trust_code=True
    )
    assert result.parity.passed and result.parity.worst_rel < 1e-6, result.parity
    assert result.manifest["source"]["stored_values"] == ["derived/table"]


@pytest.mark.slow
def test_alibi_positions_cumsum_and_leading_unsqueeze(tmp_path: Path, keras: Any) -> None:
    """Falcon's ALiBi: positions from a cumulative sum of the padding mask (int32, which torch
    would sum as int64), and `transpose(expand_dims(alibi, 0), [1, 2, 0, 3])`, which puts the new
    axis behind the batch (the PyTorch reader keeps the batch axis first)."""

    ops = keras.ops
    padding = keras.Input((6,), dtype="int32", name="padding_mask")
    features = keras.Input((6, 4), name="features")
    mask = ops.cast(padding, "int32")
    positions = (ops.cumsum(mask, axis=-1) - 1) * mask
    alibi = ops.cast(positions[:, None, :], "float32") * ops.convert_to_tensor([[0.5], [0.25]])
    alibi = ops.transpose(ops.expand_dims(alibi, 0), [1, 2, 0, 3])  # (batch, heads, 1, sequence)
    scores = keras.layers.Dense(6, name="scores")(features)[:, None, :, :]
    model = keras.Model({"padding_mask": padding, "features": features}, alibi + scores, name="alibi")
    randomize_weights(model)
    result = _convert(model, tmp_path, "alibi", route="export")
    assert result.manifest["inputs"][1].get("padding_mask") is True
    forward = _forward(result.out)
    assert ".cumsum(1, dtype=torch.int32)" in forward, forward
    assert ".unsqueeze(2)" in forward, forward
