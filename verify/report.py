"""The verification report: its data, its JSON schema, and its renderings (a rich
terminal table, JUnit XML and Markdown).

The JSON form is versioned (`schema`: "ktorch.verify/1"); `REPORT_SCHEMA` is its JSON
Schema, and `validate_report` checks a dict against it (a small subset of JSON Schema:
type, required, properties, items, enum, additionalProperties), so that tests and CI
can check reports without extra packages.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from .compare import Comparison

SCHEMA_ID = "ktorch.verify/1"
EXIT_OK, EXIT_MISMATCH, EXIT_STRUCTURE, EXIT_CANNOT_RUN = 0, 1, 2, 3
STATUS_OF_EXIT = {EXIT_OK: "pass", EXIT_MISMATCH: "mismatch", EXIT_STRUCTURE: "structural", EXIT_CANNOT_RUN: "error"}


@dataclass
class LayerResult:
    """One aligned intermediate: a source layer's output and the emitted local holding it."""

    source: str
    class_name: str | None
    emitted: str
    statement: str | None
    perm: list[int] | None
    merged: list[str] = field(
        default_factory=list
    )  # source layers folded into this one (a conv's bias into its BatchNorm)
    propagated: Comparison | None = None
    isolated: Comparison | None = None

    @property
    def label(self) -> str:
        """The source layer(s) this result stands for: 'conv1 + bn' when conv1 was folded in."""
        return " + ".join([*self.merged, self.source])

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "merged": list(self.merged),
            "class": self.class_name,
            "emitted": self.emitted,
            "statement": self.statement,
            "perm": self.perm,
            "propagated": _comparison(self.propagated),
            "isolated": _comparison(self.isolated),
        }


