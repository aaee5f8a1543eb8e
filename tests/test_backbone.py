"""Any backbone: a user's own class, in a module file on PYTHONPATH, trains with one override
(model=custom model._target_=mypkg.Tiny) through the real CLI and composes with task=merge once
the config names it; what goes wrong inside the class reaches the one-line error whole."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from maxent_lightning.errors import UserError
from maxent_lightning.modulefile import load_module

USER_MODULE = '''
import math

from torch import nn


class Tiny(nn.Module):
    """A user's backbone: (input_shape, num_classes, **kwargs) -> logits."""

    def __init__(self, input_shape, num_classes, hidden=16, fail=False):
        super().__init__()
        if fail:
            raise ValueError("Tiny refuses fail=True:\\nsee mypkg's docs")
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden),
                                  nn.ReLU(), nn.Linear(hidden, num_classes, bias=False))

    def forward(self, x):
        return self.body(x)


class Flat784(nn.Module):
    """Written for 28x28 inputs only: its forward fails on other shapes."""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(784, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


class Wrong(nn.Module):
    """Returns one value per sample instead of logits."""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(math.prod(input_shape), 1)

    def forward(self, x):
        return self.fc(x.flatten(1))
'''
TINY = ["data=digits", "trainer.max_epochs=1", "logger=none", "trainer.enable_progress_bar=false",
        "trainer.accelerator=cpu"]
CUSTOM = ["model=custom", "model._target_=mypkg.Tiny"]


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> Path:
    """A folder holding the user's package ``mypkg``."""
    root = tmp_path_factory.mktemp("user")
    (root / "mypkg").mkdir()
    (root / "mypkg" / "__init__.py").write_text(USER_MODULE)
    return root


def cli(tmp: Path, user: Path, *args: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(user), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-m", "maxent_lightning", *args, *TINY,
                           f"paths.log_dir={tmp}", f"paths.store_dir={tmp}/store"], cwd=tmp,
                          env=env, capture_output=True, text=True, timeout=600)


def one_line(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 2, run.stderr[-2000:]
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr[-2000:]
    return lines[0]


def test_user_backbone_trains_and_merges(user, tmp_path):
    trained = cli(tmp_path, user, "-m", *CUSTOM, "+model.hidden=8", "rewarded=[0],[1]",
                  f"hydra.sweep.dir={tmp_path}/train")
    assert trained.returncode == 0, trained.stderr[-3000:]
    modules = sorted((tmp_path / "store" / "digits").glob("*/module.pt"))
    records = [load_module(p) for p in modules]
    assert sorted(r.rewarded for r in records) == [[0], [1]]
    # only what the user gave reaches the class: no keys of another model config
    assert records[0].spec["model"] == {"_target_": "mypkg.Tiny", "temperature": 5.0,
                                        "hidden": 8}
    given = f"checkpoints=[{modules[0]},{modules[1]}]"
    refused = one_line(cli(tmp_path, user, "task=merge", given))
    assert "names backbone 'mypkg.Tiny'" in refused and "model._target_=mypkg.Tiny" in refused
    merged = cli(tmp_path, user, "task=merge", given, *CUSTOM, f"hydra.run.dir={tmp_path}/merge")
    assert merged.returncode == 0, merged.stderr[-3000:]
    frame = pd.read_csv(tmp_path / "merge" / "results.csv")
    assert list(frame["merge"]) == ["none", "none", "weight", "logit"]
    assert set(frame["model"]) == {"tiny"} and frame["rewarded_acc"].between(0, 1).all()
    assert load_module(tmp_path / "merge" / "merged.pt").rewarded == [0, 1]


def test_exception_inside_the_user_class_is_shown_whole(user, tmp_path):
    line = one_line(cli(tmp_path, user, *CUSTOM, "+model.fail=true"))
    assert "cannot build model 'mypkg.Tiny': ValueError: Tiny refuses fail=True: see mypkg's " \
           "docs;" in line


@pytest.mark.parametrize("overrides, says", [
    (["model._target_=mypkg.Tiny"], ["unexpected keyword argument", "model=custom"]),
    (["model=custom"], ["model=custom needs your backbone class"]),
    (["model=custom", "model._target_=mypkg.Nope"], ["cannot build model 'mypkg.Nope'",
                                                     "ImportError"]),
    (["model=custom", "model._target_=mypkg.Flat784"],
     ["fails on a batch of shape (2, 1, 8, 8): RuntimeError: mat1 and mat2"]),
    (["model=custom", "model._target_=mypkg.Wrong"], ["returns (2, 1)", "(2, 10)"]),
])
def test_bad_user_backbones_fail_in_one_line(user, monkeypatch, run_job, tmp_path, overrides,
                                             says):
    monkeypatch.syspath_prepend(str(user))
    with pytest.raises(UserError) as err:
        run_job(tmp_path / "run", *TINY, *overrides, "rewarded=[0]", fast=False)
    assert all(s in str(err.value) for s in says) and "\n" not in str(err.value)
