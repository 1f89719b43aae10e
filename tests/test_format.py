"""translate/format.py: emitted code is formatted the same with ruff and without it (the
fallback `layout`), so ruff is a development dependency only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import ktorch
import ktorch.translate.format as fmt

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def convert_without_ruff(monkeypatch, src: Path, out: Path, **kwargs) -> str:
    with monkeypatch.context() as m:
        m.setattr(fmt, "_ruff_format", lambda code: None)  # as if ruff were not installed
        ktorch.convert(src, out, verify=False, force=True, **kwargs)
    return (out / "model.py").read_text()


@pytest.mark.skipif(shutil.which("ruff") is None, reason="needs ruff to compare with")
@pytest.mark.parametrize("sample", ["small_cnn.h5", "multi_input.keras"])
def test_samples_format_alike_with_and_without_ruff(sample, tmp_path, monkeypatch):
    with_ruff = tmp_path / "ruff"
    ktorch.convert(SAMPLES / sample, with_ruff, verify=False)
    expected = (with_ruff / "model.py").read_text()
    assert convert_without_ruff(monkeypatch, SAMPLES / sample, tmp_path / "fallback") == expected
    # and the PyTorch -> Keras direction, from the emitted PyTorch directory
    keras_ruff = tmp_path / "keras_ruff"
    ktorch.convert(with_ruff, keras_ruff, verify=False)
    expected = (keras_ruff / "model.py").read_text()
    assert convert_without_ruff(monkeypatch, with_ruff, tmp_path / "keras_fallback") == expected


def test_layout_breaks_long_statements_as_ruff_does():
    code = (
        "def f(x):\n"
        "    y = layers.Conv2D(filters=64, kernel_size=3, padding='same', use_bias=False, name='layer1_0_conv1')(x)\n"
        "    z = layers.Conv2D(filters=64, kernel_size=7, strides=2, use_bias=False, name='c1')(y_padded_input)\n"
        "    return z\n"
    )
    assert fmt.layout(code) == (
        "def f(x):\n"
        "    y = layers.Conv2D(\n"
        '        filters=64, kernel_size=3, padding="same", use_bias=False, name="layer1_0_conv1"\n'
        "    )(x)\n"
        '    z = layers.Conv2D(filters=64, kernel_size=7, strides=2, use_bias=False, name="c1")(\n'
        "        y_padded_input\n"
        "    )\n"
        "    return z\n"
    )


def test_layout_explodes_what_does_not_fit_on_one_indented_line():
    args = ", ".join(f"argument_{i}=some_value_{i}" for i in range(6))
    code = f"x = call({args})\n"
    assert fmt.layout(code) == "x = call(\n" + "".join(f"    argument_{i}=some_value_{i},\n" for i in range(6)) + ")\n"
    assert fmt.layout("x = (1,)\ny = 'a'\nz = 'say \"a\"'\n") == 'x = (1,)\ny = "a"\nz = \'say "a"\'\n'
