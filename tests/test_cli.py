"""The command line and the public surface say exactly what is true: layout vocabulary, source
checks in verify, plugin resolution, parameter counts, wide output off a terminal, the
generated command reference, and one public home for the errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

import ktorch
from ktorch.cli import build_parser, main, subcommand_parsers
from ktorch.options import Layout, OptionError, normalize_layout

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, Path]:
    """samples/small_cnn.h5 converted to PyTorch without verification: (source, output directory)."""
    work = tmp_path_factory.mktemp("cli")
    src = work / "small_cnn.h5"
    shutil.copy(SAMPLES / "small_cnn.h5", src)
    result = ktorch.convert(src, work / "small_cnn_torch", verify=False)
    return src, result.out


def _other_source(src: Path, dst: Path) -> Path:
    """A copy of `src` with its first convolution kernel scaled: same architecture, another file."""
    import h5py

    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        kernels = []
        f["model_weights"].visititems(
            lambda name, obj: kernels.append(obj) if isinstance(obj, h5py.Dataset) and obj.ndim == 4 else None
        )
        kernels[0][...] = kernels[0][...] * 1.5
    return dst


# -- 1. verify checks the source's sha256 first ------------------------------------------------
def test_verify_refuses_a_source_that_is_not_the_converted_file(converted, tmp_path, capsys):
    src, out = converted
    other = _other_source(src, tmp_path / "other.h5")
    assert main(["verify", str(other), str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{other} is not the file that was converted to {out} (sha256 differs" in err
    assert "--allow-different-source" in err and "first divergence" not in err

    report = ktorch.verify.verify_conversion(other, out)
    assert report.exit_code == 2 and report.status == "structural" and not report.runs
    assert "sha256 differs" in report.summary()
    with pytest.raises(ktorch.errors.SourceMismatchError, match="sha256 differs"):
        ktorch.verify.assert_parity(other, out)


def test_verify_allow_different_source_compares_anyway(converted, tmp_path):
    src, out = converted
    other = _other_source(src, tmp_path / "other.h5")
    report = ktorch.verify.verify_conversion(other, out, allow_different_source=True, mode="outputs")
    assert report.exit_code == 1, report.summary()  # the numbers differ: the kernel was scaled
    assert any("sha256 differs" in w for w in report.warnings)


# -- 2. one layout vocabulary ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "target", "expected"),
    [("native", "torch", Layout.NATIVE), ("keep", "torch", Layout.KEEP), ("torch", "torch", Layout.NATIVE),
     ("keras", "keras", Layout.NATIVE), ("keep", "keras", Layout.KEEP), (Layout.KEEP, "keras", Layout.KEEP)],
)  # fmt: skip
def test_normalize_layout(value, target, expected):
    assert normalize_layout(value, target=target) is expected


@pytest.mark.parametrize(("value", "target"), [("keras", "torch"), ("torch", "keras"), ("nchw", "torch")])
def test_normalize_layout_refuses_the_other_framework(value, target):
    with pytest.raises(OptionError, match=f"{value}") as info:
        normalize_layout(value, target=target)
    assert isinstance(info.value, ValueError) and info.value.exit_code == 2


def test_cli_refuses_layout_of_the_other_framework_at_parse_time(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["convert", str(SAMPLES / "small_cnn.h5"), "-o", str(tmp_path / "out"), "--layout", "keras"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ktorch convert") and "ktorch convert: error: argument --layout:" in err
    assert "converting to torch" in err and "internal error" not in err
    assert not (tmp_path / "out").exists()


def test_api_layout_vocabulary_and_manifest(tmp_path):
    src = SAMPLES / "small_cnn.h5"
    with pytest.raises(OptionError, match="does not apply when converting to torch"):
        ktorch.convert(src, tmp_path / "k", layout="keras", verify=False)
    native = ktorch.convert(src, tmp_path / "t", layout="torch", verify=False)
    keep = ktorch.convert(src, tmp_path / "keep", layout="keep", verify=False)
    assert native.manifest["layout"]["mode"] == "native" and keep.manifest["layout"]["mode"] == "keep"
    assert json.loads((tmp_path / "t" / "ktorch.json").read_text())["layout"]["mode"] == "native"


def test_api_layout_refused_for_a_keras_target_before_exporting(tmp_path):
    torch = pytest.importorskip("torch")
    with pytest.raises(OptionError, match="converting to keras"):
        ktorch.convert(torch.nn.Linear(3, 2), tmp_path / "k", example_inputs=(torch.randn(2, 3),), layout="torch")
    assert not (tmp_path / "k").exists()


# -- 3. plugins from the current directory or a .py path ----------------------------------------
@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A plugin module in tmp_path, the current directory, which is not on sys.path (as for the console script)."""
    name = "ktorch_cli_test_plugin"
    (tmp_path / f"{name}.py").write_text("LOADED = True\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd(), str(tmp_path))])
    yield tmp_path, name
    sys.modules.pop(name, None)


def test_plugin_is_found_in_the_current_directory(plugin_dir):
    from ktorch.plugins import load_plugin

    _, name = plugin_dir
    load_plugin(name)
    assert sys.modules[name].LOADED


def test_plugin_by_path(plugin_dir):
    from ktorch.plugins import load_plugin

    folder, name = plugin_dir
    load_plugin(str(folder / f"{name}.py"))
    assert sys.modules[name].LOADED


def test_missing_plugin_says_how_to_make_it_importable(plugin_dir):
    from ktorch.graph.errors import KtorchError
    from ktorch.plugins import load_plugin

    with pytest.raises(KtorchError, match="No module named 'no_such_plugin_xyz'.*PYTHONPATH.*path to its .py file"):
        load_plugin("no_such_plugin_xyz")


# -- 4. the accepted sources, all of them ----------------------------------------------------------
def test_unknown_source_lists_every_accepted_kind(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model\n")
    assert main(["convert", str(notes), "--no-verify"]) == 3
    err = capsys.readouterr().err
    for kind in (".h5", ".hdf5", ".keras", ".onnx", ".pt2", "package.module:factory", "a directory ktorch wrote"):
        assert kind in err, kind


# -- 5. parameters and buffers, counted as the target framework counts them -------------------------
def test_parameters_and_buffers_counted_apart(converted, tmp_path, capsys):
    import importlib.util

    _, out = converted
    model = json.loads((out / "ktorch.json").read_text())["model"]
    spec = importlib.util.spec_from_file_location("ktorch_cli_counts_model", out / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.load()
    assert model["parameters"] == sum(p.numel() for p in net.parameters()) == 13194
    assert model["buffers"] == sum(b.numel() for b in net.buffers()) == 33

    assert main(["convert", str(SAMPLES / "small_cnn.h5"), "-o", str(tmp_path / "o"), "--no-verify"]) == 0
    assert "13,194 parameters + 33 buffer values" in capsys.readouterr().err


def test_keras_target_counts_what_count_params_counts(tmp_path):
    torch = pytest.importorskip("torch")
    from ktorch.cli import _sizes

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    result = ktorch.convert(net, tmp_path / "k", example_inputs=(torch.randn(2, 3, 8, 8),), verify=False)
    assert result.manifest["model"]["parameters"] == result.keras_model.count_params() == 112 + 16  # BN: 4 x 4 weights
    assert _sizes(result.manifest).startswith("128 weights (trainable + non-trainable, BatchNorm moving statistics")


# -- 6. no wrapping at 80 columns off a terminal ------------------------------------------------------
def test_tables_are_not_wrapped_when_not_a_terminal(tmp_path, capsys, keras):
    long_name = "a_rather_long_layer_name_that_would_not_fit_in_an_eighty_column_terminal_table"
    x = keras.Input((4,), name="x")
    keras.Model(x, keras.layers.Dense(3, name=long_name)(x), name="wide").save(tmp_path / "wide.keras")
    assert main(["inspect", str(tmp_path / "wide.keras")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(long_name in line and "Dense" in line and "(None, 3)" in line for line in lines), lines


def test_verify_report_is_not_wrapped_when_not_a_terminal(converted, capsys):
    src, out = converted
    assert main(["verify", str(src), str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("propagated rel" in line and "isolated rel" in line for line in lines), lines  # headers not wrapped
    # cells not cut to "BatchNorm…"
    assert any("stem_bn" in line and "BatchNormalization" in line for line in lines), lines


# -- 7. smaller truths -------------------------------------------------------------------------------
def test_mistyped_flag_prints_the_subcommands_usage(capsys):
    with pytest.raises(SystemExit) as info:
        main(["convert", "x.h5", "--bogus"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ktorch convert") and "ktorch convert: error: unrecognized arguments: --bogus" in err


def test_python_dash_m_ktorch_is_the_cli(tmp_path):
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "ktorch", "--version"], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert done.returncode == 0 and done.stdout.startswith("ktorch "), done.stderr


def test_every_positional_has_help():
    for name, sub in subcommand_parsers(build_parser()).items():
        for action in sub._actions:
            if not action.option_strings:
                assert action.help, f"ktorch {name} {action.dest}"


def test_inspect_shows_shapes_around_an_unsupported_layer(tmp_path, keras):
    @keras.saving.register_keras_serializable(package="ktorch_cli_test")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2

    x = keras.Input((8,), name="x")
    y = keras.layers.Dense(3, name="last")(Doubler(name="doubler")(keras.layers.Dense(4, name="first")(x)))
    keras.Model(x, y, name="partly").save(tmp_path / "partly.keras")
    rows = {r["name"]: r for r in ktorch.inspect(tmp_path / "partly.keras")}
    assert rows["doubler"]["status"] == "UNSUPPORTED"
    shapes = [tuple(rows[n]["shape"]) for n in ("x", "first", "doubler", "last")]
    assert shapes == [(None, 8), (None, 4), (None, 4), (None, 3)]


def test_conversion_result_repr_is_one_short_line(converted):
    _, out = converted
    result = ktorch.api.ConversionResult(out, None, json.loads((out / "ktorch.json").read_text()))
    text = repr(result)
    assert len(text) < 200 and "\n" not in text
    nodes = result.manifest["model"]["nodes"]
    assert "direction='keras->torch'" in text and f"nodes={nodes}" in text and "not verified" in text


def test_export_from_a_torch_directory_prints_no_constant_folding_warnings(converted, tmp_path, recwarn):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from ktorch.onnx_io import export

    _, out = converted
    export(out, tmp_path / "m.onnx")
    assert not [w for w in recwarn if "Constant folding" in str(w.message)]


# -- 8. the command reference is generated from the parser -----------------------------------------------
def test_cli_reference_is_current():
    """docs/cli.md is generated from the parser; regenerate with `python -m ktorch.docs`."""
    from ktorch.docs import CLI_DOC, render_cli

    assert CLI_DOC.read_text() == render_cli(), "docs/cli.md is stale: run `python -m ktorch.docs`"


def test_cli_reference_documents_every_flag_with_its_default():
    from ktorch.docs import render_cli

    text = render_cli()
    for name, sub in subcommand_parsers(build_parser()).items():
        section = text[text.index(f"## ktorch {name}") :]
        for action in sub._actions:
            for flag in action.option_strings:
                if action.help != "==SUPPRESS==":
                    row = next((line for line in section.splitlines() if f"`{flag}" in line), None)
                    assert row is not None and row.count("|") >= 4, f"ktorch {name} {flag}"


def test_readme_command_table_matches_the_parser():
    readme = (ROOT / "README.md").read_text()
    assert "docs/cli.md" in readme
    subs = subcommand_parsers(build_parser())
    rows = [line for line in readme.splitlines() if line.startswith("| `ktorch ")]
    assert rows
    for row in rows:
        command = row.split("`")[1].split()[1]
        if command.startswith("-"):
            continue
        known = {flag for action in subs[command]._actions for flag in action.option_strings}
        usage = row.split("`")[1]
        for flag in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", usage):
            assert flag in known, f"README's `ktorch {command}` row names {flag}, which the parser does not have"
        if "--layout" in usage:
            assert "--layout native\\|keep" in usage and "torch\\|keep" not in usage


# -- 9. one public home for the errors ---------------------------------------------------------------------
def test_public_errors():
    import ktorch.errors
    from ktorch.graph import errors as graph_errors

    for name in ("KtorchError", "ModelFileError", "UnsupportedOpError", "UntrustedCodeError", "ParityError",
                 "OutputExistsError", "StructuralError", "SourceMismatchError", "RunError", "OptionError"):  # fmt: skip
        error = getattr(ktorch.errors, name)
        assert issubclass(error, ktorch.errors.KtorchError) and name in ktorch.errors.__all__
    assert ktorch.verify.ParityError is ktorch.errors.ParityError is graph_errors.ParityError
    assert issubclass(ktorch.verify.StructuralError, ktorch.verify.ParityError)
    assert "ktorch.errors" in (ROOT / "README.md").read_text()
