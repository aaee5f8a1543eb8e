"""A module is a Lightning citizen: its hyper-parameters are its recipe (loggers get them), any
checkpoint Lightning writes of it reloads with ``MaxEntModule.load_from_checkpoint`` (a fit's
checkpoint claims nothing of the store), module files are written by the module's own
``on_save_checkpoint``, its masks hold through any fit, and a module file says in one line
that it cannot resume a fit."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from maxent_lightning.data.datamodule import MaxEntDataModule
from maxent_lightning.errors import UserError
from maxent_lightning.files import CorruptFile
from maxent_lightning.module import MaxEntModule, save_module
from maxent_lightning.modulefile import (
    HPARAMS,
    MODULE_FORMAT,
    load_module,
    module_hparams,
    record_of,
)


@pytest.fixture(scope="module")
def pruned(tmp_path_factory, run_job):
    """A module trained to 99% sparsity through the real task (two IMP rounds)."""
    tmp = tmp_path_factory.mktemp("citizen")
    run_job(tmp / "train", "task=train", "rewarded=[3,5]", "imp.rounds=2", "imp.sparsity=0.99",
            "trainer.max_epochs=1")
    return tmp / "train" / "module.pt"


def datamodule(module: MaxEntModule) -> MaxEntDataModule:
    return MaxEntDataModule("digits", module.rewarded, module.loss.targets, download=False)


def fit(module, root, steps: int, ckpt=None, **kwargs) -> L.Trainer:
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, limit_val_batches=0,
                        enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(root), **kwargs)
    trainer.fit(module, datamodule=datamodule(module), ckpt_path=ckpt)
    return trainer


def zeros(module: MaxEntModule) -> dict[str, int]:
    params = dict(module.net.named_parameters())
    return {n: int((params[n] == 0).sum()) for n in module.masks}


def test_hyper_parameters_are_the_recipe(pruned):
    record = load_module(pruned)
    module = MaxEntModule.load_from_checkpoint(pruned)
    assert set(module.hparams) == set(HPARAMS)
    assert dict(module.hparams) == module_hparams(record)
    assert module.hparams["net"]["_target_"] == "maxent_lightning.models.MLP"
    assert module.hparams["loss"]["temperature"] == record.temperature
    assert module.hparams["rewarded"] == [3, 5] and module.hparams["num_classes"] == 10
    # the recipe rebuilds the same net: a module made from the hyper-parameters takes the weights
    fresh = MaxEntModule(**module.hparams)
    fresh.net.load_state_dict(record.state_dict)


def test_a_plain_fit_cannot_revive_a_pruned_weight(pruned, tmp_path):
    module = MaxEntModule.load_from_checkpoint(pruned)
    pruned_entries = {n: int((~m).sum()) for n, m in module.masks.items()}
    before = zeros(module)
    assert all(before[n] >= pruned_entries[n] > 0 for n in before)
    weights = {n: p.detach().clone() for n, p in module.net.named_parameters()}
    fit(module, tmp_path, 5)
    after = zeros(module)
    print("zeros of each masked weight before/after a 5-step fit:",
          {n: (before[n], after[n], pruned_entries[n]) for n in before})
    assert all(after[n] >= pruned_entries[n] for n in after), (after, pruned_entries)
    params = dict(module.net.named_parameters())
    assert any(not torch.equal(params[n], w) for n, w in weights.items())  # the fit trained
    assert module.stored is None  # no longer the module the store holds


def test_a_model_checkpoint_of_a_fit_reloads_with_masks_and_claims_no_store(pruned, tmp_path):
    module = MaxEntModule.load_from_checkpoint(pruned)
    fit(module, tmp_path, 5, callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt")])
    [path] = (tmp_path / "ckpt").glob("*.ckpt")
    payload = torch.load(path, weights_only=True)
    assert "format" not in payload and "digest" not in payload and "optimizer_states" in payload
    with pytest.raises(CorruptFile, match="not a maxent_lightning module checkpoint"):
        record_of(payload, str(path))
    reloaded = MaxEntModule.load_from_checkpoint(path)
    assert dict(reloaded.hparams) == dict(module.hparams)
    assert reloaded.masks.keys() == module.masks.keys()
    assert all(torch.equal(reloaded.masks[n], m) for n, m in module.masks.items())
    state = module.net.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in reloaded.net.state_dict().items())
    # and it resumes the fit, masks enforced
    pruned_entries = {n: int((~m).sum()) for n, m in reloaded.masks.items()}
    trainer = fit(reloaded, tmp_path, 8, ckpt=path)
    assert trainer.global_step == 8
    assert all(zeros(reloaded)[n] >= pruned_entries[n] for n in pruned_entries)


def test_a_model_checkpoint_of_a_module_built_from_configs_reloads(pruned, tmp_path):
    module = MaxEntModule(**torch.load(pruned, weights_only=True)["hyper_parameters"])
    fit(module, tmp_path, 3, callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt")])
    [path] = (tmp_path / "ckpt").glob("*.ckpt")
    reloaded = MaxEntModule.load_from_checkpoint(path)
    assert reloaded.masks == {} and dict(reloaded.hparams) == dict(module.hparams)
    state = module.net.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in reloaded.net.state_dict().items())


@pytest.mark.parametrize("edit", ["extra", "missing", "hostile_net"])
def test_a_fit_checkpoint_runs_no_code_and_names_only_the_recipe(pruned, tmp_path, edit):
    module = MaxEntModule.load_from_checkpoint(pruned)
    marker = tmp_path / "marker"
    hparams = dict(module.hparams)
    if edit == "extra":
        hparams["backbones"] = ["pathlib.Path"]
    elif edit == "missing":
        del hparams["loss"]
    else:
        hparams["net"] = {**hparams["net"], "hidden": {
            "_target_": "pathlib.Path.write_text", "self": str(marker), "data": "pwned"}}
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hparams,
                "pytorch-lightning_version": L.__version__}, tmp_path / "bad.ckpt")
    with pytest.raises(CorruptFile, match="hyper-parameters other than|names no code"):
        MaxEntModule.load_from_checkpoint(tmp_path / "bad.ckpt")
    assert not marker.exists()


def test_a_module_file_cannot_resume_a_fit_and_says_why(pruned, tmp_path):
    module = MaxEntModule.load_from_checkpoint(pruned)
    with pytest.raises(UserError, match="holds a finished module, not a fit's state") as err:
        fit(module, tmp_path, 2, ckpt=pruned)
    assert "\n" not in str(err.value) and "without ckpt_path" in str(err.value)


def test_module_files_are_written_by_the_module_hooks(pruned, tmp_path):
    record = load_module(pruned)
    payload = MaxEntModule.from_record(record).checkpoint()
    assert payload["format"] == MODULE_FORMAT
    assert record_of(payload, "the payload").fingerprint == record.fingerprint
    saved = load_module(save_module(tmp_path / "module.pt", record))
    assert saved.digest == record.digest  # the same file content, field by field
    stored = torch.load(pruned, weights_only=True)
    assert set(stored) == set(payload) and stored["digest"] == payload["digest"]


def test_only_the_stored_weights_are_sealed_as_the_stored_module(pruned, tmp_path):
    module = MaxEntModule.load_from_checkpoint(pruned)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.test(module, datamodule=datamodule(module), verbose=False)
    trainer.save_checkpoint(tmp_path / "tested.ckpt")  # untouched: still the stored module
    assert load_module(tmp_path / "tested.ckpt").fingerprint == load_module(pruned).fingerprint
    with pytest.raises(UserError, match="holds a finished module, not a fit's state"):
        fit(module, tmp_path, 2, ckpt=tmp_path / "tested.ckpt")
    with torch.no_grad():
        next(iter(module.net.parameters())).add_(1.0)
    trainer.save_checkpoint(tmp_path / "edited.ckpt")
    assert "format" not in torch.load(tmp_path / "edited.ckpt", weights_only=True)
    with pytest.raises(CorruptFile, match="not a maxent_lightning module checkpoint"):
        load_module(tmp_path / "edited.ckpt")
    assert MaxEntModule.load_from_checkpoint(tmp_path / "edited.ckpt").masks.keys() == \
        module.masks.keys()
