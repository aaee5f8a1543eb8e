"""Circuits: mask anatomy and overlap, subtraction from a weight sum, the task and its report."""

import json
import math

import pandas as pd
import pytest
import torch

from maxent_lightning import circuit_analysis as C
from maxent_lightning.composition import sum_states
from multirun_analysis.circuit_report import main, report

ANALYSES = {"anatomy", "overlap", "full", "necessity", "sufficiency", "unlearning", "editing"}


def test_subtracting_a_module_from_a_weight_sum_gives_the_sum_of_the_others():
    gen = torch.Generator().manual_seed(0)
    states = [{"w": torch.randn(5, 4, generator=gen), "b": torch.randn(5, generator=gen),
               "n": torch.tensor(3)} for _ in range(4)]
    merged = sum_states(states)
    for i in range(4):
        others = sum_states([s for k, s in enumerate(states) if k != i])
        got = C.subtract_state(merged, states[i])
        assert C.max_abs_diff(got, others) < 1e-5
        assert torch.equal(got["n"], torch.tensor(3))  # integer buffers are kept
    ints = [{"w": torch.randint(-50, 50, (6, 3), generator=gen).float()} for _ in range(3)]
    assert torch.equal(C.subtract_state(sum_states(ints), ints[0])["w"],
                       sum_states(ints[1:])["w"])  # exactly, where float sums are exact


def test_jaccard_of_a_mask_with_itself_is_one_and_with_a_disjoint_mask_zero():
    a = torch.tensor([1, 1, 0, 0, 1], dtype=torch.bool)
    assert C.jaccard(a, a) == 1.0
    assert C.jaccard(a, ~a) == 0.0
    assert C.jaccard(a, torch.tensor([1, 0, 1, 0, 0], dtype=torch.bool)) == pytest.approx(1 / 4)
    assert math.isnan(C.jaccard(torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)))
    mats = C.overlap_matrices([{"l.weight": a.view(1, 5)}, {"l.weight": ~a.view(1, 5)}])
    assert mats["l.weight"].tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_anatomy_counts_inputs_on_a_path_to_the_output_and_units_used():
    # 4 inputs -> 3 hidden -> 2 outputs. Hidden 0 reads inputs 0, 1 and writes; hidden 1 reads
    # input 2 but writes nothing; hidden 2 writes but reads nothing.
    w1 = torch.zeros(3, 4, dtype=torch.bool)
    w1[0, 0] = w1[0, 1] = w1[1, 2] = True
    w2 = torch.zeros(2, 3, dtype=torch.bool)
    w2[0, 0] = w2[1, 2] = True
    masks = {"h.weight": w1, "h.bias": torch.ones(3, dtype=torch.bool), "o.weight": w2}
    first, out = C.anatomy(masks)
    assert (first["layer"], first["size"], first["inputs_read"], first["units_used"]) == (
        "h.weight", 3, 2, 1)
    assert (out["size"], out["inputs_read"], out["units_used"]) == (2, 2, 2)
    assert C.input_fan_out(masks).tolist() == [1, 1, 0, 0]
    assert set(C.layer_masks(masks)) == {"h.weight", "o.weight", "all", "h.weight/units"}


def test_restricting_a_state_keeps_only_the_masked_weights():
    state = {"w": torch.ones(2, 2), "b": torch.ones(2)}
    got = C.restrict_state(state, {"w": torch.eye(2, dtype=torch.bool)})
    assert got["w"].tolist() == [[1, 0], [0, 1]] and got["b"].tolist() == [1, 1]


@pytest.fixture
def run_circuits(tmp_path, run_job):
    """The task on 3 classes with cheap modules, as a Hydra job into tmp_path/job."""

    def run(*overrides):
        return run_job(tmp_path / "job", "+experiment=circuits_mnist5k",
                       "circuits.classes=[0,1,2]", "imp.sparsity=0.5", "imp.rounds=1",
                       "trainer.max_epochs=1", *overrides)

    return run


def test_circuits_task_writes_every_table_and_the_report(tmp_path, capsys, run_circuits):
    metrics = run_circuits()
    job = tmp_path / "job"
    for name in ("config.yaml", "metrics.json", "results.csv", "overlap.csv", "overlap.png",
                 "necessity.png", "circuit_inputs.png"):
        assert (job / name).is_file(), name
    frame = pd.read_csv(job / "results.csv")
    assert set(frame.analysis) == ANALYSES
    assert (frame.task == "circuits").all() and set(frame.seed) == {0}
    assert set(frame[frame.analysis == "necessity"]["merge"]) == {"weight", "logit"}
    assert len(frame[frame.analysis == "necessity"]) == 6  # 3 classes x 2 merge kinds
    un = frame[frame.analysis == "unlearning"]
    assert un.param_diff.max() < 1e-5  # subtraction = the merge built without the module
    sub, ret = (un[un.variant == v].set_index("class") for v in ("subtracted", "retrained"))
    assert (sub.class_acc - ret.class_acc).abs().max() < 1e-6
    overlap = pd.read_csv(job / "overlap.csv")
    diag = overlap[(overlap["class"] == overlap.other_class) & (overlap.layer == "all")]
    assert (diag.jaccard == 1.0).all()
    assert json.loads((job / "metrics.json").read_text())["classes"] == [0, 1, 2]
    assert "necessity/weight" in metrics and "overlap_mean_offdiag" in metrics

    assert run_circuits() is None  # finished: skipped
    assert "skip" in capsys.readouterr().out

    paths = report(frame, tmp_path / "report")
    md = (tmp_path / "report" / "circuits.md").read_text()
    for title in ("Necessity", "Sufficiency", "Unlearning", "Editing", "Anatomy", "Overlap"):
        assert title in md
    assert (tmp_path / "report" / "circuits_overlap_circuits_mnist5k.png").is_file()
    for kind in ("overlap", "necessity"):  # vector copies beside the PNGs
        pdf = tmp_path / "report" / f"circuits_{kind}_circuits_mnist5k.pdf"
        assert pdf.read_bytes()[:5] == b"%PDF-"
    assert all(p.is_file() for p in paths)

    assert main([str(tmp_path), "--out", str(tmp_path / "cli")]) == 0  # the standalone CLI
    assert (tmp_path / "cli" / "circuits.md").is_file()


def test_circuits_rejects_a_single_class(run_circuits):
    from maxent_lightning.errors import UserError

    with pytest.raises(UserError, match="at least two classes"):
        run_circuits("circuits.classes=[3]")
