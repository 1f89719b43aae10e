"""The package's layering, checked on the source text (ast; nothing is imported).

    graph/      the IR and its passes: numpy and the standard library only
    translate/  readers and writers: never verify/ nor a module of ktorch/
    verify/     parity checks: of ktorch/, only ktorch/version.py (never a pipeline module)
    ktorch/     the pipelines, the CLI and the public API, over the three

No module imports another module's private (underscore) name, and no two modules import
each other, directly or through others; a function-level (lazy) import counts like one at
the top of the file. `python tests/test_layering.py` prints every violation found.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the source folders and the packages they install as (setup.cfg's package_dir)
PACKAGES = {"ktorch": "ktorch", "graph": "ktorch.graph", "translate": "ktorch.translate", "verify": "ktorch.verify"}
VERIFY_MAY_IMPORT = {"ktorch.version"}  # of ktorch/: everything else there is pipeline, CLI or API
GRAPH_MAY_IMPORT = {"numpy"}

# Violations still to fix, each with the reason it is allowed for now. Keep it empty: the
# pipeline restructuring (issue 16) removed the last ones (api <-> onnx_io <-> torch_to_keras
# <-> verify, and verify/onnx_referee importing onnx_io.export).
KNOWN_VIOLATIONS: set[str] = set()


@dataclass
class Import:
    """One import statement's target: the module imported from, and the name taken."""

    source: str  # the importing module
    target: str  # the internal module it reaches (a package means its __init__)
    name: str | None  # the name taken from `target` (None: the module itself)
    line: int


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    imports: list[Import] = field(default_factory=list)
    external: set[str] = field(default_factory=set)  # top-level names of non-ktorch imports


def discover(root: Path, packages: dict[str, str] = PACKAGES) -> dict[str, Module]:
    """Every .py file under the source folders, by its installed module name."""
    modules: dict[str, Module] = {}
    for folder, package in packages.items():
        base = root / folder
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            name = ".".join([package, *parts])
            modules[name] = Module(name, path, is_package)
    return modules


