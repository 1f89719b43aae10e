"""The `ktorch verify SRC CONVERTED` subcommand (wired into ktorch.cli).

Exit codes: 0 parity; 1 numeric mismatch; 2 structural mismatch (missing output, shape
or dtype); 3 could not run (bad file, missing dependency, no CUDA).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _batches(text: str) -> list[int]:
    try:
        sizes = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch takes sizes separated by commas, like 1,4 (got {text!r})") from None
    if not sizes or any(b < 1 for b in sizes):
        raise argparse.ArgumentTypeError(f"--batch sizes must be positive integers (got {text!r})")
    return sizes


def _output_tolerance(text: str) -> tuple[str, float]:
    name, sep, value = text.rpartition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--output-tolerance takes NAME=TOLERANCE, like predictions=1e-3 (got {text!r})"
        ) from None


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add `verify` to the CLI's subparsers."""
    v = sub.add_parser(
        "verify",
        help="check a converted directory against its source, layer by layer (CPU and CUDA)",
        description="Run the source model and the emitted one on the same inputs and compare the outputs and every "
        "aligned intermediate (recorded in ktorch.json). Isolated mode feeds each emitted statement the source layer's "
        "own inputs, so the report names the first layer that is translated wrongly. "
        "Exit codes: 0 parity, 1 numeric mismatch, 2 structural mismatch, 3 could not run.",
    )
    v.add_argument("src", type=Path, help="the source model file")
    v.add_argument("converted", type=Path, help="the output directory of `ktorch convert`")
    v.add_argument(
        "--device",
        choices=("cpu", "cuda", "all"),
        default="cpu",
        help="where to run both sides (default cpu; all: cpu and, if present, cuda)",
    )
    v.add_argument(
        "--batch", type=_batches, default=[2], metavar="N[,N...]", help="batch sizes of the random inputs (default 2)"
    )
    v.add_argument(
        "--inputs",
        type=Path,
        metavar="DATA.npz",
        help="real inputs: one array per model input, named after it, in the source's layout",
    )
    v.add_argument("--seed", type=int, default=0, help="seed of the random inputs (and of the training batches)")
    v.add_argument(
        "--train-steps",
        type=int,
        default=0,
        metavar="K",
        help="also check training parity: K training steps on both sides (Keras: the model compiled from its saved "
        "compile config, train_on_batch; PyTorch: train.py's make_optimizer and train_step, resuming from the "
        "migrated optimizer state) on the same seeded batches, with dropout and noise at rate 0 on both sides; "
        "after each step the loss, every weight and the optimizer state (moments, step counts) are compared, "
        "and the first step, parameter and slot that diverge are named. The tolerance grows per step: "
        "rtol * 1.5 ** (step - 1) (1e-4 on CPU; --tolerance sets rtol)",
    )
    v.add_argument(
        "--train-batch",
        type=int,
        default=4,
        metavar="N",
        help="samples per training batch with --train-steps (default 4)",
    )
    v.add_argument(
        "--tolerance",
        type=float,
        help="relative tolerance for every tensor (default: the device/dtype profile, 1e-4 for fp32 on CPU)",
    )
    v.add_argument(
        "--output-tolerance",
        type=_output_tolerance,
        action="append",
        default=[],
        metavar="NAME=T",
        help="tolerance for one output (repeatable)",
    )
    v.add_argument(
        "--tf32",
        action="store_true",
        help="allow TF32 on GPU (pinned off by default) and use the looser cuda-tf32 profile",
    )
    v.add_argument(
        "--mode",
        choices=("both", "isolated", "propagated", "outputs"),
        default="both",
        help="which intermediates to compare: propagated (each side on its own), isolated (each layer fed the source's inputs), both (default), or outputs only",
    )
    v.add_argument(
        "--json", type=Path, metavar="PATH", help="write the report as JSON (schema ktorch.verify/1); '-' for stdout"
    )
    v.add_argument("--junit", type=Path, metavar="PATH", help="write a JUnit XML report")
    v.add_argument(
        "--markdown",
        type=Path,
        metavar="PATH",
        help="write a Markdown summary (e.g. $GITHUB_STEP_SUMMARY); '-' for stdout",
    )
    v.add_argument("--quiet", action="store_true", help="print only the verdict line")
    v.add_argument(
        "--trust-code",
        action="store_true",
        help="allow the source's Lambda layers to be deserialized and run (trusted files only)",
    )
    v.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (e.g. one that registers the source's custom Keras layers; runs its code)",
    )
    v.add_argument(
        "--allow-different-source",
        action="store_true",
        help="compare even when SRC's sha256 differs from the one recorded in CONVERTED/ktorch.json (default: exit 2)",
    )
    v.add_argument(
        "--referee",
        choices=("onnxruntime",),
        help="also export the source to ONNX with its own exporter and run it on ONNX Runtime: when source and emitted model "
        "disagree, the report says which side ONNX Runtime agrees with",
    )
    v.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return v


def _write(path: Path, text: str) -> None:
    if str(path) == "-":
        sys.stdout.write(text)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def main(args: argparse.Namespace, *, exporter: Any = None) -> int:
    """Run the verification and write the requested reports; returns the exit code.
    `exporter` is the ONNX export the referee uses (`ktorch.onnx_io.export`)."""
    from .console import make_console
    from .report import print_report, to_junit, to_markdown
    from .verifier import verify_conversion

    report = verify_conversion(
        args.src,
        args.converted,
        device=args.device,
        batches=args.batch,
        inputs=args.inputs,
        seed=args.seed,
        tolerance=args.tolerance,
        output_tolerances=dict(args.output_tolerance),
        tf32=args.tf32,
        mode=args.mode,
        trust_code=args.trust_code,
        allow_different_source=args.allow_different_source,
        train_steps=args.train_steps,
        train_batch=args.train_batch,
    )
    to_stdout = any(str(p) == "-" for p in (args.json, args.markdown) if p is not None)
    console = make_console(stderr=to_stdout)
    if args.quiet or report.error is not None:
        prefix = "ktorch: error: " if report.error is not None else ""
        print(f"{prefix}{report.summary()}", file=sys.stderr if report.error is not None or to_stdout else sys.stdout)
    else:
        print_report(report, console)
    data = report.to_dict()
    if args.referee:
        from .onnx_referee import referee_for_cli

        data["referee"] = referee_for_cli(args, console, exporter)
    if args.json is not None:
        _write(args.json, json.dumps(data, indent=1) + "\n")
    if args.junit is not None:
        _write(args.junit, to_junit(report))
    if args.markdown is not None:
        _write(args.markdown, to_markdown(report))
    return report.exit_code
