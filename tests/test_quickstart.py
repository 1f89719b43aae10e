"""The README quickstart: the bundled samples convert from the command line at parity."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.mark.parametrize("name", ["small_cnn.h5", "multi_input.keras"])
def test_cli_converts_sample(tmp_path, name):
    src = tmp_path / name
    shutil.copy(SAMPLES / name, src)
    done = subprocess.run([sys.executable, "-m", "ktorch.cli", "convert", str(src)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = tmp_path / (src.stem + "_torch")
    manifest = json.loads((out / "ktorch.json").read_text())
    assert manifest["parity"]["passed"]
    assert manifest["parity"]["max_rel"] < 1e-4
    assert (out / "model.safetensors").stat().st_size > 0
    assert "import ktorch" not in (out / "model.py").read_text()


def test_version():
    done = subprocess.run([sys.executable, "-m", "ktorch.cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("ktorch ")


def test_supported_ops_table_is_current():
    """docs/supported_ops.md is generated from the registry; regenerate with `python -m ktorch.docs`."""
    done = subprocess.run([sys.executable, "-m", "ktorch.docs", "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_help_lists_every_command():
    done = subprocess.run([sys.executable, "-m", "ktorch.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for command in ("convert", "inspect", "verify", "export"):
        assert command in done.stdout
