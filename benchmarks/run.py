"""ktorch benchmarks, measured side by side in one run (never as timed unit tests).

    python benchmarks/run.py                 # all figures, table printed and written to docs/benchmarks.md
    python benchmarks/run.py --quick         # small models only

Figures:
- conversion: `ktorch convert --no-verify` of a Keras .h5 in a fresh process vs a fresh process
  that imports Keras and calls load_model on the same file (wall time, peak RSS); the
  convert/load ratio should be <= 1.0, and peak memory <= import baseline + 2x weight bytes;
- scale: conversion time against node count and weight bytes (ResNet50/101/152);
- emitted forward: the PyTorch ResNet50 ktorch emits from Keras vs torchvision's resnet50,
  same process, same threads, same input (ratio should be <= 1.10); transposes in forward;
- baseline: the route a user would otherwise take, tf2onnx + onnx2torch, on the same models.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# Peak RSS from /proc (VmHWM is per address space; ru_maxrss survives exec from a big parent).
HWM = "int([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"

CONVERT_CHILD = """
import sys, time
t0 = time.perf_counter()
from ktorch.api import convert
import h5py, numpy, safetensors.numpy  # the framework baseline: everything conversion imports
import ktorch.translate.keras_reader.families, ktorch.translate.torch_writer.writer, ktorch.translate.torch_writer.families
base = HWM
t1 = time.perf_counter()
result = convert(sys.argv[1], sys.argv[2], verify=False, force=True)
t2 = time.perf_counter()
import json
print(json.dumps({"wall": t2 - t0, "convert": t2 - t1, "base_kb": base,
                  "peak_kb": HWM,
                  "nodes": result.manifest["model"]["nodes"], "transposes": result.manifest["layout"]["transposes"],
                  "tensorflow": "tensorflow" in sys.modules}))
"""

LOAD_CHILD = """
import os, sys, time
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
t0 = time.perf_counter()
import keras
keras.models.load_model(sys.argv[1], compile=False)
import json
print(json.dumps({"wall": time.perf_counter() - t0, "peak_kb": HWM}))
"""


def child(code: str, *args: str) -> dict:
    code = code.replace("HWM", HWM)
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def build_models(workdir: Path, quick: bool) -> list[tuple[str, Path, tuple]]:
    import keras

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import randomize_batchnorm  # the test suite's: random statistics and affine weights

    specs = [("small_cnn", None, (32, 32, 3))]
    if not quick:
        specs += [("MobileNetV2", keras.applications.MobileNetV2, (224, 224, 3))]
        specs += [(n, getattr(keras.applications, n), (224, 224, 3)) for n in ("ResNet50", "ResNet101", "ResNet152")]
    models = []
    for name, ctor, shape in specs:
        path = workdir / f"{name}.h5"
        if ctor is None:
            path = ROOT / "samples" / "small_cnn.h5"
        else:
            # raw scores and random BatchNorm statistics: a saturated softmax would hide errors
            model = ctor(weights=None, input_shape=shape, classifier_activation=None)
            randomize_batchnorm(model)
            model.save(path)
        models.append((name, path, shape))
    return models


def interleaved_times(
    fns: dict[str, Callable[[], Any]], rounds: int = 15, warmup: int = 2
) -> dict[str, dict[str, float]]:
    """Time several callables in interleaved rounds (A B C A B C ...), so that a busy spell
    of this shared machine hits them alike; report each one's minimum and median. The
    minimum is the figure compared: noise only ever adds time."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: {"min": min(v), "median": statistics.median(v)} for k, v in times.items()}


def neutral_batchnorm_torch(net: Any) -> None:
    """Random BatchNorm statistics (used for the parity runs) push the activations of a deep
    random network into denormal floats, ~10x slower on CPU; timing is about the code, so
    both sides get the same neutral statistics."""
    import torch

    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.zero_()
            module.running_var.fill_(1.0)


REFERENCES = {"ResNet50": "resnet50", "MobileNetV2": "mobilenet_v2"}


