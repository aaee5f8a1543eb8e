"""The ``circuits`` task: are the single-class modules of one seed functional circuits?

Trains (or reuses from the store) one module per class, then writes into the job directory:
``results.csv`` (tidy rows: anatomy, overlap, full, necessity, sufficiency, unlearning, editing),
``overlap.csv``, ``config.yaml``, the figures ``overlap.png``, ``necessity.png`` and, for image
data read by a Linear first layer, ``circuit_inputs.png``; ``metrics.json`` (summary) last: it
marks the job done, and a rerun of the same config prints skip.

Columns of ``results.csv`` besides the job's (task, experiment, data, model, loss, imp, ...):
``analysis``, ``merge`` (weight | logit | none), ``variant``, ``class`` (the module/class that
is removed, kept alone or added), ``class_acc`` (accuracy on that class), ``other_acc`` and
``other_drop`` / ``other_drop_max`` (mean accuracy of the other analysed classes, and their mean /
largest per-class drop against the complete merge, or against the merge before an edit),
``class_entropy`` and ``entropy_ratio`` (mean entropy on that class, and over ln|C|),
``full_class_acc`` (the class in the complete merge), ``param_diff`` (max |Δθ| between
subtraction and the merge built without the module), ``rewarded_acc`` / ``nonrewarded_entropy``
(on the model's own classes), and per layer ``size``, ``density``, ``inputs_read``,
``units_used`` (anatomy) or ``other_class`` and ``jaccard`` (overlap).
"""

import math
import time
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig

from .. import circuit_analysis as C
from ..data.datamodule import check_rewarded
from ..errors import UserError
from ..files import write_text
from ..jobs import Job, Outcome

ID_COLUMNS = ["task", "experiment", "data", "model", "loss", "imp", "sparsity", "temperature",
              "seed", "num_classes"]


def circuit_classes(cfg: DictConfig, num_classes: int, name: str) -> tuple[list[int], list[int]]:
    """The classes given a module each (default all) and those re-added by editing."""
    opts = cfg.circuits
    given = opts.classes
    classes = check_rewarded(list(range(num_classes)) if given is None else list(given),
                             num_classes, name)
    if len(classes) < 2:
        raise UserError(f"circuits.classes={classes} needs at least two classes to compose")
    edit = opts.edit_classes
    edit = classes if edit is None else check_rewarded(list(edit), num_classes, name)
    outside = [c for c in edit if c not in classes]
    if outside:
        raise UserError(f"circuits.edit_classes has {outside}, not in circuits.classes={classes}")
    return classes, edit


def needs(cfg: DictConfig, num_classes: int) -> list[list[int]]:
    """The rewarded sets of the store modules the job takes (the sweep planner asks)."""
    return [[c] for c in circuit_classes(cfg, num_classes, cfg.data.name)[0]]


def summary(rows: list[dict], matrices: dict, ln_c: float, target: C.NecessityTarget) -> dict:
    """Headline numbers: the necessity target and the mean of every analysis."""
    df = pd.DataFrame(rows)
    out = {}
    for merge in ("weight", "logit"):
        nec = df[(df.analysis == "necessity") & (df["merge"] == merge)]
        out[f"necessity/{merge}"] = {
            "class_acc_mean": nec.class_acc.mean(), "class_acc_max": nec.class_acc.max(),
            "other_drop_mean": nec.other_drop.mean(), "other_drop_max": nec.other_drop.max(),
            "full_class_acc_mean": nec.full_class_acc.mean(),
            "target_met": bool(target.met(nec.class_acc, nec.other_drop).all()),
        }
        ed = df[(df.analysis == "editing") & (df["merge"] == merge)]
        out[f"editing/{merge}"] = {k: ed[k].mean() for k in
                                   ("class_acc_before", "class_acc", "other_drop")}
    for variant in ("alone", "restricted"):
        suf = df[(df.analysis == "sufficiency") & (df.variant == variant)]
        out[f"sufficiency/{variant}"] = {"class_acc_mean": suf.class_acc.mean(),
                                         "class_acc_min": suf.class_acc.min()}
    for variant in ("subtracted", "retrained"):
        un = df[(df.analysis == "unlearning") & (df.variant == variant)]
        out[f"unlearning/{variant}"] = {
            "class_acc_mean": un.class_acc.mean(), "class_entropy_mean": un.class_entropy.mean(),
            "entropy_max": ln_c, "other_drop_mean": un.other_drop.mean(),
            "param_diff_max": un.param_diff.max()}
    off = {layer: m[~torch.eye(len(m), dtype=torch.bool)] for layer, m in matrices.items()}
    out["overlap_mean_offdiag"] = {layer: float(v.nanmean()) for layer, v in off.items()}
    return out


