"""Nothing in a file runs code, every module file is verified whole before use, and a
fingerprint names one module: crafted and edited checkpoints, data in the identity, jobs keyed
by their checkpoints' contents."""

import pickle
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from maxent_lightning.errors import UserError
from maxent_lightning.files import CorruptFile, save_torch
from maxent_lightning.identity import job_fingerprint, module_spec, spec_fingerprint
from maxent_lightning.module import MaxEntModule
from maxent_lightning.modulefile import load_module, record_digest
from maxent_lightning.modulestore import ModuleStore


@pytest.fixture(scope="module")
def module_file(tmp_path_factory, run_job):
    """A tiny trained module (task=train: in the store, linked into the run directory)."""
    tmp = tmp_path_factory.mktemp("trust")
    run_job(tmp / "train", "task=train", "rewarded=[3]", "imp.rounds=1", "trainer.max_epochs=1")
    return tmp / "train" / "module.pt"


def crafted(source: Path, target: Path, edit, redigest: bool = True) -> Path:
    """A copy of a module file with ``edit(payload)`` applied; its digest recomputed (as an
    attacker would) unless ``redigest`` is false."""
    payload = torch.load(source, weights_only=True)
    edit(payload)
    if redigest:
        payload["digest"] = record_digest(payload)
    save_torch(target, payload)
    return target


def write_marker(marker: Path) -> dict:
    """A config that, instantiated by Hydra, would create ``marker``."""
    return {"_target_": "pathlib.Path.write_text", "self": str(marker), "data": "pwned"}


@pytest.mark.parametrize("where", ["nested", "top", "hparams_net", "hparams_loss"])
def test_a_crafted_module_file_runs_no_code(module_file, tmp_path, run_job, where):
    marker = tmp_path / "marker"

    def edit(payload):
        if where == "nested":
            payload["spec"]["model"]["hidden"] = write_marker(marker)
        elif where == "top":
            payload["spec"]["model"] = write_marker(marker)
        elif where == "hparams_net":
            payload["hyper_parameters"]["net"] = write_marker(marker)
        else:
            payload["hyper_parameters"]["loss"] = write_marker(marker)
        payload["fingerprint"] = spec_fingerprint(payload["spec"])

    bad = crafted(module_file, tmp_path / "bad" / "module.pt", edit)
    with pytest.raises((UserError, CorruptFile)):
        MaxEntModule.load_from_checkpoint(bad)
    if where in ("nested", "top"):
        for task in ("eval", "merge"):
            with pytest.raises((UserError, CorruptFile)):
                run_job(tmp_path / task, f"task={task}", f"checkpoints=[{bad}]")
    assert not marker.exists()


def test_a_pickled_payload_in_a_module_file_is_never_unpickled(module_file, tmp_path, run_job):
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "pwned"))

    payload = torch.load(module_file, weights_only=True)
    payload["metrics"]["note"] = Payload()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"")
    torch.save(payload, bad)  # a real pickle of the object, as a crafted file would hold
    with pytest.raises(CorruptFile, match="unreadable"):
        load_module(bad)
    with pytest.raises(CorruptFile, match="unreadable"):
        MaxEntModule.load_from_checkpoint(bad)
    with pytest.raises(CorruptFile, match="unreadable"):
        run_job(tmp_path / "eval", "task=eval", f"checkpoints=[{bad}]")
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(bad, weights_only=True)  # what the loaders rely on


@pytest.mark.parametrize("field,value", [("temperature", 1.0), ("rewarded", [4]),
                                         ("theta0_id", "0" * 16), ("seed", 7)])
def test_every_recorded_field_is_covered_by_the_digest(module_file, tmp_path, field, value):
    bad = crafted(module_file, tmp_path / "module.pt",
                  lambda p: p.__setitem__(field, value), redigest=False)
    with pytest.raises(CorruptFile, match="digest mismatch"):
        load_module(bad)
    with pytest.raises(CorruptFile, match="digest mismatch"):
        MaxEntModule.load_from_checkpoint(bad)


def test_the_recorded_spec_must_hash_to_the_fingerprint(module_file, tmp_path):
    def edit(payload):
        payload["spec"]["optimizer"]["lr"] = 0.5  # fingerprint left as it was
    bad = crafted(module_file, tmp_path / "module.pt", edit)
    with pytest.raises(CorruptFile, match="spec hashes to"):
        load_module(bad)


def test_a_store_directory_must_hold_the_module_of_its_name(module_file, tmp_path, make_cfg):
    cfg = make_cfg("imp.rounds=1", "trainer.max_epochs=1", "rewarded=[3]")
    store = ModuleStore(tmp_path / "store", train_missing=False)
    target = store.dir_for(cfg, [3])
    shutil.copytree(module_file.parent.parent / "store", tmp_path / "store", dirs_exist_ok=True)
    assert store.check(target) is None  # the genuine module of that fingerprint
    other = store.dir_for(cfg, [5])
    other.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(target, other)  # the [3] module under the [5] fingerprint
    with pytest.raises(UserError, match="records module"):
        store.check(other)


def test_trained_modules_name_their_data_and_their_version(make_cfg):
    spec = module_spec(make_cfg())
    assert spec["identity"] >= 2 and len(spec["data"]["digest"]) == 16
    assert "root" not in spec["data"]


def test_a_merge_job_is_keyed_by_its_checkpoints_contents(module_file, tmp_path, make_cfg,
                                                         run_job):
    """Replace a checkpoint at the same path: the job is no longer 'done'."""
    given = tmp_path / "m" / "module.pt"
    given.parent.mkdir()
    shutil.copyfile(module_file, given)
    cfg = make_cfg("task=eval", f"checkpoints=[{given}]")
    before = job_fingerprint(cfg)
    run_job(tmp_path / "job", "task=eval", f"checkpoints=[{given}]")
    crafted(module_file, given, lambda p: p["metrics"].__setitem__("note", "retrained"))
    with open_dict(cfg):
        cfg.checkpoints = [str(given)]
    assert job_fingerprint(cfg) != before
    with pytest.raises(UserError, match="different config"):  # not skipped with old results
        run_job(tmp_path / "job", "task=eval", f"checkpoints=[{given}]")