def _resolve(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _type_checking_only(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`): imports for annotations, never run."""
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST):
    """Every node of the tree, function bodies included, except those under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if _type_checking_only(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def parse(modules: dict[str, Module]) -> None:
    """Fill in each module's imports, function-level ones included."""
    for module in modules.values():
        tree = ast.parse(module.path.read_text(), filename=str(module.path))
        aliases: dict[str, str] = {}  # local name -> internal module it is bound to
        for node in _runtime_nodes(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        module.imports.append(Import(module.name, alias.name, None, node.lineno))
                        if alias.asname:
                            aliases[alias.asname] = alias.name
                    elif not alias.name.startswith("ktorch"):
                        module.external.add(alias.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, node)
                if base not in modules and not base.startswith("ktorch"):
                    module.external.add(base.split(".")[0])
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in modules:  # `from . import families`: the module itself
                        module.imports.append(Import(module.name, sub, None, node.lineno))
                        aliases[alias.asname or alias.name] = sub
                    else:
                        module.imports.append(Import(module.name, base, alias.name, node.lineno))
        for node in _runtime_nodes(tree):  # `reader._module_of(...)` through a module alias
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                module.imports.append(Import(module.name, aliases[node.value.id], node.attr, node.lineno))


def _private(name: str | None) -> bool:
    return bool(name) and name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ("graph", "translate", "verify") else "ktorch"


def _is_pipeline_level(name: str) -> bool:
    """A module of ktorch/ itself (ktorch/*.py), as opposed to graph/, translate/, verify/."""
    return _layer(name) == "ktorch"


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    edges = {
        m: sorted({i.target for i in mod.imports if i.target in modules and i.target != m})
        for m, mod in modules.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(modules) + 100))
    try:
        for v in sorted(edges):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(found)


def violations(root: Path = ROOT, packages: dict[str, str] = PACKAGES) -> list[str]:
    """Every broken rule, one line each, stable across runs (no line numbers)."""
    modules = discover(root, packages)
    parse(modules)
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    found: set[str] = set()
    for mod in modules.values():
        layer = _layer(mod.name)
        if layer == "graph":
            for ext in sorted(mod.external - stdlib - GRAPH_MAY_IMPORT):
                found.add(f"graph imports a framework: {mod.name} -> {ext}")
        for imp in mod.imports:
            target = imp.target
            if layer == "graph" and _layer(target) != "graph":
                found.add(f"graph imports outside graph/: {mod.name} -> {target}")
            if layer == "translate" and (_layer(target) == "verify" or _is_pipeline_level(target)):
                found.add(f"translate imports {_layer(target)}: {mod.name} -> {target}")
            if layer == "verify" and _layer(target) == "ktorch" and target not in VERIFY_MAY_IMPORT:
                found.add(f"verify imports a pipeline: {mod.name} -> {target}")
            if _private(imp.name) and target != mod.name:
                found.add(f"private name crosses modules: {mod.name} -> {target}.{imp.name}")
    for component in cycles(modules):
        found.add("import cycle: " + " <-> ".join(component))
    return sorted(found)


def test_layering():
    found = set(violations())
    new = sorted(found - KNOWN_VIOLATIONS)
    assert not new, "layering violations:\n" + "\n".join(new)
    fixed = sorted(KNOWN_VIOLATIONS - found)
    assert not fixed, "fixed; remove from KNOWN_VIOLATIONS:\n" + "\n".join(fixed)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


CLEAN_TREE = {
    "ktorch/__init__.py": "from .api import convert\n",
    "ktorch/api.py": "from .translate.writer import render\nfrom .verify.check import check\n\ndef convert():\n    return render(), check()\n",
    "graph/__init__.py": "import numpy as np\nimport json\n",
    "graph/passes.py": "from .ir import Graph\n",
    "graph/ir.py": "class Graph: pass\n",
    "translate/__init__.py": "",
    "translate/writer.py": "from ..graph.ir import Graph\n\ndef render():\n    from .runtime import preload\n    return preload\n",
    "translate/runtime.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from .writer import render\n\ndef preload(): pass\n",
    "verify/__init__.py": "",
    "verify/check.py": "from ..translate.runtime import preload\n\ndef check():\n    return preload()\n",
}


def test_checker_passes_a_clean_tree(tmp_path):
    _write(tmp_path, CLEAN_TREE)
    assert violations(tmp_path) == []


def test_checker_finds_each_kind_of_violation(tmp_path):
    """The checker is not vacuous: each forbidden import added to a clean tree is reported."""
    _write(tmp_path, CLEAN_TREE)
    _write(tmp_path, {
        "graph/ir.py": "import torch\n\nclass Graph: pass\n",
        "graph/passes.py": "from .ir import Graph\nfrom ..translate.writer import render\n",
        "translate/runtime.py": "def preload():\n    from ..verify.check import check\n",  # a lazy import closes a cycle
        "translate/helper.py": "from ..api import convert\nfrom .runtime import _hidden\nfrom . import runtime\nruntime._other()\n",
        "verify/check.py": "from ..translate.runtime import preload\nimport ktorch.cli\n\ndef check():\n    return preload()\n",
        "ktorch/cli.py": "",
    })  # fmt: skip
    found = violations(tmp_path)
    assert "graph imports a framework: ktorch.graph.ir -> torch" in found
    assert "graph imports outside graph/: ktorch.graph.passes -> ktorch.translate.writer" in found
    assert "translate imports verify: ktorch.translate.runtime -> ktorch.verify.check" in found
    assert "translate imports ktorch: ktorch.translate.helper -> ktorch.api" in found
    assert "verify imports a pipeline: ktorch.verify.check -> ktorch.cli" in found
    assert "private name crosses modules: ktorch.translate.helper -> ktorch.translate.runtime._hidden" in found
    assert "private name crosses modules: ktorch.translate.helper -> ktorch.translate.runtime._other" in found
    assert "import cycle: ktorch.translate.runtime <-> ktorch.verify.check" in found
    assert len(found) == 8, found


if __name__ == "__main__":
    for line in violations():
        print(("known  " if line in KNOWN_VIOLATIONS else "       ") + line)
