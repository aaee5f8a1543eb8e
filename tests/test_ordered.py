"""permutation=ordered: complete merges and barriers in increasing class order 0, 1, 2, ... beside
the random permutations, through the real CLI (plan, run, shared modules), and the analysis
keeping the class orders apart."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest
from test_experiments import cli

from maxent_lightning import classsets
from maxent_lightning.errors import UserError
from maxent_lightning.files import read_json
from maxent_lightning.modulefile import load_module
from maxent_lightning.phases import validate
from maxent_lightning.results import ADDED, COLUMNS
from multirun_analysis import analyze, load_runs
from multirun_analysis.figures import one_order

_spec = importlib.util.spec_from_file_location(
    "bad_input_matrix", Path(__file__).resolve().parents[1] / "scripts" / "bad_input_matrix.py")
matrix = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(matrix)
TINY = ["data=digits", "model.hidden=[16]", "imp=none", "trainer.max_epochs=1", "logger=none",
        "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]



def steps(frame: pd.DataFrame) -> list[str]:
    """The class set of each merge step of a complete job (weight rows)."""
    weight = frame[frame["merge"] == "weight"].sort_values("step", key=lambda s: s.astype(int))
    return list(weight["class_set"])


def test_ordered_is_increasing_and_indices_stay_random():
    assert classsets.class_permutation(10, "ordered") == list(range(10))
    assert classsets.class_permutation(4, "ordered") == [0, 1, 2, 3]
    random = [classsets.class_permutation(10, i) for i in range(3)]
    assert all(sorted(p) == list(range(10)) for p in random)
    assert list(range(10)) not in random and random[0] == classsets.class_permutation(10, "0")


@pytest.mark.parametrize("overrides, says", [
    (["task=pairwise", "permutation=ordered"], "task=pairwise follows no class order"),
    (["task=mode_connectivity", "path.between=pair", "permutation=ordered"],
     "task=mode_connectivity with path.between=pair follows no class order"),
    (["task=train", "permutation=ordered"], "task=train follows no class order"),
    (["task=complete", "permutation=sorted"], "permutation=sorted must be ordered"),
    (["task=complete", "permutation=-1"], "permutation=-1 must be ordered"),
    (["task=complete", "permutation=1.5"], "permutation=1.5 must be ordered"),
])
def test_bad_permutations_are_one_line(make_cfg, overrides, says):
    with pytest.raises(UserError) as err:
        validate(make_cfg(*overrides))
    assert says in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("overrides", [
    ["task=complete", "permutation=ordered"], ["task=complete", "permutation=3"],
    ["task=mode_connectivity", "permutation=ordered"], ["task=pairwise", "permutation=3"]])
def test_good_permutations_pass(make_cfg, overrides):
    validate(make_cfg(*overrides))


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """A planned, then run, complete sweep over permutation=ordered,0,1 and a barrier sweep over
    permutation=ordered,1 sharing its store."""
    tmp = tmp_path_factory.mktemp("ordered")
    sweep = ["-m", "permutation=ordered,0,1", *TINY]
    plan = cli(tmp, "task=complete", *sweep, "plan_only=true", f"hydra.sweep.dir={tmp}/plan")
    complete = cli(tmp, "task=complete", *sweep, f"hydra.sweep.dir={tmp}/complete")
    mc = cli(tmp, "task=mode_connectivity", "-m", "permutation=ordered,1", "path.points=3",
             *TINY, f"hydra.sweep.dir={tmp}/mc")
    for run in (plan, complete, mc):
        assert run.returncode == 0, run.stderr[-3000:]
    return tmp, plan, mc


def test_sweep_over_orders_plans_runs_and_shares_modules(sweeps):
    tmp, plan, mc = sweeps
    assert "plan: 3 job(s)" in plan.stdout and "10 distinct module(s)" in plan.stdout
    assert not (tmp / "plan").exists() or not list((tmp / "plan").glob("*/results.csv"))
    orders = {"ordered": list(range(10)), "0": classsets.class_permutation(10, 0),
              "1": classsets.class_permutation(10, 1)}
    for num, name in enumerate(orders):
        frame = pd.read_csv(tmp / "complete" / str(num) / "results.csv", dtype=str)
        assert list(frame.columns) == COLUMNS and set(frame["permutation"]) == {name}
        order = orders[name]
        assert steps(frame) == ["-".join(map(str, sorted(order[:k]))) for k in range(1, 11)]
        assert read_json(tmp / "complete" / str(num) / "metrics.json")["order"] == order
    # which modules a job takes, not what they are: one module per class for every order
    modules = sorted((tmp / "store" / "digits").glob("*/module.pt"))
    assert sorted(load_module(p).rewarded[0] for p in modules) == list(range(10))
    assert "10 stored, 0 to train" in mc.stdout
    barrier = pd.read_csv(tmp / "mc" / "0" / "results.csv", dtype=str)
    assert set(barrier["permutation"]) == {"ordered"}
    assert set(barrier["class_set"]) == {"-".join(map(str, range(k))) for k in range(2, 11)}


@pytest.mark.parametrize("name", ["permutation neither ordered nor an index",
                                  "permutation=ordered where no class order is followed",
                                  "model=custom naming no class"])
def test_bad_input_matrix_cases_through_the_entry_point(tmp_path, name):
    case = next(c for c in matrix.CASES if c.name == name)
    rc, stderr = matrix.cli_in_process(matrix.case_args(case, {}, tmp_path, 0))
    assert rc == 2 and matrix.outcome(case, case.args, rc, stderr)["ok"], stderr[-1500:]


def test_analysis_keeps_orders_apart(sweeps, tmp_path):
    tmp = sweeps[0]
    frame = load_runs([tmp / "complete", tmp / "mc"]).frame
    assert set(frame["permutation"]) == {"ordered", "0", "1"}
    assert set(frame["order"]) == {"ordered", "random"}
    report = analyze([tmp / "complete", tmp / "mc"], tmp_path, ["fig5", "cifar100"])
    names = {p.name for p in report.written}
    assert {"fig5_ordered.png", "fig5_random.png"} <= names  # not averaged together
    table = (tmp_path / "merged_modules.md").read_text()
    assert "| Order" in table and "ordered" in table and "random" in table
    # the confusion grids show one class order: ordered (the paper's Figures 19-21)
    shown = one_order(frame[frame["task"] == "complete"])
    assert set(shown["permutation"]) == {"ordered"}
    random = frame[(frame["task"] == "complete") & (frame["permutation"] != "ordered")]
    assert set(one_order(random)["permutation"]) == {"0"}


def test_results_written_before_the_width_column_still_load(tmp_path):
    job = tmp_path / "0"
    job.mkdir()
    legacy = [c for c in COLUMNS if c not in ADDED]
    row = {c: None for c in legacy} | {"task": "complete", "data": "digits", "model": "mlp_shallow",
                                       "permutation": 3, "step": 1, "merge": "weight",
                                       "split": "test", "rewarded_acc": 0.5}
    pd.DataFrame([row], columns=legacy).to_csv(job / "results.csv", index=False)
    (job / "metrics.json").write_text('{"rows": 1}')
    frame = load_runs([tmp_path]).frame
    assert frame["permutation"].tolist() == ["3"] and frame["width"].isna().all()