def forward_ratio(name: str, emitted_dir: Path, baseline: Any | None = None) -> dict:
    """The PyTorch model ktorch emitted (from Keras) vs torchvision's counterpart and, when
    given, the onnx2torch module of the baseline route: same process, threads and input."""
    import torch
    import torchvision

    from ktorch.verify.runners import import_emitted

    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    emitted = import_emitted(emitted_dir).load()
    reference = getattr(torchvision.models, REFERENCES[name])(weights=None).eval()
    for net in (emitted, reference):
        neutral_batchnorm_torch(net)
    x = torch.randn(8, 3, 224, 224)
    fns = {"emitted": lambda: emitted(x), "torchvision": lambda: reference(x)}
    if baseline is not None:
        neutral_batchnorm_torch(baseline)
        x_nhwc = x.permute(0, 2, 3, 1).contiguous()  # the baseline keeps Keras's layout
        fns["onnx2torch"] = lambda: baseline(x_nhwc)
    with torch.no_grad():
        times = interleaved_times(fns)
    code = (emitted_dir / "model.py").read_text()
    forward = code[code.index("def forward") : code.index("\ndef load")]
    return {
        "emitted_s": times["emitted"]["min"],
        "torchvision_s": times["torchvision"]["min"],
        "onnx2torch_s": times["onnx2torch"]["min"] if baseline is not None else None,
        "medians_s": {k: v["median"] for k, v in times.items()},
        "ratio": times["emitted"]["min"] / times["torchvision"]["min"],
        "threads": torch.get_num_threads(),
        "transposes_in_forward": forward.count("permute(") + forward.count("transpose("),
    }


def keras_forward_ratio(work: Path) -> dict:
    """The other direction: torchvision's resnet50 -> the Keras model ktorch emits, vs
    keras.applications.ResNet50, both on TensorFlow (predict_on_batch, a compiled call),
    batch 8 at 224x224 channels-last, same process and threads."""
    import keras
    import numpy as np
    import torch
    import torchvision

    import ktorch
    from ktorch.verify.runners import import_emitted

    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None).eval()
    neutral_batchnorm_torch(net)
    out = work / "tv_resnet50_keras"
    t0 = time.perf_counter()
    ktorch.convert(net, out, example_inputs=(torch.randn(1, 3, 224, 224),), to="keras", verify=False, force=True)
    convert_s = time.perf_counter() - t0
    emitted = import_emitted(out).load()
    reference = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3), classifier_activation=None)
    x = np.random.default_rng(0).standard_normal((8, 224, 224, 3)).astype("float32")
    times = interleaved_times(
        {"emitted": lambda: emitted.predict_on_batch(x), "keras": lambda: reference.predict_on_batch(x)}, rounds=10
    )
    code = (out / "model.py").read_text()
    return {
        "convert_s": convert_s,
        "emitted_s": times["emitted"]["min"],
        "keras_s": times["keras"]["min"],
        "medians_s": {k: v["median"] for k, v in times.items()},
        "ratio": times["emitted"]["min"] / times["keras"]["min"],
        "transposes": code.count("layers.Permute(") + code.count("ops.transpose("),
    }