@dataclass
class RunResult:
    """One device and one batch of inputs."""

    device: str
    batch: int
    inputs: str  # how the inputs were made: "random(seed=0)" or the data file
    profile: str
    rtol: float
    settings: dict[str, Any]
    source_backend: str
    emitted_backend: str
    outputs: list[Comparison] = field(default_factory=list)
    layers: list[LayerResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # structural: missing outputs, shapes, dtypes
    mode: str = "both"

    @property
    def first_divergence(self) -> LayerResult | None:
        """The first layer (in forward order) whose isolated error is over tolerance."""
        return next((r for r in self.layers if r.isolated is not None and not r.isolated.passed), None)

    @property
    def first_propagated_divergence(self) -> LayerResult | None:
        return next((r for r in self.layers if r.propagated is not None and not r.propagated.passed), None)

    @property
    def outputs_passed(self) -> bool:
        return all(c.passed for c in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        first, first_prop = self.first_divergence, self.first_propagated_divergence
        return {
            "device": self.device,
            "batch": self.batch,
            "inputs": self.inputs,
            "mode": self.mode,
            "profile": self.profile,
            "rtol": self.rtol,
            "settings": self.settings,
            "source_backend": self.source_backend,
            "emitted_backend": self.emitted_backend,
            "passed": not self.problems and self.outputs_passed and first is None,
            "outputs": [_comparison(c) for c in self.outputs],
            "layers": [r.to_dict() for r in self.layers],
            "skipped_layers": [{"source": k, "reason": v} for k, v in self.skipped.items()],
            "first_divergence": first.to_dict() if first is not None else None,
            "first_propagated_divergence": first_prop.to_dict() if first_prop is not None else None,
            "problems": list(self.problems),
        }


@dataclass
class VerifyReport:
    """Everything `ktorch verify` found; `exit_code` is the CLI's exit status."""

    source: str
    converted: str
    direction: str
    ktorch_version: str
    runs: list[RunResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    tolerance: dict[str, Any] = field(default_factory=dict)  # {"rtol": override or None, "outputs": {...}}
    error_code: int = EXIT_CANNOT_RUN  # exit code of `error`: EXIT_STRUCTURE when the source is not the converted file
    error_kind: str = ""  # "source" (not the converted file) or "training" (nothing to train), with EXIT_STRUCTURE
    training: list[Any] = field(default_factory=list)  # verify.training.TrainingResult per device (--train-steps)

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return self.error_code
        if any(r.problems for r in self.runs) or any(t.problems for t in self.training):
            return EXIT_STRUCTURE
        if any(not r.outputs_passed or r.first_divergence is not None for r in self.runs):
            return EXIT_MISMATCH
        if any(not t.passed for t in self.training):
            return EXIT_MISMATCH
        return EXIT_OK

    @property
    def status(self) -> str:
        return STATUS_OF_EXIT[self.exit_code]

    @property
    def passed(self) -> bool:
        return self.exit_code == EXIT_OK

    @property
    def first_divergence(self) -> tuple[RunResult, LayerResult] | None:
        for run in self.runs:
            if run.first_divergence is not None:
                return run, run.first_divergence
        return None

    def min_passing_tolerance(self) -> float | None:
        """The smallest relative tolerance with which every output of every run would
        have passed; None if no tolerance can (an integer or NaN/Inf mismatch, a
        structural problem, nothing ran)."""
        if not self.runs or self.error is not None:
            return None
        worst = 0.0
        for run in self.runs:
            if run.problems:
                return None
            for c in run.outputs:
                if c.exact and not c.passed:
                    return None
                if not c.exact:
                    worst = max(worst, c.max_rel)
        return worst

    def min_passing_layer_tolerance(self) -> float | None:
        """Likewise for the isolated layer errors (None if no layer was isolated)."""
        if not any(layer.isolated is not None for run in self.runs for layer in run.layers):
            return None
        worst = 0.0
        for run in self.runs:
            for layer in run.layers:
                c = layer.isolated
                if c is None:
                    continue
                if c.exact and not c.passed:
                    return None
                if not c.exact:
                    worst = max(worst, c.max_rel)
        return worst

    def summary(self) -> str:
        """One line: the verdict and, on failure, where (training parity after the outputs')."""
        line = self.inference_summary()
        failed = [t for t in self.training if not t.passed]
        if self.error is None and self.training:
            shown = failed[0] if failed else max(self.training, key=lambda t: t.worst("weight"))
            text = shown.summary() + (f" on {shown.device}" if len(self.training) > 1 else "")
            line = f"{text}; {line}" if failed and not any(r.problems for r in self.runs) else f"{line}; {text}"
        return line

    def inference_summary(self) -> str:
        if self.error is not None:
            return self.error if self.error_code == EXIT_STRUCTURE else f"could not run: {self.error}"
        problems = [p for r in self.runs for p in r.problems]
        if problems:
            return f"structural mismatch: {problems[0]}" + (
                f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            )
        first = self.first_divergence
        failed = [(r, c) for r in self.runs for c in r.outputs if not c.passed]
        if not failed and first is None:
            return (
                f"parity: {len(self.runs)} run(s), worst output error {_num(self.min_passing_tolerance())} (relative)"
            )
        parts = []
        if failed:
            run, c = max(failed, key=lambda rc: rc[1].max_rel)
            parts.append(
                f"output {c.name!r} differs on {run.device} (batch {run.batch}): relative error {_num(c.max_rel)} > {c.tolerance:g}"
                + (f" ({c.problem})" if c.problem else "")
            )
        else:
            parts.append("the outputs agree")
        if first is None:
            prop = next(
                (r.first_propagated_divergence for r in self.runs if r.first_propagated_divergence is not None), None
            )
            if prop is not None:
                parts.append(
                    f"no aligned layer diverges in isolation; errors first exceed the tolerance at layer {prop.label!r} "
                    f"({prop.class_name or '?'}) when propagated (accumulated rounding: consider a looser --tolerance)"
                )
        if first is not None:
            run, layer = first
            c = layer.isolated
            assert c is not None
            parts.append(
                f"first divergence at layer {layer.label!r} ({layer.class_name or '?'}) -> `{layer.emitted}`: "
                f"isolated relative error {_num(c.max_rel)} > {c.tolerance:g}"
            )
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        first = self.first_divergence
        return {
            "schema": SCHEMA_ID,
            "ktorch_version": self.ktorch_version,
            "source": self.source,
            "converted": self.converted,
            "direction": self.direction,
            "status": self.status,
            "exit_code": self.exit_code,
            "summary": self.summary(),
            "error": self.error,
            "tolerance": dict(self.tolerance),
            "min_passing_tolerance": _finite(self.min_passing_tolerance()),
            "min_passing_layer_tolerance": _finite(self.min_passing_layer_tolerance()),
            "first_divergence": None
            if first is None
            else {"device": first[0].device, "batch": first[0].batch, **first[1].to_dict()},
            "warnings": list(self.warnings),
            "runs": [r.to_dict() for r in self.runs],
            "training": [t.to_dict() for t in self.training],
        }


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


def _comparison(c: Comparison | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        "name": c.name,
        "shape": [int(d) for d in c.shape],
        "max_abs": _finite(c.max_abs),
        "max_rel": _finite(c.max_rel),
        "tolerance": c.tolerance,
        "passed": bool(c.passed),
        "exact": bool(c.exact),
        "problem": c.problem,
        "worst": list(c.worst),
    }


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


# -- JSON schema ---------------------------------------------------------------------------
_NUM_OR_NULL = {"type": ["number", "null"]}
_COMPARISON = {
    "type": ["object", "null"],
    "required": ["name", "shape", "max_abs", "max_rel", "tolerance", "passed", "exact", "problem", "worst"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "max_abs": _NUM_OR_NULL,
        "max_rel": _NUM_OR_NULL,
        "tolerance": {"type": "number"},
        "passed": {"type": "boolean"},
        "exact": {"type": "boolean"},
        "problem": {"type": "string"},
        "worst": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "expected", "got", "abs_err"],
                "properties": {"index": {"type": "array", "items": {"type": "integer"}}},
            },
        },
    },
}
_LAYER = {
    "type": "object",
    "required": ["source", "class", "emitted", "statement", "perm", "propagated", "isolated"],
    "properties": {
        "source": {"type": "string"},
        "class": {"type": ["string", "null"]},
        "emitted": {"type": "string"},
        "statement": {"type": ["string", "null"]},
        "perm": {"type": ["array", "null"], "items": {"type": "integer"}},
        "merged": {"type": "array", "items": {"type": "string"}},
        "propagated": _COMPARISON,
        "isolated": _COMPARISON,
    },
}
_RUN = {
    "type": "object",
    "required": [
        "device", "batch", "inputs", "mode", "profile", "rtol", "settings", "source_backend", "emitted_backend", "passed",
        "outputs", "layers", "skipped_layers", "first_divergence", "first_propagated_divergence", "problems",
    ],
    "properties": {
        "device": {"type": "string", "enum": ["cpu", "cuda"]},
        "batch": {"type": "integer"},
        "inputs": {"type": "string"},
        "mode": {"type": "string", "enum": ["both", "isolated", "propagated", "outputs"]},
        "profile": {"type": "string"},
        "rtol": {"type": "number"},
        "settings": {"type": "object", "required": ["device", "tf32"], "properties": {"tf32": {"type": "boolean"}}},
        "source_backend": {"type": "string"},
        "emitted_backend": {"type": "string"},
        "passed": {"type": "boolean"},
        "outputs": {"type": "array", "items": _COMPARISON},
        "layers": {"type": "array", "items": _LAYER},
        "skipped_layers": {
            "type": "array",
            "items": {"type": "object", "required": ["source", "reason"], "properties": {"source": {"type": "string"}, "reason": {"type": "string"}}},
        },
        "first_divergence": {**_LAYER, "type": ["object", "null"]},
        "first_propagated_divergence": {**_LAYER, "type": ["object", "null"]},
        "problems": {"type": "array", "items": {"type": "string"}},
    },
}  # fmt: skip
_TRAINING_STEP = {
    "type": "object",
    "required": ["step", "rtol", "loss", "worst_weight_rel", "worst_optimizer_rel", "weights", "optimizer"],
    "properties": {
        "step": {"type": "integer"},
        "rtol": {"type": "number"},
        "loss": _COMPARISON,
        "worst_weight_rel": {"type": "number"},
        "worst_optimizer_rel": {"type": "number"},
        "weights": {"type": "array", "items": _COMPARISON},
        "optimizer": {"type": "array", "items": _COMPARISON},
    },
}
_TRAINING = {
    "type": "object",
    "required": [
        "device", "steps", "batch", "seed", "profile", "rtol", "growth", "passed", "summary", "worst",
        "first_divergence", "disabled", "problems", "notes", "steps_results",
    ],
    "properties": {
        "device": {"type": "string", "enum": ["cpu", "cuda"]},
        "steps": {"type": "integer"},
        "batch": {"type": "integer"},
        "rtol": {"type": "number"},
        "growth": {"type": "number"},
        "passed": {"type": "boolean"},
        "summary": {"type": "string"},
        "worst": {"type": "object", "required": ["weight", "optimizer", "loss"]},
        "first_divergence": {"type": ["object", "null"], "required": ["step", "kind", "name", "max_rel", "tolerance"]},
        "disabled": {"type": "array", "items": {"type": "string"}},
        "problems": {"type": "array", "items": {"type": "string"}},
        "notes": {"type": "array", "items": {"type": "string"}},
        "steps_results": {"type": "array", "items": _TRAINING_STEP},
    },
}  # fmt: skip
REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "ktorch verify report",
    "type": "object",
    "required": [
        "schema", "ktorch_version", "source", "converted", "direction", "status", "exit_code", "summary", "error",
        "tolerance", "min_passing_tolerance", "min_passing_layer_tolerance", "first_divergence", "warnings", "runs",
    ],
    "properties": {
        "schema": {"type": "string", "enum": [SCHEMA_ID]},
        "ktorch_version": {"type": "string"},
        "source": {"type": "string"},
        "converted": {"type": "string"},
        "direction": {"type": "string"},
        "status": {"type": "string", "enum": list(STATUS_OF_EXIT.values())},
        "exit_code": {"type": "integer", "enum": list(STATUS_OF_EXIT)},
        "summary": {"type": "string"},
        "error": {"type": ["string", "null"]},
        "tolerance": {"type": "object", "required": ["rtol", "outputs"], "properties": {"rtol": _NUM_OR_NULL, "outputs": {"type": "object"}}},
        "min_passing_tolerance": _NUM_OR_NULL,
        "min_passing_layer_tolerance": _NUM_OR_NULL,
        "first_divergence": {"type": ["object", "null"], "required": ["device", "batch", "source", "emitted", "isolated"]},
        "warnings": {"type": "array", "items": {"type": "string"}},
        "runs": {"type": "array", "items": _RUN},
        "training": {"type": "array", "items": _TRAINING},
    },
}  # fmt: skip

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
}


