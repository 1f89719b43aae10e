"""ktorch at scale: a GPT-2-style transformer up to ~1B parameters, both directions.

    python benchmarks/scale.py                    # 3 sizes (~60M, ~250M, ~1B), writes docs/scale.md
    python benchmarks/scale.py --sizes 60M        # one size only (a quick look)
    python benchmarks/scale.py --no-parity        # skip the parity runs (the slowest part)
    python benchmarks/scale.py --parity-sizes 1B  # parity for the 1B model only

Run by hand, not in CI (about 30 minutes and ~15 GB of RAM for the 1B model on a 2-core
machine). Each model is built here with random weights and a 256-token vocabulary (nothing
is downloaded), exported with torch.export to a .pt2 file, then:

- PyTorch -> Keras: `ktorch.convert(model.pt2, to="keras", verify=False)` in a fresh process;
- Keras -> PyTorch: the same architecture written in Keras (the Keras reader does not read
  the keras.ops layers the PyTorch -> Keras writer emits for attention, nor its Parameter
  layer), saved as .h5, `ktorch.convert(model.h5, verify=False)` in a fresh process.

Each conversion reports wall time, the peak resident memory of its process (VmHWM), the
import baseline (VmHWM once the libraries the conversion uses are imported) and the weight
bytes; the bound is peak <= baseline + 2 x weight bytes. A separate run per direction
converts again with verify=True (a 16-token sequence) for parity.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Same family at three sizes: width and depth grow together, so the node count and the
# weight bytes both change (~4x weights per step).
SIZES = {"60M": (1024, 5), "250M": (1536, 9), "1B": (2048, 20)}
SMOKE = {"smoke": (128, 2)}  # --sizes smoke: a check that the script runs (seconds)
VOCAB, POSITIONS, HEADS, SEQ = 256, 256, 16, 16

# Peak RSS from /proc (VmHWM is per address space; ru_maxrss survives exec from a big parent).
HWM = "int([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"

PRELUDE = """
import os, sys, time, json
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
t0 = time.perf_counter()
from ktorch.verify.runners import preload_before_tensorflow, keras_backend
preload_before_tensorflow()  # Triton before TensorFlow
import torch, numpy, h5py, safetensors
keras_backend()
import keras, tensorflow
from ktorch.api import convert
import ktorch.translate.torch_reader.families, ktorch.translate.keras_writer.families
import ktorch.translate.keras_reader.families, ktorch.translate.torch_writer.families
"""

BUILD_CHILD = """
import sys, json, torch, transformers
from ktorch.verify.runners import preload_before_tensorflow
preload_before_tensorflow()

class Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model(input_ids=ids, use_cache=False).logits

width, depth, vocab, positions, heads, seq = (int(a) for a in sys.argv[2:8])
torch.manual_seed(0)
config = transformers.GPT2Config(vocab_size=vocab, n_embd=width, n_layer=depth, n_head=heads, n_positions=positions)
model = Logits(transformers.GPT2LMHeadModel(config).eval())
params = sum(p.numel() for p in model.parameters())
ids = torch.randint(0, vocab, (2, seq))
program = torch.export.export(model, (ids,), dynamic_shapes=({0: torch.export.Dim("batch")},))
torch.export.save(program, sys.argv[1])
print(json.dumps({"parameters": params}))
"""

# The same architecture written in Keras (pre-LN blocks: LayerNormalization, causal
# MultiHeadAttention, Dense 4x with GELU, residual Adds; token and position Embeddings, the
# position ids as a second input): the Keras -> PyTorch source.
KERAS_BUILD_CHILD = """
import os, sys, json
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from ktorch.verify.runners import keras_backend
keras_backend()
import keras
from keras import layers