def baseline_route(name: str, path: Path, shape: tuple) -> dict:
    """tf2onnx + onnx2torch on the same Keras file: success, error vs Keras, time, lines."""
    import numpy as np

    try:
        import keras
        import onnx2torch
        import tensorflow as tf
        import tf2onnx
        import torch
    except ImportError as exc:
        return {"ok": False, "error": f"not installed: {exc}"}
    model = keras.models.load_model(path, compile=False)
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype("float32")
    expected = np.asarray(model(x))
    t0 = time.perf_counter()
    try:
        spec = (tf.TensorSpec((None, *shape), tf.float32, name="input"),)
        onnx_model, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
        module = onnx2torch.convert(onnx_model).eval()
    except Exception as exc:  # noqa: BLE001 - the baseline failing is a result, not an error of ours
        return {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:120]}"}
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    err = float(np.max(np.abs(got - expected)) / max(np.max(np.abs(expected)), 1e-12))
    lines = len(module.code.splitlines()) if hasattr(module, "code") else None
    return {"ok": True, "seconds": seconds, "max_rel": err, "lines": lines, "module": module}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small models only")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-baseline", action="store_true", help="skip the tf2onnx + onnx2torch route")
    args = parser.parse_args(argv)

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from ktorch.verify.runners import preload_before_tensorflow

    preload_before_tensorflow()
    rows, lines = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, path, shape in build_models(work, args.quick):
            out = work / f"{name}_torch"
            conv = child(CONVERT_CHILD, str(path), str(out))
            load = child(LOAD_CHILD, str(path))
            weight_mb = sum(f.stat().st_size for f in out.glob("*.safetensors")) / 2**20
            row = {
                "model": name,
                "file_mb": path.stat().st_size / 2**20,
                "nodes": conv["nodes"],
                "convert_s": conv["wall"],
                "keras_load_s": load["wall"],
                "ratio": conv["wall"] / load["wall"],
                "peak_mb": conv["peak_kb"] / 1024,
                "import_mb": conv["base_kb"] / 1024,
                "weights_mb": weight_mb,
                "memory_ok": conv["peak_kb"] / 1024 <= conv["base_kb"] / 1024 + 2 * weight_mb,
                "keras_load_peak_mb": load["peak_kb"] / 1024,
                "transposes": conv["transposes"],
                "tensorflow_imported": conv["tensorflow"],
                "lines": len((out / "model.py").read_text().splitlines()),
            }
            if not args.no_baseline:
                row["baseline"] = baseline_route(name, path, shape)
            if name in REFERENCES:
                row["forward"] = forward_ratio(name, out, row.get("baseline", {}).pop("module", None))
            row.get("baseline", {}).pop("module", None)
            rows.append(row)
            print(json.dumps(row), flush=True)
        keras_forward = None if args.quick else keras_forward_ratio(work)
        print(json.dumps({"keras_forward": keras_forward}), flush=True)

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines.append(f"# ktorch benchmarks\n\n{datetime.date.today()} on {machine}. `python benchmarks/run.py`.\n")
    lines.append("## Keras -> PyTorch conversion vs Keras loading its own file (fresh processes)\n")
    lines.append(
        "| model | nodes | file MB | convert s | keras load s | ratio | peak MB | import MB + 2x weights MB | transposes | TF imported |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        bound = r["import_mb"] + 2 * r["weights_mb"]
        lines.append(
            f"| {r['model']} | {r['nodes']} | {r['file_mb']:.0f} | {r['convert_s']:.2f} | {r['keras_load_s']:.2f} | "
            f"{r['ratio']:.2f} | {r['peak_mb']:.0f} | {bound:.0f} | {r['transposes']} | {r['tensorflow_imported']} |"
        )
    forward_rows = [r for r in rows if "forward" in r]
    if forward_rows:
        lines.append(
            "\n## Emitted PyTorch forward vs torchvision (same process, batch 8 at 224x224, fastest of 15 interleaved rounds)\n"
        )
        lines.append(
            "| model | emitted ms | torchvision ms | ratio | onnx2torch (baseline) ms | transposes in forward | threads |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for r in forward_rows:
            f = r["forward"]
            base = f"{f['onnx2torch_s'] * 1000:.0f}" if f["onnx2torch_s"] else "-"
            lines.append(
                f"| {r['model']} | {f['emitted_s'] * 1000:.0f} | {f['torchvision_s'] * 1000:.0f} | {f['ratio']:.2f} | {base} | "
                f"{f['transposes_in_forward']} | {f['threads']} |"
            )
        lines.append("")
    if keras_forward is not None:
        k = keras_forward
        lines.append(
            "## Emitted Keras forward vs keras.applications (TensorFlow, predict_on_batch, batch 8 at 224x224, fastest of 10 rounds)\n"
        )
        lines.append(
            "| model | conversion s (.pt2 export included) | emitted ms | keras.applications ms | ratio | transposes |"
        )
        lines.append("|---|---|---|---|---|---|")
        lines.append(
            f"| torchvision resnet50 -> Keras vs ResNet50 | {k['convert_s']:.1f} | {k['emitted_s'] * 1000:.0f} | "
            f"{k['keras_s'] * 1000:.0f} | {k['ratio']:.2f} | {k['transposes']} |"
        )
        lines.append("")
    if any("baseline" in r for r in rows):
        lines.append("## Baseline route: tf2onnx + onnx2torch on the same files\n")
        ok = sum(1 for r in rows if r.get("baseline", {}).get("ok"))
        lines.append(
            f"Converted {ok} of {sum(1 for r in rows if 'baseline' in r)} models (ktorch converts every one: times above; its parity errors are measured by the test suite and `ktorch verify`).\n"
        )
        lines.append(
            "| model | ok | seconds (in-process, excl. imports) | max rel error vs Keras | lines of code (ktorch's model.py) | note |"
        )
        lines.append("|---|---|---|---|---|---|")
        for r in rows:
            b = r.get("baseline")
            if b is None:
                continue
            if b["ok"]:
                lines.append(
                    f"| {r['model']} | yes | {b['seconds']:.2f} | {b['max_rel']:.2g} | {b['lines']} ({r['lines']}) | an opaque fx graph |"
                )
            else:
                lines.append(f"| {r['model']} | no | | | | {b['error']} |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
