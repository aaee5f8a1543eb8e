"""The family trainer yields, member by member, what the sequential path yields."""

import logging
import math
import shutil

import pandas as pd
import pytest
import torch
from same import SAME
from same import assert_same_module as same_module

from maxent_lightning import dropout, family
from maxent_lightning.builders import build_datamodule
from maxent_lightning.data.datamodule import split_indices
from maxent_lightning.data.sources import load_source
from maxent_lightning.errors import UserError
from maxent_lightning.family import chunks, train_family, trainer, unsupported_reason
from maxent_lightning.files import load_torch, read_json
from maxent_lightning.modulefile import load_module
from maxent_lightning.modulestore import ModuleStore
from maxent_lightning.phases import tracks_val_metrics
from maxent_lightning.targets import rewarded_mask
from maxent_lightning.training import train_module

FILES = ["confusion.png", "imp/round_0.json", "imp/round_0.pt", "imp/round_1.json",
         "imp/round_1.pt", "metrics.json", "module.pt"]


def assert_same_module(seq_dir, fam_dir):
    for name in FILES:
        assert (fam_dir / name).exists(), name
    ma, mb = same_module(seq_dir, fam_dir)
    for r in (0, 1):
        ra, rb = (read_json(d / "imp" / f"round_{r}.json") for d in (seq_dir, fam_dir))
        assert rb["best_epoch"] == ra["best_epoch"] and rb["monitor"] == ra["monitor"]
        assert rb["best_value"] == pytest.approx(ra["best_value"], rel=1e-5)
        assert load_torch(fam_dir / "imp" / f"round_{r}.pt")["fingerprint"] == ma["fingerprint"]
    return ma, mb


def run_both(cfg, tmp_path, sets):
    seq = [train_module(cfg, tmp_path / f"seq{i}", r, quiet=True) for i, r in enumerate(sets)]
    fam = train_family(cfg, [(r, tmp_path / f"fam{i}") for i, r in enumerate(sets)])
    assert [m["rewarded"] for m in fam] == [sorted(r) for r in sets]
    return [assert_same_module(tmp_path / f"seq{i}", tmp_path / f"fam{i}")
            for i in range(len(sets))], seq


@pytest.fixture
def all_sparse(monkeypatch, caplog):
    """Every Linear weight of the family multiplied as sparse, in every phase (even dense)."""
    monkeypatch.setattr(trainer, "SPARSE_MIN_WEIGHTS", 0)
    caplog.set_level(logging.INFO, logger="maxent_lightning.family")
    yield "family.sparse_below=1.01"
    text = "\n".join(r.getMessage() for r in caplog.get_records("call"))
    assert "classifier.weight sparse" in text and "features.1.weight sparse" in text


def test_mlp_family_matches_sequential(make_cfg, tmp_path):
    cfg = make_cfg("model.dropout=0")
    assert unsupported_reason(cfg) is None
    run_both(cfg, tmp_path, [[0], [7, 1]])


@pytest.mark.parametrize("loss,p", [("maxent", 0.5), ("cross_entropy", 0.5), ("maxent", 0.2)])
def test_dropout_family_matches_sequential(make_cfg, tmp_path, loss, p):
    """Dropout on: both trainers draw a module's masks from its own stream (dropout.py), so a
    module trained alone by Lightning is the module of a family (same masks and stop epochs,
    weights equal up to the order of float sums)."""
    run_both(make_cfg(f"loss={loss}", f"model.dropout={p}"), tmp_path, [[0], [7, 1]])


def test_sparse_products_match_sequential(make_cfg, tmp_path, all_sparse):
    run_both(make_cfg("model.dropout=0", all_sparse), tmp_path, [[0], [7, 1]])


@pytest.mark.parametrize("sparse", [False, True])
def test_cross_entropy_family_matches_sequential(make_cfg, tmp_path, sparse, request):
    """Cross-entropy members train on their own classes' samples (per-member streams): passes of
    equally many steps per epoch, a smaller last batch padded, validation on their own classes."""
    extra = [request.getfixturevalue("all_sparse")] if sparse else []
    cfg = make_cfg("loss=cross_entropy", "model.dropout=0", *extra)
    assert unsupported_reason(cfg) is None
    sets = [[0], [7, 1], [3], [2, 5]]
    labels = build_datamodule(cfg, [0], targets="maxent").train[2]
    sizes = [int(rewarded_mask(labels, r).sum()) for r in sets]
    assert sizes[0] != sizes[2] and sizes[0] <= 2 * 64 and sizes[1] > 2 * 64  # digits, batch 64
    split = family.passes(cfg, sets, chunk=8)
    assert sorted(map(sorted, split)) == [[0, 2], [1, 3]]
    run_both(cfg, tmp_path, sets)