def run(job: Job) -> Outcome:
    cfg = job.cfg
    splits = job.load_data()
    classes, edit = circuit_classes(cfg, splits.num_classes, cfg.data.name)
    target = C.NecessityTarget(**cfg.circuits.target)
    records = job.modules([[c] for c in classes])
    train_s = time.perf_counter() - job.t0
    ts = C.TestSet(splits.x_test, splits.y_test, splits.num_classes,
                   records[0].temperature, classes, job.trainer)
    comp = C.Compositions(records, ts)
    matrices = C.overlap_matrices([r.masks for r in records])
    rows = (C.anatomy_rows(records, classes) + C.overlap_rows(matrices, classes)
            + C.full_rows(comp) + C.necessity_rows(comp, target) + C.sufficiency_rows(comp)
            + C.unlearning_rows(comp) + C.editing_rows(comp, edit))

    ids = {k: v for k, v in job.row().items() if k in ID_COLUMNS}
    ids.update(task="circuits", temperature=float(records[0].temperature),
               num_classes=splits.num_classes)
    rows = [{**ids, **r} for r in rows]
    frame = pd.DataFrame(rows)
    columns = ID_COLUMNS + [c for c in frame.columns if c not in ID_COLUMNS]
    overlap = frame[frame.analysis == "overlap"][["seed", "layer", "class", "other_class",
                                                  "jaccard"]]
    write_text(job.out / "overlap.csv", overlap.to_csv(index=False))

    names = {c: splits.classes[c] for c in classes}
    labels = [names[c] for c in classes]
    tag = f"{cfg.data.name} {ids['model']} seed {cfg.seed}"
    C.overlap_png(job.image("overlap"), matrices, labels, f"Jaccard overlap of masks — {tag}")
    C.necessity_png(job.image("necessity"), [r for r in rows if r["analysis"] == "necessity"],
                    names, target, f"necessity — {tag}")
    fans = [C.input_fan_out(r.masks) for r in records]
    if len(splits.input_shape) >= 2 and all(f is not None for f in fans):
        C.inputs_png(job.image("circuit_inputs"), fans, splits.input_shape, labels,
                     f"input pixels read by each circuit — {tag}")
    return Outcome(rows, {
        **ids, "classes": classes, "edit_classes": edit,
        "modules": [str(p) for p in job.module_paths],
        "train_s": round(train_s, 2), **summary(rows, matrices, math.log(splits.num_classes),
                                                 target)}, run_name=f"circuits-seed{cfg.seed}",
        columns=columns)


def report_text(m: dict, out: Path) -> str:
    """The summary printed once the job's metrics.json is written (its wall time inside)."""
    lines = [f"circuits {m['data']} {m['model']} seed={m['seed']} ({len(m['classes'])} modules)"]
    for merge in ("weight", "logit"):
        n = m[f"necessity/{merge}"]
        lines.append(
            f"  remove module i ({merge:6s}): class-i acc mean {n['class_acc_mean']:.3f} max "
            f"{n['class_acc_max']:.3f}; other classes drop mean {100 * n['other_drop_mean']:.2f}"
            f" max {100 * n['other_drop_max']:.2f} points; target met: {n['target_met']}")
    s, r = m["sufficiency/alone"], m["sufficiency/restricted"]
    lines.append(f"  sufficiency: module alone {s['class_acc_mean']:.3f}, merge restricted to "
                 f"its mask {r['class_acc_mean']:.3f}")
    u = m["unlearning/subtracted"]
    lines.append(f"  unlearning: class-i entropy {u['class_entropy_mean']:.3f} of "
                 f"{u['entropy_max']:.3f}; |subtracted − retrained| ≤ {u['param_diff_max']:.2e}")
    lines.append("  mean off-diagonal Jaccard: " + ", ".join(
        f"{k} {v:.3f}" for k, v in m["overlap_mean_offdiag"].items()))
    lines.append(f"  wall time {m['wall_s']:.1f} s (training {m['train_s']:.1f} s); outputs {out}")
    return "\n".join(lines)
