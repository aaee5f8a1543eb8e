"""The paper's reproduction targets (multirun_analysis/targets.py, ``make TARGET SCALE=...``):
every sweep of every target and scale composes into a valid job config, its analysis asks for
artifacts that exist, and the runner drives the real CLI."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from maxent_lightning.config import CONFIG_DIR, compose_config
from maxent_lightning.phases import validate
from multirun_analysis import ARTIFACTS
from multirun_analysis.targets import SCALES, TARGETS, commands, is_cifar, main

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = {p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml")}
PARSER = OverridesParser.create()


def first_job(overrides: list[str]) -> list[str]:
    """A sweep's overrides with every swept value replaced by its first (one job's config)."""
    out = []
    for o in PARSER.parse_overrides(overrides):
        key = o.get_key_element()
        value = next(iter(o.sweep_string_iterator())) if o.is_sweep_override() else \
            o.get_value_element_as_str()
        out.append(f"{key}={value}")
    return out


def sweep_overrides(step: list[str]) -> tuple[str, list[str]]:
    """(experiment, overrides) of a sweep command ``python -m maxent_lightning +experiment=X -m
    ...`` (the sweep folder left out)."""
    assert step[1:3] == ["-m", "maxent_lightning"] and step[4] == "-m", step
    experiment = step[3].removeprefix("+experiment=")
    return experiment, [o for o in step[5:] if not o.startswith("hydra.sweep.dir=")]


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_scale_of_a_target_composes_valid_jobs(name, tmp_path):
    target = TARGETS[name]
    for scale in SCALES:
        if scale == "mnist5k" and is_cifar(target):
            with pytest.raises(ValueError, match="no mnist5k scale"):
                commands(name, scale)
            continue
        *sweeps, analysis = commands(name, scale)
        assert analysis[1:3] == ["-m", "multirun_analysis"]
        tables = analysis[analysis.index("--table") + 1:]
        assert tables and set(tables) <= set(ARTIFACTS), tables
        out = analysis[analysis.index("--out") + 1]
        assert out == str(Path("reports", *([] if scale == "full" else [scale]), name))
        for step in sweeps:
            experiment, overrides = sweep_overrides(step)
            assert experiment in EXPERIMENTS
            folder = step[-1].removeprefix("hydra.sweep.dir=")
            assert folder == str(Path(out.replace("reports", "multirun", 1)) / experiment)
            assert folder in analysis  # the analysis reads every sweep
            cfg = compose_config([f"+experiment={experiment}", *first_job(overrides)],
                                 output_dir=tmp_path)
            validate(cfg)
            if scale == "smoke":  # the plumbing: one seed, few epochs, small CIFAR files
                assert cfg.seed == 0 and cfg.trainer.max_epochs <= 2, (name, experiment)
                if is_cifar(target):
                    assert cfg.data.root.endswith(str(Path("multirun", "smoke", "data")))
            elif scale == "mnist5k":
                assert cfg.data.name == "mnist5k", (name, experiment)
            else:
                assert "mnist5k" not in experiment and cfg.data.name != "mnist5k", name


def test_every_table_and_figure_of_the_paper_has_a_target():
    figures = {f"fig{i}" for i in range(2, 25)}
    tables = {"table1", "table2", "table4"}  # Table 3 lists configurations, not results
    iclr = {"cifar10", "cifar100", "cifar10_complete", "cifar10_barriers", "cifar10_losses",
            "width"}
    assert figures | tables | iclr == set(TARGETS)
    assert {n for n, t in TARGETS.items() if is_cifar(t)} == iclr


def test_the_makefile_lists_every_target():
    text = (ROOT / "Makefile").read_text()
    block = re.search(r"^PAPER := (.*?)\nSCALE", text, re.S | re.M).group(1)
    names = set(re.findall(r"\b(?:table\d|cifar\w*|width)\b", block))
    names |= {f"fig{i}" for i in re.search(r"foreach i,([\d \\\n\t]+),fig", block)
              .group(1).replace("\\", " ").split()}
    assert names == set(TARGETS)


def test_plan_only_plans_every_sweep_through_the_cli_and_skips_the_analysis(tmp_path, capsys):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "multirun_analysis.targets", "table4",
                          "--scale", "smoke", "plan_only=true"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "+experiment=pairwise_mnist5k" in res.stdout and "plan: 12 job(s)" in res.stdout
    assert "multirun_analysis" not in res.stdout  # nothing to analyze
    assert not (tmp_path / "reports").exists() and not (tmp_path / "multirun").exists()


def test_bad_scale_and_listing(capsys):
    assert main(["cifar10", "--scale", "mnist5k"]) == 2
    assert "cifar10 has no mnist5k scale" in capsys.readouterr().err
    assert main(["--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == len(TARGETS) and listed[0].startswith("table1 ")
    assert any(line.startswith("width ") and line.endswith("[smoke, full]") for line in listed)


def test_another_protocol_runs_into_its_own_folders(tmp_path):
    *sweeps, analysis = commands("table2", "mnist5k", protocol="paper")
    experiment, overrides = sweep_overrides(sweeps[0])
    assert sweeps[0][-1] == "hydra.sweep.dir=" + str(Path("multirun/mnist5k/paper/table2",
                                                          experiment))
    assert analysis[analysis.index("--out") + 1] == str(Path("reports/mnist5k/paper/table2"))
    cfg = compose_config([f"+experiment={experiment}", *first_job(overrides)],
                         output_dir=tmp_path)
    assert cfg.protocol.name == "paper" and cfg.imp.scope == "global"
    # the default protocol keeps the plain folders and prunes as the authors' code
    *sweeps, _ = commands("table2", "mnist5k", protocol="authors")
    assert sweeps[0][-1].endswith(str(Path("multirun/mnist5k/table2", experiment)))
    experiment, overrides = sweep_overrides(sweeps[0])
    cfg = compose_config([f"+experiment={experiment}", *first_job(overrides)],
                         output_dir=tmp_path)
    assert cfg.imp.scope == "layerwise"