width, depth, vocab, positions, heads, seq = (int(a) for a in sys.argv[2:8])
keras.utils.set_random_seed(0)
ids = keras.Input((None,), dtype="int32", name="input_ids")
pos = keras.Input((None,), dtype="int32", name="position_ids")
x = layers.Add(name="embed")([layers.Embedding(vocab, width, name="wte")(ids), layers.Embedding(positions, width, name="wpe")(pos)])
for i in range(depth):
    h = layers.LayerNormalization(epsilon=1e-5, name=f"h{i}_ln_1")(x)
    h = layers.MultiHeadAttention(heads, width // heads, name=f"h{i}_attn")(h, h, use_causal_mask=True)
    x = layers.Add(name=f"h{i}_add_1")([x, h])
    h = layers.LayerNormalization(epsilon=1e-5, name=f"h{i}_ln_2")(x)
    h = layers.Dense(4 * width, activation="gelu", name=f"h{i}_mlp_fc")(h)
    h = layers.Dense(width, name=f"h{i}_mlp_proj")(h)
    x = layers.Add(name=f"h{i}_add_2")([x, h])
x = layers.LayerNormalization(epsilon=1e-5, name="ln_f")(x)
model = keras.Model([ids, pos], layers.Dense(vocab, use_bias=False, name="lm_head")(x), name="gpt2_keras")
model.save(sys.argv[1])
print(json.dumps({"parameters": int(model.count_params())}))
"""

TO_KERAS_CHILD = (
    PRELUDE
    + """
base = HWM
t1 = time.perf_counter()
result = convert(sys.argv[1], sys.argv[2], to="keras", verify=sys.argv[3] == "1", force=True)
t2 = time.perf_counter()
peak = HWM
row = {"wall": t2 - t1, "base_kb": base, "peak_kb": peak, "nodes": result.manifest["model"]["nodes"],
       "parameters": result.manifest["model"]["parameters"], "timings": result.timings,
       "worst_rel": None if result.parity is None else result.parity.worst_rel}
print(json.dumps(row))
"""
)

TO_TORCH_CHILD = (
    PRELUDE
    + """
base = HWM
t1 = time.perf_counter()
result = convert(sys.argv[1], sys.argv[2], verify=sys.argv[3] == "1", force=True)
t2 = time.perf_counter()
print(json.dumps({"wall": t2 - t1, "base_kb": base, "peak_kb": HWM, "nodes": result.manifest["model"]["nodes"],
                  "parameters": result.manifest["model"]["parameters"], "timings": result.timings,
                  "worst_rel": None if result.parity is None else result.parity.worst_rel}))
"""
)


def child(code: str, *args: str) -> dict:
    code = code.replace("HWM", HWM)
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=3600, cwd=ROOT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"child failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def weight_bytes(directory: Path) -> int:
    """Bytes of the emitted weights file (float32 tensors plus a small header)."""
    return sum(
        f.stat().st_size
        for f in directory.iterdir()
        if f.name.startswith("model.") and f.suffix in (".h5", ".safetensors")
    )


def measure(name: str, width: int, depth: int, work: Path, parity: bool, log) -> dict:
    # .h5, not .keras: on Python < 3.12 a seek inside a zip member re-reads it from the start,
    # which makes reading a multi-GB .keras file quadratic (250M: 154 s instead of ~40 s)
    pt2, keras_file = work / f"gpt2_{name}.pt2", work / f"gpt2_{name}.h5"
    to_keras, to_torch = work / f"gpt2_{name}_keras", work / f"gpt2_{name}_torch"
    dims = (str(width), str(depth), str(VOCAB), str(POSITIONS), str(HEADS), str(SEQ))
    built = child(BUILD_CHILD, str(pt2), *dims)
    log(f"{name}: {built['parameters']:,} parameters, exported to {pt2.name} ({pt2.stat().st_size / 1e6:.0f} MB)")
    row: dict = {"name": name, "width": width, "depth": depth, "parameters": built["parameters"]}
    k = child(TO_KERAS_CHILD, str(pt2), str(to_keras), "0")
    k["weight_bytes"] = weight_bytes(to_keras)
    log(
        f"{name}: PyTorch -> Keras {k['wall']:.1f}s, peak {k['peak_kb'] / 1024:.0f} MB (baseline {k['base_kb'] / 1024:.0f} MB)"
    )

    kbuilt = child(KERAS_BUILD_CHILD, str(keras_file), *dims)
    row["keras_parameters"] = kbuilt["parameters"]
    log(
        f"{name}: Keras twin {kbuilt['parameters']:,} parameters, saved to {keras_file.name} ({keras_file.stat().st_size / 1e6:.0f} MB)"
    )
    t = child(TO_TORCH_CHILD, str(keras_file), str(to_torch), "0")
    t["weight_bytes"] = weight_bytes(to_torch)
    log(
        f"{name}: Keras -> PyTorch {t['wall']:.1f}s, peak {t['peak_kb'] / 1024:.0f} MB (baseline {t['base_kb'] / 1024:.0f} MB)"
    )
    row["to_keras"], row["to_torch"] = k, t

    if parity:  # verify=True (batch 2, SEQ tokens), each in its own process
        pk = child(TO_KERAS_CHILD, str(pt2), str(to_keras), "1")
        log(
            f"{name}: parity PyTorch -> Keras worst rel {pk['worst_rel']:.2e} ({pk['wall']:.1f}s, peak {pk['peak_kb'] / 1024:.0f} MB)"
        )
        pt = child(TO_TORCH_CHILD, str(keras_file), str(to_torch), "1")
        log(
            f"{name}: parity Keras -> PyTorch worst rel {pt['worst_rel']:.2e} ({pt['wall']:.1f}s, peak {pt['peak_kb'] / 1024:.0f} MB)"
        )
        row["parity"] = {"to_keras": pk, "to_torch": pt}
    for path in (pt2, keras_file):
        path.unlink(missing_ok=True)
    return row


def _mb(kb: float) -> str:
    return f"{kb / 1024:,.0f}"


def _ratio(d: dict) -> float:
    """(peak - baseline) / weight bytes: the bound is 2.0."""
    return (d["peak_kb"] - d["base_kb"]) * 1024 / d["weight_bytes"]


def render(rows: list[dict], machine: str) -> str:
    lines = [
        "# ktorch at scale",
        "",
        f"Measured with `python benchmarks/scale.py` on {datetime.date.today().isoformat()}, {machine}.",
        "",
        (
            "A GPT-2-style causal LM (Hugging Face `GPT2LMHeadModel`, random weights, vocabulary "
            f"{VOCAB}, {HEADS} heads, {POSITIONS} positions) exported with `torch.export` (dynamic batch, "
            f"{SEQ}-token example), converted PyTorch -> Keras from the `.pt2` file; and the same architecture "
            "written in Keras (Embedding, LayerNormalization, causal MultiHeadAttention, Dense, Add; random "
            "weights, lm_head not tied), saved as `.h5`, converted Keras -> PyTorch. (The Keras model ktorch "
            "emits from PyTorch cannot be the Keras -> PyTorch source yet: the Keras reader has no translator "
            "for the `keras.ops` layers (Matmul, Split, Power) and the `Parameter` layer it uses for attention "
            "and GELU.) Each conversion runs in a fresh "
            "process with `verify=False`; *peak* is that process's VmHWM, *baseline* its VmHWM once torch, "
            "Keras/TensorFlow and ktorch are imported, *weights* the emitted weights file. The bound is "
            "peak <= baseline + 2 x weights, i.e. a ratio (peak - baseline) / weights <= 2.0."
        ),
        "",
    ]
    big = max(rows, key=lambda r: r["parameters"])
    lines += [
        f"## {big['name']}: {big['parameters']:,} parameters (n_embd {big['width']}, {big['depth']} layers; Keras twin {big['keras_parameters']:,})",
        "",
    ]
    lines += [
        "| direction | time (s) | baseline (MB) | peak (MB) | weights (MB) | (peak - baseline) / weights | bound 2.0 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for label, key in (("PyTorch -> Keras", "to_keras"), ("Keras -> PyTorch", "to_torch")):
        d = big[key]
        r = _ratio(d)
        lines.append(
            f"| {label} | {d['wall']:.1f} | {_mb(d['base_kb'])} | {_mb(d['peak_kb'])} | {d['weight_bytes'] / 2**20:,.0f} | {r:.2f} | {'met' if r <= 2.0 else '**exceeded**'} |"
        )
    lines.append("")
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in big["to_keras"]["timings"].items() if k != "total")
    lines.append(f"PyTorch -> Keras steps: {steps}.  ")
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in big["to_torch"]["timings"].items() if k != "total")
    lines.append(f"Keras -> PyTorch steps: {steps}.")
    lines.append("")

    if any("parity" in r for r in rows):
        lines += ["## Parity (verify=True, batch 2, 16 tokens, CPU)", ""]
        lines += [
            "| model | direction | worst relative error | time with verification (s) | peak (MB) |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        for r in rows:
            for label, key in (("PyTorch -> Keras", "to_keras"), ("Keras -> PyTorch", "to_torch")):
                p = r.get("parity", {}).get(key)
                if p is not None:
                    lines.append(
                        f"| {r['name']} | {label} | {p['worst_rel']:.2e} | {p['wall']:.1f} | {_mb(p['peak_kb'])} |"
                    )
        lines.append("")

    lines += ["## Scale curve", ""]
    lines += [
        "| model | parameters | direction | nodes | weights (MB) | time (s) | ms / node | s / GB | peak (MB) | (peak - baseline) / weights |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        for label, key in (("PyTorch -> Keras", "to_keras"), ("Keras -> PyTorch", "to_torch")):
            d = r[key]
            lines.append(
                f"| {r['name']} | {r['parameters']:,} | {label} | {d['nodes']} | {d['weight_bytes'] / 2**20:,.0f} | {d['wall']:.1f} | "
                f"{1000 * d['wall'] / d['nodes']:.1f} | {d['wall'] / (d['weight_bytes'] / 1e9):.1f} | {_mb(d['peak_kb'])} | {_ratio(d):.2f} |"
            )
    lines.append("")
    return "\n".join(lines)


def machine_line() -> str:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    meminfo = Path("/proc/meminfo").read_text().splitlines() if Path("/proc/meminfo").exists() else []
    mem = next((int(line.split()[1]) for line in meminfo if line.startswith("MemTotal")), 0)
    from importlib.metadata import version

    return (
        f"{cpu}, {os.cpu_count()} cores, {mem / 2**20:.0f} GB RAM, Python {platform.python_version()}, "
        f"torch {version('torch')}, Keras {version('keras')}, TensorFlow {version('tensorflow-cpu')}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--no-parity", action="store_true", help="skip the verify=True runs")
    parser.add_argument("--parity-sizes", help="run the verify=True conversions for these sizes only (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "scale.md")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--workdir", type=Path, help="where the models go (default: a temporary directory)")
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [n for n in names if n not in {**SIZES, **SMOKE}]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; choose from {list(SIZES)}")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    rows = []
    with tempfile.TemporaryDirectory(prefix="ktorch_scale_", dir=args.workdir) as tmp:
        for name in names:
            width, depth = {**SIZES, **SMOKE}[name]
            parity = not args.no_parity and (args.parity_sizes is None or name in args.parity_sizes.split(","))
            rows.append(measure(name, width, depth, Path(tmp), parity, log))
    text = render(rows, machine_line())
    print(text)
    args.out.write_text(text, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
