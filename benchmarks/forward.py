"""Forward time of emitted PyTorch models vs their torchvision counterparts, on CPU (at
several thread counts) and on CUDA when there is one, interleaved rounds, fastest and
median. Needs only torch and torchvision, not Keras nor the source files: each emitted
class is built with PyTorch's default initialisation (the weights do not change the
time; BatchNorm statistics are made neutral on both sides), so a model.py copied to a
GPU host is enough.

    python benchmarks/forward.py resnet50=out/ResNet50_torch/model.py mobilenet_v2=out/MobileNetV2_torch/model.py
    python benchmarks/forward.py --threads 2,16 --cuda-batch 64 resnet50=...
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import interleaved_times, neutral_batchnorm_torch


def emitted_class(path: Path):
    """The nn.Module class of an emitted model.py (the one class with a forward)."""
    tree = ast.parse(path.read_text())
    names = [
        n.name
        for n in tree.body
        if isinstance(n, ast.ClassDef) and any(isinstance(f, ast.FunctionDef) and f.name == "forward" for f in n.body)
    ]
    spec = importlib.util.spec_from_file_location(f"emitted_{uuid.uuid4().hex}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, names[0])


def main(argv: list[str] | None = None) -> int:
    import torch
    import torchvision

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="torchvision_name=path/to/model.py")
    parser.add_argument("--threads", default="2", help="CPU thread counts, comma-separated")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--cuda-batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    torch.set_flush_denormal(True)
    pairs = []
    for spec in args.models:
        name, path = spec.split("=", 1)
        ours = emitted_class(Path(path))().eval()
        if "memory_format=torch.channels_last" in Path(path).read_text():  # as the emitted load() does
            ours = ours.to(memory_format=torch.channels_last)
        pairs.append((name, neutral(ours), neutral(getattr(torchvision.models, name)(weights=None).eval())))
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for name, ours, reference in pairs:
            x = torch.randn(args.batch, 3, 224, 224)
            with torch.no_grad():
                t = interleaved_times({"emitted": lambda: ours(x), "torchvision": lambda: reference(x)}, args.rounds)  # noqa: B023  (timed now)
            rows.append(row(name, f"cpu, {threads} threads", args.batch, t))
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        for name, ours, reference in pairs:
            ours, reference = ours.cuda(), reference.cuda()
            x = torch.randn(args.cuda_batch, 3, 224, 224, device="cuda")

            def timed(fn):
                def run():
                    fn()
                    torch.cuda.synchronize()

                return run

            with torch.no_grad():
                t = interleaved_times(
                    {"emitted": timed(lambda m=ours, x=x: m(x)), "torchvision": timed(lambda m=reference, x=x: m(x))},
                    2 * args.rounds,
                )
            rows.append(row(name, torch.cuda.get_device_name(), args.cuda_batch, t))
    for r in rows:
        print(json.dumps(r))
    print(
        "\n| model | device | batch | emitted ms | torchvision ms | ratio (fastest) | ratio (median) |\n|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['model']} | {r['device']} | {r['batch']} | {r['emitted_ms']:.1f} | {r['torchvision_ms']:.1f} | "
            f"{r['ratio']:.2f} | {r['ratio_median']:.2f} |"
        )
    return 0


def neutral(net):
    neutral_batchnorm_torch(net)
    return net


def row(name: str, device: str, batch: int, t: dict) -> dict:
    e, r = t["emitted"], t["torchvision"]
    return {
        "model": name,
        "device": device,
        "batch": batch,
        "emitted_ms": e["min"] * 1e3,
        "torchvision_ms": r["min"] * 1e3,
        "ratio": e["min"] / r["min"],
        "ratio_median": e["median"] / r["median"],
    }


if __name__ == "__main__":
    sys.exit(main())
