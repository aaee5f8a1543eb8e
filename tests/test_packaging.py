"""The config tree users read and edit is the top-level ``conf/`` (``maxent_lightning/conf``
links to it); a wheel carries a copy, so a non-editable install composes every config too."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What a checkout may hold besides its sources (top level only: conf/store/ is a config group).
LEFT_OUT = {".git", ".venv", "multirun", "store", "outputs", "reports", "wandb", "build", "data",
            ".pytest_cache", ".ruff_cache"}


def _left_out(folder: str, names: list[str]) -> set[str]:
    top = Path(folder) == ROOT
    return {n for n in names if (top and n in LEFT_OUT) or n == "__pycache__"
            or n.endswith(".egg-info")}


def test_the_package_reads_the_top_level_conf():
    from maxent_lightning.config import CONFIG_DIR

    assert Path(CONFIG_DIR) == ROOT / "conf" and (ROOT / "conf" / "train.yaml").is_file()
    assert (ROOT / "maxent_lightning" / "conf").resolve() == ROOT / "conf"


def test_a_wheel_carries_every_config_and_composes_them(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=_left_out)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("maxent_lightning-*.whl")
    configs = {str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")}
    with zipfile.ZipFile(wheel) as z:
        shipped = {n.removeprefix("maxent_lightning/conf/") for n in z.namelist()
                   if n.startswith("maxent_lightning/conf/")}
    assert shipped == configs
    assert {f"multirun_analysis/paper/{f}.csv" for f in ("values", "tables", "configurations")
            } <= set(z.namelist())  # the paper's published values (the report)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, cwd=tmp_path)
    experiments = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    script = ("import json, sys\n"
              "from maxent_lightning.config import CONFIG_DIR, compose_config\n"
              "names = json.loads(sys.argv[1])\n"
              "for name in names:\n"
              "    compose_config([f'+experiment={name}'])\n"
              "print(json.dumps([CONFIG_DIR, len(names)]))\n")
    res = subprocess.run([sys.executable, "-c", script, json.dumps(experiments)],
                         capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-2000:]
    config_dir, composed = json.loads(res.stdout.strip().splitlines()[-1])
    assert Path(config_dir).is_relative_to(site) and composed == len(experiments) > 20


# ---------------------------------------------------------------- optional extras
# The process runs as if W&B were not installed: every import of it fails, and is recorded.
WITHOUT_WANDB = """import runpy, sys
class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'wandb':
            with open(LOG, 'a') as log:
                log.write(name + '\\n')
            raise ModuleNotFoundError(f"No module named '{name}'")
