"""One fingerprint, one module: every path that can produce a module of a spec produces the same
module (tests/same.py), dropout on; the quickstart's module is the store's; the data is part of a
module's identity. The identity table (identity.py's docstring): every config key has a row, and
its flags decide what each fingerprint covers."""

import copy
import logging
import pickle
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict
from same import assert_same_module

from maxent_lightning import builders, identity
from maxent_lightning.config import CONFIG_DIR, compose_config
from maxent_lightning.data.datamodule import cached_source
from maxent_lightning.errors import UserError
from maxent_lightning.family import unsupported_reason
from maxent_lightning.identity import (
    ROWS,
    first_phase_key,
    group_key,
    job_fingerprint,
    module_spec,
    spec_fingerprint,
)
from maxent_lightning.modulestore import ModuleStore
from maxent_lightning.recipe import Recipe
from maxent_lightning.training import train_module

CLASS = [4]


@pytest.mark.parametrize("loss", ["maxent", "cross_entropy"])
def test_task_train_stores_the_module_a_family_trains(tmp_path, run_job, make_cfg, loss):
    """task=train (Lightning, alone) and task=single (the family, beside other modules): one
    fingerprint, one module, with dropout 0.5 (mlp default)."""
    extra = [f"loss={loss}", "imp.rounds=1"]
    run_job(tmp_path / "a" / "train", "task=train", f"rewarded={CLASS}", *extra)
    run_job(tmp_path / "b" / "single", "task=single", "classes=[1,4,8]", *extra)
    cfg = make_cfg(*extra)
    assert float(cfg.model.dropout) == 0.5
    name = spec_fingerprint(module_spec(cfg, CLASS))
    trained, family = (tmp_path / s / "store" / "digits" / name for s in ("a", "b"))
    assert_same_module(trained, family)
    assert (tmp_path / "a" / "train" / "module.pt").samefile(trained / "module.pt")


def test_the_quickstarts_module_is_reused_by_the_next_composition_job(tmp_path, run_job,
                                                                      caplog):
    run_job(tmp_path / "train", "task=train", "rewarded=[2]", "imp.rounds=1")
    stored = list((tmp_path / "store" / "digits").iterdir())
    before = (stored[0] / "module.pt").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="maxent_lightning.modulestore"):
        run_job(tmp_path / "single", "task=single", "classes=[2,6]", "imp.rounds=1")
    assert "training 1 missing module(s) of seed 0: R=[6]" in caplog.text
    assert (stored[0] / "module.pt").stat().st_mtime_ns == before


def test_a_dense_twin_and_its_imp_module_are_those_lightning_trains_alone(tmp_path, make_cfg):
    """A dense module trained on the stack row of an IMP module's round 0 (family) is the one
    Lightning trains alone, and so is that IMP module, when the dense training lasts as long as
    round 0, longer or shorter; for cross-entropy too (per-member streams), dropout on."""
    for loss, round_epochs in (("maxent", 2), ("maxent", 1), ("cross_entropy", 3)):
        imp = make_cfg(f"loss={loss}", "imp.rounds=1", f"imp.round_epochs={round_epochs}")
        dense = make_cfg(f"loss={loss}", "imp=none")  # 2 epochs
        store = ModuleStore(tmp_path / f"{loss}{round_epochs}")
        twin_dir, imp_dir = store.dir_for(dense, CLASS), store.dir_for(imp, CLASS)
        (one,) = store.passes(imp, [(CLASS, imp_dir)], dense=[(dense, [(CLASS, twin_dir)])])
        assert one.twins == {tuple(CLASS): (Recipe.of(dense), twin_dir)}
        store.train(one)
        alone = tmp_path / f"alone-{loss}{round_epochs}"
        train_module(dense, alone / "dense", CLASS, quiet=True)
        twin, own = assert_same_module(twin_dir, alone / "dense")
        assert twin["stop_epochs"] == own["stop_epochs"] == [2]
        train_module(imp, alone / "imp", CLASS, quiet=True)
        ours, own = assert_same_module(imp_dir, alone / "imp")
        assert ours["stop_epochs"] == own["stop_epochs"] == [round_epochs, 2]


