"""Run an emitted PyTorch `forward` one statement at a time.

The writer emits one statement per graph node, each assigning a uniquely named local
(see translate/torch_writer/codegen.py). Parsing `forward` with `ast` lets the verifier
keep every intermediate (propagated mode) and re-run each statement with its inputs
replaced by the source model's own intermediates (isolated mode), which localises a
wrong translation to the one statement that computes it.
"""

from __future__ import annotations

import ast
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .runners import RunError


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement of forward: the names it reads and the locals it assigns."""

    index: int
    line: int
    text: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    code: Any  # a compiled code object (exec mode)
    mutates: bool = False  # overwrites a tensor it reads (`inplace=True`, `a.add_(b)`)


@dataclass(frozen=True, slots=True)
class Forward:
    arguments: tuple[str, ...]
    statements: tuple[Statement, ...]
    returns: Any  # a compiled expression (eval mode)
    return_text: str
    # the context manager every statement runs in (a compiled expression): forward's body is one
    # `with torch.autocast(...):` block for a model converted from a Keras mixed-precision policy
    context: Any = None


def parse_forward(path: str | Path, class_name: str | None = None) -> Forward:
    """Parse `forward` of the nn.Module class `class_name` (or the only class that has a
    forward) in an emitted model.py."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, filename=str(path))
    classes = [
        n
        for n in tree.body
        if isinstance(n, ast.ClassDef) and any(isinstance(f, ast.FunctionDef) and f.name == "forward" for f in n.body)
    ]
    if class_name is not None:
        classes = [c for c in classes if c.name == class_name] or classes
    if len(classes) != 1:
        raise RunError(
            f"{path}: expected one nn.Module class with a forward(), found {[c.name for c in classes]}; was model.py edited by hand?"
        )
    forward = next(f for f in classes[0].body if isinstance(f, ast.FunctionDef) and f.name == "forward")
    arguments = tuple(a.arg for a in forward.args.args[1:])
    known = set(arguments)
    statements = []
    body = list(forward.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]  # docstring
    if not body or not isinstance(body[-1], ast.Return) or body[-1].value is None:
        raise RunError(f"{path}: forward() of {classes[0].name} must end with `return <outputs>`")
    steps, context = body[:-1], None
    if len(steps) == 1 and isinstance(steps[0], ast.With) and len(steps[0].items) == 1:
        item = steps[0].items[0]
        if item.optional_vars is None:
            context = compile(ast.Expression(body=item.context_expr), str(path), "eval")
            steps = steps[0].body
    for i, stmt in enumerate(steps):
        reads = tuple(
            dict.fromkeys(
                n.id
                for n in ast.walk(stmt)
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id in known
            )
        )
        writes = _assigned(stmt)
        known.update(writes)
        code = compile(ast.Module(body=[stmt], type_ignores=[]), str(path), "exec")
        statements.append(Statement(i, stmt.lineno, ast.unparse(stmt), reads, writes, code, _mutates(stmt)))
    ret = body[-1]
    returns = compile(ast.Expression(body=ret.value), str(path), "eval")
    return Forward(arguments, tuple(statements), returns, ast.unparse(ret.value), context)


def _mutates(stmt: ast.stmt) -> bool:
    """Whether a statement may overwrite a tensor in place: a call with `inplace=True`
    or a PyTorch in-place method (`x.add_(y)`, `x.clamp_(...)`)."""
    for node in ast.walk(stmt):
        if not isinstance(node, ast.Call):
            continue
        if any(
            k.arg == "inplace" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
            for k in node.keywords
        ):
            return True
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr.endswith("_") and not func.attr.startswith("_"):
            return True
    return isinstance(stmt, ast.AugAssign)


_SCOPES = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Lambda)


def _assigned(stmt: ast.stmt) -> tuple[str, ...]:
    """The locals a statement assigns (not the variables of its comprehensions)."""
    names: list[str] = []
    stack: list[ast.AST] = [stmt]
    while stack:
        node = stack.pop()
        if isinstance(node, _SCOPES):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.append(node.id)
        stack.extend(reversed(list(ast.iter_child_nodes(node))))
    return tuple(dict.fromkeys(names))


