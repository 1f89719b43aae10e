"""CUDA parity checks (`python -m pytest -m gpu tests`): the models of tests/gpu/gpu_checks.py,
converted in both directions and verified on CUDA with TF32 pinned off and allowed. Every
test skips cleanly where torch sees no CUDA device; the default run (`-m "not slow and not
gpu"`) does not collect them."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.gpu

GPU_DIR = Path(__file__).resolve().parent / "gpu"


@pytest.fixture(autouse=True)
def _needs_cuda() -> None:
    from ktorch.verify.profiles import cuda_available

    if not cuda_available():
        pytest.skip("needs CUDA: no CUDA device here (torch.cuda.is_available() is False)")


@pytest.fixture(scope="module")
def checks() -> ModuleType:
    """tests/gpu/gpu_checks.py, which builds the models."""
    spec = importlib.util.spec_from_file_location("ktorch_gpu_checks", GPU_DIR / "gpu_checks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("tf32", [False, True], ids=["tf32-off", "tf32-on"])
@pytest.mark.parametrize("name", ["cnn", "sequence", "two_heads"])
def test_keras_to_torch_parity_on_cuda(checks, tmp_path, name, tf32):
    from ktorch.verify import verify_conversion

    [(_, _, src, out)] = checks.convert_keras_models(tmp_path, [name])
    report = verify_conversion(src, out, device="cuda", batches=[1, 4], tf32=tf32)
    assert report.passed, report.summary()
    assert all(run.device == "cuda" and run.settings["tf32"] is tf32 for run in report.runs)


@pytest.mark.parametrize("tf32", [False, True], ids=["tf32-off", "tf32-on"])
def test_torch_to_keras_parity_on_cuda(checks, tmp_path, tf32):
    from ktorch.verify import verify_conversion

    built, note = checks.convert_torch_models(tmp_path)
    assert note is None and built, note
    for _, _, src, out in built:
        report = verify_conversion(src, out, device="cuda", batches=[1, 4], tf32=tf32)
        assert report.passed, report.summary()


def test_gpu_script_on_cuda(tmp_path):
    """tests/gpu/run_gpu_checks.sh as the README gives it, on CUDA."""
    summary = tmp_path / "summary.json"
    env = dict(os.environ, PYTHON=sys.executable)
    done = subprocess.run(
        [
            "bash",
            str(GPU_DIR / "run_gpu_checks.sh"),
            "--device",
            "cuda",
            "--models",
            "cnn",
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(summary),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads(summary.read_text())
    assert data["device"] == "cuda" and all(c["report"]["status"] == "pass" for c in data["checks"])
