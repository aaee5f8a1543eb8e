"""The ICLR half: every model through every task on small CIFAR files in the real pickle format,
and the verbatim CIFAR experiments through the CLI, narrowed to one job (reduced widths)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import CIFAR100_VAL

from maxent_lightning.builders import net_from_record
from maxent_lightning.composition import path_point, sum_states
from maxent_lightning.files import CorruptFile
from maxent_lightning.modulefile import load_module

# Small versions of every model in conf/model/.
MODELS = {
    "mlp_shallow": ["model.hidden=[16]"],
    "mlp_deep": ["model.hidden=[16,8]"],
    "lenet": ["model.channels=[4]", "model.hidden=[16]"],
    "resnet18": ["model.width=2"],
    "vgg11": ["model.width=2"],
}


def cifar(root: Path, name: str = "cifar10") -> list[str]:
    split = [f"data.val_fraction={CIFAR100_VAL}"] if name == "cifar100" else []
    return [f"data={name}", f"paths.data_dir={root}", "data.download=false", *split]


def quick(root: Path, model: str) -> list[str]:
    return [*cifar(root), f"model={model}", *MODELS[model], "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false", "logger=none", "imp.rounds=1",
            "trainer.max_epochs=1", "imp.sparsity=0.5"]


@pytest.mark.parametrize("model", list(MODELS))
def test_every_model_runs_every_task(model, cifar_root, tmp_path, run_job):
    def run(name: str, *task: str):
        return run_job(tmp_path / name, *quick(cifar_root, model), *task, fast=False)

    trained = run("train", "task=train", "rewarded=[3]")
    assert trained["rewarded"] == [3] and math.isfinite(trained["test/loss"])
    single = run("single", "task=single", "classes=[0,1]")
    assert single["modules"] == 2
    pair = run("pairwise", "task=pairwise", "pair=0")
    assert set(pair) >= {"weight", "logit"}
    complete = run("complete", "task=complete", "permutation=0")
    assert len(complete["rewarded_acc_by_step"]["weight"]) == 10
    path = run("mc", "task=mode_connectivity", "path.points=3")
    assert len(path["max_barrier_pct"]["test"]) == 9
    modules = sorted((tmp_path / "store" / "cifar10").glob("*/module.pt"))
    assert len(modules) == 10  # every task above shares the store's modules of this seed
    by_class = {load_module(p).rewarded[0]: p for p in modules}
    merged = run("merge", "task=merge",
                     f"checkpoints=[{by_class[1]},{by_class[2]}]")
    assert (tmp_path / "merge" / "merged.pt").is_file() and merged["union"] == [1, 2]
    evaluated = run("eval", "task=eval", f"checkpoints=[{by_class[4]}]")
    assert 0.0 <= evaluated["rewarded_acc"] <= 1.0
    circuits = run("circuits", "task=circuits", "circuits.classes=[0,1,2]")
    assert "necessity/weight" in circuits
    for job in ("single", "pairwise", "complete", "mc", "merge", "eval", "circuits"):
        frame = pd.read_csv(tmp_path / job / "results.csv")
        assert len(frame) and frame["rewarded_acc"].dropna().between(0, 1).all(), job


def test_batchnorm_state_hashes_sums_and_loads(cifar_root, tmp_path, run_job):
    """num_batches_tracked (0-dim, integer) passes the digest, the sum and the path; a
    checkpoint whose state does not fit its model is one line."""
    for r in (1, 2):
        run_job(tmp_path / f"m{r}", *quick(cifar_root, "resnet18"), "task=train",
                f"rewarded=[{r}]", fast=False)
    a, b = (load_module(tmp_path / f"m{r}" / "module.pt") for r in (1, 2))  # digests verified
    counters = [k for k, v in a.state_dict.items() if v.dim() == 0]
    assert counters and all(a.state_dict[k].dtype == torch.int64 for k in counters)
    for state in (sum_states([a.state_dict, b.state_dict]),
                  path_point(a.state_dict, b.state_dict, 0.25)):
        assert all(torch.equal(state[k], a.state_dict[k]) for k in counters)
        net_from_record(a, state)
    a.state_dict = {k: v for k, v in a.state_dict.items() if k != "fc.weight"}
    with pytest.raises(CorruptFile, match="does not fit its recorded model") as err:
        net_from_record(a)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ the verbatim experiments
def cli(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "maxent_lightning", *args,
                           f"paths.log_dir={tmp}", f"paths.store_dir={tmp}/store",
                           "logger=none", "trainer.enable_progress_bar=false"],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=900)


def test_pairwise_cifar10_resnet18_and_vgg11(cifar_root, tmp_path):
    res = cli(tmp_path, "+experiment=pairwise_cifar10", "-m", "seed=0", "model=resnet18,vgg11",
              "imp=global", "cardinality=1", "pair=0", "model.width=4", "trainer.max_epochs=1",
              *cifar(cifar_root), f"hydra.sweep.dir={tmp_path}/sweep")
    assert res.returncode == 0, res.stderr[-3000:]
    for job, model in enumerate(("resnet18", "vgg11")):
        frame = pd.read_csv(tmp_path / "sweep" / str(job) / "results.csv")
        assert list(frame["merge"]) == ["none", "none", "weight", "logit"]
        assert (frame.model == model).all() and (frame.data == "cifar10").all()
        assert frame.imp.all() and frame.rewarded_acc.between(0, 1).all()


@pytest.mark.slow  # a sweep; CIFAR-10 ResNet18/VGG11 run by default
def test_pairwise_cifar100_resnet18(cifar_root, tmp_path):
    res = cli(tmp_path, "+experiment=pairwise_cifar100", "-m", "seed=0", "model=resnet18",
              "imp=none", "cardinality=1", "pair=0", "model.width=4", "trainer.max_epochs=1",
              *cifar(cifar_root, "cifar100"), f"hydra.sweep.dir={tmp_path}/sweep")
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((tmp_path / "sweep" / "0" / "metrics.json").read_text())
    assert len(metrics["union"]) == 2 and {"weight", "logit"} <= set(metrics)


@pytest.mark.slow  # 100 modules
def test_complete_cifar100_merges_100_modules_and_is_drawn(cifar_root, tmp_path):
    res = cli(tmp_path, "+experiment=complete_cifar100", "-m", "seed=0", "model=resnet18",
              "imp=none", "permutation=0", "model.width=2", "trainer.max_epochs=1",
              "family.cpu_convolutions=true", *cifar(cifar_root, "cifar100"),
              f"hydra.sweep.dir={tmp_path}/sweep")
    assert res.returncode == 0, res.stderr[-3000:]
    frame = pd.read_csv(tmp_path / "sweep" / "0" / "results.csv")
    assert len(frame) == 200 and frame.step.max() == 100  # 100 steps x {weight, logit}
    assert len(list((tmp_path / "store" / "cifar100").glob("*/module.pt"))) == 100
    report = subprocess.run([sys.executable, "-m", "multirun_analysis", str(tmp_path / "sweep"),
                             "--out", str(tmp_path / "report"), "--table", "cifar100"],
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    assert list((tmp_path / "report").glob("cifar100*.png"))