class Stepper:
    """Executes a parsed forward against a loaded module, in the module's globals."""

    def __init__(self, forward: Forward, module_globals: Mapping[str, Any], model: Any) -> None:
        self.forward = forward
        self.globals = dict(module_globals)
        self.model = model

    def _run(self, statement: Statement, env: dict[str, Any]) -> dict[str, Any]:
        scope = dict(self.globals)
        scope.update(env)
        if statement.mutates:
            # an in-place statement gets copies: the locals kept for comparison (and the
            # source's intermediates fed in isolated mode) must keep the values they had
            scope.update({name: _copy(env[name]) for name in statement.reads if name in env})
        scope["self"] = scope[MODEL_NAME] = self.model
        try:
            exec(statement.code, scope)  # noqa: S102 (the emitted model's own code)
        except Exception as exc:
            raise RunError(
                f"line {statement.line} of model.py, `{statement.text}`, failed: {type(exc).__name__}: {exc}"
            ) from exc
        return {name: scope[name] for name in statement.writes}

    def _context(self, env: Mapping[str, Any]) -> Any:
        """The context forward's statements run in (torch.autocast), or none."""
        if self.forward.context is None:
            return contextlib.nullcontext()
        return eval(self.forward.context, {**self.globals, **env})  # noqa: S307 (the emitted model's own code)

    def propagate(self, inputs: list[Any]) -> tuple[list[Any], dict[str, Any]]:
        """Run forward on `inputs` (tensors); return its outputs and every local."""
        import torch

        if len(inputs) != len(self.forward.arguments):
            raise RunError(f"forward() takes {len(self.forward.arguments)} inputs, {len(inputs)} were given")
        env: dict[str, Any] = dict(zip(self.forward.arguments, inputs))
        with torch.no_grad():
            with self._context(env):
                for statement in self.forward.statements:
                    env.update(self._run(statement, env))
            scope = {**self.globals, **env, "self": self.model, MODEL_NAME: self.model}
            out = eval(self.forward.returns, scope)  # noqa: S307 (the emitted model's own code)
        return list(out) if isinstance(out, (list, tuple)) else [out], env

    def isolate(self, propagated: Mapping[str, Any], feed: Callable[[str], Any | None]) -> dict[str, Any]:
        """Re-run every statement with each input that `feed(name)` provides (the source
        model's value, in the emitted layout) instead of the emitted model's own; other
        inputs come from this isolated run, or the propagated run for forward's arguments.
        Returns the locals each statement assigned."""
        import torch

        env: dict[str, Any] = {}
        with torch.no_grad(), self._context(propagated):
            for statement in self.forward.statements:
                bound = {}
                for name in statement.reads:
                    fed = feed(name)
                    bound[name] = fed if fed is not None else env.get(name, propagated.get(name))
                env.update(self._run(statement, bound))
        return env


MODEL_NAME = "__ktorch_model__"


def _copy(value: Any) -> Any:
    clone = getattr(value, "clone", None)
    return clone() if callable(clone) else value


class _LayerLookup(ast.NodeTransformer):
    """`layers.Conv2D(..., name="conv")` -> `__ktorch_model__.get_layer("conv")`: the built
    model's own layer (with its loaded weights), called eagerly on real tensors."""

    def __init__(self, layer_names: set[str]) -> None:
        self.layer_names = layer_names

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        name = next((k.value for k in node.keywords if k.arg == "name" and isinstance(k.value, ast.Constant)), None)
        if isinstance(name, ast.Constant) and name.value in self.layer_names:
            lookup = ast.Attribute(value=ast.Name(MODEL_NAME, ast.Load()), attr="get_layer", ctx=ast.Load())
            return ast.copy_location(ast.Call(func=lookup, args=[ast.Constant(name.value)], keywords=[]), node)
        return node


def _is_call_to(node: ast.AST, attr: str) -> bool:
    return isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Attribute) and node.func.attr == attr)
        or (isinstance(node.func, ast.Name) and node.func.id == attr)
    )


def parse_build(path: str | Path, layer_names: set[str]) -> Forward:
    """Parse the functional `build()` of an emitted Keras model.py as a Forward: the
    `keras.Input` variables are its arguments (in the order of `keras.Model(inputs=...)`),
    each other statement runs eagerly with layer constructors replaced by the loaded
    model's layers, and the `outputs=` of `keras.Model` is what it returns."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, filename=str(path))
    build = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "build"), None)
    if build is None:
        raise RunError(f"{path}: no build() function; was model.py written by ktorch?")
    body = [
        s for s in build.body if not (isinstance(s, ast.Expr) and isinstance(getattr(s, "value", None), ast.Constant))
    ]
    ret = body[-1] if body else None
    if not isinstance(ret, ast.Return) or not _is_call_to(ret.value, "Model"):
        raise RunError(f"{path}: build() must end with `return keras.Model(inputs=..., outputs=...)`")
    keywords = {k.arg: k.value for k in ret.value.keywords}  # type: ignore[union-attr]
    ins = keywords.get("inputs") or (ret.value.args[0] if ret.value.args else None)  # type: ignore[union-attr]
    outs = keywords.get("outputs") or (ret.value.args[1] if len(ret.value.args) > 1 else None)  # type: ignore[union-attr]
    if ins is None or outs is None:
        raise RunError(f"{path}: cannot read the inputs and outputs of keras.Model in build()")
    arguments = tuple(n.id for n in ast.walk(ins) if isinstance(n, ast.Name))
    transformer = _LayerLookup(layer_names)
    known = set(arguments)
    statements = []
    for i, stmt in enumerate(body[:-1]):
        if isinstance(stmt, ast.Assign) and _is_call_to(stmt.value, "Input"):
            continue
        reads = tuple(
            dict.fromkeys(
                n.id
                for n in ast.walk(stmt)
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id in known
            )
        )
        writes = _assigned(stmt)
        known.update(writes)
        segment = ast.unparse(stmt)
        rewritten = ast.fix_missing_locations(transformer.visit(ast.Module(body=[stmt], type_ignores=[])))
        statements.append(Statement(i, stmt.lineno, segment, reads, writes, compile(rewritten, str(path), "exec")))
    returns = compile(ast.Expression(body=outs), str(path), "eval")
    return Forward(arguments, tuple(statements), returns, ast.unparse(outs))
