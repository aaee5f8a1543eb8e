"""A trained module's module.pt is a Lightning checkpoint: ``MaxEntModule.load_from_checkpoint``
restores weights (BatchNorm buffers included), masks, loss and rewarded set, and
``Trainer.test(ckpt_path=...)`` reproduces the module's recorded test metrics; for modules
trained one by one and in a family, MLPs and CNNs. The store's checks still apply."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from maxent_lightning.data.datamodule import MaxEntDataModule
from maxent_lightning.files import CorruptFile
from maxent_lightning.module import MaxEntModule
from maxent_lightning.modulefile import load_module

TEST_KEYS = ("test/loss", "test/acc", "test/rewarded_acc", "test/nonrewarded_entropy")


def check_checkpoint(path: Path, root=None) -> None:
    rec = load_module(path)
    module = MaxEntModule.load_from_checkpoint(path)
    assert module.rewarded == rec.rewarded and module.num_classes == rec.num_classes
    assert module.loss.temperature == rec.temperature
    assert module.loss.targets == rec.spec["loss"]["targets"]
    state = module.net.state_dict()
    assert state.keys() == rec.state_dict.keys()
    assert all(torch.equal(state[k], v) for k, v in rec.state_dict.items())
    assert module.masks.keys() == rec.masks.keys() and module.masks
    assert all(torch.equal(module.masks[k], v) for k, v in rec.masks.items())

    # a fresh module (random weights) restored by Trainer.test from the checkpoint
    fresh = MaxEntModule(**torch.load(path, weights_only=True)["hyper_parameters"])
    assert not all(torch.equal(fresh.net.state_dict()[k], v) for k, v in state.items())
    dm = MaxEntDataModule(rec.spec["data"]["name"], fresh.rewarded, fresh.loss.targets,
                          root=root, download=False)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    tested = trainer.test(fresh, datamodule=dm, ckpt_path=path, verbose=False)[0]
    recorded = json.loads((path.parent / "metrics.json").read_text())
    for key in TEST_KEYS:
        if recorded[key] is None:  # NaN (R = C) is written as null
            continue
        assert tested[key] == pytest.approx(recorded[key], abs=1e-6), key


@pytest.fixture(scope="module")
def mlp(tmp_path_factory, run_job):
    tmp = tmp_path_factory.mktemp("ckpt")
    run_job(tmp / "train", "task=train", "rewarded=[3,5]", "imp.rounds=1")
    return tmp / "train" / "module.pt"


def test_mlp_trained_alone_loads_and_tests_as_recorded(mlp):
    check_checkpoint(mlp)


def test_mlp_trained_in_a_family_loads_and_tests_as_recorded(tmp_path, run_job):
    run_job(tmp_path / "single", "task=single", "classes=[1,2]", "imp.rounds=1")
    paths = sorted((tmp_path / "store").glob("digits/*/module.pt"))
    assert len(paths) == 2
    for path in paths:
        check_checkpoint(path)


def test_lenet_on_mnist5k(tmp_path, run_job):
    run_job(tmp_path / "train", "task=train", "data=mnist5k", "model=lenet",
            "model.channels=[4]", "model.hidden=[16]", "imp.rounds=1", "trainer.max_epochs=1",
            "rewarded=[7]")
    check_checkpoint(tmp_path / "train" / "module.pt")


def test_resnet18_with_batchnorm_buffers_on_cifar_files(tmp_path, run_job, cifar_root):
    run_job(tmp_path / "train", "task=train", "data=cifar10", f"paths.data_dir={cifar_root}",
            "data.download=false", "model=resnet18", "model.width=8", "imp.rounds=1",
            "trainer.max_epochs=1", "rewarded=[0,1]", "trainer.accelerator=cpu", "logger=none",
            "trainer.enable_progress_bar=false", fast=False)
    path = tmp_path / "train" / "module.pt"
    assert any(k.endswith("running_var") for k in load_module(path).state_dict)
    check_checkpoint(path, root=str(cifar_root))


def test_a_tampered_checkpoint_is_refused_by_lightning_too(mlp, tmp_path):
    payload = torch.load(mlp, weights_only=True)
    name = next(iter(payload["state_dict"]))
    payload["state_dict"][name] = payload["state_dict"][name] + 1.0
    torch.save(payload, tmp_path / "module.pt")
    with pytest.raises(CorruptFile, match="digest mismatch"):
        MaxEntModule.load_from_checkpoint(tmp_path / "module.pt")
    with pytest.raises(CorruptFile, match="digest mismatch"):
        load_module(tmp_path / "module.pt")
