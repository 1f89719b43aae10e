"""Batch conversion from the command line: several sources or a glob pattern, a process
pool, one progress line per model, failures listed at the end with the worst exit code;
a single source still converts exactly as before (-o is the output directory itself)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ktorch.cli", *args], capture_output=True, text=True, timeout=600, cwd=cwd, check=False
    )


@pytest.fixture
def models(tmp_path) -> Path:
    """Two sample models and a file that is not a model, in one directory."""
    src = tmp_path / "models"
    src.mkdir()
    shutil.copy(SAMPLES / "small_cnn.h5", src / "cnn.h5")
    shutil.copy(SAMPLES / "multi_input.keras", src / "multi.keras")
    (src / "broken.h5").write_bytes(b"this is not an HDF5 file\n")
    return src


def progress_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if re.match(r"\[\s*\d+/\d+\]", line)]


def test_two_models_and_a_bad_file(models, tmp_path):
    out = tmp_path / "out"
    done = run_cli(
        "convert",
        str(models / "cnn.h5"),
        str(models / "multi.keras"),
        str(models / "broken.h5"),
        "-o",
        str(out),
        "--no-verify",
        "--jobs",
        "2",
    )
    assert done.returncode == 3, done.stderr  # ModelFileError (could not run) is the worst failure here
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["cnn_torch", "multi_torch"]
    for name in ("cnn_torch", "multi_torch"):
        assert {"model.py", "model.safetensors", "ktorch.json"} <= {p.name for p in (out / name).iterdir()}
        assert json.loads((out / name / "ktorch.json").read_text())["direction"] == "keras->torch"
    lines = progress_lines(done.stderr)
    assert len(lines) == 3, done.stderr
    assert [line[:5] for line in lines] == ["[1/3]", "[2/3]", "[3/3]"]
    assert sum(" ok " in line for line in lines) == 2
    failed = [line for line in lines if "FAILED" in line]
    assert len(failed) == 1 and "broken.h5" in failed[0] and "not a Keras model file" in failed[0]
    summary = done.stderr[done.stderr.index("converted 2 of 3") :]
    assert "1 failed" in summary and "broken.h5: not a Keras model file" in summary


def test_glob_pattern_expanded_by_ktorch(models, tmp_path):
    (models / "broken.h5").unlink()
    shutil.copy(SAMPLES / "small_cnn.h5", models / "cnn2.h5")
    out = tmp_path / "out"
    done = run_cli("convert", str(models / "*.h5"), "-o", str(out), "--no-verify")  # quoted: no shell expands it
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["cnn2_torch", "cnn_torch"]  # not multi.keras
    assert "converted 2 of 2" in done.stderr
    assert len(progress_lines(done.stderr)) == 2


def test_verification_and_flags_reach_each_model(models, tmp_path):
    """Verification runs by default in the workers; --layout keep and --force are passed on;
    an existing output without --force is that model's failure (exit 2, found before any
    worker starts), not the batch's."""
    (models / "broken.h5").unlink()
    out = tmp_path / "out"
    done = run_cli("convert", str(models / "multi.keras"), "-o", str(out / "multi_torch"), "--no-verify")
    assert done.returncode == 0, done.stderr
    (out / "multi_torch" / "model.py").write_text("# mine")
    done = run_cli(
        "convert",
        str(models / "cnn.h5"),
        str(models / "multi.keras"),
        "-o",
        str(out),
        "--layout",
        "keep",
        "--jobs",
        "1",
    )
    assert done.returncode == 2, done.stderr  # OutputExistsError
    assert any("parity" in line for line in progress_lines(done.stderr))
    assert (out / "multi_torch" / "model.py").read_text() == "# mine"
    assert "pass --force" in done.stderr
    manifest = json.loads((out / "cnn_torch" / "ktorch.json").read_text())
    assert manifest["layout"]["mode"] == "keep" and manifest["parity"]["passed"]
    done = run_cli(
        "convert", str(models / "multi.keras"), str(models / "cnn.h5"), "-o", str(out), "--no-verify", "--force"
    )
    assert done.returncode == 0, done.stderr
    assert (out / "multi_torch" / "model.py").read_text() != "# mine"


def test_a_crashing_worker_fails_only_its_model(models, tmp_path):
    """A worker that dies (here: a factory that kills its own process) breaks the pool; the
    others still convert and only that model is reported."""
    (tmp_path / "crashing.py").write_text(
        "import os, signal\n\ndef boom():\n    os.kill(os.getpid(), signal.SIGSEGV)\n"
    )
    out = tmp_path / "out"
    done = run_cli(
        "convert",
        "crashing:boom",
        str(models / "cnn.h5"),
        "-o",
        str(out),
        "--no-verify",
        "--input-shape",
        "2,3",
        cwd=tmp_path,
    )
    assert done.returncode == 3, done.stderr
    assert (out / "cnn_torch" / "model.py").is_file()
    assert "crashing:boom: the worker process died" in done.stderr
    assert "converted 1 of 2" in done.stderr


def test_glob_matching_nothing_and_colliding_outputs(models, tmp_path):
    done = run_cli("convert", str(models / "*.onnx"), "-o", str(tmp_path / "out"))
    assert done.returncode == 3 and "matches no file" in done.stderr and "Traceback" not in done.stderr
    shutil.copy(SAMPLES / "small_cnn.h5", models / "multi.h5")
    done = run_cli("convert", str(models / "multi.h5"), str(models / "multi.keras"), "-o", str(tmp_path / "out"))
    assert done.returncode == 3 and "would both be written to" in done.stderr
    assert not (tmp_path / "out").exists()


def test_single_source_unchanged(models, tmp_path):
    """One plain SRC: -o is the output directory itself, no batch lines."""
    out = tmp_path / "exactly_here"
    done = run_cli("convert", str(models / "cnn.h5"), "-o", str(out), "--no-verify")
    assert done.returncode == 0, done.stderr
    assert (out / "model.py").is_file() and (out / "ktorch.json").is_file()
    assert not progress_lines(done.stderr) and "converting" not in done.stderr
    done = run_cli("convert", str(models / "broken.h5"), "-o", str(tmp_path / "x"), "--no-verify")
    assert done.returncode == 3 and done.stderr.startswith("ktorch: error:")
    # and without -o: beside the source, as before
    done = run_cli("convert", str(models / "cnn.h5"), "--no-verify")
    assert done.returncode == 0, done.stderr
    assert (models / "cnn_torch" / "model.py").is_file()


def test_output_names():
    from ktorch.batch import output_name

    assert output_name("a/b/model.h5", None) == "model_torch"
    assert output_name("a/b/model.pt2", None) == "model_keras"
    assert output_name("a/b/model.onnx", "keras") == "model_keras"
    assert output_name("pkg.mod:make_net", None) == "make_net_keras"
