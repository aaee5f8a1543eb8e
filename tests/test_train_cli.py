"""The real entry point end to end, resume of IMP rounds, and bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from maxent_lightning.builders import net_from_record
from maxent_lightning.modulefile import load_module
from maxent_lightning.training import train_module

TINY = [
    "data=digits", "trainer.max_epochs=2", "imp.round_epochs=1", "model.hidden=[32]",
    "trainer.accelerator=cpu",
]


def cli(*args, cwd=None, env=None):
    full_env = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "maxent_lightning", *args],
        capture_output=True, text=True, cwd=cwd, env=full_env, timeout=600,
    )


def test_cli_trains_a_module_end_to_end_with_wandb_offline(tmp_path):
    run_dir = tmp_path / "run"
    res = cli(*TINY, "rewarded=[3]", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "rewarded accuracy" in res.stdout and "sparsity" in res.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("test/rewarded_acc", "test/nonrewarded_entropy", "test/acc", "sparsity"):
        assert isinstance(metrics[key], float)
    assert metrics["rewarded"] == [3] and metrics["seed"] == 0
    # the default (protocol=authors) prunes layerwise: each layer keeps (1 - K)^2 = 1 % of its
    # 64x32 weights and 32 biases, the output layer (32x10, no bias) (1 - K/2)^2 = 30.25 %
    kept = 0.01 * (64 * 32 + 32) + 0.3025 * 32 * 10
    assert metrics["sparsity"] == pytest.approx(1 - kept / (64 * 32 + 32 + 320), abs=2e-3)
    for name in ("config.yaml", "module.pt", "confusion.png"):
        assert (run_dir / name).exists(), name
    stored = Path(metrics["module"]).parent  # trained in the store, linked into the run
    assert stored.parent.parent == tmp_path / "store" and (run_dir / "module.pt").samefile(
        stored / "module.pt")
    for name in ("imp/round_0.pt", "imp/round_1.json", "metrics.json"):
        assert (stored / name).exists(), name
    assert list((stored / "wandb").glob("offline-run-*")), "no offline W&B run"
    record = load_module(run_dir / "module.pt")
    assert record.rewarded == [3] and record.spec["model"]["hidden"] == [32]
    net = net_from_record(record)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)

    again = cli(*TINY, "rewarded=[3]", f"hydra.run.dir={run_dir}", "logger=none", cwd=tmp_path)
    assert again.returncode == 0 and "rewarded accuracy" in again.stdout


def test_interrupted_imp_resumes_at_first_unfinished_round(make_cfg, tmp_path):
    cfg = make_cfg("imp.round_epochs=1", "model.dropout=0.0")
    full = train_module(cfg, tmp_path / "full", rewarded=[2])
    part = tmp_path / "part"
    train_module(cfg, part, rewarded=[2])
    for name in ("module.pt", "metrics.json", "imp/round_1.pt", "imp/round_1.json"):
        (part / name).unlink()
    round0 = (part / "imp" / "round_0.pt").stat().st_mtime_ns
    resumed = train_module(cfg, part, rewarded=[2])
    assert (part / "imp" / "round_0.pt").stat().st_mtime_ns == round0  # not trained again
    assert resumed["stop_epochs"] == full["stop_epochs"]  # as without the interruption
    a = load_module(tmp_path / "full" / "module.pt").state_dict
    b = load_module(part / "module.pt").state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test/rewarded_acc"] == full["test/rewarded_acc"]


BAD = [
    (["rewarded=[12]"], "outside data set"),
    (["rewarded=[]"], "empty"),
    (["rewarded=[1,1]"], "repeats"),
    (["imp.sparsity=1.0"], "imp.sparsity"),
    (["imp.rounds=-1"], "imp.rounds"),
    (["loss.temperature=0"], "loss.temperature"),
    (["data=mnist", "data.download=false", "data.root=nowhere"], "not found"),
    (["optimizer.lr=nan"], "optimizer.lr=nan must be a finite number"),
    (["imp.rounds=1000000"], "imp.rounds=1000000 is more than 100"),
    (["trainer.precision=garbage"], "trainer.precision=garbage"),  # was Hydra's error, exit 1
]


@pytest.mark.parametrize("overrides,needle", BAD)
def test_bad_input_gives_one_line_and_exit_2(tmp_path, overrides, needle):
    res = cli(*TINY, "logger=none", *overrides, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], res.stderr[-1500:]
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("override", ["data=nope", "model=nope", "loss=nope"])
def test_unknown_config_option_is_reported_without_traceback(tmp_path, override):
    res = cli(override, cwd=tmp_path)
    assert res.returncode != 0
    assert f"Could not find '{override.replace('=', '/')}'" in res.stderr
    assert "Traceback" not in res.stderr


def test_finished_run_of_another_config_is_not_overwritten(tmp_path):
    run_dir = tmp_path / "run"
    first = cli(*TINY, "logger=none", "rewarded=[1]", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-1500:]
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    second = cli(*TINY, "logger=none", "rewarded=[2]", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert second.returncode == 2 and "different config" in second.stderr
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p in before}
    logs = [p for p in before if p.suffix == ".log"]  # the refused run's lines are appended
    assert logs and all(after.pop(p).startswith(before.pop(p)) for p in logs)
    assert after == before  # .hydra/ included: the refused run wrote none