def test_another_data_folder_is_another_module(tmp_path, write_cifar, make_cfg):
    """The data's digest is part of the spec: a moved copy is the same data, a partial copy or an
    edited file is not; an eval on other data than the module's is refused."""
    write_cifar(tmp_path / "a", "cifar10", n_train=20, n_test=10, learnable=True)
    shutil.copytree(tmp_path / "a", tmp_path / "moved")
    write_cifar(tmp_path / "partial", "cifar10", n_train=19, n_test=10, learnable=True)

    def fingerprint(root):
        cfg = make_cfg("data=cifar10", f"data.root={root}", "data.download=false",
                       "model=resnet18", "model.width=4", fast=False)
        return spec_fingerprint(module_spec(cfg, [1]))

    a = fingerprint(tmp_path / "a")
    assert fingerprint(tmp_path / "moved") == a
    assert fingerprint(tmp_path / "partial") != a
    batch = tmp_path / "moved" / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(_edited_batch(batch.read_bytes()))
    cached_source.cache_clear()  # data are read once per process: as a new process reads it
    assert fingerprint(tmp_path / "moved") != a


def _edited_batch(blob: bytes) -> bytes:
    """One pixel of a pickled CIFAR batch changed (same size, still a valid pickle)."""
    batch = pickle.loads(blob)
    batch[b"data"][0, 0] ^= 1
    return pickle.dumps(batch)


def test_an_eval_on_other_data_than_the_modules_is_refused(tmp_path, run_job, write_cifar):
    write_cifar(tmp_path / "a", "cifar10", n_train=20, n_test=10, learnable=True)
    write_cifar(tmp_path / "b", "cifar10", n_train=21, n_test=10, learnable=True)
    cnn = ["data=cifar10", "data.download=false", "model=resnet18", "model.width=4",
           "imp.rounds=1", "trainer.max_epochs=1", "trainer.accelerator=cpu", "logger=none",
           "trainer.enable_progress_bar=false", "rewarded=[1]"]
    run_job(tmp_path / "train", "task=train", f"data.root={tmp_path / 'a'}", *cnn, fast=False)
    module = tmp_path / "train" / "module.pt"
    run_job(tmp_path / "ok", "task=eval", f"checkpoints=[{module}]", f"data.root={tmp_path / 'a'}",
            *cnn, fast=False)
    with pytest.raises(UserError, match="was trained on other cifar10 data"):
        run_job(tmp_path / "bad", "task=eval", f"checkpoints=[{module}]",
                f"data.root={tmp_path / 'b'}", *cnn, fast=False)


# ---------------------------------------------------------------- the identity table
GROUPS = sorted(p for p in Path(CONFIG_DIR).iterdir()
                if p.is_dir() and p.name not in ("hydra", "local"))
# The default, every experiment and every option of every config group (recipes are appended).
CONFIGS = [[]] + [[f"{'+' if g.name == 'recipe' else ''}{g.name}={y.stem}"]
                  for g in GROUPS for y in sorted(g.glob("*.yaml"))]


@pytest.mark.parametrize("overrides", CONFIGS, ids=lambda o: o[0] if o else "default")
def test_every_config_key_has_a_row(overrides):
    cfg = compose_config(overrides, output_dir="/tmp/out")
    keys = [*cfg, *(f"trainer.{k}" for k in cfg.trainer), *(f"data.{k}" for k in cfg.data)]
    assert [k for k in keys if k not in ROWS] == []


@pytest.mark.parametrize("overrides", [[], ["model=lenet"], ["loss=cross_entropy"],
                                       ["imp=global", "imp.rounds=1"], ["protocol=paper"],
                                       ["+experiment=pairwise_mnist5k"], ["logger=csv"],
                                       ["trainer.precision=bf16-mixed", "temperature=2"]],
                         ids=" ".join)
def test_a_recipe_is_the_module_of_its_config_and_no_more(overrides):
    """The store and the trainers read a recipe: the same module ids as the job config it was
    built from, and of the config only the groups a fit instantiates (no root config)."""
    cfg = compose_config(["data=digits", *overrides], output_dir="/tmp/out")
    recipe = Recipe.of(cfg)
    assert module_spec(recipe, CLASS) == module_spec(cfg, CLASS)
    assert first_phase_key(recipe, CLASS) == first_phase_key(cfg, CLASS)
    nodes = {f for f, v in vars(recipe).items() if OmegaConf.is_config(v)}
    assert nodes == {"data", "model", "loss", "imp", "optimizer", "callbacks", "trainer",
                     "family", "logger"}
    assert all(getattr(recipe, f) is cfg[f] for f in nodes)
    assert recipe.rewarded == tuple(cfg.rewarded) and recipe.seed == cfg.seed
    if "wandb" in cfg.logger:  # what W&B records of a module's run: the resolved config
        assert recipe.run_config["imp"] == OmegaConf.to_container(cfg.imp, resolve=True)
    else:
        assert recipe.run_config == {}


