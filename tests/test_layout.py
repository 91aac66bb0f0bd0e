"""The code's layout holds: imports run one way, and private names stay private.

Read from the source with `ast`, so imports inside functions count as much as those at
the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("warmup_core", "results", "trials", "sweeps")
# What each package may import (its layer and those below it).
MAY_IMPORT = {
    "warmup_core": {"warmup_core"},
    "results": {"results", "warmup_core"},
    "trials": {"trials", "results", "warmup_core"},
    "sweeps": {"sweeps", "trials", "results", "warmup_core"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_files(*tops: str) -> dict[str, Path]:
    return {module_name(p): p for top in tops for p in sorted((ROOT / top).rglob("*.py"))}


MODULES = project_files(*PACKAGES)
TREES = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}


def imported_modules(name: str, tree: ast.AST) -> set[str]:
    """The project modules `name` imports anywhere in its source (a `from pkg import x`
    counts as importing `pkg.x` when that is a module, else `pkg`)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                for a in node.names
            ]
        else:
            continue
        out |= {t for t in targets if t.split(".")[0] in PACKAGES and t in MODULES}
    out.discard(name)
    return out


GRAPH = {name: imported_modules(name, tree) for name, tree in TREES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import():
    tree = ast.parse("def f():\n    from trials.stack import Member\n")
    edges = imported_modules("trials.loop", tree)
    assert edges == {"trials.stack"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_one_that_imports_it_back():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH) or [])


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_their_own_layer_and_those_below(package):
    wrong = {
        (name, target)
        for name, targets in GRAPH.items()
        if name.split(".")[0] == package
        for target in targets
        if target.split(".")[0] not in MAY_IMPORT[package]
    }
    assert not wrong


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_declares_its_public_names(package):
    tree = TREES[package]
    declared = [
        node
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(getattr(t, "id", "") == "__all__" for t in node.targets)
    ]
    assert declared, f"{package}/__init__.py: no __all__"


def private_uses(path: Path) -> list[str]:
    """`from project.module import _name` and `project_module._name` in one file."""
    tree = ast.parse(path.read_text())
    bound: dict[str, str] = {}  # local name -> project module it refers to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in MODULES:
                    bound[alias.asname or alias.name] = full
                elif alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.name}:{node.lineno} imports {full}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    bound[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in bound
        ):
            found.append(f"{path.name}:{node.lineno} uses {bound[node.value.id]}.{node.attr}")
    return found


def test_the_private_name_check_sees_both_forms(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from sweeps.spec import _format_validation\nfrom trials import loop\nloop._Loop\n"
    )
    assert len(private_uses(sample)) == 2


@pytest.mark.parametrize(
    "path",
    sorted({*(ROOT / p for p in MODULES.values()), *(ROOT / "tests").rglob("*.py")}),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_nothing_outside_a_module_imports_its_private_names(path):
    assert not private_uses(path)
