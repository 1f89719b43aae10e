"""The ONNX routes from Keras to PyTorch, side by side on the same Keras files.

    python benchmarks/baseline_onnx.py            # small CNN, MobileNetV2 (96x96), ResNet50 (64x64)
    python benchmarks/baseline_onnx.py --quick    # small CNN only

Routes, each measured in this process on the same seeded input (batch 4):
- `tf2onnx + onnx2torch`: what a user would otherwise do; the result is an fx GraphModule;
- `ktorch (h5)`: `ktorch.convert` of the Keras file straight to PyTorch;
- `ktorch (onnx)`: tf2onnx, then ktorch's ONNX reader to PyTorch.

For each: success, max error relative to Keras's output scale, conversion time (the
tf2onnx step included where there is one; imports excluded), median forward time and the
lines of the resulting code. `compare_routes()` is what benchmarks/run.py can call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BATCH = 4


def _median_seconds(fn: Callable[[], Any], repeats: int = 7, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _rel(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(got - expected)) / max(float(np.max(np.abs(expected))), 1e-12))


def _tf2onnx(model: Any, shape: tuple) -> Any:
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, *shape), tf.float32, name="input"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    return proto


def _run_torch(module: Any, x: np.ndarray) -> tuple[np.ndarray, float]:
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(x))
    with torch.no_grad():
        out = module(tensor)
        seconds = _median_seconds(lambda: module(tensor))
    return out.numpy(), seconds


def _failed(exc: Exception) -> dict[str, Any]:
    return {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:140]}"}


def route_onnx2torch(model: Any, shape: tuple, x: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    """tf2onnx + onnx2torch: the usual route."""
    import onnx2torch

    t0 = time.perf_counter()
    try:
        proto = _tf2onnx(model, shape)
        t1 = time.perf_counter()
        module = onnx2torch.convert(proto).eval()
    except Exception as exc:  # noqa: BLE001 - the baseline failing is a result
        return _failed(exc)
    seconds = time.perf_counter() - t0
    try:
        got, forward = _run_torch(module, x)
    except Exception as exc:  # noqa: BLE001
        return _failed(exc)
    lines = len(module.code.splitlines())
    return {
        "ok": True,
        "convert_s": seconds,
        "tf2onnx_s": t1 - t0,
        "forward_s": forward,
        "max_rel": _rel(got, expected),
        "lines": lines,
    }


def route_ktorch_h5(path: Path, work: Path, x: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    """ktorch.convert of the Keras file."""
    import ktorch
    from ktorch.verify.runners import import_emitted

    t0 = time.perf_counter()
    try:
        result = ktorch.convert(path, work / f"{path.stem}_torch", verify=False, force=True)
    except Exception as exc:  # noqa: BLE001
        return _failed(exc)
    seconds = time.perf_counter() - t0
    module = import_emitted(result.out).load()
    perm = result.manifest["inputs"][0].get("perm")
    got, forward = _run_torch(module, x.transpose(perm) if perm else x)
    lines = len((result.out / "model.py").read_text().splitlines())
    return {"ok": True, "convert_s": seconds, "forward_s": forward, "max_rel": _rel(got, expected), "lines": lines}


def route_ktorch_onnx(model: Any, shape: tuple, work: Path, x: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    """tf2onnx, then ktorch's ONNX reader."""
    from ktorch import convert as convert_onnx
    from ktorch.verify.runners import import_emitted

    onnx_path = work / f"{model.name}.onnx"
    t0 = time.perf_counter()
    try:
        onnx_path.write_bytes(_tf2onnx(model, shape).SerializeToString())
        t1 = time.perf_counter()
        result = convert_onnx(onnx_path, work / f"{model.name}_onnx_torch", verify=False, force=True)
    except Exception as exc:  # noqa: BLE001
        return _failed(exc)
    seconds = time.perf_counter() - t0
    module = import_emitted(result.out).load()
    perm = result.manifest["inputs"][0].get("perm")
    got, forward = _run_torch(module, x.transpose(perm) if perm else x)
    lines = len((result.out / "model.py").read_text().splitlines())
    return {
        "ok": True,
        "convert_s": seconds,
        "tf2onnx_s": t1 - t0,
        "forward_s": forward,
        "max_rel": _rel(got, expected),
        "lines": lines,
    }


def compare_routes(name: str, path: Path, shape: tuple, work: Path) -> dict[str, Any]:
    """All three routes on one Keras file; keys: model, and one dict per route."""
    import keras

    model = keras.models.load_model(path, compile=False)
    x = np.random.default_rng(0).standard_normal((BATCH, *shape)).astype("float32")
    expected = np.asarray(model(x, training=False))
    return {
        "model": name,
        "tf2onnx + onnx2torch": route_onnx2torch(model, shape, x, expected),
        "ktorch (h5)": route_ktorch_h5(path, work, x, expected),
        "ktorch (onnx)": route_ktorch_onnx(model, shape, work, x, expected),
    }


def build_models(work: Path, quick: bool) -> list[tuple[str, Path, tuple]]:
    """The Keras files, with seeded random weights and BatchNorm statistics."""
    import keras

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import randomize_batchnorm, randomize_weights

    models = [("small_cnn", ROOT / "samples" / "small_cnn.h5", (32, 32, 3))]
    if quick:
        return models
    for name, ctor, shape in (
        ("MobileNetV2", keras.applications.MobileNetV2, (96, 96, 3)),
        ("ResNet50", keras.applications.ResNet50, (64, 64, 3)),
    ):
        model = ctor(
            weights=None, input_shape=shape, classes=10, classifier_activation=None
        )  # logits: a softmax would saturate
        randomize_weights(model, seed=0, scale=0.05)
        randomize_batchnorm(model, seed=0)
        path = work / f"{name}.h5"
        model.save(path)
        models.append((name, path, shape))
    return models


def to_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | route | ok | max rel err vs Keras | convert s (of which tf2onnx) | forward ms (batch 4) | lines |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for route in ("tf2onnx + onnx2torch", "ktorch (h5)", "ktorch (onnx)"):
            r = row[route]
            if r["ok"]:
                tf2onnx = f" ({r['tf2onnx_s']:.2f})" if "tf2onnx_s" in r else ""
                lines.append(
                    f"| {row['model']} | {route} | yes | {r['max_rel']:.2g} | {r['convert_s']:.2f}{tf2onnx} | {r['forward_s'] * 1000:.1f} | {r['lines']} |"
                )
            else:
                lines.append(f"| {row['model']} | {route} | no | | | | {r['error']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the small CNN only")
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from ktorch.verify.runners import preload_before_tensorflow

    preload_before_tensorflow()
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, path, shape in build_models(work, args.quick):
            rows.append(compare_routes(name, path, shape, work))
    print(to_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
