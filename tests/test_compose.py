"""Composition: weight sum, logit averaging, BN recalibration, the path γ(t), barriers, the
job helpers (pairs, permutations, devices, fingerprints) and the tasks run in-process."""

import math

import pandas as pd
import pytest
import torch
from torch import nn

from maxent_lightning import classsets, devices
from maxent_lightning.builders import net_from_record
from maxent_lightning.composition import (
    LogitAverage,
    logit_average,
    path_point,
    recalibrate_batchnorm,
    relative_barrier,
    weight_sum,
)
from maxent_lightning.data.datamodule import cached_source
from maxent_lightning.errors import UserError
from maxent_lightning.files import config_digest
from maxent_lightning.identity import job_fingerprint
from maxent_lightning.models import MLP
from maxent_lightning.modulefile import ModuleRecord, load_module
from maxent_lightning.results import COLUMNS

SPEC = {"model": {"_target_": "maxent_lightning.models.MLP", "hidden": [8], "dropout": 0.0,
                  "output_bias": False},
        "data": {"name": "digits", "digest": cached_source("digits", None, True).digest}}


def record(seed: int, rewarded, keep: float = 0.5) -> ModuleRecord:
    """A hand-made sparse module: random weights, zero where its random mask is off."""
    torch.manual_seed(seed)
    net = MLP((1, 2, 2), 3, hidden=[8], dropout=0.0)
    masks = {n: torch.rand_like(p) < keep for n, p in net.named_parameters()
             if n.endswith("weight")}
    state = {k: v * masks[k] if k in masks else v for k, v in net.state_dict().items()}
    spec = {**SPEC, "rewarded": list(rewarded), "seed": seed}
    return ModuleRecord(state, masks, "theta0", list(rewarded), 3, (1, 2, 2), 5.0, 0, spec,
                        config_digest(spec))


def test_weight_sum_is_sum_of_states_and_keeps_masks_consistent():
    recs = [record(1, [0]), record(2, [1]), record(3, [2])]
    net, masks = weight_sum(recs)
    for name, value in net.state_dict().items():
        assert torch.allclose(value, sum(r.state_dict[name] for r in recs))
    for name, mask in masks.items():
        assert torch.equal(mask, torch.stack([r.masks[name] for r in recs]).any(0))
        assert (net.state_dict()[name][~mask] == 0).all()  # masked in all -> 0


def test_logit_average_is_mean_of_logits_and_weighted():
    recs = [record(1, [0]), record(2, [1])]
    x = torch.randn(7, 1, 2, 2)
    zs = [net_from_record(r)(x) for r in recs]
    with torch.no_grad():
        assert torch.allclose(logit_average(recs)(x), (zs[0] + zs[1]) / 2, atol=1e-6)
        weighted = logit_average(recs, [0.25, 0.75])(x)
    assert torch.allclose(weighted, 0.25 * zs[0] + 0.75 * zs[1], atol=1e-6)
    with pytest.raises(UserError):
        logit_average(recs, [1.0])


class UniformOffClasses(nn.Module):
    """Logits equal for every class (a uniform prediction) on every input."""

    def forward(self, x):
        return torch.full((len(x), 3), 4.2)


def test_module_uniform_off_its_classes_leaves_predictions_unchanged():
    expert = net_from_record(record(1, [0]))
    x = torch.randn(50, 1, 2, 2)
    with torch.no_grad():
        z = expert(x)
        for weights in (None, [0.3, 0.7]):
            avg = LogitAverage([expert, UniformOffClasses()], weights)(x)
            w = 0.5 if weights is None else weights[0]
            assert torch.equal(avg.argmax(1), z.argmax(1))
            assert torch.allclose(avg.softmax(1), (w * z).softmax(1), atol=1e-6)


def test_batchnorm_recalibration_sets_running_stats_to_the_data():
    net = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 2))
    x = torch.randn(200, 4) * torch.tensor([1.0, 2.0, 3.0, 0.5]) + torch.tensor([5.0, -1, 0, 2])
    recalibrate_batchnorm(net, x, batch_size=256)
    bn = net[0]
    assert torch.allclose(bn.running_mean, x.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, x.var(0, unbiased=True), atol=1e-4)
    assert not net.training


