"""tests/gpu/run_gpu_checks.sh in its dry mode (--device cpu), as the GPU machine runs it:
Keras on its torch backend, both directions, TF32 off and on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "gpu" / "run_gpu_checks.sh"


def test_gpu_script_dry_run_on_cpu(tmp_path):
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHON=sys.executable)
    summary = tmp_path / "summary.json"
    done = subprocess.run(
        [
            "bash",
            str(SCRIPT),
            "--device",
            "cpu",
            "--models",
            "cnn",
            "--batch",
            "1,2",
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(summary),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ktorch GPU parity" in done.stdout and "Keras backend torch" in done.stdout
    data = json.loads(summary.read_text())
    assert data["backend"] == "torch" and data["device"] == "cpu"
    checks = data["checks"]
    directions = {c["direction"] for c in checks}
    assert "keras->torch" in directions
    assert all(c["report"]["status"] == "pass" for c in checks), [c["report"]["summary"] for c in checks]
    assert sorted(c["tf32"] for c in checks if c["direction"] == "keras->torch") == [False, True]
    for c in checks:
        run = c["report"]["runs"][0]
        assert run["settings"]["tf32"] is c["tf32"]
        assert run["source_backend"] in ("torch", "keras torch") or run["source_backend"].startswith("torch")
    assert [r["batch"] for r in checks[0]["report"]["runs"]] == [1, 2]
    keras_to_torch = next(c for c in checks if c["direction"] == "keras->torch")
    assert len(keras_to_torch["report"]["runs"][0]["layers"]) >= 5  # layer-level checks ran
