"""`ktorch verify`: exit codes, layer-level localisation of planted bugs, reports.

One small seeded network (conv -> BN -> ReLU -> two conv branches -> Subtract -> GAP ->
Dense, random weights and BatchNorm statistics) is converted once; each test copies the
output directory and plants one plausible mistake in it.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import randomize_batchnorm, randomize_weights

from ktorch.cli import main
from ktorch.verify import REPORT_SCHEMA, assert_parity, validate_report, verify_conversion
from ktorch.verify.report import to_junit
from ktorch.verify.verifier import StructuralError


@pytest.fixture(scope="module")
def converted(tmp_path_factory, keras) -> tuple[Path, Path]:
    import ktorch

    keras.utils.set_random_seed(0)
    layers = keras.layers
    x = keras.Input((12, 12, 3), name="image")
    a = layers.Conv2D(8, 3, padding="same", name="conv1")(x)
    a = layers.BatchNormalization(name="bn")(a)
    a = layers.ReLU(name="relu")(a)
    b = layers.Conv2D(8, 3, padding="same", activation="tanh", name="conv2")(a)
    c = layers.Conv2D(8, 1, name="conv3")(a)
    d = layers.Subtract(name="sub")([b, c])
    p = layers.GlobalAveragePooling2D(name="gap")(d)
    out = layers.Dense(5, name="logits")(p)
    model = keras.Model(x, out, name="verify_net")
    randomize_weights(model, seed=0)
    randomize_batchnorm(model, seed=1)
    root = tmp_path_factory.mktemp("verify")
    src = root / "verify_net.h5"
    model.save(src)
    ktorch.convert(src, root / "verify_net_torch", verify=False)
    return src, root / "verify_net_torch"


def copy_of(converted: Path, tmp_path: Path) -> Path:
    out = tmp_path / "planted"
    shutil.copytree(converted, out)
    return out


def edit_model_py(directory: Path, old: str, new: str) -> None:
    path = directory / "model.py"
    code = path.read_text()
    assert code.count(old) == 1, f"{old!r} not found once in the emitted code:\n{code}"
    path.write_text(code.replace(old, new))


def edit_weight(directory: Path, key: str, change) -> None:
    from safetensors.numpy import load_file, save_file

    path = directory / "model.safetensors"
    state = load_file(str(path))
    assert key in state, sorted(state)
    state[key] = np.ascontiguousarray(change(state[key])).astype(state[key].dtype)
    save_file(state, str(path))


def run_cli(*args: str) -> tuple[int, dict]:
    """Run `ktorch verify` in-process with a JSON report; returns (exit code, report)."""
    report = Path(args[1]).parent / "report.json"
    code = main(["verify", *args, "--json", str(report), "--quiet"])
    data = json.loads(report.read_text())
    validate_report(data)
    return code, data


def isolated_failures(data: dict) -> list[str]:
    return [layer["source"] for run in data["runs"] for layer in run["layers"] if not layer["isolated"]["passed"]]


def test_correct_conversion_verifies(converted, tmp_path):
    src, out = converted
    code, data = run_cli(str(src), str(out), "--batch", "1,3")
    assert code == 0, data["summary"]
    assert data["status"] == "pass" and data["first_divergence"] is None
    assert [r["batch"] for r in data["runs"]] == [1, 3]
    run = data["runs"][0]
    assert run["profile"] == "cpu-fp32" and run["rtol"] == 1e-4
    assert run["settings"]["tf32"] is False
    # every layer of the network is aligned, in forward order, with tiny isolated errors
    # conv1's bias is folded into bn (Conv2d(bias=False) + BatchNorm2d): the two compare as one layer
    assert [layer["source"] for layer in run["layers"]] == ["bn", "relu", "conv2", "conv3", "sub", "gap", "logits"]
    assert run["layers"][0]["merged"] == ["conv1"] and run["layers"][1]["merged"] == []
    assert {layer["class"] for layer in run["layers"]} >= {"Conv2D", "BatchNormalization", "Subtract", "Dense"}
    assert all(layer["isolated"]["max_rel"] < 1e-5 and layer["propagated"]["max_rel"] < 1e-5 for layer in run["layers"])
    assert 0 < data["min_passing_tolerance"] < 1e-5


def test_scaled_weight_fails_and_names_its_layer(converted, tmp_path):
    src, out = converted
    planted = copy_of(out, tmp_path)
    edit_weight(planted, "conv2.weight", lambda w: w * 1.05)
    code, data = run_cli(str(src), str(planted))
    assert code == 1
    first = data["first_divergence"]
    assert first["source"] == "conv2" and first["class"] == "Conv2D" and first["emitted"] == "conv2"
    assert first["isolated"]["max_rel"] > 1e-3
    assert (
        first["isolated"]["worst"] and len(first["isolated"]["worst"][0]["index"]) == 4
    )  # NHWC index in the source layout
    assert isolated_failures(data) == ["conv2"]  # the layers after it are fed the source's values, so they agree
    assert "conv2" in data["summary"]


def test_changed_epsilon_is_localised_in_isolated_mode(converted, tmp_path):
    src, out = converted
    planted = copy_of(out, tmp_path)
    edit_model_py(planted, "KerasBatchNorm2d(8, eps=0.001", "KerasBatchNorm2d(8, eps=1e-05")
    code, data = run_cli(str(src), str(planted))
    assert code == 1
    assert data["first_divergence"]["source"] == "bn"
    assert data["first_divergence"]["class"] == "BatchNormalization"
    assert isolated_failures(data) == ["bn"]


def test_swapped_operands_are_localised(converted, tmp_path):
    src, out = converted
    planted = copy_of(out, tmp_path)
    edit_model_py(planted, "sub = conv2 - conv3", "sub = conv3 - conv2")
    code, data = run_cli(str(src), str(planted))
    assert code == 1
    first = data["first_divergence"]
    assert (first["source"], first["class"], first["statement"]) == ("sub", "Subtract", "sub = conv3 - conv2")
    assert isolated_failures(data) == ["sub"]
    # propagated mode sees the error from `sub` on, and not before it
    propagated = [layer["source"] for layer in data["runs"][0]["layers"] if not layer["propagated"]["passed"]]
    assert propagated[0] == "sub" and "conv3" not in propagated


def test_permuted_input_channels_of_one_conv_are_localised(converted, tmp_path):
    src, out = converted
    planted = copy_of(out, tmp_path)
    order = np.random.default_rng(3).permutation(8)
    edit_weight(planted, "conv3.weight", lambda w: w[:, order])
    report = verify_conversion(src, planted)
    assert report.exit_code == 1
    run, layer = report.first_divergence
    assert (layer.source, layer.emitted) == ("conv3", "conv3")
    assert [r.source for r in run.layers if not r.isolated.passed] == ["conv3"]


def test_assert_parity(converted, tmp_path):
    from ktorch.graph.errors import ParityError

    src, out = converted
    report = assert_parity(src, out, batches=(2,))
    assert report.passed and report.runs[0].outputs[0].max_rel < 1e-5
    planted = copy_of(out, tmp_path)
    edit_weight(planted, "logits.bias", lambda b: b + 0.5)
    with pytest.raises(ParityError, match="logits"):
        assert_parity(src, planted)


def test_structural_mismatch_exits_2(converted, tmp_path):
    src, out = converted
    planted = copy_of(out, tmp_path)
    edit_model_py(planted, "return logits", "return logits[:, :4]")
    code, data = run_cli(str(src), str(planted), "--mode", "outputs")
    assert code == 2 and data["status"] == "structural"
    assert "shape (2, 4)" in data["runs"][0]["problems"][0]
    assert data["min_passing_tolerance"] is None
    with pytest.raises(StructuralError, match="logits"):
        assert_parity(src, planted, mode="outputs")


def test_integer_output_with_wrong_dtype_is_structural(converted, tmp_path):
    src, out = converted
    planted = copy_of(out, tmp_path)
    edit_model_py(planted, "return logits", "return logits.long()")
    report = verify_conversion(src, planted, mode="outputs")
    assert report.exit_code == 2
    assert "dtype int64" in report.runs[0].problems[0]


def test_could_not_run_exits_3(converted, tmp_path):
    src, out = converted
    assert main(["verify", str(src), str(tmp_path / "missing")]) == 3
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not a model")
    code, data = run_cli(str(broken), str(out))
    assert code == 2 and data["status"] == "structural" and "sha256 differs" in data["error"]  # checked first
    code, data = run_cli(str(broken), str(out), "--allow-different-source")
    assert code == 3 and data["status"] == "error" and data["error"]
    assert data["warnings"]  # the sha256 of the source differs from the manifest's
    assert main(["verify", str(src), str(out), "--output-tolerance", "nope=1e-3"]) == 3


def test_tolerances_and_smallest_passing_tolerance(converted, tmp_path):
    src, out = converted
    planted = copy_of(out, tmp_path)
    edit_weight(planted, "logits.weight", lambda w: w * 1.001)
    failing = verify_conversion(src, planted, mode="outputs")
    assert failing.exit_code == 1
    smallest = failing.min_passing_tolerance()
    assert smallest is not None and 1e-4 < smallest < 1e-2
    assert verify_conversion(src, planted, mode="outputs", tolerance=smallest * 1.01).exit_code == 0
    assert verify_conversion(src, planted, mode="outputs", tolerance=smallest * 0.5).exit_code == 1
    loose = verify_conversion(src, planted, mode="outputs", output_tolerances={"logits": 1e-2})
    assert loose.exit_code == 0 and loose.runs[0].outputs[0].tolerance == 1e-2
    # the per-output override relaxes the output only: the layer itself still diverges in isolation
    assert verify_conversion(src, planted, output_tolerances={"logits": 1e-2}).first_divergence[1].source == "logits"


def test_real_inputs_from_npz(converted, tmp_path):
    src, out = converted
    data = np.random.default_rng(7).uniform(-3, 3, (5, 12, 12, 3)).astype("float32")
    np.savez(tmp_path / "data.npz", image=data)
    code, report = run_cli(str(src), str(out), "--inputs", str(tmp_path / "data.npz"))
    assert code == 0, report["summary"]
    assert [r["batch"] for r in report["runs"]] == [5] and report["runs"][0]["inputs"].endswith("data.npz")
    np.savez(tmp_path / "wrong.npz", pixels=data)
    code, report = run_cli(str(src), str(out), "--inputs", str(tmp_path / "wrong.npz"))
    assert code == 3 and "image" in report["error"]


def test_device_all_without_cuda_runs_cpu_and_says_so(converted, tmp_path):
    from ktorch.verify.profiles import cuda_available

    src, out = converted
    report = verify_conversion(src, out, device="all", mode="outputs")
    devices = [r.device for r in report.runs]
    if cuda_available():
        assert devices == ["cpu", "cuda"] and report.passed
    else:
        assert devices == ["cpu"] and report.passed
        assert any("CUDA" in w for w in report.warnings)
        assert verify_conversion(src, out, device="cuda").exit_code == 3


def test_junit_and_markdown(converted, tmp_path):
    src, out = converted
    planted = copy_of(out, tmp_path)
    edit_model_py(planted, "sub = conv2 - conv3", "sub = conv3 - conv2")
    junit, markdown = tmp_path / "r.xml", tmp_path / "r.md"
    assert (
        main(
            [
                "verify",
                str(src),
                str(planted),
                "--batch",
                "1,2",
                "--junit",
                str(junit),
                "--markdown",
                str(markdown),
                "--quiet",
            ]
        )
        == 1
    )
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert int(suite.get("tests")) == len(cases) == 4  # (output + isolated layers) x 2 batches
    failures = [c for c in cases if c.find("failure") is not None]
    assert int(suite.get("failures")) == len(failures) >= 2
    layer_failures = [c.find("failure").get("message") for c in cases if c.get("name") == "layers:isolated"]
    assert len(layer_failures) == 2 and all("'sub'" in m for m in layer_failures)
    text = markdown.read_text()
    assert text.startswith("## ktorch verify: FAIL") and "`sub`" in text and "| cpu | 1 | logits |" in text


def test_report_schema_rejects_broken_reports(converted):
    src, out = converted
    data = verify_conversion(src, out, mode="outputs").to_dict()
    validate_report(data)
    assert json.loads(json.dumps(data)) == data  # plain JSON
    broken = json.loads(json.dumps(data))
    del broken["runs"][0]["outputs"][0]["max_rel"]
    with pytest.raises(ValueError, match="max_rel"):
        validate_report(broken)
    wrong = dict(data, exit_code="0")
    with pytest.raises(ValueError, match="exit_code"):
        validate_report(wrong)
    assert REPORT_SCHEMA["properties"]["schema"]["enum"] == ["ktorch.verify/1"]


def test_junit_error_case_when_it_cannot_run(converted, tmp_path):
    src, _ = converted
    report = verify_conversion(src, tmp_path / "missing")
    root = ET.fromstring(to_junit(report))
    suite = root.find("testsuite")
    assert suite.get("errors") == "1" and suite.find("testcase/error") is not None


def test_json_to_stdout_is_pure_json(converted, capsys):
    src, out = converted
    assert main(["verify", str(src), str(out), "--mode", "outputs", "--json", "-"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    validate_report(data)
    assert data["status"] == "pass" and "PASS" in captured.err  # the table went to stderr


def test_two_planted_bugs_are_both_isolated_and_the_first_is_named(converted, tmp_path):
    src, out = converted
    planted = copy_of(out, tmp_path)
    edit_model_py(planted, "sub = conv2 - conv3", "sub = conv3 - conv2")
    edit_weight(planted, "conv1.weight", lambda w: w[::-1])  # output channels permuted
    code, data = run_cli(str(src), str(planted))
    assert code == 1
    assert isolated_failures(data) == ["bn", "sub"]
    assert data["first_divergence"]["source"] == "bn" and data["first_divergence"]["merged"] == ["conv1"]
    assert "first divergence at layer 'conv1 + bn'" in data["summary"]