def test_path_endpoints_and_midpoint():
    a, b = record(1, [0]).state_dict, record(2, [1]).state_dict
    for t, expected in ((0.0, a), (1.0, b), (0.5, {k: a[k] + b[k] for k in a})):
        point = path_point(a, b, t)
        assert all(torch.allclose(point[k], expected[k]) for k in a)


def test_relative_barrier_known_values():
    assert relative_barrier([1.0, 1.5, 2.0], [0.0, 0.5, 1.0]) == pytest.approx([0, 0, 0])
    assert relative_barrier([1.0, 3.0, 1.0], [0.0, 0.5, 1.0]) == pytest.approx([0, 200, 0])
    assert relative_barrier([2.0, 1.0, 2.0], [0, 0.5, 1])[1] == pytest.approx(-50)


def test_pairs_are_deterministic_disjoint_and_distinct():
    pairs = classsets.sample_pairs(10, 2, 10, seed=0)
    assert pairs == classsets.sample_pairs(10, 2, 10, seed=0)
    assert pairs != classsets.sample_pairs(10, 2, 10, seed=1)
    assert len({(tuple(a), tuple(b)) for a, b in pairs}) == 10
    for a, b in pairs:
        assert len(a) == len(b) == 2 and not set(a) & set(b)
    assert len(classsets.sample_pairs(4, 2, 10)) == 3  # only 3 ways to split 4 classes in two
    big = classsets.sample_pairs(100, 5, 10)  # sampled, not enumerated
    assert len({(tuple(a), tuple(b)) for a, b in big}) == 10
    assert all(not set(a) & set(b) for a, b in big)
    with pytest.raises(UserError, match="cardinality=3"):
        classsets.sample_pairs(5, 3, 10)


def test_permutations_depend_on_the_index_only():
    p0 = classsets.class_permutation(10, 0)
    assert sorted(p0) == list(range(10)) and p0 == classsets.class_permutation(10, 0)
    assert p0 != classsets.class_permutation(10, 1)


def test_device_assignment_spreads_jobs_over_gpus(monkeypatch, make_cfg):
    assert [devices.assign_device(k, 4, "auto") for k in range(6)] == [0, 1, 2, 3, 0, 1]
    assert devices.assign_device(3, 2, "gpu") == 1
    assert devices.assign_device(3, 1, "gpu") is None  # one device: nothing to spread
    assert devices.assign_device(3, 4, "cpu") is None
    cfg = make_cfg("trainer.accelerator=auto")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert devices.setup_device(cfg, 7) == [1]
    assert list(cfg.trainer.devices) == [1]


def test_fingerprint_ignores_paths_logger_and_devices(make_cfg):
    base = job_fingerprint(make_cfg())
    assert job_fingerprint(make_cfg("paths.store_dir=/elsewhere", "logger=csv",
                                    "trainer.devices=[1]")) == base
    assert job_fingerprint(make_cfg("pair=1")) != base


# ------------------------------------------------------------------ tasks, in-process
@pytest.fixture(scope="session")
def tiny_job(run_job):
    """``tiny_job(tmp, name, *overrides)``: a task with dense 1-epoch modules, into tmp/name."""

    def run(tmp, name: str, *overrides):
        return run_job(tmp / name, "model.hidden=[16]", "imp=none", "trainer.max_epochs=1",
                       *overrides)

    return run


@pytest.fixture(scope="module")
def complete_dir(tmp_path_factory, tiny_job):
    tmp = tmp_path_factory.mktemp("complete")
    tiny_job(tmp, "complete", "task=complete", "permutation=3")
    tiny_job(tmp, "mc", "task=mode_connectivity", "permutation=3", "path.points=5")
    return tmp


def test_complete_merges_incrementally_and_matches_the_merge_task(complete_dir, capsys,
                                                                   tiny_job):
    frame = pd.read_csv(complete_dir / "complete" / "results.csv", dtype={"class_set": str})
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == 20 and set(frame["merge"]) == {"weight", "logit"}
    order = classsets.class_permutation(10, 3)
    last = frame[frame.step == 10]
    assert (last.class_set == "-".join(map(str, range(10)))).all()
    assert last.nonrewarded_entropy.isna().all()  # undefined when R = C
    # step 2 of the complete merge equals the merge task on the first two modules
    store = complete_dir / "store" / "digits"
    by_class = {load_module(p).rewarded[0]: p for p in store.glob("*/module.pt")}
    merged = tiny_job(complete_dir, "merge", "task=merge",
                     f"checkpoints=[{by_class[order[0]]},{by_class[order[1]]}]")
    step2 = frame[frame.step == 2].set_index("merge")
    for kind in ("weight", "logit"):
        assert merged[kind]["rewarded_acc"] == pytest.approx(step2.rewarded_acc[kind])
        assert merged[kind]["loss_value"] == pytest.approx(step2.loss_value[kind], rel=1e-5)
    assert load_module(complete_dir / "merge" / "merged.pt").rewarded == sorted(order[:2])
    assert (complete_dir / "complete" / "merge_curve.png").exists()
    # a finished job is skipped
    capsys.readouterr()
    assert tiny_job(complete_dir, "complete", "task=complete", "permutation=3") is None
    assert "skip" in capsys.readouterr().out


