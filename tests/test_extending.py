"""docs/extending.md, followed for real: each recipe's files are written into tmp_path exactly as
the page gives them (a block whose first comment line names its path under ext/), and its
commands run as written through the real CLI (test-sized by overrides appended to them), so that
the page and the code cannot drift apart."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from maxent_lightning.data.sources import load_source
from maxent_lightning.errors import UserError
from maxent_lightning.modulefile import load_module

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "extending.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
SMALL = ["trainer.max_epochs=2", "logger=none", "trainer.enable_progress_bar=false",
         "trainer.accelerator=cpu"]


@pytest.fixture(autouse=True)
def forget_mylab():
    """Each test imports its own ext/mylab."""
    yield
    for name in [m for m in sys.modules if m == "mylab" or m.startswith("mylab.")]:
        del sys.modules[name]


def blocks(recipe: int) -> list[tuple[str, str]]:
    """(language, text) of each code block of recipe ``recipe`` ("## N. ...")."""
    sections = re.split(r"^## (?=\d+\. )", PAGE.read_text(), flags=re.M)
    section = next(s for s in sections if s.startswith(f"{recipe}. "))
    return FENCE.findall(section)


def follow(recipe: int, tmp: Path, *extra: str) -> tuple[list[str], list[str]]:
    """Write the recipe's files under ``tmp``, run its commands there (``extra`` appended);
    returns (their stdout, the recipe's Python steps that are not files)."""
    outputs, steps = [], []
    for lang, text in blocks(recipe):
        path = re.match(r"(?:# @package \S+\n)?# (ext/\S+)\n", text)
        if path:
            (tmp / path[1]).parent.mkdir(parents=True, exist_ok=True)
            (tmp / path[1]).write_text(text)
        elif lang == "python":
            steps.append(text)
    for lang, text in blocks(recipe):
        if lang != "bash":
            continue
        env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline",
               "HYDRA_FULL_ERROR": "0",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        run = subprocess.run(["bash", "-c", f"{text.strip()} {' '.join(extra)}"], cwd=tmp,
                             env=env, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stderr[-3000:]
        outputs.append(run.stdout)
    return outputs, steps


def test_a_data_set_of_your_own(tmp_path, monkeypatch):
    follow(1, tmp_path, *SMALL, "hydra.run.dir=run")
    [path] = (tmp_path / "store" / "mylab.data.blobs").glob("*/module.pt")
    rec = load_module(path)
    assert rec.num_classes == 3 and rec.rewarded == [1] and rec.input_shape == (8,)
    assert rec.spec["data"]["name"] == "mylab.data.blobs" and rec.spec["data"]["digest"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["fingerprint"] == path.parent.name and 0 <= metrics["test/acc"] <= 1
    # a name that imports nothing, or a loader returning something else: one line each
    monkeypatch.syspath_prepend(str(tmp_path / "ext"))
    with pytest.raises(UserError, match="cannot import data source 'mylab.data.nope'"):
        load_source("mylab.data.nope")
    with pytest.raises(UserError, match="returned a bool"):
        load_source("operator.is_")


def test_a_model_of_your_own(tmp_path):
    follow(2, tmp_path, *SMALL, "hydra.run.dir=run")
    [path] = (tmp_path / "store" / "digits").glob("*/module.pt")
    rec = load_module(path)
    assert rec.spec["model"] == {"_target_": "mylab.models.Tiny", "hidden": 16,
                                 "temperature": 5.0}
    # the config's hidden=16 reached the class: 8x8 digits -> 16 units -> 10 logits
    assert rec.state_dict["body.1.weight"].shape == (16, 64)
    assert rec.state_dict["body.3.weight"].shape == (10, 16)
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_a_task_of_your_own(tmp_path):
    [out], _ = follow(3, tmp_path, *SMALL, "model.hidden=[32]", "hydra.sweep.dir=sweep")
    assert "4 distinct module(s)" in out, out  # the planner asked the task's needs
    assert len(list((tmp_path / "store" / "digits").glob("*/module.pt"))) == 4
    for job, union in (("0", "0-1"), ("1", "2-3")):
        frame = pd.read_csv(tmp_path / "sweep" / job / "results.csv", dtype={"class_set": str})
        assert list(frame["merge"]) == ["none", "none", "weight"]
        assert list(frame["class_set"])[-1] == union
        assert frame["rewarded_acc"].between(0, 1).all()
        metrics = json.loads((tmp_path / "sweep" / job / "metrics.json").read_text())
        assert metrics["task"] == "sum_of" and metrics["rows"] == 3


def test_a_merge_of_your_own(tmp_path, run_job, monkeypatch, capsys):
    run_job(tmp_path / "single", "task=single", "classes=[0,1]")  # two modules in the store
    _, [step] = follow(4, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "ext"))
    scope: dict = {}
    exec(compile(step, "docs/extending.md", "exec"), scope)
    assert f"overlap_mean R=[0, 1]: rewarded acc {scope['scores']['rewarded_acc']:.4f}" \
        in capsys.readouterr().out
    a, b = scope["records"]
    merged = scope["overlap_mean"]([a, b])
    for name in a.masks:  # alive in both: their mean; alive in one: its value; else 0
        both = a.masks[name] & b.masks[name]
        expect = torch.where(both, (a.state_dict[name] + b.state_dict[name]) / 2,
                             a.state_dict[name] + b.state_dict[name])
        assert torch.allclose(merged[name], expect)
    assert any((a.masks[n] & b.masks[n]).any() for n in a.masks)  # the mean did something


def test_a_pruning_strategy_of_your_own(tmp_path):
    follow(5, tmp_path, *SMALL, "model.hidden=[32]", "hydra.run.dir=run")
    [path] = (tmp_path / "store" / "digits").glob("*/module.pt")
    rec = load_module(path)
    density = {n: m.float().mean().item() for n, m in rec.masks.items()}
    assert set(density) == {"features.1.weight", "classifier.weight"}  # no biases
    assert density["features.1.weight"] == pytest.approx(0.1, abs=0.005)  # P = 0.9
    assert density["classifier.weight"] == 1.0  # only the input layer is pruned
    assert rec.spec["imp"]["scope"] == "mylab.pruning.INPUT_LAYER"