def test_accuracy_criterion_family_matches_sequential(make_cfg, tmp_path):
    """protocol=paper keeps the weights of the highest validation rewarded accuracy and
    early-stops on it. Ties are frequent: both trainers keep the first epoch reaching the best
    value, so Lightning alone and the family yield the same module, each round's kept epoch the
    first best one of its logged history."""
    cfg = make_cfg("protocol=paper", "model.dropout=0", "trainer.max_epochs=5", "logger=csv")
    checkpoint = cfg.callbacks.checkpoint
    assert (checkpoint.monitor, checkpoint.mode) == ("val/rewarded_acc", "max")
    assert cfg.callbacks.early_stopping.monitor == "val/rewarded_acc"
    assert unsupported_reason(cfg) is None
    run_both(cfg, tmp_path, [[0], [7, 1]])
    ties = 0
    for d in (tmp_path / f"{path}{i}" for path in ("seq", "fam") for i in range(2)):
        history = pd.read_csv(next(d.glob("csv/*/metrics.csv")))
        for r in range(2):
            record = read_json(d / "imp" / f"round_{r}.json")
            acc = history[history["imp/round"] == r]["val/rewarded_acc"].dropna().tolist()
            assert record["monitor"] == "val/rewarded_acc"
            assert record["best_value"] == pytest.approx(max(acc), abs=1e-6)
            assert record["best_epoch"] == acc.index(max(acc)), (d, r, acc)
            ties += acc.count(max(acc)) > 1
    assert ties  # the tie rule decided somewhere


@pytest.mark.parametrize("model,loss", [("model.hidden=[32]", "maxent"),
                                        ("model.hidden=[32, 16]", "maxent"),
                                        ("model.hidden=[32, 16]", "cross_entropy")])
def test_written_out_mlp_trains_the_modules_of_vmap(make_cfg, tmp_path, model, loss, all_sparse):
    """Phases with sparse products of an MLP take the written-out steps (family/mlp.py, the CPU
    default): the modules are those of vmap and autograd (family.explicit_mlp=false), for a
    shared first-layer input and per-member streams, dropout, hidden layers fed per member."""
    sets = [[0], [7, 1]] if loss == "maxent" else [[0], [3]]
    for explicit in ("true", "false"):
        cfg = make_cfg(model, f"loss={loss}", "trainer.max_epochs=3", all_sparse,
                       f"family.explicit_mlp={explicit}")
        train_family(cfg, [(r, tmp_path / f"{explicit}{i}") for i, r in enumerate(sets)])
    for i in range(len(sets)):
        assert_same_module(tmp_path / f"false{i}", tmp_path / f"true{i}")


def test_lenet_family_matches_sequential(make_cfg, tmp_path):
    cfg = make_cfg("model=lenet", "model.channels=[4]", "model.hidden=[16]",
                   "imp=layerwise", "family.fused_optimizer=true")
    run_both(cfg, tmp_path, [[2], [5]])


@pytest.mark.parametrize("sparse", [False, True])
def test_early_stop_of_one_member_leaves_the_others_alone(make_cfg, tmp_path, sparse, request):
    extra = [request.getfixturevalue("all_sparse")] if sparse else []
    cfg = make_cfg("model.dropout=0", "trainer.max_epochs=8", "optimizer.lr=0.03",
                   "callbacks.early_stopping.patience=0", *extra)
    pairs, _ = run_both(cfg, tmp_path, [[0], [3]])
    stops = [mb["stop_epochs"] for _, mb in pairs]
    assert any(e < 8 for s in stops for e in s), stops  # someone stopped early ...
    assert len({tuple(s) for s in stops}) > 1, stops  # ... and not everyone alike
    alone = train_family(cfg, [([3], tmp_path / "alone")])[0]
    assert alone["stop_epochs"] == stops[1]
    assert_same_module(tmp_path / "seq1", tmp_path / "alone")