def test_mode_connectivity_rows_and_connected_flag(complete_dir):
    out = complete_dir / "mc"
    frame = pd.read_csv(out / "results.csv")
    assert len(frame) == 9 * 2 * 5  # steps 2..10, test/train, 5 points
    metrics = pd.read_json(out / "metrics.json", typ="series")
    worst = metrics["max_barrier_pct"]
    assert set(worst) == {"test", "train"} and set(worst["test"]) == {str(k) for k in range(2, 11)}
    ends = frame[frame.t.isin([0.0, 1.0])]
    assert ends.barrier_pct.abs().max() < 1e-9
    expected = all(v <= 2.0 for split in worst.values() for v in split.values())
    assert metrics["connected"] == expected
    assert (out / "barrier_test.png").exists()


def test_single_and_pairwise_and_eval_tasks(tmp_path, tiny_job):
    single = tiny_job(tmp_path, "single", "task=single", "classes=[1,2]")
    assert single["modules"] == 2
    pair = tiny_job(tmp_path, "pair", "task=pairwise", "pair=4", "merge.logit_weights=[0.5,0.5]")
    frame = pd.read_csv(tmp_path / "pair" / "results.csv", dtype={"class_set": str})
    assert list(frame["merge"]) == ["none", "none", "weight", "logit"]
    r1, r2 = classsets.sample_pairs(10, 1, 10)[4]
    assert frame.class_set.iloc[2] == classsets.class_set(r1 + r2)
    assert (frame.pair == 4).all() and (frame.cardinality == 1).all()
    assert pair["weight"]["rewarded_acc"] == frame.rewarded_acc.iloc[2]
    assert (tmp_path / "pair" / "confusion_weight.png").exists()
    module = next((tmp_path / "store").glob("digits/*/module.pt"))
    out = tiny_job(tmp_path, "eval", "task=eval", f"checkpoints=[{module}]", "eval.rewarded=[3]")
    assert 0.0 <= out["rewarded_acc"] <= 1.0 and math.isfinite(out["loss_value"])
    # 126 distinct pairs of 5 + 5 digits: pair 150 of 200 is skipped with an empty results.csv
    empty = tiny_job(tmp_path, "none", "task=pairwise", "cardinality=5", "n_pairs=200", "pair=150")
    assert "skipped" in empty and pd.read_csv(tmp_path / "none" / "results.csv").empty
    with pytest.raises(UserError, match="cardinality=6"):
        tiny_job(tmp_path, "bad", "task=pairwise", "cardinality=6")


def test_wandb_one_run_per_job(tmp_path, monkeypatch, tiny_job):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    rec = record(1, [0])
    rec.spec = {**rec.spec, "imp": {"enabled": False, "rounds": 0, "sparsity": 0.0},
                "loss": {"targets": "maxent"}}
    rec.fingerprint = config_digest(rec.spec)
    rec.input_shape, rec.num_classes = (1, 8, 8), 10
    rec.state_dict = MLP((1, 8, 8), 10, hidden=[8], dropout=0.0).state_dict()
    from maxent_lightning.module import save_module

    save_module(tmp_path / "m.pt", rec)
    for name in ("a", "b"):
        tiny_job(tmp_path, name, "task=eval", f"checkpoints=[{tmp_path}/m.pt]", "logger=wandb")
    runs = [sorted((tmp_path / n / "wandb").glob("offline-run-*")) for n in ("a", "b")]
    assert [len(r) for r in runs] == [1, 1] and runs[0][0].name != runs[1][0].name
    import wandb

    assert wandb.run is None  # finished: nothing leaks into the next job
