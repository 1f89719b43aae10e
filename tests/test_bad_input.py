"""Bad and unsafe input: one clear line, a non-zero exit, nothing written, nothing run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import ktorch
from ktorch.graph.errors import KtorchError, ModelFileError, OutputExistsError, UnsupportedOpError, UntrustedCodeError

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ktorch.cli", *args], capture_output=True, text=True, timeout=300)


def assert_one_clear_line(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("ktorch: error:"), done.stderr
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr


@pytest.fixture
def cnn(tmp_path) -> Path:
    path = tmp_path / "small_cnn.h5"
    shutil.copy(SAMPLES / "small_cnn.h5", path)
    return path


def test_missing_file(tmp_path):
    done = run_cli("convert", str(tmp_path / "nope.h5"))
    assert_one_clear_line(done, "nope.h5", "no such file")
    assert done.returncode == 3


def test_empty_file(tmp_path):
    path = tmp_path / "empty.h5"
    path.write_bytes(b"")
    done = run_cli("convert", str(path))
    assert_one_clear_line(done, "empty.h5", "empty")
    assert not (tmp_path / "empty_torch").exists()


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.keras"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    assert_one_clear_line(run_cli("convert", str(path)), "noise.keras", "not a Keras model file")


@pytest.mark.parametrize("name", ["small_cnn.h5", "multi_input.keras"])
def test_truncated(tmp_path, name):
    data = (SAMPLES / name).read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupt|malformed"):
        ktorch.convert(path, tmp_path / "out", verify=False)
    assert not (tmp_path / "out").exists()


def test_weights_only_h5(tmp_path, keras):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = tmp_path / "only.weights.h5"
    model.save_weights(path)
    done = run_cli("convert", str(path))
    assert_one_clear_line(done, "weights only")


def _edit_keras_config(src: Path, dst: Path, edit) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            zout.writestr(item, data)


def test_unknown_class_lists_every_unsupported_layer(tmp_path):
    def edit(config):
        for layer in config["config"]["layers"]:
            if layer["class_name"] in ("Conv2D", "Dense"):
                layer["class_name"] = "My" + layer["class_name"]

    path = tmp_path / "custom.keras"
    _edit_keras_config(SAMPLES / "multi_input.keras", path, edit)
    with pytest.raises(UnsupportedOpError) as info:
        ktorch.convert(path, tmp_path / "out", verify=False)
    names = {name for name, _, _ in info.value.items}
    assert names == {"conv", "feature_dense", "score", "embedding"}
    assert not (tmp_path / "out").exists()
    done = run_cli("inspect", str(path))
    assert done.returncode == 2 and "MyConv2D" in done.stdout and "UNSUPPORTED" in done.stdout


def test_bad_option_value_names_layer(tmp_path):
    def edit(config):
        for layer in config["config"]["layers"]:
            if layer["name"] == "score":
                layer["config"]["units"] = "seven"

    path = tmp_path / "bad.keras"
    _edit_keras_config(SAMPLES / "multi_input.keras", path, edit)
    with pytest.raises(KtorchError, match="score"):
        ktorch.convert(path, tmp_path / "out", verify=False)


def test_weight_shape_mismatch_names_layer(tmp_path, cnn):
    with h5py.File(cnn, "r+") as f:
        group = f["model_weights"]["predictions"]
        name = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]][0]
        del group[name]
        group[name] = np.zeros((7, 10), np.float32)
    with pytest.raises(KtorchError, match="predictions.*shape"):
        ktorch.convert(cnn, cnn.with_name("out"), verify=False)


def test_nan_weights_refused(tmp_path, cnn):
    with h5py.File(cnn, "r+") as f:
        group = f["model_weights"]["stem_conv"]
        name = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]][0]
        data = group[name][...]
        data[0, 0, 0, 0] = np.nan
        group[name][...] = data
    with pytest.raises(KtorchError, match="stem_conv.*NaN"):
        ktorch.convert(cnn, cnn.with_name("out"), verify=False)


def test_lambda_layer_refused_without_trust(tmp_path, keras):
    inputs = keras.Input((3,))
    outputs = keras.layers.Lambda(lambda x: x * 2, name="double")(inputs)
    path = tmp_path / "lam.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(UntrustedCodeError, match="double.*--trust-code"):
        ktorch.convert(path, tmp_path / "out", verify=False)
    assert_one_clear_line(run_cli("convert", str(path)), "Lambda", "--trust-code")


def test_existing_output_is_not_overwritten_without_force(tmp_path, cnn):
    out = tmp_path / "out"
    ktorch.convert(cnn, out, verify=False)
    (out / "model.py").write_text("# mine")
    with pytest.raises(OutputExistsError, match="--force"):
        ktorch.convert(cnn, out, verify=False)
    assert (out / "model.py").read_text() == "# mine"
    ktorch.convert(cnn, out, verify=False, force=True)
    assert (out / "model.py").read_text() != "# mine"
    (out / "keep.txt").write_text("mine")  # not ktorch's: --force does not replace it (tests/test_output_safety.py)
    with pytest.raises(OutputExistsError, match="not a directory ktorch wrote"):
        ktorch.convert(cnn, out, verify=False, force=True)
    assert (out / "keep.txt").read_text() == "mine"


def test_interrupted_conversion_leaves_nothing(tmp_path, cnn, monkeypatch):
    from ktorch.translate.torch_writer import writer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ktorch.convert(cnn, tmp_path / "out", verify=False)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_interrupted_forced_conversion_keeps_old_output(tmp_path, cnn, monkeypatch):
    out = tmp_path / "out"
    ktorch.convert(cnn, out, verify=False)
    before = (out / "model.py").read_text()
    from ktorch.translate.torch_writer import writer

    monkeypatch.setattr(writer, "write", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        ktorch.convert(cnn, out, verify=False, force=True)
    assert (out / "model.py").read_text() == before


def test_source_is_not_modified(tmp_path, cnn):
    before = (cnn.read_bytes(), cnn.stat().st_mtime_ns)
    cnn.chmod(0o444)
    ktorch.convert(cnn, tmp_path / "out", verify=False)
    assert (cnn.read_bytes(), cnn.stat().st_mtime_ns) == before


def test_emitted_model_refuses_missing_or_wrong_weights(tmp_path, cnn):
    from ktorch.verify.runners import import_emitted

    out = tmp_path / "out"
    ktorch.convert(cnn, out, verify=False)
    module = import_emitted(out)
    (out / "model.safetensors").rename(out / "moved.safetensors")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        module.load()
    other = tmp_path / "other"
    ktorch.convert(SAMPLES / "multi_input.keras", other, verify=False)
    with pytest.raises(ValueError, match="does not match SmallCnn"):
        module.load(other / "model.safetensors")


def test_unknown_option_is_refused_not_ignored(tmp_path):
    def edit(config):
        for layer in config["config"]["layers"]:
            if layer["name"] == "conv":
                layer["config"]["foveation"] = 3

    path = tmp_path / "option.keras"
    _edit_keras_config(SAMPLES / "multi_input.keras", path, edit)
    with pytest.raises(KtorchError, match=r"'conv' \(Conv2D\).*foveation=3"):
        ktorch.convert(path, tmp_path / "out", verify=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("suffix", [".pt2", ".onnx"])
def test_random_and_truncated_pytorch_and_onnx_files(tmp_path, suffix):
    noise = tmp_path / f"noise{suffix}"
    noise.write_bytes(np.random.default_rng(1).bytes(2048))
    assert_one_clear_line(run_cli("convert", str(noise)), noise.name)
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    assert_one_clear_line(run_cli("convert", str(empty)), empty.name)


def test_truncated_pt2(tmp_path):
    import torch

    program = torch.export.export(torch.nn.Linear(3, 2).eval(), (torch.randn(1, 3),))
    whole = tmp_path / "whole.pt2"
    torch.export.save(program, str(whole))
    cut = tmp_path / "cut.pt2"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    done = run_cli("convert", str(cut))
    assert_one_clear_line(done, "cut.pt2")
    assert not (tmp_path / "cut_keras").exists()


def test_pickled_torch_module_refused_unless_trusted(tmp_path):
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh())
    whole, state = tmp_path / "whole.pt", tmp_path / "state.pt"
    torch.save(net, whole)
    torch.save(net.state_dict(), state)
    with pytest.raises(UntrustedCodeError, match="pickled Python objects.*--trust-code"):
        ktorch.convert(whole, tmp_path / "refused", verify=False)
    assert not (tmp_path / "refused").exists()
    with pytest.raises(ModelFileError, match="only weights.*--weights state.pt"):
        ktorch.convert(state, tmp_path / "weights_only", verify=False)
    assert_one_clear_line(run_cli("convert", str(whole)), "whole.pt", "--trust-code")
    result = ktorch.convert(whole, tmp_path / "trusted", trust_code=True, input_shapes=[(2, 3)])
    assert result.parity.passed