def test_the_table_reads_as_rows():
    assert len(ROWS) > 60 and {"*", "data.*", "trainer.*"} <= set(ROWS)
    assert identity.table("k  m\n---  -\nseed  yes  yes  no  -  a key\n") == {
        "seed": identity.Row("yes", "yes", "no", "-")}
    with pytest.raises(ValueError, match="bad row"):
        identity.table("k\n---\nseed  yes  maybe  no  -\n")
    # build_net strips what model_identity folds into the spec's model
    assert identity.IN_MODEL == builders.MODEL_META_KEYS


def changed(key: str, value):
    """Another value of ``key`` (``value``: its plain value, None where absent)."""
    special = {"data.name": "mnist5k", "data.normalize": {"mean": [0.4], "std": [0.3]}}
    if key in special:
        return special[key]
    if isinstance(value, dict):
        return {**value, "probe": 1}
    if isinstance(value, list):
        return [*value, 9]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    return 1 if value is None else f"{value}x"


def fingerprints(cfg) -> dict:
    spec = module_spec(cfg)
    return {"module": spec_fingerprint(spec), "job": job_fingerprint(cfg),
            "group": group_key(cfg, spec)}


# checkpoints (job: the files' digests) is covered by tests/test_trust.py
ROW_KEYS = [k.replace("*", "probe") for k in ROWS if k != "checkpoints"]


def test_the_tables_flags_drive_the_fingerprints(make_cfg):
    """Each row's key changed: the module id, job id and group key change where its row says."""
    base_cfg = make_cfg()
    base, wrong = fingerprints(base_cfg), []
    for key in ROW_KEYS:
        cfg = copy.deepcopy(base_cfg)
        value = OmegaConf.select(cfg, key)
        with open_dict(cfg):
            OmegaConf.update(cfg, key, changed(key, builders.plain(value)), merge=False,
                             force_add=True)
        flags = identity.row(key)
        expected = {"module": flags.module != "no", "job": flags.job != "no",
                    "group": flags.group == "yes"}
        got = {k: v != base[k] for k, v in fingerprints(cfg).items()}
        if got != expected:
            wrong.append((key, expected, got))
    assert wrong == []


def test_the_family_column_is_what_the_family_trainer_takes(make_cfg):
    """A trainer key marked no sends the config to Lightning; one marked yes does not."""
    wrong = []
    for key in [k.replace("*", "probe") for k in ROWS if k.startswith("trainer.")]:
        cfg = make_cfg()
        with open_dict(cfg):
            if OmegaConf.select(cfg, key) is None:
                OmegaConf.update(cfg, key, False, force_add=True)
        refused = "trainer option" in (unsupported_reason(cfg) or "")
        if refused != (identity.row(key).family == "no"):
            wrong.append(key)
    assert wrong == []


def test_the_first_phase_key_leaves_out_imp_and_the_epochs(make_cfg):
    """Equal keys train alike epoch by epoch (a shorter first phase is the longer one's start);
    anything else that decides the training changes the key."""
    imp = make_cfg("imp.rounds=1", "imp.round_epochs=2")
    key = first_phase_key(imp, CLASS)
    assert first_phase_key(make_cfg("imp.rounds=1", "imp.round_epochs=2", "imp.sparsity=0.5"),
                           CLASS) == key
    assert first_phase_key(make_cfg("imp=none", "trainer.max_epochs=2"), CLASS) == key
    assert first_phase_key(make_cfg("imp.rounds=1", "imp.round_epochs=1"), CLASS) == key
    assert first_phase_key(make_cfg("imp=none", "trainer.max_epochs=5"), CLASS) == key
    assert first_phase_key(make_cfg("imp=none", "seed=1"), CLASS) != key
    assert first_phase_key(make_cfg("imp=none", "optimizer.lr=0.01"), CLASS) != key
    assert first_phase_key(make_cfg("imp=none"), [5]) != key