def test_chunks_resume_and_skip(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("model.dropout=0", "family.chunk_size=2")
    sets = [[0], [4], [9]]
    store = ModuleStore(tmp_path)
    _, m1, m2 = dirs = [store.dir_for(cfg, r) for r in sets]
    calls = []
    real = chunks._train_chunk
    monkeypatch.setattr(chunks, "_train_chunk",
                        lambda c, ms, *a: calls.append(len(ms)) or real(c, ms, *a))
    first = [read_json(p.parent / "metrics.json") for p in store.get_many(cfg, sets)]
    assert calls == [2, 1]  # passes of up to family.chunk_size
    # m1 loses everything after its first round, m2 is gone: both are trained again together.
    for name in ("module.pt", "metrics.json", "imp/round_1.pt", "imp/round_1.json"):
        (m1 / name).unlink()
    shutil.rmtree(m2)
    calls.clear()
    round0 = (m1 / "imp" / "round_0.pt").stat().st_mtime_ns
    again = [read_json(p.parent / "metrics.json") for p in store.get_many(cfg, sets)]
    assert calls == [2]
    assert (m1 / "imp" / "round_0.pt").stat().st_mtime_ns == round0  # resumed
    for old, new in zip(first, again, strict=True):
        for k, v in old.items():
            if k.startswith("test/"):
                assert new[k] == pytest.approx(v, abs=1e-6), k
            elif k != "wall_s":  # stop_epochs too: the same with or without an interruption
                assert new[k] == v, k
    for p in store.passes(cfg, list(zip(sets, dirs, strict=True))):  # all done: nothing trained
        assert [m["rewarded"] for m in store.train(p)] == [r for r, _ in p.members]
    assert calls == [2]


# BatchNorm CNNs at reduced width on the embedded 8x8 digits (no MLP overrides).
# imp=global: layerwise IMP also prunes VGG11's conv biases, which feed BatchNorm and so have no
# true gradient; Adam turns float noise into steps, so their values (and which get pruned) differ
# between the trainers' summation orders while the function does not.
BN_TINY = ["data=digits", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
           "logger=none", "model.width=4", "family.cpu_convolutions=true", "imp.rounds=1",
           "imp.sparsity=0.6", "trainer.max_epochs=2", "data.batch_size=256", "imp=global"]


@pytest.mark.parametrize("model", ["resnet18", "vgg11"])
def test_batchnorm_family_matches_sequential(make_cfg, tmp_path, model):
    cfg = make_cfg(f"model={model}", *BN_TINY, fast=False)
    assert unsupported_reason(cfg) is None
    sets = [[2], [5]]
    seq = [train_module(cfg, tmp_path / f"seq{i}", r, quiet=True) for i, r in enumerate(sets)]
    fam = train_family(cfg, [(r, tmp_path / f"fam{i}") for i, r in enumerate(sets)])
    for i in range(len(sets)):
        a, b = (load_module(tmp_path / f"{p}{i}" / "module.pt") for p in ("seq", "fam"))
        stats = [k for k in a.state_dict if "running_" in k or "num_batches" in k]
        assert stats and list(a.state_dict) == list(b.state_dict)
        for k in a.state_dict:  # each member's own running statistics, as trained alone
            torch.testing.assert_close(b.state_dict[k], a.state_dict[k], **SAME)
        assert fam[i]["stop_epochs"] == seq[i]["stop_epochs"]
        assert fam[i]["test/acc"] == pytest.approx(seq[i]["test/acc"], abs=1e-5)


def test_fallbacks_are_logged(make_cfg, tmp_path, caplog):
    assert "convolutions" in unsupported_reason(make_cfg("model=vgg11", "trainer.accelerator=cpu",
                                                         fast=False))
    assert "gradient_clip_val" in unsupported_reason(make_cfg("+trainer.gradient_clip_val=1"))
    assert "convolutions" in unsupported_reason(make_cfg("model=lenet", "trainer.accelerator=cpu"))
    assert unsupported_reason(make_cfg("model=lenet", "trainer.accelerator=cpu",
                                       "family.cpu_convolutions=true")) is None
    cfg = make_cfg("model=lenet", "trainer.accelerator=cpu", "trainer.max_epochs=1")
    store = ModuleStore(tmp_path)
    (cnn,) = store.passes(cfg, [([1], tmp_path / "cnn")])
    assert cnn.trainer == "sequential" and "convolutions" in cnn.why
    with caplog.at_level(logging.INFO, logger="maxent_lightning.modulestore"):
        (m,) = store.train(cnn)
    assert "family training off (vectorized convolutions" in caplog.text
    assert m["rewarded"] == [1]


@pytest.mark.parametrize("imp", ["global", "layerwise"])
@pytest.mark.parametrize("sparse", [False, True])
def test_member_does_not_depend_on_its_companions_even_with_dropout(make_cfg, tmp_path, sparse,
                                                                     imp, request):
    """Bit for bit with imp=global; with layerwise masks the sparse kernels of a family whose
    members keep other counts per layer sum in another order (same.py's tolerance)."""
    extra = [request.getfixturevalue("all_sparse")] if sparse else []
    cfg = make_cfg("model.dropout=0.5", f"imp={imp}", *extra)  # each its own dropout stream
    train_family(cfg, [([4], tmp_path / "alone")])
    train_family(cfg, [([7], tmp_path / "b"), ([4], tmp_path / "together"), ([1], tmp_path / "c")])
    a, b = load_module(tmp_path / "alone" / "module.pt"), load_module(tmp_path / "together" /
                                                                       "module.pt")
    for k in a.state_dict:
        if imp == "global" or not sparse:
            assert torch.equal(a.state_dict[k], b.state_dict[k]), k
        else:
            torch.testing.assert_close(b.state_dict[k], a.state_dict[k], **SAME)
    assert all(torch.equal(a.masks[k], b.masks[k]) for k in a.masks)
    assert a.metrics["stop_epochs"] == b.metrics["stop_epochs"]


@pytest.mark.parametrize("p", [0.5, 0.25, 0.3])
def test_keep_masks_are_bernoulli_and_per_member(p):
    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    masks = dropout.keep_mask(gens([0, 1, 2]), (200, 100), p, torch.device("cpu"))
    assert masks.shape == (3, 200, 100) and set(masks.unique().tolist()) <= {0.0, 1.0}
    for row in masks:
        assert row.mean().item() == pytest.approx(1 - p, abs=0.01)
    assert not torch.equal(masks[0], masks[1])
    again = dropout.keep_mask(gens([2, 7, 0]), (200, 100), p, torch.device("cpu"))
    assert torch.equal(again[0], masks[2]) and torch.equal(again[2], masks[0])
    flat = masks[0].flatten()  # neighbouring entries (bits of one word) are independent
    assert torch.corrcoef(torch.stack([flat[:-1], flat[1:]]))[0, 1].abs() < 0.02


@pytest.mark.parametrize("p", [0.5, 0.25, 0.75, 0.0625, 1 / 256])
@pytest.mark.parametrize("shape", [(64, 512), (7, 13)])
def test_keep_mask_reads_the_bit_fields_of_each_members_words(p, shape):
    """The documented draw, entry by entry: field i of a member's random 32-bit words (b bits,
    lowest first) keeps its entry when it is below (1 - p) 2^b; kept entries are ``scale``."""
    bits = next(b for b in range(1, 9) if ((1 - p) * 2**b).is_integer())
    fields, n = 32 // bits, math.prod(shape)
    seeds, scale = [3, 11], 1 / (1 - p)
    masks = dropout.keep_mask([torch.Generator().manual_seed(s) for s in seeds], shape, p,
                             torch.device("cpu"), scale, torch.bfloat16)
    assert masks.shape == (2, *shape) and masks.dtype == torch.bfloat16
    for mask, seed in zip(masks, seeds, strict=True):
        words = torch.empty(-(-n // fields), dtype=torch.int64)
        words.random_(0, 1 << 32, generator=torch.Generator().manual_seed(seed))
        field = torch.tensor([(int(words[i // fields]) >> (i % fields * bits)) & (2**bits - 1)
                              for i in range(n)])
        keep = (field < round((1 - p) * 2**bits)).float() * scale
        assert torch.equal(mask.flatten(), keep.to(torch.bfloat16))


def test_validation_metrics_are_computed_where_something_reads_them(make_cfg, tmp_path):
    assert not tracks_val_metrics(make_cfg())  # no logger, early stopping on val/loss
    assert tracks_val_metrics(make_cfg("callbacks.early_stopping.monitor=val/acc",
                                       "callbacks.early_stopping.mode=max"))
    cfg = make_cfg("logger=csv", "imp.rounds=1", "model.dropout=0")
    assert tracks_val_metrics(cfg)
    train_module(cfg, tmp_path / "seq", [2], quiet=True)
    train_family(cfg, [([2], tmp_path / "fam")])
    for path in ("seq", "fam"):
        (log,) = (tmp_path / path).glob("csv/*/metrics.csv")
        header = log.read_text().splitlines()[0].split(",")
        assert {"val/loss", "val/acc", "val/rewarded_acc", "val/nonrewarded_entropy",
                "test/acc"} <= set(header), (path, header)


def test_trainer_deterministic_holds_while_the_family_trains(make_cfg, tmp_path, monkeypatch,
                                                             all_sparse):
    seen, real = [], trainer.FamilyTrainer.run_phase
    monkeypatch.setattr(trainer.FamilyTrainer, "run_phase", lambda self, p: seen.append(
        torch.are_deterministic_algorithms_enabled()) or real(self, p))
    cfg = make_cfg("+trainer.deterministic=true", "model.dropout=0", all_sparse)
    assert unsupported_reason(cfg) is None
    train_family(cfg, [([1], tmp_path / "m")])
    assert seen == [True, True, True]
    assert not torch.are_deterministic_algorithms_enabled()  # as it was before


def test_bf16_modules_are_the_familys_by_every_path(make_cfg, tmp_path, caplog):
    """bfloat16 roundings differ between the family and Lightning's autocast beyond the order of
    sums: a reduced-precision module is the family's wherever the family can train it, also
    one by one (a family of one), so its fingerprint names one module."""
    cfg = make_cfg("model.dropout=0", "trainer.precision=bf16-mixed", "imp=none")
    assert unsupported_reason(cfg) is None
    assert "precision 16-mixed" in unsupported_reason(make_cfg("trainer.precision=16-mixed"))
    caplog.set_level(logging.INFO, logger="maxent_lightning.family")
    alone = make_cfg("model.dropout=0", "trainer.precision=bf16-mixed", "imp=none",
                     "family.enabled=false")
    store = ModuleStore(tmp_path)
    (one,) = store.passes(alone, [([6], tmp_path / "alone")])
    assert one.trainer == "family" and one.chunk == 1  # a family of one
    store.train(one)
    assert "family training: 1 module(s)" in caplog.text
    train_family(cfg, [([6], tmp_path / "fam"), ([2], tmp_path / "other")])
    train_family(make_cfg("model.dropout=0", "imp=none"), [([6], tmp_path / "f32")])
    a, b, c = (load_module(tmp_path / d / "module.pt") for d in ("alone", "fam", "f32"))
    assert a.fingerprint == b.fingerprint != c.fingerprint  # precision is part of the module
    assert a.metrics["stop_epochs"] == b.metrics["stop_epochs"]
    for k in a.state_dict:  # bfloat16 products: off float32's, equal up to bf16 rounding
        assert not torch.equal(b.state_dict[k], c.state_dict[k]), k
        torch.testing.assert_close(b.state_dict[k], a.state_dict[k], atol=1e-2, rtol=0)


def test_cross_entropy_without_own_validation_samples_is_one_user_error(make_cfg, tmp_path):
    cfg = make_cfg("loss=cross_entropy", "data.val_fraction=0.001")  # 2 validation samples
    y = load_source("digits").y_train
    labels = y[split_indices(len(y), 0.001, 0)[1]]  # the validation labels
    absent = next(c for c in range(10) if c not in labels.tolist())
    for train in (lambda: train_module(cfg, tmp_path / "seq", [absent], quiet=True),
                  lambda: train_family(cfg, [([absent], tmp_path / "fam")])):
        with pytest.raises(UserError, match=f"rewarded=\\[{absent}\\] has no validation samples"):
            train()
