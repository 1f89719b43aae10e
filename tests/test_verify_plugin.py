"""The pytest plugin (ktorch.verify.pytest_plugin), run inside pytester."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ktorch.verify.profiles import cuda_available

pytest_plugins = ["pytester"]

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
PLUGIN = ("-p", "no:ktorch", "-p", "ktorch.verify.pytest_plugin", "-p", "no:cacheprovider")


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, Path, Path]:
    """small_cnn.h5, its conversion, and a copy whose stem_conv weight was scaled."""
    from safetensors.numpy import load_file, save_file

    import ktorch

    root = tmp_path_factory.mktemp("plugin")
    src = root / "small_cnn.h5"
    shutil.copy(SAMPLES / "small_cnn.h5", src)
    out = root / "small_cnn_torch"
    ktorch.convert(src, out, verify=False)
    broken = root / "broken_torch"
    shutil.copytree(out, broken)
    state = load_file(str(broken / "model.safetensors"))
    state["stem_conv.weight"] = np.ascontiguousarray(state["stem_conv.weight"] * 1.05)
    save_file(state, str(broken / "model.safetensors"))
    # pytester's in-process runs drop the modules they import: import torch, Keras and the
    # verifier's modules here, by running one verification, so that they stay loaded
    import ktorch.verify.pytest_plugin
    from ktorch.verify import verify_conversion

    assert verify_conversion(src, out, batches=(1,)).passed
    cuda_available()
    return src, out, broken


TESTS = """
import pytest
from ktorch.graph.errors import ParityError


def test_parity(ktorch_parity, ktorch_device):
    report = ktorch_parity(r"{src}", r"{out}", batches=(1,))
    assert report.passed and [r.device for r in report.runs] == [ktorch_device]


def test_broken(ktorch_parity):
    with pytest.raises(ParityError, match="stem_conv"):
        ktorch_parity(r"{src}", r"{broken}", batches=(1,))


@pytest.mark.ktorch_cuda
def test_needs_gpu():
    import torch
    assert torch.cuda.is_available()
"""


def test_plugin_fixtures_on_cpu(pytester, sample):
    src, out, broken = sample
    pytester.makepyfile(TESTS.format(src=src, out=out, broken=broken))
    result = pytester.runpytest_inprocess(*PLUGIN, "-v")
    if cuda_available():
        result.assert_outcomes(passed=3)
    else:
        result.assert_outcomes(passed=2, skipped=1)
        result.stdout.fnmatch_lines(["*test_needs_gpu SKIPPED*needs CUDA*"])
    result.stdout.fnmatch_lines(["*test_parity?ktorch-cpu? PASSED*", "*test_broken?ktorch-cpu? PASSED*"])


def test_plugin_device_all_skips_cuda_cleanly(pytester, sample):
    src, out, broken = sample
    pytester.makepyfile(TESTS.format(src=src, out=out, broken=broken))
    result = pytester.runpytest_inprocess(*PLUGIN, "--ktorch-device", "all", "-v", "-rs")
    if cuda_available():
        result.assert_outcomes(passed=5)
    else:
        result.assert_outcomes(passed=2, skipped=3)
        result.stdout.fnmatch_lines(["*test_parity?ktorch-cuda? SKIPPED*", "*test_broken?ktorch-cuda? SKIPPED*"])
    assert result.ret == 0


def test_plugin_option_is_documented(pytester):
    result = pytester.runpytest_inprocess(*PLUGIN, "--help")
    result.stdout.fnmatch_lines(["*--ktorch-device*", "*--ktorch-tf32*"])
