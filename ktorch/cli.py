"""The `ktorch` command line: convert, inspect, --version.

Errors print one clear line and exit non-zero; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .graph.errors import KtorchError
from .options import DEFAULT_TARGET, LAYOUT_CHOICES, OptionError, normalize_layout
from .verify.compare import DEFAULT_RTOL
from .version import __version__

EXIT_OK, EXIT_MISMATCH, EXIT_STRUCTURE, EXIT_CANNOT_RUN = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ktorch",
        description="Translate trained models between Keras and PyTorch as readable code, with the weights, "
        "and verify that the translation computes the same thing.",
    )
    p.add_argument("--version", action="version", version=f"ktorch {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser(
        "convert",
        help="convert a Keras model to PyTorch, or a PyTorch model to Keras",
        description="Convert a Keras model file into model.py + model.safetensors + ktorch.json, "
        "or a PyTorch model (a torch.export .pt2 file, a 'package.module:factory' that returns an "
        "nn.Module, or a directory ktorch emitted for PyTorch) into model.py + model.weights.h5 + "
        "ktorch.json for Keras 3; then run both on seeded inputs and compare (unless --no-verify). "
        "Keras -> PyTorch never imports TensorFlow to convert; verification runs Keras (on TensorFlow if installed). "
        "A 'package.module:factory' source IMPORTS AND RUNS that Python code: use it only for code you trust.",
    )
    c.add_argument(
        "src",
        nargs="+",
        help="the source: .h5/.keras, .onnx, .pt2, package.module:factory, or a ktorch output directory; "
        "several sources or a quoted glob pattern ('models/*.h5') convert in batch",
    )
    c.add_argument(
        "-o",
        "--out",
        type=Path,
        help="output directory (default: SRC without suffix + '_torch', beside SRC), created with any missing parent "
        "directories; with several sources, the directory that receives one <stem>_torch/ (or <stem>_keras/) per source",
    )
    c.add_argument(
        "-j",
        "--jobs",
        type=int,
        metavar="N",
        help="batch: models converted at once, each in its own process (default: CPU count, at most one per model)",
    )
    c.add_argument(
        "--layout",
        choices=LAYOUT_CHOICES,
        default="native",
        metavar="{native,keep}",
        help="native (default): the emitted model takes and returns its own framework's layout, PyTorch NCHW..., "
        "Keras NHWC...; keep: the source's input/output layout. The target's name ('torch' converting to PyTorch, "
        "'keras' converting to Keras) is an alias of native; the other framework's name is refused",
    )
    c.add_argument(
        "--to",
        choices=("torch", "keras"),
        help="the target framework (default: the other one than the source's; PyTorch for an ONNX source)",
    )
    c.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="1,3,224,224",
        help="PyTorch sources to export: the shape of each input, batch first (repeat for several inputs); the batch axis stays dynamic",
    )
    c.add_argument(
        "--input-dtype",
        action="append",
        default=[],
        metavar="float32",
        help="dtype of each --input-shape input (default float32)",
    )
    c.add_argument(
        "--dynamic",
        metavar="seq,height,width",
        help="PyTorch sources to export: sizes besides the batch to keep dynamic where the model allows any size "
        "(seq: axis 1 of token ids (B, S), axis 2 of (B, C, L); height, width: of images (B, C, H, W); 'auto': all); "
        "the Keras Input says None there, and ktorch.json lists which sizes stayed fixed and why",
    )
    c.add_argument(
        "--weights",
        type=Path,
        help="for 'package.module:factory': a state_dict (.pt/.pth, loaded with weights_only=True, or .safetensors) to load",
    )
    c.add_argument("--no-verify", action="store_true", help="skip the parity check")
    c.add_argument(
        "--train-steps",
        type=int,
        default=0,
        metavar="K",
        help="also check training parity once written: K identical training steps on the source and the emitted "
        "model (as `ktorch verify --train-steps K`); the summary and ktorch.json say whether it was checked",
    )
    c.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier ktorch output directory, once the new one is complete; ktorch never replaces anything else "
        "(a file, a link, a directory with other files, the current or home directory, a repository root, the source)",
    )
    c.add_argument(
        "--tolerance",
        type=float,
        help="max error relative to each output's scale (default: the verification profile of the outputs' dtype, "
        "1e-4 for float32 on CPU)",
    )
    c.add_argument("--seed", type=int, default=0, help="seed of the random verification inputs")
    c.add_argument(
        "--trust-code",
        action="store_true",
        help="allow Keras Lambda layers and other serialized Python code to be deserialized and run; only for files you trust",
    )
    c.add_argument(
        "--route",
        choices=("auto", "direct", "export"),
        default="auto",
        help="Keras sources: 'direct' reads the file with ktorch's Keras reader; 'export' runs Keras on its torch backend "
        "and captures it with torch.export (KerasHub backbones, custom layers, subclassed models); 'auto' (default) tries "
        "the direct reader first",
    )
    c.add_argument(
        "--custom-objects",
        metavar="MODULE",
        help="Keras sources: import MODULE for the custom layer/model classes the file names (with --trust-code only)",
    )
    t = c.add_argument_group(
        "training setup (PyTorch sources)",
        "train.py and a compiled model.keras whose train_on_batch/fit take the steps PyTorch takes; each option is "
        'NAME or "NAME:key=value,..." with the torch constructor\'s keyword arguments as Python literals',
    )
    t.add_argument(
        "--optimizer",
        metavar="SPEC",
        help="the torch.optim optimizer, e.g. 'adamw:lr=1e-3,weight_decay=0.01': "
        "sgd, adam, adamw, rmsprop, adagrad, adamax, nadam, adadelta",
    )
    t.add_argument(
        "--loss",
        metavar="SPEC",
        help="the torch.nn loss applied to the model's output, e.g. 'cross_entropy:label_smoothing=0.1': "
        "cross_entropy, nll, mse, l1, huber, smooth_l1, bce_with_logits, bce",
    )
    t.add_argument(
        "--lr-scheduler",
        metavar="SPEC",
        help="the torch.optim.lr_scheduler, stepped once per batch (see --steps-per-epoch), e.g. "
        "'cosine:T_max=1000': step, multistep, exponential, cosine, linear, constant",
    )
    t.add_argument(
        "--steps-per-epoch",
        type=int,
        metavar="N",
        help="the scheduler is stepped once per epoch of N batches (Keras counts batches)",
    )
    c.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE before converting, to register translators for custom layers (runs that module's code): "
        "a module on sys.path or in the current directory, or a path to a .py file",
    )
    c.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    i = sub.add_parser(
        "inspect",
        help="list a model's layers, their shapes and whether ktorch supports them",
        description="List a model's layers (nested models expanded), their output shapes and whether ktorch can "
        "translate each one, without converting anything. Exit 2 if some layer is unsupported.",
    )
    i.add_argument(
        "src", type=Path, help="the model: .h5/.hdf5/.keras, .onnx, .pt2, or a ktorch PyTorch output directory"
    )
    i.add_argument("--json", action="store_true", help="print the graph as JSON instead of a table")
    i.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (custom layer translators; a module name or a .py path)",
    )
    i.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    from .verify.cli import add_parser as add_verify_parser

    add_verify_parser(sub)

    e = sub.add_parser(
        "export",
        help="export a Keras or PyTorch model to ONNX with its own framework's exporter, verified on ONNX Runtime",
        description="Export a Keras .h5/.keras file (through tf2onnx) or a PyTorch model (.pt2, package.module:factory, "
        "or a directory ktorch emitted for PyTorch; through torch.onnx.export) to an ONNX file with a dynamic batch axis, "
        "then run the source and ONNX Runtime on the same seeded inputs and compare (unless --no-verify).",
    )
    e.add_argument(
        "src",
        type=Path,
        help="the source: .h5/.keras, .pt2, package.module:factory, or a ktorch PyTorch output directory",
    )
    e.add_argument("-o", "--out", type=Path, required=True, help="the ONNX file to write")
    e.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    e.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="1,3,224,224",
        help="PyTorch factories: the shape of each input",
    )
    e.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime check")
    e.add_argument(
        "--force",
        action="store_true",
        help="replace an existing OUT file (never a link, a directory or the source); the file appears only once complete",
    )
    e.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_RTOL,
        help=f"max error relative to each output's scale (default {DEFAULT_RTOL:g})",
    )
    e.add_argument(
        "--trust-code", action="store_true", help="allow Keras Lambda layers to be deserialized (trusted files only)"
    )
    e.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return p


def _console():
    from .verify.console import make_console

    return make_console(stderr=True)


def _convert(args: argparse.Namespace) -> int:
    from rich.status import Status

    from .api import convert
    from .graph.errors import ParityError
    from .sources import is_factory_string

    console = _console()
    src = str(args.src) if is_factory_string(str(args.src)) else args.src
    shapes = _input_shapes(args)
    with Status("starting", console=console) as status, warnings.catch_warnings():
        # the training setup's notes are listed after the summary line instead
        warnings.filterwarnings("ignore", message="training setup: ")
        try:
            result = convert(
                src,
                args.out,
                to=args.to,
                input_shapes=shapes or None,
                input_dtypes=args.input_dtype or None,
                dynamic=args.dynamic,
                weights=args.weights,
                layout=args.layout,
                verify=not args.no_verify,
                force=args.force,
                tolerance=args.tolerance,
                trust_code=args.trust_code,
                seed=args.seed,
                progress=lambda message: status.update(message),
                train_steps=args.train_steps,
                **_route_options(args),
                **_training_options(args),
            )
        except ParityError:
            status.stop()
            raise
    m = result.manifest
    console.print(
        f"[green]wrote[/] {result.out}/ ({m['model'].get('class_name', m['model']['name'])}: {m['model']['nodes']} nodes, "
        f"{_sizes(m)}, {m['layout']['transposes']} transposes) in {result.timings['total']:.2f}s"
    )
    if m.get("route"):
        console.print(f"route: {m['route']['name']} ({m['route']['reason']})")
    _print_sizes(console, m.get("source", {}))
    source_trainable, trainable = m["source"].get("trainable_parameters"), m["model"].get("trainable_parameters")
    if None not in (source_trainable, trainable) and source_trainable != trainable:
        frozen, unused = m["model"].get("frozen_parameters"), m["model"].get("unused_parameters")
        console.print(
            f"[yellow]note:[/] {trainable} trainable parameters in the emitted model, {source_trainable} in the source"
            + (f" (folded into constants: {', '.join(frozen)})" if frozen else "")
            + (f" (not read by forward: {', '.join(unused)})" if unused else "")
        )
    _print_training(console, m.get("training"))
    if result.parity is not None:
        from rich.table import Table

        table = Table("output", "shape", "max abs err", "max rel err", "result", title="parity (CPU, seeded inputs)")
        for c in result.parity.outputs:
            table.add_row(
                c.name,
                str(tuple(c.shape)),
                f"{c.max_abs:.3g}",
                f"{c.max_rel:.3g}",
                "[green]ok[/]" if c.passed else "[red]FAIL[/]",
            )
        console.print(table)
    return EXIT_OK


def _route_options(args: argparse.Namespace) -> dict:
    """--route / --custom-objects, for Keras sources only (the API's defaults otherwise)."""
    options = {}
    if getattr(args, "route", "auto") != "auto":
        options["route"] = args.route
    if getattr(args, "custom_objects", None):
        options["custom_objects"] = args.custom_objects
    return options


def _training_options(args: argparse.Namespace) -> dict:
    """--optimizer / --loss / --lr-scheduler / --steps-per-epoch, as convert()'s keywords (text)."""
    options = {
        "optimizer": getattr(args, "optimizer", None),
        "loss": getattr(args, "loss", None),
        "lr_scheduler": getattr(args, "lr_scheduler", None),
        "steps_per_epoch": getattr(args, "steps_per_epoch", None),
    }
    return {k: v for k, v in options.items() if v is not None}


def _print_sizes(console: Any, source: dict[str, Any]) -> None:
    """PyTorch sources: which sizes the emitted model takes at any value, and which it fixes."""
    if source.get("format") != "torch.export":
        return
    kept = ", ".join(
        f"{name} ({low}..{high if high is not None else ''})" for name, (low, high) in source.get("dynamic", {}).items()
    )
    batch = f"fixed at {source['batch']}" if source.get("batch") is not None else "dynamic"
    console.print(f"sizes: batch {batch}" + (f"; dynamic: {kept}" if kept else ""))
    for name, reason in source.get("static", {}).items():
        console.print(f"[yellow]static[/]: {name}: {reason}")


def _print_training(console: Any, training: dict[str, Any] | None) -> None:
    """One line for train.py (and the migrated optimizer state), one per setting not translated."""
    if not training:
        return
    if training.get("source"):  # PyTorch -> Keras
        source, keras = training["source"], training["keras"]
        names = [source["optimizer"]["class"]] + [source[k]["class"] for k in ("lr_scheduler", "loss") if source[k]]
        emitted = [keras[k] for k in ("optimizer", "schedule", "loss") if keras[k]]
        state = training.get("optimizer_state")
        resume = f", optimizer state at step {state['step']}" if state and state["step"] else ""
        console.print(
            f"[green]training[/]: train.py + model.keras ({', '.join(names)} -> {', '.join(emitted)}{resume})"
        )
    elif training.get("file"):
        opt = training["optimizer"]
        state = training.get("optimizer_state")
        schedule = f" + {opt['schedule']}" if opt.get("schedule") else ""
        resume = f", optimizer state at step {state['step']} in {state['file']}" if state else ""
        what = f"{opt['keras']}{schedule} -> {opt['torch']}, {training['loss']}{resume}"
        console.print(f"[green]training[/]: train.py ({what})")
    parity = training.get("parity")
    if parity and parity.get("checked"):
        color = "green" if parity["passed"] else "red"
        console.print(f"[{color}]{parity['summary']}[/]")
    elif parity:
        console.print(
            "training parity: not checked (run `ktorch verify SRC OUT --train-steps K`, or convert with --train-steps K)"
        )
    for note in training.get("warnings", []):
        console.print(f"[yellow]warning[/]: training setup: {note}")


def _sizes(manifest: dict) -> str:
    """The summary's counts, each named for what it is in the target framework."""
    model = manifest["model"]
    if manifest.get("direction", "").endswith("->keras"):
        return f"{model['parameters']:,} weights (trainable + non-trainable, BatchNorm moving statistics included)"
    return f"{model['parameters']:,} parameters + {model.get('buffers', 0):,} buffer values"


def _input_shapes(args: argparse.Namespace) -> list[list[int]]:
    try:
        return [[int(d) for d in s.replace("x", ",").split(",") if d.strip()] for s in args.input_shape]
    except ValueError:
        raise SystemExit(
            f"ktorch: error: --input-shape takes comma-separated integers, got {args.input_shape}"
        ) from None


def _is_batch(sources: Sequence[str]) -> bool:
    """Several sources, or a glob pattern: a batch (a single plain SRC converts as always)."""
    from .batch import is_glob

    return len(sources) > 1 or any(is_glob(s) for s in sources)


def _convert_batch(args: argparse.Namespace) -> int:
    from .batch import expand_sources, plan, run_batch

    if args.jobs is not None and args.jobs < 1:
        raise SystemExit("ktorch: error: --jobs takes a positive number")
    sources = expand_sources(args.src)
    shapes = _input_shapes(args)
    options = {
        "input_shapes": shapes or None,
        "input_dtypes": args.input_dtype or None,
        "dynamic": args.dynamic,
        "weights": args.weights,
        "layout": args.layout,
        "verify": not args.no_verify,
        "force": args.force,
        "tolerance": args.tolerance,
        "trust_code": args.trust_code,
        "seed": args.seed,
        **_training_options(args),
    }
    jobs = plan(sources, args.out, args.to, options)
    workers = args.jobs or min(os.cpu_count() or 1, len(jobs))
    _, code = run_batch(jobs, workers=workers, plugins=args.plugin, debug=args.debug)
    return code


def _export(args: argparse.Namespace) -> int:
    from .onnx_io import export
    from .sources import is_factory_string

    src = str(args.src) if is_factory_string(str(args.src)) else args.src
    try:
        shapes = [[int(d) for d in s.replace("x", ",").split(",") if d.strip()] for s in args.input_shape]
    except ValueError:
        raise SystemExit(
            f"ktorch: error: --input-shape takes comma-separated integers, got {args.input_shape}"
        ) from None
    result = export(
        src,
        args.out,
        opset=args.opset,
        input_shapes=shapes or None,
        verify=not args.no_verify,
        tolerance=args.tolerance,
        trust_code=args.trust_code,
        force=args.force,
    )
    console = _console()
    check = "" if result.parity is None else f"; ONNX Runtime vs source: max rel err {result.parity.worst_rel:.3g}"
    console.print(f"[green]wrote[/] {result.path} ({result.exporter}, opset {result.opset}{check})")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from .onnx_io import export
    from .verify.cli import main

    return main(args, exporter=export)


def _inspect(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .verify.console import make_console

    if args.json:
        from .api import read_graph
        from .graph import to_json

        print(to_json(read_graph(args.src), indent=1))
        return EXIT_OK
    from .api import inspect

    rows = inspect(args.src)
    table = Table("layer", "class", "output shape", "status", title=str(args.src))
    bad = 0
    for r in rows:
        ok = r["status"] in ("ok", "input")
        bad += not ok
        table.add_row(
            r["name"],
            r["class"],
            "" if r["shape"] is None else str(r["shape"]),
            r["status"] if ok else f"[red]{r['status']}[/]",
        )
    make_console().print(table)
    if bad:
        print(f"{bad} layer(s) cannot be converted", file=sys.stderr)
        return EXIT_STRUCTURE
    return EXIT_OK


def subcommand_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands' own parsers, by name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _target_of(src: str, to: str | None) -> str | None:
    """The framework a convert source goes to: --to, else the source's other framework (PyTorch for ONNX);
    None when the source cannot be told (its conversion says why)."""
    if to is not None:
        return to
    from .sources import source_kind

    try:
        return DEFAULT_TARGET[source_kind(src)]
    except KtorchError:
        return None


def _check_layout(args: argparse.Namespace, sub: argparse.ArgumentParser) -> None:
    """Refuse --layout naming the other framework than the target, before anything runs (argparse-style, exit 2)."""
    from .batch import is_glob

    for src in args.src:
        target = None if args.to is None and is_glob(src) else _target_of(src, args.to)
        if target is None:
            continue  # a glob's matches, or an unknown source: each conversion checks its own
        try:
            normalize_layout(args.layout, target=target)
        except OptionError as exc:
            sub.error(f"argument --layout: {exc}" + (f" ({src} converts to {target})" if args.to is None else ""))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    subs = subcommand_parsers(parser)
    if extra:  # a mistyped flag: the subcommand's own usage, not the top-level one
        (subs.get(args.command) or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return EXIT_STRUCTURE
    if args.command == "convert":
        _check_layout(args, subs["convert"])
    batch = args.command == "convert" and _is_batch(args.src)
    if args.command == "convert" and not batch:
        args.src = Path(args.src[0])
    if args.command in ("convert", "verify", "export") and not batch:  # a batch's workers do this themselves
        from .capture import prepare_torch
        from .sources import is_factory_string

        src = getattr(args, "src", None)
        prepare_torch(str(src) if src is not None and is_factory_string(str(src)) else src)
    handler = {
        "convert": _convert_batch if batch else _convert,
        "inspect": _inspect,
        "verify": _verify,
        "export": _export,
    }[args.command]
    if args.debug:
        os.environ["KTORCH_DEBUG"] = "1"  # show native library output too
    from .translate.output import written_outputs

    already_written = len(written_outputs())
    try:
        if getattr(args, "plugin", None):
            from .plugins import load_plugin

            for module in args.plugin:
                load_plugin(module)
        return handler(args)
    except KtorchError as exc:
        if args.debug:
            raise
        print(f"ktorch: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        written = written_outputs()[already_written:]
        if written:  # the interruption came after the finished output was moved into place
            print(f"ktorch: interrupted; {', '.join(map(str, written))} had been written completely", file=sys.stderr)
        else:
            print("ktorch: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as exc:  # an internal error: still one line unless --debug
        if args.debug:
            raise
        print(
            f"ktorch: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_CANNOT_RUN


if __name__ == "__main__":
    sys.exit(main())
