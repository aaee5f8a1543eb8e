"""Every rewarded class needs training and validation samples after the fixed split, for every
loss: refused in one line by the data module, the CLI and the family trainer."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from maxent_lightning.data.cifar_files import cycled_labels
from maxent_lightning.data.datamodule import MaxEntDataModule, split_indices
from maxent_lightning.errors import UserError
from maxent_lightning.family import train_family

N_TRAIN = 10  # images per CIFAR-10 training batch: 50 in all, 10 of them validation
LOSSES = ["maxent", "quasi_maxent", "cross_entropy"]


def cifar_without(root: Path, write_cifar, split: str) -> Path:
    """CIFAR-10 files in which class 3 has no samples in ``split`` ("training": no training
    images at all; "validation": training images, none of them drawn for validation)."""
    labels = cycled_labels(5 * N_TRAIN, 10)
    drop = labels == 3
    if split == "validation":
        drop[split_indices(len(labels), 0.2, 0)[0].numpy()] = False  # keep its training ones
    labels[drop] = 4
    write_cifar(root, "cifar10", n_train=N_TRAIN, labels=labels)
    return root


def refusal(split: str, rewarded: str = "[3]") -> str:
    return (f"rewarded={rewarded} has no {split} samples of class 3 ('class3') in data set "
            "'cifar10' (after the fixed train/validation split); choose another rewarded set "
            "or use more data")


@pytest.mark.parametrize("targets", LOSSES)
@pytest.mark.parametrize("split", ["training", "validation"])
def test_data_module_refuses_each_rewarded_class_without_samples(tmp_path, write_cifar, targets,
                                                                 split):
    root = str(cifar_without(tmp_path, write_cifar, split))
    dm = MaxEntDataModule("cifar10", [2], targets, root=root, download=False)
    dm.setup("fit")
    assert (dm.val[2] == 2).any()  # a class with samples in both splits is accepted
    assert bool((dm.splits.y_train == 3).any()) == (split == "validation")
    for rewarded in ([3], [2, 3]):  # one class without samples refuses the whole set
        dm = MaxEntDataModule("cifar10", rewarded, targets, root=root, download=False)
        with pytest.raises(UserError) as err:
            dm.setup("fit")
        assert str(err.value) == refusal(split, str(rewarded))


def cli(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "maxent_lightning", *args, "logger=none",
                           f"hydra.run.dir={tmp}/run", f"paths.store_dir={tmp}/store"],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("loss", ["maxent", "cross_entropy"])
def test_cli_refuses_a_rewarded_class_without_samples(tmp_path, write_cifar, loss):
    root = cifar_without(tmp_path / "data", write_cifar, "validation")
    res = cli(tmp_path, "task=train", "data=cifar10", f"data.root={root}", "data.download=false",
              "model=mlp_shallow", "model.hidden=[8]", "trainer.accelerator=cpu", f"loss={loss}",
              "rewarded=[3]")
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("error:")]
    assert lines == [f"error: {refusal('validation')}"], res.stderr[-2000:]
    assert "Traceback" not in res.stderr and not (tmp_path / "store").exists()


@pytest.mark.parametrize("loss", ["maxent", "cross_entropy"])
def test_family_refuses_any_member_without_samples(tmp_path, write_cifar, make_cfg, run_job,
                                                   loss):
    root = cifar_without(tmp_path / "data", write_cifar, "training")
    data = ["data=cifar10", f"data.root={root}", "data.download=false", "model=mlp_shallow",
            "model.hidden=[8]", f"loss={loss}", "imp=none", "trainer.max_epochs=1"]
    cfg = make_cfg(*data)
    with pytest.raises(UserError) as err:  # the first member is fine, the second is not
        train_family(cfg, [([2], tmp_path / "m2"), ([3], tmp_path / "m3")])
    assert str(err.value) == refusal("training")
    assert not (tmp_path / "m2" / "module.pt").exists()
    with pytest.raises(UserError) as err:
        run_job(tmp_path / "single", *data, "task=single", "classes=[2,3]")
    assert str(err.value) == refusal("training")
