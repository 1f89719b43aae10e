"""Verifier building blocks: comparisons, tolerance profiles, precision settings, the
forward stepper, and multi-input / integer-input models."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ktorch.verify import PROFILES, compare, select_profile, verify_conversion
from ktorch.verify.profiles import precision_settings
from ktorch.verify.stepper import Stepper, parse_forward

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def test_compare_relative_to_scale_and_worst_elements():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 10, (3, 4, 5)).astype("float32")
    got = ref.copy()
    got[1, 2, 3] += 0.05
    got[0, 0, 0] -= 0.01
    c = compare("x", ref, got, 1e-3, worst=2)
    assert c.max_abs == pytest.approx(0.05, rel=1e-3)
    assert c.max_rel == pytest.approx(0.05 / np.abs(ref).max(), rel=1e-3)
    assert c.passed == (c.max_rel <= 1e-3)
    assert [w["index"] for w in c.worst] == [[1, 2, 3], [0, 0, 0]]
    assert c.worst[0]["expected"] == pytest.approx(float(ref[1, 2, 3])) and c.worst[0]["got"] == pytest.approx(
        float(got[1, 2, 3])
    )
    assert not compare("x", ref, got, 1e-5).passed


def test_compare_integers_exactly_and_nan_positions():
    a = np.arange(6, dtype="int64")
    b = a.copy()
    b[4] = 5
    c = compare("ids", a, b, 1.0, worst=3)
    assert not c.passed and c.exact and c.worst[0]["index"] == [4]
    assert compare("ids", a, a.copy(), 0.0).passed
    x = np.array([1.0, np.nan, np.inf, 2.0], dtype="float32")
    assert compare("x", x, x.copy()).passed
    moved = np.array([1.0, 2.0, np.inf, np.nan], dtype="float32")
    c = compare("x", x, moved, 1.0, worst=4)
    assert not c.passed and c.problem == "NaN/Inf positions differ"
    assert sorted(w["index"][0] for w in c.worst) == [1, 3]
    flipped = np.array([1.0, np.nan, -np.inf, 2.0], dtype="float32")
    assert not compare("x", x, flipped, 1.0).passed
    assert not compare("x", x, x[:3]).passed  # shape


def test_profiles():
    assert select_profile("cpu").rtol == 1e-4
    assert select_profile("cuda").name == "cuda-fp32"
    assert select_profile("cuda", tf32=True).name == "cuda-tf32"
    assert select_profile("cpu", ["float32", "bfloat16"]).name == "bf16"
    assert select_profile("cuda", ["float16"]).name == "fp16"
    rtols = [PROFILES[n].rtol for n in ("cpu-fp32", "cuda-fp32", "cuda-tf32", "fp16", "bf16")]
    assert rtols == sorted(rtols)


def test_precision_settings_pin_tf32_and_restore():
    import torch

    before = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    with precision_settings("cuda", tf32=False) as settings:
        assert settings["tf32"] is False
        assert (
            settings["torch.backends.cuda.matmul.allow_tf32"] is False
            and settings["torch.backends.cudnn.allow_tf32"] is False
        )
        assert torch.get_float32_matmul_precision() == "highest"
    with precision_settings("cuda", tf32=True) as settings:
        assert settings["torch.backends.cudnn.allow_tf32"] is True and torch.get_float32_matmul_precision() == "high"
        if "tensorflow.tensor_float_32_execution" in settings:
            assert settings["tensorflow.tensor_float_32_execution"] is True
    after = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    assert after == before


HAND_WRITTEN = '''
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Docstrings are skipped."""
        fc = self.fc(x)
        doubled = fc * 2
        summed = torch.stack([doubled[:, i] for i in range(2)]).sum(0)
        return doubled, summed
