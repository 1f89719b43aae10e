"""TensorFlow loaded before Triton makes torch's optimizers crash the process (segfault) on this
stack. ktorch loads Keras in-process (PyTorch -> Keras conversion, verification): it must load
Triton first, so that a user's torch.optim still works afterwards (issue 14, item 6)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")
SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def test_a_torch_optimizer_works_after_converting_in_the_same_process(tmp_path):
    script = textwrap.dedent(
        f"""
        import torch
        import ktorch

        net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
        # first Keras -> PyTorch: its verification loads Keras on TensorFlow before anything else has
        # loaded Triton; then PyTorch -> Keras in the same process
        ktorch.convert({str(SAMPLES / "small_cnn.h5")!r}, {str(tmp_path / "t")!r})
        ktorch.convert(net, {str(tmp_path / "k")!r}, example_inputs=(torch.randn(2, 4),), to="keras")
        import sys
        assert "tensorflow" in sys.modules  # Keras ran on TensorFlow in this process
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        loss = net(torch.randn(3, 4)).square().mean()
        loss.backward()
        opt.step()
        print("optimizer ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]  # -11 is the segmentation fault
    assert "optimizer ok" in done.stdout
