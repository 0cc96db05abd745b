"""Which module may import which (docs: DESIGN, "Which module may import which").

Every module under ``bpbreid/`` is parsed with :mod:`ast`; its imports are collected at any
level (module level, inside functions and methods, under ``if TYPE_CHECKING:``), relative
imports resolved, and ``importlib.import_module("<literal>")`` calls counted as imports.
Modules named only in tables and imported by name at run time (the command table of
``bpbreid.__main__``, ``bpbreid.bench.BENCHMARKS``) are not seen.

A *unit* is what sits directly under ``bpbreid/``: a subpackage (``engine``, ``data``...)
or a module (``parts``, ``config``, ``inference``...). Each test prints the imports that
break its rule, with file and line.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import bpbreid

PACKAGE_DIR = Path(bpbreid.__file__).parent
ROOT = PACKAGE_DIR.parent

# Units that are not library code: the command layer and the entry point.
COMMAND_UNITS = {"cli", "__main__"}

# (importing units, units they must never import, why)
FORBIDDEN = [
    (
        {"model", "losses", "metrics"},
        {"data", "engine", "viz", "cli"},
        "models, losses and metrics take tensors; they know no dataset, trainer or figure",
    ),
    ({"viz"}, {"engine", "cli"}, "figures take evaluation results, not the engine"),
    (
        {"engine"},
        {"viz", "inference", "export", "demo", "labels", "cli"},
        "the engine builds on model, losses, metrics, data and official only",
    ),
    ({"data"}, {"model", "engine", "viz", "cli"}, "data knows no model (a model takes tensors)"),
    (
        {"official"},
        {"data", "engine", "viz", "cli"},
        "official checkpoints map onto the model only",
    ),
    ({"labels"}, {"engine", "viz", "cli"}, "labels build on data only"),
]
# The vocabulary and the basics: nothing of ours but the errors.
FOUNDATION = {"parts", "errors", "paths", "serialization"}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. bpbreid.engine.trainer
    path: Path
    line: int
    target: str  # the imported module, e.g. bpbreid.data.datasets
    in_function: bool
    type_checking: bool

    @property
    def unit(self) -> str:
        return unit_of(self.module)

    @property
    def target_unit(self) -> str:
        return unit_of(self.target)

    def __str__(self) -> str:
        where = " (inside a function)" if self.in_function else ""
        where += " (under TYPE_CHECKING)" if self.type_checking else ""
        return (
            f"{self.path.relative_to(ROOT)}:{self.line}: {self.module} imports {self.target}{where}"
        )


def unit_of(module: str) -> str:
    """``bpbreid.engine.trainer`` -> ``engine``; ``bpbreid`` -> ``bpbreid``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def _is_type_checking(test: ast.expr) -> bool:
    return "TYPE_CHECKING" in ast.unparse(test)