'''


def test_stepper_runs_statements_and_isolates(tmp_path):
    import importlib.util

    import torch

    path = tmp_path / "model.py"
    path.write_text(HAND_WRITTEN)
    spec = importlib.util.spec_from_file_location("tiny_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.Tiny().eval()
    forward = parse_forward(path, "Tiny")
    assert forward.arguments == ("x",)
    assert [s.writes for s in forward.statements] == [("fc",), ("doubled",), ("summed",)]
    assert forward.statements[1].reads == ("fc",) and forward.statements[2].reads == ("doubled",)
    stepper = Stepper(forward, vars(module), model)
    x = torch.randn(4, 3)
    outs, env = stepper.propagate([x])
    expected = model(x)
    assert torch.equal(outs[0], expected[0]) and torch.equal(outs[1], expected[1])
    # isolated: feeding `fc` replaces it for the statements that read it
    fed = torch.ones(4, 2)
    isolated = stepper.isolate(env, lambda name: fed if name == "fc" else None)
    assert torch.equal(isolated["doubled"], fed * 2) and torch.equal(isolated["summed"], torch.full((4,), 4.0))
    assert torch.equal(isolated["fc"], env["fc"])  # the first statement reads only x


def test_multi_input_two_outputs_and_output_tolerance(tmp_path):
    import ktorch

    src = tmp_path / "multi_input.keras"
    shutil.copy(SAMPLES / "multi_input.keras", src)
    out = tmp_path / "multi_torch"
    ktorch.convert(src, out, verify=False)
    report = verify_conversion(src, out, batches=(1, 3), output_tolerances={"embedding": 1e-6})
    assert report.passed, report.summary()
    run = report.runs[1]
    assert [c.name for c in run.outputs] == ["score", "embedding"] and run.batch == 3
    assert run.outputs[0].tolerance == 1e-4 and run.outputs[1].tolerance == 1e-6
    assert {layer.source for layer in run.layers} >= {"conv", "gap", "feature_dense", "concat", "score", "embedding"}
    code = (out / "model.py").read_text()
    (out / "model.py").write_text(
        code.replace("torch.cat([gap, feature_dense], dim=1)", "torch.cat([feature_dense, gap], dim=1)")
    )
    swapped = verify_conversion(src, out)
    assert swapped.exit_code == 1 and swapped.first_divergence[1].source == "concat", swapped.summary()


def test_integer_inputs_stay_inside_the_vocabulary(tmp_path, keras):
    import ktorch

    keras.utils.set_random_seed(0)
    ids = keras.Input((6,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(7, 4, name="embed")(ids)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    model = keras.Model(ids, keras.layers.Dense(2, name="head")(x), name="tokens_net")
    src = tmp_path / "tokens.h5"
    model.save(src)
    out = tmp_path / "tokens_torch"
    ktorch.convert(src, out, verify=False)
    report = verify_conversion(src, out, batches=(16,))
    assert report.passed, report.summary()
    # out-of-vocabulary ids would fail in the source or the emitted gather; real data can be checked too
    data = {"tokens": np.random.default_rng(1).integers(0, 7, (4, 6)).astype("int32")}
    assert verify_conversion(src, out, inputs=data).passed


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    arrays("float32", st.tuples(st.integers(1, 4), st.integers(1, 5)), elements=finite),
    st.floats(0, 1),
    st.integers(0, 2**31 - 1),
)
def test_compare_tolerance_is_the_max_relative_error(reference, noise, seed):
    got = reference + np.random.default_rng(seed).normal(0, noise, reference.shape).astype("float32")
    c = compare("x", reference, got, 1e-4)
    diff = np.abs(reference.astype(np.float64) - got.astype(np.float64))
    scale = float(np.abs(reference).max()) or 1.0
    assert c.max_abs == pytest.approx(float(diff.max()))
    assert c.max_rel == pytest.approx(float(diff.max()) / scale)
    assert compare("x", reference, got, c.max_rel).passed  # the reported error is the smallest passing tolerance
    if c.max_rel > 0:
        assert not compare("x", reference, got, c.max_rel * 0.999).passed
