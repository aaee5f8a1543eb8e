"""The config tree users read and edit is the top-level ``conf/`` (``maxent_lightning/conf``
links to it); a wheel carries a copy, so a non-editable install composes every config too."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

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