def imports_of(module: str, path: Path) -> list[Import]:
    """The package-internal imports of one module, at every level."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def add(target: str, node: ast.AST, in_function: bool, type_checking: bool) -> None:
        imp = Import(module, path, node.lineno, target, in_function, type_checking)
        if (target == "bpbreid" or target.startswith("bpbreid.")) and imp not in found:
            found.append(imp)  # once per statement (from x import a, b: one import of x)

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            child_function = in_function or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, child, in_function, type_checking)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    source = ".".join(base + ([child.module] if child.module else []))
                else:
                    source = child.module or ""
                for alias in child.names:
                    submodule = f"{source}.{alias.name}"
                    add(
                        submodule if submodule in MODULES else source,
                        child,
                        in_function,
                        type_checking,
                    )
            elif (
                isinstance(child, ast.Call)
                and ast.unparse(child.func) in ("importlib.import_module", "import_module")
                and child.args
                and isinstance(child.args[0], ast.Constant)
                and isinstance(child.args[0].value, str)
            ):
                add(child.args[0].value, child, in_function, type_checking)
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:
                    visit_statement(statement, child_function, True)
                for statement in child.orelse:
                    visit_statement(statement, child_function, type_checking)
                continue
            visit(child, child_function, type_checking)

    def visit_statement(statement: ast.stmt, in_function: bool, type_checking: bool) -> None:
        wrapper = ast.Module(body=[statement], type_ignores=[])
        visit(wrapper, in_function, type_checking)

    visit(tree, False, False)
    return found


ALL_IMPORTS = [imp for module, path in MODULES.items() for imp in imports_of(module, path)]


def _report(broken: list[Import], rule: str) -> str:
    lines = [f"{len(broken)} import(s) break the rule: {rule}", *map(str, broken)]
    text = "\n  ".join(lines)
    print(text)
    return text


# --------------------------------------------------------------------------------------
# The parser itself
# --------------------------------------------------------------------------------------


def test_the_parser_sees_every_kind_of_import():
    by_module: dict[str, list[Import]] = {}
    for imp in ALL_IMPORTS:
        by_module.setdefault(imp.module, []).append(imp)
    # relative import, at module level
    trainer = by_module["bpbreid.engine.trainer"]
    assert any(i.target == "bpbreid.engine.checkpoint" and not i.in_function for i in trainer)
    # inside a function
    assert any(i.target == "bpbreid.model" and i.in_function for i in trainer)
    # under TYPE_CHECKING
    assert any(i.type_checking for i in by_module["bpbreid.losses"])
    # "from package import submodule" resolves to the submodule
    cli = by_module["bpbreid.cli.train"]
    assert any(i.target == "bpbreid.cli.common" for i in cli)
    assert len(MODULES) > 50 and "bpbreid.cli.common" in MODULES


# --------------------------------------------------------------------------------------
# The rules
# --------------------------------------------------------------------------------------


def test_layers_never_import_upward():
    reports = []
    for importers, forbidden, why in FORBIDDEN:
        broken = [
            imp for imp in ALL_IMPORTS if imp.unit in importers and imp.target_unit in forbidden
        ]
        if broken:
            rule = f"{', '.join(sorted(importers))} never import {', '.join(sorted(forbidden))}"
            reports.append(_report(broken, f"{rule} ({why})"))
    assert not reports, "\n".join(reports)


def test_no_library_module_imports_the_commands_or_the_notebook_harness():
    broken = [
        imp
        for imp in ALL_IMPORTS
        if (imp.target_unit == "cli" and imp.unit not in COMMAND_UNITS)
        or (imp.target_unit == "notebook" and imp.unit != "notebook")
    ]
    assert not broken, _report(
        broken, "the library imports neither bpbreid.cli nor bpbreid.notebook"
    )


def test_the_foundation_imports_nothing_of_ours_but_the_errors():
    broken = [
        imp
        for imp in ALL_IMPORTS
        if imp.unit in FOUNDATION and imp.target_unit not in (imp.unit, "errors")
    ]
    assert not broken, _report(
        broken, f"{sorted(FOUNDATION)} import nothing of bpbreid but bpbreid.errors"
    )


def test_commands_import_the_engine_and_torch_only_when_they_run():
    """Module level of ``bpbreid.cli``: nothing that loads PyTorch (``--help`` stays instant)."""
    heavy = {"engine", "model", "losses", "metrics", "inference", "export", "official", "viz"}
    broken = [
        imp
        for imp in ALL_IMPORTS
        if imp.unit in COMMAND_UNITS
        and not imp.in_function
        and not imp.type_checking
        and imp.target_unit in heavy
    ]
    assert not broken, _report(broken, "commands import the engine and the model inside run()")
    for module, path in MODULES.items():
        if unit_of(module) not in COMMAND_UNITS:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
        assert not [n for n in names if n.split(".")[0] == "torch"], (
            f"{path}: torch at module level"
        )


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def test_no_import_cycles_between_units_at_module_level():
    """Imports that run when a module is imported (not inside functions, not TYPE_CHECKING)."""
    module_level = [i for i in ALL_IMPORTS if not i.in_function and not i.type_checking]
    edges: dict[str, set[str]] = {}
    for imp in module_level:
        if imp.unit != imp.target_unit:
            edges.setdefault(imp.unit, set()).add(imp.target_unit)
    cycles = _cycles(edges)
    broken = [
        imp
        for cycle in cycles
        for imp in module_level
        if imp.unit in cycle and imp.target_unit in cycle and imp.unit != imp.target_unit
    ]
    assert not cycles, _report(broken, f"no import cycle between units; found {cycles}")


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