def validate_report(data: Any, schema: dict[str, Any] = REPORT_SCHEMA, path: str = "$") -> None:
    """Raise ValueError naming the first place where `data` does not follow `schema`."""
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        ok = False
        for name in names:
            expected = _TYPES[name]
            if isinstance(data, bool) and name in ("integer", "number"):
                continue  # bool is an int in Python, not in JSON
            if isinstance(data, expected):
                ok = True
                break
        if not ok:
            raise ValueError(f"{path}: expected {' or '.join(names)}, got {type(data).__name__} ({data!r:.60})")
    if "enum" in schema and data not in schema["enum"]:
        raise ValueError(f"{path}: {data!r} is not one of {schema['enum']}")
    if isinstance(data, dict):
        for key in schema.get("required", []):
            if key not in data:
                raise ValueError(f"{path}: missing required key {key!r}")
        for key, sub in schema.get("properties", {}).items():
            if key in data:
                validate_report(data[key], sub, f"{path}.{key}")
        if schema.get("additionalProperties") is False:
            extra = set(data) - set(schema.get("properties", {}))
            if extra:
                raise ValueError(f"{path}: unexpected keys {sorted(extra)}")
    if isinstance(data, list) and "items" in schema:
        for i, item in enumerate(data):
            validate_report(item, schema["items"], f"{path}[{i}]")


