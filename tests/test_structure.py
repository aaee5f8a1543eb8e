"""The package's import structure: tasks → store → {sequential trainer, family package} → {module
directory, phase plan, IMP strategies} → {storage, data, masks}; no circles, no import of another
module's underscore names, no in-function import of the package's own modules; the family package
is entered through its face (``family/__init__.py``) only."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "maxent_lightning"


def module_of(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_of(p): p for p in PKG.rglob("*.py")}


def package_imports(name: str):
    """(imported package module, imported names, inside a function) of module ``name``."""
    path = MODULES[name]
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    tree = ast.parse(path.read_text())
    functions = [f for f in ast.walk(tree)
                 if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)]
    in_function = {id(n) for f in functions for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            parent = ".".join(base[: len(base) - node.level + 1]) if node.level else ""
            target = ".".join(p for p in (parent, node.module or "") if p)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                module = sub if sub in MODULES else target
                if module in MODULES:
                    yield module, alias.name, id(node) in in_function
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    yield alias.name, alias.name, id(node) in in_function


GRAPH = {m: {t for t, _, _ in package_imports(m)} - {m} for m in MODULES}


def reaches(start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        for t in GRAPH[m] - seen:
            if t == goal:
                return True
            seen.add(t)
            todo.append(t)
    return False


def test_no_import_circles():
    circles = [m for m in MODULES if reaches(m, m)]
    assert circles == []


def test_no_private_names_and_no_in_function_imports_of_the_package():
    bad = [(m, t, name, inside) for m in MODULES for t, name, inside in package_imports(m)
           if inside or (name.startswith("_") and name != t.rsplit(".", 1)[-1])]
    assert bad == []


@pytest.mark.parametrize("low,high", [
    ("maxent_lightning.training", "maxent_lightning.store"),
    ("maxent_lightning.family", "maxent_lightning.store"),
    ("maxent_lightning.training", "maxent_lightning.family"),
    ("maxent_lightning.family", "maxent_lightning.training"),
    ("maxent_lightning.store", "maxent_lightning.jobs"),
    ("maxent_lightning.moduledir", "maxent_lightning.training"),
    ("maxent_lightning.phases", "maxent_lightning.family"),
])
def test_one_direction(low, high):
    assert not reaches(low, high), f"{low} imports {high}"


def test_the_family_is_entered_through_its_face():
    inside = "maxent_lightning.family."
    bad = [(m, t) for m in MODULES if not m.startswith(inside) and m != inside[:-1]
           for t in GRAPH[m] if t.startswith(inside)]
    assert bad == []


def test_storage_imports_nothing_of_the_package_but_errors():
    assert GRAPH["maxent_lightning.storage"] == {"maxent_lightning.errors"}
