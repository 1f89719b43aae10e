"""GPU parity checks: build a few small models, convert them, and verify them on CUDA with
TF32 pinned off and allowed, printing one summary table.

Meant for a machine with CUDA and torch but no TensorFlow (Keras runs on its torch
backend); run it through run_gpu_checks.sh beside this file. `--device cpu` is the dry
mode that the CPU test suite runs (tests/test_verify_gpu_script.py).

    python tests/gpu/gpu_checks.py --device cuda [--json summary.json] [--workdir DIR]

Exit status: 0 when every check passed, 1 when one failed, 3 when it could not start.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np


def _randomize(model: Any, seed: int) -> None:
    """Seeded weights everywhere (kernels scaled by fan-in, as trained networks roughly
    are; biases too, which Keras initialises to zero) and random BatchNorm statistics."""
    import keras

    rng = np.random.default_rng(seed)

    def draw(w: np.ndarray) -> np.ndarray:
        if not np.issubdtype(w.dtype, np.floating):
            return w  # seed generator states and the like
        fan_in = int(np.prod(np.shape(w)[:-1])) if np.ndim(w) > 1 else 4
        return rng.normal(0.0, (2.0 / max(fan_in, 1)) ** 0.5, np.shape(w)).astype(w.dtype)

    model.set_weights([draw(w) for w in model.get_weights()])
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            weights = layer.get_weights()
            weights[-1] = rng.uniform(0.5, 2.0, weights[-1].shape).astype("float32")
            layer.set_weights(weights)


def keras_cnn() -> Any:
    import keras

    layers = keras.layers
    x = keras.Input((32, 32, 3), name="image")
    y = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    y = layers.BatchNormalization(name="stem_bn")(y)
    y = layers.ReLU(name="stem_relu")(y)
    z = layers.Conv2D(16, 3, padding="same", activation="relu", name="block_conv")(y)
    z = layers.DepthwiseConv2D(3, padding="same", name="block_dw")(z)
    y = layers.Add(name="block_add")([y, z])
    y = layers.MaxPooling2D(2, name="pool")(y)
    y = layers.Flatten(name="flatten")(y)
    out = layers.Dense(10, activation="softmax", name="predictions")(y)
    return keras.Model(x, out, name="gpu_cnn")


def keras_sequence() -> Any:
    import keras

    layers = keras.layers
    ids = keras.Input((12,), dtype="int32", name="tokens")
    y = layers.Embedding(50, 16, name="embed")(ids)
    y = layers.Conv1D(16, 3, padding="same", activation="relu", name="conv1d")(y)
    y = layers.LayerNormalization(name="norm")(y)
    y = layers.LSTM(12, name="lstm")(y)
    out = layers.Dense(3, name="logits")(y)
    return keras.Model(ids, out, name="gpu_sequence")


def keras_two_heads() -> Any:
    import keras

    layers = keras.layers
    image = keras.Input((16, 16, 1), name="image")
    features = keras.Input((5,), name="features")
    x = layers.Conv2D(8, 3, activation="relu", name="conv")(image)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    f = layers.Dense(8, activation="tanh", name="feature_dense")(features)
    joined = layers.Concatenate(name="concat")([x, f])
    score = layers.Dense(1, activation="sigmoid", name="score")(joined)
    embedding = layers.Dense(4, name="embedding")(joined)
    return keras.Model([image, features], [score, embedding], name="gpu_two_heads")


KERAS_MODELS: dict[str, Callable[[], Any]] = {
    "cnn": keras_cnn,
    "sequence": keras_sequence,
    "two_heads": keras_two_heads,
}


def torch_models() -> dict[str, Callable[[], Any]]:
    """Small nn.Modules for the torch->keras direction (used only where ktorch has it)."""
    import torch
    from torch import nn

    class SmallNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.fc = nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.bn(self.conv(x)))
            return self.fc(y.mean((2, 3)))

    def small_net() -> Any:
        torch.manual_seed(0)
        net = SmallNet().eval()
        with torch.no_grad():
            net.bn.running_mean.normal_(0.0, 0.5)
            net.bn.running_var.uniform_(0.5, 2.0)
        return net

    return {"torch_cnn": small_net}


def convert_keras_models(workdir: Path, names: list[str]) -> list[tuple[str, str, Path, Path]]:
    import keras

    import ktorch

    keras.utils.set_random_seed(0)
    built = []
    for i, name in enumerate(names):
        model = KERAS_MODELS[name]()
        _randomize(model, seed=i)
        src = workdir / f"{name}.keras"
        model.save(src)
        out = workdir / f"{name}_torch"
        ktorch.convert(src, out, verify=False, force=True)
        built.append((name, "keras->torch", src, out))
    return built


def convert_torch_models(workdir: Path) -> tuple[list[tuple[str, str, Path, Path]], str | None]:
    """torch->keras conversions, when this ktorch has that direction; else a note."""
    import torch

    import ktorch

    built = []
    for name, make in torch_models().items():
        net = make()
        example = (torch.randn(2, 3, 16, 16),)
        src = workdir / f"{name}.pt2"
        batch = torch.export.Dim("batch", min=1, max=1024)
        torch.export.save(torch.export.export(net, example, dynamic_shapes=({0: batch},)), str(src))
        out = workdir / f"{name}_keras"
        ktorch.convert(src, out, to="keras", verify=False, force=True)
        built.append((name, "torch->keras", src, out))
    return built, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--device", choices=("cuda", "cpu"), default="cuda", help="cuda (default), or cpu for a dry run"
    )
    parser.add_argument(
        "--models",
        default=",".join(KERAS_MODELS),
        help=f"Keras models to check (default all: {','.join(KERAS_MODELS)})",
    )
    parser.add_argument("--batch", default="1,4", help="batch sizes (default 1,4)")
    parser.add_argument("--workdir", type=Path, help="where to write the models (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="also write the summary (and every report) as JSON here")
    parser.add_argument("--no-torch-direction", action="store_true", help="skip the torch->keras direction")
    args = parser.parse_args(argv)

    import torch
    from rich.console import Console
    from rich.table import Table

    from ktorch.verify import verify_conversion
    from ktorch.verify.runners import keras_backend

    console = Console(highlight=False, width=160)
    if args.device == "cuda" and not torch.cuda.is_available():
        console.print("[red]no CUDA device (torch.cuda.is_available() is False)[/]; use --device cpu for a dry run")
        return 3
    backend = keras_backend()
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "-"
    console.print(f"device {args.device} ({gpu}), torch {torch.__version__}, Keras backend {backend}")
    names = [n for n in args.models.split(",") if n]
    unknown = set(names) - set(KERAS_MODELS)
    if unknown:
        console.print(f"[red]unknown model(s) {sorted(unknown)}[/]; choose from {sorted(KERAS_MODELS)}")
        return 3
    batches = [int(b) for b in args.batch.split(",")]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ktorch-gpu-"))
    workdir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    conversions = convert_keras_models(workdir, names)
    notes = []
    if not args.no_torch_direction:
        try:
            more, note = convert_torch_models(workdir)
        except Exception as exc:  # noqa: BLE001 - a failing direction is reported, not fatal to the others
            more, note = [], f"torch->keras: conversion failed ({type(exc).__name__}: {exc})"
        conversions += more
        if note:
            notes.append(note)
    console.print(f"built and converted {len(conversions)} model(s) in {time.perf_counter() - t0:.1f}s")

    table = Table(
        "model",
        "direction",
        "device",
        "tf32",
        "profile",
        "status",
        "max out rel",
        "max layer rel",
        "first divergence",
        "s",
        title="ktorch GPU parity",
    )
    rows, failed = [], 0
    for name, direction, src, out in conversions:
        for tf32 in (False, True):
            t1 = time.perf_counter()
            report = verify_conversion(src, out, device=args.device, batches=batches, tf32=tf32)
            seconds = time.perf_counter() - t1
            first = report.first_divergence
            out_rel = report.min_passing_tolerance()
            layer_rel = report.min_passing_layer_tolerance()
            profile = report.runs[0].profile if report.runs else "-"
            where = f"{first[1].source} ({first[1].class_name})" if first else "-"
            status = report.status if report.error is None else f"error: {report.error[:60]}"
            failed += not report.passed
            color = "green" if report.passed else "red"
            table.add_row(
                name, direction, args.device, str(tf32), profile, f"[{color}]{status}[/]",
                "n/a" if out_rel is None else f"{out_rel:.2e}", "n/a" if layer_rel is None else f"{layer_rel:.2e}", where, f"{seconds:.1f}",
            )  # fmt: skip
            rows.append(
                {
                    "model": name,
                    "direction": direction,
                    "device": args.device,
                    "tf32": tf32,
                    "seconds": seconds,
                    "report": report.to_dict(),
                }
            )
    console.print(table)
    settings = {
        k: v for row in rows for run in row["report"]["runs"] for k, v in run["settings"].items() if not row["tf32"]
    }
    console.print(f"settings (TF32 off): {settings}")
    for note in notes:
        console.print(f"[yellow]{note}[/]")
    total = time.perf_counter() - t0
    console.print(f"{len(rows) - failed} passed, {failed} failed in {total:.1f}s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"device": args.device, "gpu": gpu, "backend": backend, "notes": notes, "checks": rows}, indent=1
            )
        )
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