sys.meta_path.insert(0, NotInstalled())
LOG, module, sys.argv = sys.argv[1], sys.argv[2], sys.argv[2:]
runpy.run_module(module, run_name='__main__')
"""


def _without_wandb(tmp_path, module: str, *args: str) -> tuple[subprocess.CompletedProcess, str]:
    log = tmp_path / "wandb_imports.txt"
    res = subprocess.run([sys.executable, "-c", WITHOUT_WANDB, str(log), module, *args],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    return res, log.read_text() if log.exists() else ""


TINY = ["data=digits", "trainer.max_epochs=1", "model.hidden=[16]", "imp=none",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]


def test_logger_csv_trains_without_wandb_and_never_imports_it(tmp_path):
    res, imports = _without_wandb(tmp_path, "maxent_lightning", *TINY, "logger=csv",
                                  f"hydra.run.dir={tmp_path}/run")
    assert res.returncode == 0, res.stderr[-2000:]
    assert imports == "" and "rewarded accuracy" in res.stdout
    assert list((tmp_path / "store").rglob("metrics.csv")), "no CSV log"


def test_wandb_without_its_extra_is_one_line_naming_the_extra(tmp_path):
    res, _ = _without_wandb(tmp_path, "maxent_lightning", *TINY,
                            f"hydra.run.dir={tmp_path}/run")  # the default logger: wandb
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
    assert lines[0].startswith("error: logger=wandb") and "maxent_lightning[wandb]" in lines[0]
    assert "logger=csv" in lines[0]
    res, _ = _without_wandb(tmp_path, "multirun_analysis", str(tmp_path), "--out",
                            str(tmp_path / "report"), "--wandb")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
    assert lines[0].startswith("error: --wandb") and "maxent_lightning[wandb]" in lines[0]
    assert not (tmp_path / "report").exists()  # refused before any work


def test_the_dev_extra_holds_what_the_tests_import():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert "wandb" not in " ".join(project["dependencies"])  # W&B is an extra...
    assert "maxent_lightning[wandb]" in extras["dev"]  # ...that `.[dev]` (tests, CI) pulls
    assert any(r.startswith("pytest") for r in extras["dev"])
    hook = re.search(r"ruff-pre-commit\n\s+rev: v(\S+)",
                     (ROOT / ".pre-commit-config.yaml").read_text())
    assert hook and f"ruff=={hook[1]}" in extras["dev"]  # pre-commit lints as `make lint` does
    assert project["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT")


# ---------------------------------------------------------------- the make stamp
def _quickstart_venv(checkout: Path, url: str, requires: list[str]) -> Path:
    """A venv (without pip: any install attempt fails) holding what `pip install -e '.[dev]'`
    records of an editable install from ``url`` requiring ``requires``, and ``packaging``
    (the check reads the requirements with it)."""
    venv = checkout / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"], check=True,
                               capture_output=True, text=True).stdout.strip())
    import packaging

    shutil.copytree(Path(packaging.__file__).parent, site / "packaging")
    (meta,) = Path(packaging.__file__).parents[1].glob(f"packaging-{packaging.__version__}."
                                                         "dist-info")
    shutil.copytree(meta, site / meta.name)
    info = site / "maxent_lightning-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: maxent_lightning\n"
                                   "Version: 0.1.0\n" + "".join(f"Requires-Dist: {r}\n"
                                                                  for r in requires))
    (info / "direct_url.json").write_text(json.dumps({"url": url,
                                                      "dir_info": {"editable": True}}))
    (info / "RECORD").write_text("".join(f"{info.name}/{n},,\n"
                                         for n in ("METADATA", "direct_url.json", "RECORD")))
    return venv


def _make_setup(checkout: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "PYTHON"))}
    return subprocess.run(["make", "setup"], cwd=checkout, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_keeps_the_install_of_the_quickstart_and_redoes_any_other(tmp_path):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("Makefile", "pyproject.toml", "scripts"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, checkout / name)
    past = time.time() - 60  # the install after pyproject.toml's last change
    os.utime(checkout / "pyproject.toml", (past, past))
    dev = ["packaging", 'packaging>=20; extra == "dev"']
    venv = _quickstart_venv(checkout, checkout.as_uri(), dev)
    stamp = venv / ".installed"
    res = _make_setup(checkout)  # the quickstart's install: kept, the stamp written
    assert res.returncode == 0 and stamp.exists(), res.stdout + res.stderr
    assert "installing" not in res.stdout
    assert "Nothing to be done" in _make_setup(checkout).stdout

    stamp.unlink()
    (record,) = venv.glob("lib/*/site-packages/maxent_lightning-*.dist-info/direct_url.json")
    os.utime(record, (0, 0))  # pyproject.toml changed since the install
    res = _make_setup(checkout)  # reinstalls (and fails here: this venv has no pip)
    assert "installing: pyproject.toml changed" in res.stdout and "No module named pip" in (
        res.stderr) and res.returncode != 0 and not stamp.exists()

    for url, requires, why in [
        ((tmp_path / "other").as_uri(), [], "not installed editable from"),
        (checkout.as_uri(), ['no-such-package-zz; extra == "dev"'], "no-such-package-zz"),
    ]:
        shutil.rmtree(venv)
        _quickstart_venv(checkout, url, requires)
        os.utime(checkout / "pyproject.toml", (0, 0))
        res = _make_setup(checkout)
        assert res.returncode != 0 and why in res.stdout and not stamp.exists(), res.stdout


def test_the_quickstart_cpu_wheels_are_the_supported_versions():
    """The README's CPU-only command asks for exactly the torch/torchvision ranges of
    pyproject.toml (a newer torch would be replaced by the CUDA build)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    line = next(x for x in (ROOT / "README.md").read_text().splitlines()
                if "download.pytorch.org/whl/cpu" in x and x.startswith("python3 -m venv"))
    asked = re.findall(r"'([^']+)'", line)
    assert asked == [d for d in deps if re.match(r"torch(vision)?\b", d)] and len(asked) == 2
    assert line.endswith("--index-url https://download.pytorch.org/whl/cpu")
