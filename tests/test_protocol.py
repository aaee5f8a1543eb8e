"""The two protocols (conf/protocol/): protocol=authors (the released code, which produced the
published numbers; the default) and protocol=paper (the text) select every documented
difference; each lands where its setting lives, and the command line still wins."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from test_experiments import EXPERIMENTS, cli
from test_sources import _write_har, _write_mnist, _write_yeast

from maxent_lightning.builders import data_source
from maxent_lightning.data.sources import HAR_FEATURES, load_source
from maxent_lightning.errors import UserError
from maxent_lightning.identity import module_spec, spec_fingerprint
from maxent_lightning.phases import BestRule, phase_callbacks, validate

PROTOCOLS = ("authors", "paper")
FMNIST = {"mean": [0.1307], "std": [0.3081]}
HALF, UNIT = {"mean": [0.5], "std": [0.5]}, {"mean": [0.0], "std": [1.0]}
# (overrides, setting, the authors' code, the paper's text): every documented difference.
DIFFERENCES = [
    ([], "imp.scope", "layerwise", "global"),
    (["trainer.max_epochs=20"], "imp.round_epochs", None, 20),
    ([], "callbacks.checkpoint.monitor", "val/loss", "val/rewarded_acc"),
    ([], "callbacks.checkpoint.mode", "min", "max"),
    ([], "callbacks.early_stopping.monitor", "val/loss", "val/rewarded_acc"),
    (["data=fashion_mnist"], "data.normalize", FMNIST, UNIT),
    (["data=mnist"], "data.normalize", HALF, UNIT),
    ([], "data.normalize", HALF, UNIT),  # mnist5k stands in for MNIST
    (["data=digits"], "data.normalize", HALF, UNIT),
    (["data=har"], "data.normalize", {"zscore": "train_with_laying"}, {"zscore": "train"}),
    (["data=yeast"], "data.normalize", {"zscore": "train_and_test"}, {"zscore": "train"}),
    (["model=lenet"], "loss.temperature", 5.0, 1.0),
    (["+experiment=single_har"], "model.dropout", 0.0, 0.5),
    (["+experiment=single_yeast"], "optimizer.lr", 1e-3, 1e-4),
    (["+experiment=single_yeast"], "model.dropout", 0.2, 0.5),
    (["+experiment=single_yeast"], "model.hidden", [256], [512]),
    (["+experiment=single_yeast", "model=mlp_deep"], "model.hidden", [128, 64], [512, 256]),
]
# What both follow alike (the text and the code agree).
SHARED = [
    (["model=lenet", "+experiment=pairwise_mnist"], "imp.sparsity", 0.6),
    (["+experiment=single_har"], "optimizer.lr", 1e-4),
    (["+experiment=pairwise_fashion_mnist"], "loss.temperature", 5.0),
    (["+experiment=pairwise_fashion_mnist"], "model.dropout", 0.5),
    (["+experiment=pairwise_cifar10"], "data.normalize.mean", [0.4914, 0.4822, 0.4465]),
    ([], "callbacks.early_stopping.patience", 3),
]


def setting(cfg, key):
    value = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


@pytest.mark.parametrize("overrides,key,authors,paper", DIFFERENCES)
def test_each_difference_lands_in_the_composed_config(compose_job, overrides, key, authors,
                                                      paper):
    default, _ = compose_job(overrides)
    assert default.protocol.name == "authors" and setting(default, key) == authors
    for name, expected in zip(PROTOCOLS, (authors, paper), strict=True):
        cfg, _ = compose_job([*overrides, f"protocol={name}"])
        assert setting(cfg, key) == expected, (name, key)


@pytest.mark.parametrize("overrides,key,value", SHARED)
def test_what_both_protocols_share(compose_job, overrides, key, value):
    for name in PROTOCOLS:
        assert setting(compose_job([*overrides, f"protocol={name}"])[0], key) == value


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_runs_either_protocol(compose_job, name, protocol):
    """Each experiment composes under both protocols; its IMP is the protocol's (a sweep of IMP
    on/off sweeps imp=protocol,none) and so is its checkpoint criterion."""
    cfg, params = compose_job([f"+experiment={name}", f"protocol={protocol}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["protocol"]["name"] == protocol
    assert resolved["imp"]["scope"] == resolved["protocol"]["imp"]["scope"]
    assert resolved["callbacks"]["checkpoint"] == {
        "_target_": "maxent_lightning.callbacks.RestoreBestWeights",
        **resolved["protocol"]["checkpoint"]}
    if "imp" in params:  # IMP on and off, or on only (the ICLR loss and width studies)
        assert params["imp"] in ("protocol,none", "protocol")


def test_the_command_line_wins_over_the_protocol(compose_job):
    cfg, _ = compose_job(["+experiment=single_yeast", "protocol=paper", "imp=layerwise",
                          "callbacks.checkpoint.monitor=val/loss", "callbacks.checkpoint.mode=min",
                          "optimizer.lr=0.01", "model.hidden=[64]", "model.dropout=0.1"])
    assert (cfg.imp.scope, cfg.imp.round_epochs) == ("layerwise", None)
    assert (cfg.callbacks.early_stopping.monitor, cfg.callbacks.early_stopping.mode) == (
        "val/loss", "min")
    assert (cfg.optimizer.lr, list(cfg.model.hidden), cfg.model.dropout) == (0.01, [64], 0.1)
    assert cfg.data.normalize.zscore == "train"  # the rest stays the paper's
    lenet, _ = compose_job(["model=lenet", "loss.temperature=3", "data.normalize.std=[0.25]"])
    assert lenet.loss.temperature == 3 and list(lenet.data.normalize.std) == [0.25]


def test_imp_protocol_is_the_same_module_as_the_scope_it_names(make_cfg):
    """imp=protocol resolves to exactly imp=layerwise (authors) or imp=global (paper): one
    fingerprint, one module, whichever name a run uses."""
    for protocol, scope in (("authors", "layerwise"), ("paper", "global")):
        ours = module_spec(make_cfg(f"protocol={protocol}"), [3])
        named = module_spec(make_cfg(f"protocol={protocol}", f"imp={scope}"), [3])
        assert ours == named and spec_fingerprint(ours) == spec_fingerprint(named)


def test_the_protocol_enters_the_module_only_through_its_settings(make_cfg):
    """The protocol's name is no part of a module: protocol=paper with each of its settings
    that a run uses set back to the authors' is the authors' module, and a protocol value that
    the run does not use (HAR's dropout, on digits) changes nothing."""
    authors = module_spec(make_cfg(), [3])
    assert "protocol" not in authors
    back = make_cfg("protocol=paper", "imp=layerwise", "callbacks.checkpoint.monitor=val/loss",
                    "callbacks.checkpoint.mode=min", "data.normalize.mean=[0.5]",
                    "data.normalize.std=[0.5]")
    assert spec_fingerprint(module_spec(back, [3])) == spec_fingerprint(authors)
    unused = make_cfg("protocol.har.dropout=0.3", "protocol.lenet_temperature=2.0")
    assert spec_fingerprint(module_spec(unused, [3])) == spec_fingerprint(authors)
    paper = module_spec(make_cfg("protocol=paper"), [3])
    assert {k for k in authors if authors[k] != paper[k]} == {"data", "imp", "callbacks"}


def test_the_criterion_is_part_of_the_module(make_cfg):
    loss = module_spec(make_cfg(), [3])
    acc = module_spec(make_cfg("callbacks.checkpoint.monitor=val/rewarded_acc",
                               "callbacks.checkpoint.mode=max"), [3])
    assert loss["callbacks"]["checkpoint"]["monitor"] == "val/loss"
    assert acc["callbacks"]["checkpoint"] == {
        "_target_": "maxent_lightning.callbacks.RestoreBestWeights",
        "monitor": "val/rewarded_acc", "mode": "max"}
    assert spec_fingerprint(loss) != spec_fingerprint(acc)


def test_best_rule_keeps_the_first_best_epoch():
    acc = BestRule("val/rewarded_acc", "max")
    assert [acc.update(v, e) for e, v in enumerate([0.5, 0.9, 0.9, float("nan"), 0.8])] == [
        True, True, False, False, False]
    assert (acc.best_epoch, acc.best_score) == (1, 0.9)
    loss = BestRule()
    assert [loss.update(v, e) for e, v in enumerate([float("nan"), 1.0, 1.0, 0.5])] == [
        False, True, False, True]
    assert (loss.best_epoch, loss.best_score) == (3, 0.5)


@pytest.mark.parametrize("override,message", [
    ("callbacks.checkpoint.monitor=val/foo", "callbacks.checkpoint.monitor=val/foo is not a"),
    ("callbacks.checkpoint.mode=up", "callbacks.checkpoint.mode=up must be min or max"),
    ("callbacks=none ~callbacks.checkpoint", "callbacks hold 0 checkpoint criteria"),
])
def test_a_bad_criterion_is_one_line(make_cfg, override, message):
    with pytest.raises(UserError, match=message) as err:
        validate(make_cfg(*override.split()))
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ normalization
def test_normalization_changes_the_data_and_the_module(make_cfg):
    authors, paper = make_cfg(), make_cfg("protocol=paper")
    a, p = data_source(authors.data), data_source(paper.data)
    assert torch.allclose(a.x_train * 0.5 + 0.5, p.x_train, atol=1e-6)
    assert p.x_train.min() == 0 and p.x_train.max() == 1  # pixels in [0, 1]
    assert a.digest != p.digest
    spec_a, spec_p = module_spec(authors, [3]), module_spec(paper, [3])
    assert spec_a["data"]["digest"] == a.digest and spec_p["data"]["digest"] == p.digest
    assert spec_a["data"]["normalize"] == HALF and spec_p["data"]["normalize"] == UNIT
    # the source's default is the authors' MNIST normalization: same tensors, same digest
    assert a.digest == load_source("digits").digest


def test_fashion_mnist_mean_and_std_of_the_authors_code(tmp_path, make_cfg):
    written = _write_mnist(tmp_path, "FashionMNIST")
    pixels = torch.from_numpy(written["train"][0]).float().unsqueeze(1) / 255
    loaded = {p: data_source(make_cfg("data=fashion_mnist", f"data.root={tmp_path}",
                                      "data.download=false", f"protocol={p}").data)
              for p in PROTOCOLS}
    assert torch.allclose(loaded["authors"].x_train, (pixels - 0.1307) / 0.3081, atol=1e-5)
    assert torch.allclose(loaded["paper"].x_train, pixels, atol=1e-6)
    assert loaded["authors"].digest != loaded["paper"].digest


def test_tabular_z_scores_of_the_authors_code(tmp_path):
    _write_har(tmp_path)
    _write_yeast(tmp_path / "yeast.data")
    raw = np.loadtxt(tmp_path / "UCI HAR Dataset/train/X_train.txt")
    labels = np.loadtxt(tmp_path / "UCI HAR Dataset/train/y_train.txt")
    har = load_source("har", str(tmp_path), False, {"zscore": "train_with_laying"})
    expected = (raw - raw.mean(0)) / raw.std(0)  # statistics of all six activities
    assert torch.allclose(har.x_train, torch.tensor(expected[labels < 6], dtype=torch.float32),
                          atol=1e-5)
    assert not torch.allclose(har.x_train.mean(0), torch.zeros(HAR_FEATURES), atol=1e-3)
    assert har.digest != load_source("har", str(tmp_path), False, {"zscore": "train"}).digest
    yeast = load_source("yeast", str(tmp_path), False, {"zscore": "train_and_test"})
    both = torch.cat([yeast.x_train, yeast.x_test])  # statistics of train and test together
    assert torch.allclose(both.mean(0), torch.zeros(8), atol=1e-5)
    assert not torch.allclose(yeast.x_train.mean(0), torch.zeros(8), atol=1e-3)
    train = load_source("yeast", str(tmp_path), False, {"zscore": "train"})
    assert torch.allclose(train.x_train.mean(0), torch.zeros(8), atol=1e-5)


@pytest.mark.parametrize("name,normalize,message", [
    ("digits", {"mean": [0.5], "std": [0.0]}, r"data.normalize.std=\[0.0\] must be"),
    ("digits", {"mean": [0.5, 0.5], "std": [1.0]}, r"data.normalize.mean=\[0.5, 0.5\] must"),
    ("digits", {"zscore": "train"}, "is not a normalization of digits"),
    ("har", {"zscore": "all"}, "data.normalize.zscore=all is not one of train, "),
    ("yeast", {"mean": [0.0], "std": [1.0]}, "is not a normalization of yeast"),
])
def test_bad_normalization_is_one_line(tmp_path, name, normalize, message):
    with pytest.raises(UserError, match=message) as err:
        load_source(name, str(tmp_path), False, normalize)
    assert "\n" not in str(err.value) and "data.normalize=" in str(err.value)


@pytest.mark.parametrize("args,message", [
    (["data.normalize.std=[-1]"], "data.normalize.std=[-1] must be"),
    (["protocol=foo"], "Could not find 'protocol/foo'"),
    (["callbacks.checkpoint.mode=bar"], "callbacks.checkpoint.mode=bar must be min or max"),
    (["+experiment=pairwise_mnist5k", "-m", "protocol=paper", "callbacks.checkpoint.mode=bar",
      "seed=0", "model=mlp_shallow", "loss=maxent", "cardinality=1", "pair=0"],
     "callbacks.checkpoint.mode=bar must be min or max"),  # a sweep: every job refused
])
def test_bad_settings_through_the_cli(tmp_path, args, message):
    """One line, exit 2, nothing trained: a bad protocol, criterion or normalization."""
    res = cli(tmp_path, "data=digits", "logger=none", *args)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    lines = [line for line in res.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0] and "; " in lines[0], res.stderr
    assert not list((tmp_path / "store").rglob("module.pt"))



def test_phase_callbacks_keep_their_names_with_the_criterion_first():
    stop = {"_target_": "lightning.pytorch.callbacks.EarlyStopping", "monitor": "val/acc"}
    keep = {"_target_": "maxent_lightning.callbacks.RestoreBestWeights",
            "monitor": "val/rewarded_acc", "mode": "max"}
    cfg = OmegaConf.create({"callbacks": {"stop": stop, "keep": keep}})
    callbacks = phase_callbacks(cfg)
    assert list(callbacks) == ["keep", "stop"]
    assert isinstance(callbacks["keep"], BestRule) and callbacks["stop"].monitor == "val/acc"
