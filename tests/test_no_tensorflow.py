"""Converting without verification needs neither TensorFlow nor Keras: the reader parses
.h5 and .keras files itself. Checked in a fresh interpreter, where nothing is imported yet."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "samples"

_SCRIPT = """
import json, sys
import ktorch
result = ktorch.convert(sys.argv[1], sys.argv[2], verify=False)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
print(json.dumps({"heavy": heavy, "files": sorted(p.name for p in result.out.iterdir())}))
"""


@pytest.mark.parametrize("name", ["small_cnn.h5", "multi_input.keras"])
def test_convert_without_verify_imports_no_tensorflow(tmp_path, name):
    src = tmp_path / name
    shutil.copy(SAMPLES / name, src)
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(src), str(tmp_path / "out")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], f"converting imported {report['heavy'][:5]}"
    assert {"model.py", "model.safetensors", "ktorch.json"} <= set(report["files"])


def test_cli_without_verify_imports_no_tensorflow(tmp_path):
    """The CLI path (`ktorch convert --no-verify`) is as light as the API."""
    src = tmp_path / "small_cnn.h5"
    shutil.copy(SAMPLES / "small_cnn.h5", src)
    script = (
        "import sys, runpy\n"
        "sys.argv = ['ktorch', 'convert', sys.argv[1], '-o', sys.argv[2], '--no-verify']\n"
        "try:\n"
        "    runpy.run_module('ktorch.cli', run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    code = exit.code or 0\n"
        "else:\n"
        "    code = 0\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras')]\n"
        "print('HEAVY', len(heavy), heavy[:5])\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(src), str(tmp_path / "out")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "HEAVY 0 []" in done.stdout, done.stdout
    assert json.loads((tmp_path / "out" / "ktorch.json").read_text())["parity"] is None