# -- JUnit XML -----------------------------------------------------------------------------
def to_junit(report: VerifyReport) -> str:
    """JUnit XML: one test case per output per run, one per run for the isolated layers,
    and an error case when the verification could not run."""
    suite = ET.Element("testsuite", name="ktorch.verify", timestamp="", hostname="")
    cases = []
    model = report.source.rsplit("/", 1)[-1]
    if report.error is not None:
        case = ET.Element("testcase", classname=f"ktorch.verify.{model}", name="run")
        tag, kind = ("failure", "structural") if report.error_code == EXIT_STRUCTURE else ("error", "could-not-run")
        ET.SubElement(case, tag, message=report.error, type=kind).text = report.error
        cases.append(case)
    for run in report.runs:
        classname = f"ktorch.verify.{model}.{run.device}.batch{run.batch}"
        for problem in run.problems:
            case = ET.Element("testcase", classname=classname, name="structure")
            ET.SubElement(case, "failure", message=problem, type="structural").text = problem
            cases.append(case)
        for c in run.outputs:
            case = ET.Element("testcase", classname=classname, name=f"output:{c.name}")
            ET.SubElement(case, "properties")
            for key, value in (("max_abs", c.max_abs), ("max_rel", c.max_rel), ("tolerance", c.tolerance)):
                ET.SubElement(case.find("properties"), "property", name=key, value=f"{value:.6g}")  # type: ignore[arg-type]
            if not c.passed:
                message = f"relative error {_num(c.max_rel)} > {c.tolerance:g}" + (
                    f": {c.problem}" if c.problem else ""
                )
                ET.SubElement(case, "failure", message=message, type="mismatch").text = message
            cases.append(case)
        if run.mode in ("both", "isolated"):
            case = ET.Element("testcase", classname=classname, name="layers:isolated")
            first = run.first_divergence
            if first is not None and first.isolated is not None:
                message = (
                    f"first divergence at layer {first.source!r} ({first.class_name}) -> {first.emitted}: "
                    f"relative error {_num(first.isolated.max_rel)} > {first.isolated.tolerance:g}"
                )
                ET.SubElement(case, "failure", message=message, type="mismatch").text = message
            cases.append(case)
    for training in report.training:
        case = ET.Element("testcase", classname=f"ktorch.verify.{model}.{training.device}", name="training")
        if not training.passed:
            kind = "structural" if training.problems else "mismatch"
            ET.SubElement(case, "failure", message=training.summary(), type=kind).text = training.summary()
        cases.append(case)
    for case in cases:
        suite.append(case)
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("errors", str(sum(1 for c in cases if c.find("error") is not None)))
    suites = ET.Element("testsuites", name="ktorch")
    suites.append(suite)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


