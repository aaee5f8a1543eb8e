"""The package's import structure: tasks → module store → {sequential trainer, family package}
→ {module directory, phase plan, IMP strategies} → {module file, files, data, masks}; no circles,
no import of another module's underscore names, no in-function import of the package's own
modules; the family package is entered through its face (``family/__init__.py``) only."""

import ast
import os
import subprocess
import sys
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
    ("maxent_lightning.training", "maxent_lightning.modulestore"),
    ("maxent_lightning.family", "maxent_lightning.modulestore"),
    ("maxent_lightning.training", "maxent_lightning.family"),
    ("maxent_lightning.family", "maxent_lightning.training"),
    ("maxent_lightning.modulestore", "maxent_lightning.jobs"),
    ("maxent_lightning.moduledir", "maxent_lightning.training"),
    ("maxent_lightning.moduledir", "maxent_lightning.modulerun"),
    ("maxent_lightning.moduledir", "maxent_lightning.plots"),  # the protocol draws nothing
    ("maxent_lightning.modulerun", "maxent_lightning.training"),
    ("maxent_lightning.modulerun", "maxent_lightning.family"),
    ("maxent_lightning.phases", "maxent_lightning.family"),
])
def test_one_direction(low, high):
    assert not reaches(low, high), f"{low} imports {high}"


def test_the_family_is_entered_through_its_face():
    inside = "maxent_lightning.family."
    bad = [(m, t) for m in MODULES if not m.startswith(inside) and m != inside[:-1]
           for t in GRAPH[m] if t.startswith(inside)]
    assert bad == []


def test_the_planner_imports_nothing_of_the_family():
    """The store owns the training plan (trainer, members per pass, twins): the planner groups
    jobs and hands their modules over."""
    assert not [t for t in GRAPH["maxent_lightning.planner"]
                if t == "maxent_lightning.family" or t.startswith("maxent_lightning.family.")]


def test_files_import_nothing_of_the_package_but_errors():
    assert GRAPH["maxent_lightning.files"] == {"maxent_lightning.errors"}
    assert GRAPH["maxent_lightning.modulefile"] == {"maxent_lightning.errors",
                                                    "maxent_lightning.files"}


# ---------------------------------------------------------------- library internals (compat.py)
ROOT = PKG.parent
PRIVATE_LIBRARIES = ("hydra", "lightning", "wandb", "torch")


def private_library_names(path: Path) -> list[str]:
    """The private names of Hydra, Lightning, W&B or torch that ``path`` imports or names
    (``_``-prefixed modules or names, the ``hydra._internal`` text)."""
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    found = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in docs
             and isinstance(n.value, str) and "hydra._internal" in n.value]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [n for n in names if n.split(".")[0] in PRIVATE_LIBRARIES
                  and any(p.startswith("_") and not p.startswith("__") for p in n.split("."))]
    return found


def test_library_internals_only_in_compat():
    sources = [*PKG.rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")]
    bad = {str(p.relative_to(ROOT)): names for p in sources if p.name != "compat.py"
           if (names := private_library_names(p))}
    assert bad == {}
    text = "\n".join(p.read_text() for p in sources if p.name != "compat.py")
    assert "._wandb_init" not in text and "._experiment" not in text  # Lightning's W&B logger


def test_hydras_global_only_at_the_door_and_in_compat():
    """Only the CLI (which writes Hydra's runtime facts into the job's config) and compat.py
    import Hydra's global runtime config; every other module reads the config."""
    sources = [*PKG.rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")]
    found = {str(p.relative_to(ROOT)) for p in sources
             for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.ImportFrom | ast.Import)
             and any("hydra.core.hydra_config" in n
                     for n in [getattr(node, "module", None) or "",
                               *(a.name for a in node.names)])}
    assert found == {"maxent_lightning/cli.py", "maxent_lightning/compat.py"}


def test_pyproject_pins_the_series_compat_was_written_for():
    import tomllib

    from maxent_lightning.compat import HYDRA_SERIES, LIGHTNING_SERIES

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for name, series in (("hydra-core", HYDRA_SERIES), ("lightning", LIGHTNING_SERIES)):
        major, minor = map(int, series.split("."))
        spec = next(d for d in deps if d.split(">")[0].split("<")[0].strip() == name)
        assert f">={series}" in spec and f"<{major}.{minor + 1}" in spec, spec


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


IMPORT_ALL = """
import importlib, pkgutil
for pkg in ("maxent_lightning", "multirun_analysis", "hydra_plugins.maxent_lightning_launcher"):
    module = importlib.import_module(pkg)
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), pkg + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
"""


def test_importing_the_package_leaves_the_environment_unchanged():
    """Host tuning (cpu.py) is called where a task or training starts, never on import; the
    libraries' own import-time settings (Lightning's) are made before the snapshot."""
    code = ("import os, lightning, torch, hydra, matplotlib\nbefore = dict(os.environ)\n"
            f"{IMPORT_ALL}\nafter = dict(os.environ)\n"
            "print(sorted(k for k in {*before, *after} if before.get(k) != after.get(k)))")
    assert run_python(code) == "[]"


# ---------------------------------------------------------------- the analysis's own floor
ANALYSIS = {str(p.relative_to(ROOT)): p for p in (ROOT / "multirun_analysis").rglob("*.py")}


def test_analysis_imports_no_private_names_and_the_training_package_at_the_top():
    bad = []
    for name, path in ANALYSIS.items():
        tree = ast.parse(path.read_text())
        inner = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
                 for n in ast.walk(f) if n is not f}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                bad += [(name, module, a.name) for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
                modules = [module]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            else:
                continue
            bad += [(name, m, "in a function") for m in modules
                    if id(node) in inner and m.split(".")[0] == "maxent_lightning"]
    assert bad == []


def test_importing_the_analysis_imports_no_torch():
    code = ("import importlib, pkgutil, sys, multirun_analysis\n"
            "for info in pkgutil.walk_packages(multirun_analysis.__path__, 'multirun_analysis.'):\n"
            "    importlib.import_module(info.name)\n"
            "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))")
    assert run_python(code) == "[]"
