"""W&B: one group per experiment, job types, unique names, config, tags, numeric
summaries and Tables, a step rising across IMP rounds; read back from the offline run files."""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf
from test_analysis import make_multirun

from maxent_lightning.errors import UserError
from maxent_lightning.family import train_family
from maxent_lightning.loggers import flat_numbers, run_tags
from maxent_lightning.training import train_module
from multirun_analysis.__main__ import main as analysis_main

BLOCK, HEADER = 32768, 7  # the LevelDB log framing of W&B's .wandb transaction log


def records(path: Path):
    """The protobuf records of an offline run's ``run-*.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw, pos, buf = path.read_bytes(), HEADER, b""
    assert raw[:4] == b":W&B"
    while pos + HEADER <= len(raw):
        if BLOCK - pos % BLOCK < HEADER:  # block trailer
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + HEADER])
        if kind == 0:
            break
        buf += raw[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):  # full or last fragment
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def finished_runs(root: Path) -> list[Path]:
    """The ``run-*.wandb`` files of the offline runs under ``root`` (the test's own tmp_path),
    once W&B has closed them. ``Run.finish()`` returns before the W&B service has written the
    run's file: it buffers the records and writes them when it closes the run, after finish
    has returned. ``wandb.teardown()`` waits for the service to exit, so every run it held is
    closed; the next run starts a new service."""
    import wandb

    wandb.teardown()
    files = sorted(root.rglob("offline-run-*/run-*.wandb"))
    for path in files:
        kinds = {r.WhichOneof("record_type") for r in records(path)}
        assert {"run", "exit"} <= kinds, f"{path}: not a finished run ({sorted(kinds)})"
    return files


def read_run(path: Path) -> dict:
    """group, job_type, name, tags, project, config, history rows, final summary and the axes
    of ``define_metric`` ({name or glob: step metric}) of an offline run."""
    out = {"config": {}, "history": [], "summary": {}, "axes": {}}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out.update(group=r.run.run_group, job_type=r.run.job_type, name=r.run.display_name,
                       tags=list(r.run.tags), project=r.run.project)
            out["config"].update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "config":  # nested keys: W&B's own (_wandb/visualize/<chart>)
            out["config"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                  for i in r.config.update})
        elif kind == "metric":
            out["axes"][r.metric.name or r.metric.glob_name] = r.metric.step_metric
        elif kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in r.history.item})
    for row in out["history"]:
        out["summary"].update(row)
    return out


def runs_under(root: Path) -> list[dict]:
    return [read_run(path) for path in finished_runs(root)]


@pytest.mark.parametrize("family", [True, False], ids=["family", "sequential"])
def test_pairwise_job_and_its_modules_tell_the_story(tmp_path, monkeypatch, run_job, family):
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "job"
    run_job(out, "task=pairwise", "logger=wandb", "tags=[smoke,c13]", "imp.rounds=1",
            "trainer.max_epochs=2", "model.hidden=[16]", f"family.enabled={family}",
            "experiment_name=story")
    (job,) = runs_under(out)
    modules = runs_under(tmp_path / "store")
    assert len(modules) == 2
    for run in [job, *modules]:
        assert run["group"] == "story" and run["tags"] == ["smoke", "c13"]
        assert run["config"]["seed"] == 0 and run["config"]["tags"] == ["smoke", "c13"]
        assert run["config"]["data"]["name"] == "digits"
    assert job["job_type"] == "pairwise" and {m["job_type"] for m in modules} == {"train"}
    names = [r["name"] for r in [job, *modules]]
    assert len(set(names)) == 3 and all("mlp_shallow-maxent-layerwise" in n for n in names)
    assert sorted(m["config"]["rewarded"] for m in modules) == [[0], [8]]

    for m in modules:  # live per epoch, the step rising across the IMP rounds
        rows = [h for h in m["history"] if "val/loss" in h]
        steps = [h["trainer/global_step"] for h in rows]
        assert [h["imp/round"] for h in rows] == [0, 0, 1, 1]
        assert steps == sorted(steps) and len(set(steps)) == 4
        assert isinstance(m["summary"]["test/rewarded_acc"], int | float)
        assert m["summary"]["trainer/global_step"] >= steps[-1]  # test: after the last round

    summary = job["summary"]
    for key in ("weight/rewarded_acc", "weight/nonrewarded_entropy", "logit/rewarded_acc",
                "logit/nonrewarded_entropy", "wall_s", "rows"):
        assert isinstance(summary[key], int | float), key
    assert not any(k.startswith("trainer/") for k in summary)  # a job trains nothing
    table = next(out.rglob("media/table/results_*.table.json"))
    frame = pd.DataFrame(**{k: json.loads(table.read_text())[k] for k in ("columns", "data")})
    assert frame["rewarded_acc"].dtype.kind == "f" and frame["pair"].dtype.kind == "i"
    assert list(frame["merge"]) == ["none", "none", "weight", "logit"]
    # the two modules alone, in the summary beside the merges, as results.csv has them
    results = pd.read_csv(out / "results.csv", dtype={"class_set": str})
    for letter, row in zip("ab", results[results["merge"] == "none"].itertuples(), strict=True):
        assert summary[f"module_{letter}/class_set"] == row.class_set
        for key in ("rewarded_acc", "nonrewarded_entropy"):
            assert summary[f"module_{letter}/{key}"] == pytest.approx(getattr(row, key))
    assert {summary["module_a/class_set"], summary["module_b/class_set"]} == {"0", "8"}
    for m in modules:  # each module's own run scores it as the job does
        rewarded = "-".join(map(str, m["config"]["rewarded"]))
        letter = "a" if summary["module_a/class_set"] == rewarded else "b"
        assert m["summary"]["test/rewarded_acc"] == pytest.approx(
            summary[f"module_{letter}/rewarded_acc"], abs=1e-5)


def test_curves_are_line_series_and_modules_artifacts(tmp_path, monkeypatch, run_job):
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "mc"
    run_job(out, "task=mode_connectivity", "path.between=pair", "path.points=3", "logger=wandb",
            "logger.wandb.log_model=true", "imp=none", "trainer.max_epochs=1",
            "model.hidden=[16]")
    (job,) = runs_under(out)
    assert job["job_type"] == "mode_connectivity"
    for split in ("test", "train"):  # a line-series chart over a table of 3 points
        chart = job["config"][f"_wandb/visualize/barrier_{split}"]["panel_config"]
        assert chart["panelDefId"] == "wandb/lineseries/v0"
        assert chart["stringSettings"]["xname"] == "t"
        assert job["summary"][f"barrier_{split}_table/nrows"] == 3
    assert isinstance(job["summary"]["max_barrier_pct/test/pair"], int | float)
    # the barrier curves as history on their own axis t, so grouped runs average them
    assert job["axes"]["barrier/*"] == "barrier/t"
    results = pd.read_csv(out / "results.csv")
    rows = [h for h in job["history"] if "barrier/t" in h]
    assert [h["barrier/t"] for h in rows] == [0, 0.5, 1]
    for split in ("test", "train"):
        ours = results[results["split"] == split].sort_values("t")["barrier_pct"]
        assert [h[f"barrier/{split}/pair"] for h in rows] == pytest.approx(list(ours))
    assert not any(k.startswith("trainer/") for k in job["summary"])
    modules = finished_runs(tmp_path / "store")
    assert len(modules) == 2
    for run_file in modules:
        assert "artifact" in {r.WhichOneof("record_type") for r in records(run_file)}


def test_complete_merge_curves_on_the_merge_step_axis(tmp_path, monkeypatch, run_job):
    """R-Acc and entropy of the complete merge at each step as history on ``merge/step``
    (``define_metric``): a W&B group of such runs averages them into Figure 4's curve."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "complete"
    run_job(out, "task=complete", "permutation=ordered", "logger=wandb", "imp=none",
            "trainer.max_epochs=1", "model.hidden=[16]")
    (job,) = runs_under(out)
    assert job["axes"]["merge/*"] == "merge/step"
    rows = [h for h in job["history"] if "merge/step" in h]
    results = pd.read_csv(out / "results.csv")
    steps = sorted(results["step"].unique())
    assert [h["merge/step"] for h in rows] == steps and len(steps) >= 3
    for kind in ("weight", "logit"):
        ours = results[results["merge"] == kind].sort_values("step")
        for key in ("rewarded_acc", "nonrewarded_entropy"):
            logged = [h.get(f"merge/{kind}/{key}", float("nan")) for h in rows]
            assert logged == pytest.approx(list(ours[key]), nan_ok=True)  # no entropy at 10
    assert "trainer/global_step" not in job["summary"]
    assert "module_a/rewarded_acc" not in job["summary"]  # no module is scored alone here


def test_tags_are_checked():
    assert run_tags(OmegaConf.create({"tags": "solo"})) == ["solo"]
    assert run_tags(OmegaConf.create({"tags": [1, "b"]})) == ["1", "b"]
    with pytest.raises(UserError, match="1 to 64"):
        run_tags(OmegaConf.create({"tags": ["x" * 65]}))


def test_flat_numeric_summary():
    tree = {"weight": {"rewarded_acc": 0.5, "class_sets": [[0]]}, "task": "pairwise",
            "max_barrier_pct": {"test": {"2": 1.5}}, "connected": True, "rows": 4}
    assert flat_numbers(tree) == {"weight/rewarded_acc": 0.5, "max_barrier_pct/test/2": 1.5,
                                  "connected": True, "rows": 4}


def test_csv_logger_never_imports_wandb_and_its_step_rises(tmp_path, fast_overrides):
    script = (
        "import sys\n"
        "from maxent_lightning.config import compose_config\n"
        "from maxent_lightning.cli import run_task\n"
        f"run_task(compose_config({[*fast_overrides, 'logger=csv', 'imp.rounds=1']!r}"
        f" + ['paths.store_dir={tmp_path}/store'], output_dir='{tmp_path}/run'))\n"
        "print('wandb' in sys.modules)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "False"
    frame = pd.read_csv(next((tmp_path / "store").rglob("metrics.csv")))  # the module's own
    rows = frame.dropna(subset=["val/loss"])
    assert list(rows["imp/round"]) == [0, 0, 1, 1]
    assert rows["step"].is_monotonic_increasing and rows["step"].nunique() == 4


def test_analysis_publishes_tables_as_wandb_tables(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    root, _ = make_multirun(tmp_path / "multirun" / "synthetic")
    args = [str(root), "--out", str(tmp_path / "r"), "--table", "table2", "--wandb"]
    assert analysis_main(args) == 0
    assert "wandb sync" in capsys.readouterr().out
    (run,) = runs_under(tmp_path / "r")
    assert run["job_type"] == "analysis" and run["summary"]["tables/table2/nrows"] > 0
    table = json.loads(next((tmp_path / "r").rglob("media/table/tables/table2*.json")).read_text())
    frame = pd.DataFrame(table["data"], columns=table["columns"])
    assert frame["mean"].dtype.kind == "f" and frame["n"].dtype.kind == "i"


@pytest.mark.parametrize("family", [True, False], ids=["family", "sequential"])
def test_a_resumed_module_continues_the_step(make_cfg, tmp_path, family):
    cfg = make_cfg("logger=csv", "imp.rounds=1")
    out = tmp_path / "m"

    def train():
        return train_family(cfg, [([2], out)]) if family else train_module(cfg, out, [2])

    train()
    for name in ("module.pt", "metrics.json"):  # stopped in the final phase: resumes there
        (out / name).unlink()
    train()
    first, resumed = (pd.read_csv(p).dropna(subset=["val/loss"])
                      for p in sorted(out.glob("csv/*/metrics.csv")))
    assert set(resumed["imp/round"]) == {1}
    assert list(resumed["step"]) == list(first[first["imp/round"] == 1]["step"])


def test_without_figures_the_confusion_is_a_wandb_chart(make_cfg, tmp_path, monkeypatch):
    """figures=false: no confusion.png; the run gets W&B's confusion-matrix chart of the counts
    (metrics.json keeps the matrix)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_cfg("logger=wandb", "figures=false", "imp=none", "trainer.max_epochs=1",
                   "model.hidden=[16]")
    (metrics,) = train_family(cfg, [([3], tmp_path / "m")])
    assert not (tmp_path / "m" / "confusion.png").exists()
    (run,) = runs_under(tmp_path / "m")
    chart = run["config"]["_wandb/visualize/test/confusion"]["panel_config"]
    assert chart["panelDefId"] == "wandb/confusion_matrix/v1"
    assert run["summary"]["test/confusion_table/nrows"] == metrics["num_classes"] ** 2
    table = json.loads(next((tmp_path / "m").rglob("media/table/test/confusion_table*.json"))
                       .read_text())
    assert sum(n for _, _, n in table["data"]) == sum(map(sum, metrics["confusion"]))


def test_runs_record_the_git_commit_read_once_per_process(tmp_path, monkeypatch):
    from maxent_lightning.compat import wandb_git_settings
    from maxent_lightning.loggers import WandbLogger

    try:
        head = subprocess.check_output(["git", "rev-parse", "HEAD"], text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not run from a git checkout")
    wandb_git_settings.cache_clear()
    commands, popen = [], subprocess.Popen.__init__

    def spy(self, args, *a, **k):
        commands.append(args if isinstance(args, str) else " ".join(map(str, args)))
        return popen(self, args, *a, **k)

    monkeypatch.setattr(subprocess.Popen, "__init__", spy)
    git_calls = []
    for i in range(3):
        before = len(commands)
        logger = WandbLogger(project="p", mode="offline", save_dir=str(tmp_path / f"r{i}"),
                             name=f"r{i}", settings={"x_disable_stats": True, "console": "off"})
        logger.experiment.log({"x": 1.0})
        logger.finish()
        git_calls.append(sum(c.startswith("git") for c in commands[before:]))
    assert git_calls[1:] == [0, 0]  # W&B alone runs four git commands per run
    for i in range(3):
        (path,) = finished_runs(tmp_path / f"r{i}")
        (run,) = [r.run for r in records(path) if r.WhichOneof("record_type") == "run"]
        assert run.git.commit == head