# -- Markdown ------------------------------------------------------------------------------
def to_markdown(report: VerifyReport) -> str:
    """A CI summary (e.g. for $GITHUB_STEP_SUMMARY)."""
    mark = {
        "pass": "PASS",
        "mismatch": "FAIL (numeric mismatch)",
        "structural": "FAIL (structural mismatch)",
        "error": "ERROR (could not run)",
    }
    lines = [
        f"## ktorch verify: {mark[report.status]}",
        "",
        f"`{report.source}` -> `{report.converted}` ({report.direction})",
        "",
        report.summary(),
        "",
    ]
    if report.runs:
        lines += [
            "| device | batch | output | shape | max abs | max rel | tolerance | result |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for run in report.runs:
            for c in run.outputs:
                result = "ok" if c.passed else f"**FAIL** {c.problem}".strip()
                lines.append(
                    f"| {run.device} | {run.batch} | {c.name} | {tuple(c.shape)} | {_num(c.max_abs)} | {_num(c.max_rel)} | {c.tolerance:g} | {result} |"
                )
        lines.append("")
    first = report.first_divergence
    if first is not None:
        run, layer = first
        c = layer.isolated
        assert c is not None
        lines += [
            f"**First divergence** ({run.device}, batch {run.batch}): layer `{layer.label}` ({layer.class_name}) -> `{layer.emitted}`",
            f"isolated max abs {_num(c.max_abs)}, max rel {_num(c.max_rel)} (tolerance {c.tolerance:g})",
            "",
        ]
        if layer.statement:
            lines += ["```python", layer.statement, "```", ""]
    lines.append(
        f"Smallest tolerance that would have passed: {_num(report.min_passing_tolerance())} (outputs), {_num(report.min_passing_layer_tolerance())} (isolated layers)"
    )
    settings = {k: v for run in report.runs for k, v in run.settings.items()}
    if settings:
        lines += ["", "Settings: " + ", ".join(f"`{k}={v}`" for k, v in settings.items() if k != "device")]
    for training in report.training:
        lines += [
            "",
            f"**Training parity** ({training.device}, {training.steps} steps, batch {training.batch}): "
            f"{training.summary()}",
            "",
            "| step | loss rel | worst weight rel | worst optimizer rel | tolerance |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r.step} | {_num(r.loss.max_rel)} | {_num(r.worst('weight'))} | {_num(r.worst('optimizer'))} | {r.rtol:.3g} |"
            for r in training.results
        ]
    for w in report.warnings:
        lines.append(f"\n> warning: {w}")
    return "\n".join(lines) + "\n"


# -- terminal ------------------------------------------------------------------------------
def print_report(report: VerifyReport, console: Any = None, *, max_layers: int = 60) -> None:
    """Rich tables: outputs, then the aligned layers, then the verdict."""
    from rich.table import Table

    from .console import make_console

    console = console or make_console()
    for run in report.runs:
        table = Table(
            "output", "shape", "max abs err", "max rel err", "tolerance", "result",
            title=f"{run.device}, batch {run.batch}, inputs {run.inputs}, profile {run.profile} (rtol {run.rtol:g})",
        )  # fmt: skip
        for c in run.outputs:
            table.add_row(
                c.name,
                str(tuple(c.shape)),
                _num(c.max_abs),
                _num(c.max_rel),
                f"{c.tolerance:g}",
                "[green]ok[/]" if c.passed else f"[red]FAIL[/] {c.problem}",
            )
        console.print(table)
        if run.layers:
            layers = Table(
                "#",
                "source layer",
                "class",
                "emitted",
                "propagated rel",
                "isolated rel",
                "result",
                title=f"layers ({run.mode})",
            )
            shown = run.layers if len(run.layers) <= max_layers else run.layers[:max_layers]
            first = run.first_divergence
            for i, layer in enumerate(shown):
                p, s = layer.propagated, layer.isolated
                failed = (s is not None and not s.passed) or (s is None and p is not None and not p.passed)
                tag = "[red]FIRST DIVERGENCE[/]" if layer is first else ("[red]FAIL[/]" if failed else "[green]ok[/]")
                layers.add_row(
                    str(i),
                    layer.label,
                    layer.class_name or "?",
                    layer.emitted,
                    _num(p.max_rel) if p else "-",
                    _num(s.max_rel) if s else "-",
                    tag,
                )
            if len(run.layers) > max_layers:
                layers.add_row("…", f"{len(run.layers) - max_layers} more", "", "", "", "", "")
            console.print(layers)
        for problem in run.problems:
            console.print(f"[red]structural:[/] {problem}")
        if run.skipped:
            console.print(
                f"[dim]{len(run.skipped)} layer(s) not compared: "
                + "; ".join(f"{k}: {v}" for k, v in list(run.skipped.items())[:5])
                + "[/]"
            )
    first = report.first_divergence
    if first is not None:
        run, layer = first
        c = layer.isolated
        assert c is not None
        console.print(
            f"[red]first divergence[/] ({run.device}, batch {run.batch}): layer [bold]{layer.label}[/] ({layer.class_name}) -> `{layer.emitted}`"
        )
        if layer.statement:
            console.print(f"  statement: {layer.statement}")
        console.print(f"  isolated max abs {_num(c.max_abs)}, max rel {_num(c.max_rel)} > {c.tolerance:g}")
        for w in c.worst:
            console.print(f"  at {tuple(w['index'])}: expected {w['expected']}, got {w['got']}")
    for training in report.training:
        print_training(training, console)
    shown: set[str] = set()
    for run in report.runs:
        line = ", ".join(f"{k}={v}" for k, v in run.settings.items())
        if line not in shown:
            shown.add(line)
            console.print(f"[dim]settings: {line}[/]")
    for w in report.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    color = "green" if report.passed else "red"
    console.print(f"[{color}]{report.status.upper()}[/]: {report.summary()}")
    passing = report.min_passing_tolerance()
    console.print(
        f"smallest tolerance that would have passed: {_num(passing)} (outputs), {_num(report.min_passing_layer_tolerance())} (isolated layers)"
    )


def print_training(training: Any, console: Any) -> None:
    """One row per training step: the worst loss, weight and optimizer-state errors and the tolerance."""
    from rich.table import Table

    table = Table(
        "step", "loss rel", "worst weight rel", "worst optimizer rel", "tolerance", "result",
        title=f"training parity, {training.device}, batch {training.batch}, seed {training.seed}, "
        f"tolerance {training.rtol:g} * {training.growth:g} ** (step - 1)",
    )  # fmt: skip
    first = training.first_divergence
    for step in training.results:
        failure = step.first_failure()
        tag = "[green]ok[/]"
        if failure is not None:
            kind, c = failure
            tag = f"[red]{'FIRST DIVERGENCE' if first and first[0] == step.step else 'FAIL'}[/] {kind} {c.name}"
        table.add_row(
            str(step.step), _num(step.loss.max_rel), _num(step.worst("weight")), _num(step.worst("optimizer")),
            f"{step.rtol:.3g}", tag,
        )  # fmt: skip
    console.print(table)
    if first is not None:
        _, _, c = first
        for w in c.worst:
            console.print(f"  {c.name} at {tuple(w['index'])}: expected {w['expected']}, got {w['got']}")
    for problem in training.problems:
        console.print(f"[red]structural:[/] {problem}")
    if training.disabled:
        console.print(f"[dim]randomness off on both sides (rate 0): {', '.join(training.disabled)}[/]")
    for note in training.notes:
        console.print(f"[yellow]note:[/] {note}")
