"""The ``complete`` task (Figures 4, 6, 7, 19-21): one module per class, added one at a time in
the order of class permutation ``permutation`` (``ordered``: 0, 1, 2, ...); at step k the first
k modules are merged (weight sum, BatchNorm recalibrated, and logit averaging) and evaluated on
the first k classes."""

from omegaconf import DictConfig

from ..builders import net_from_record
from ..classsets import class_permutation, class_set
from ..composition import sum_states
from ..errors import UserError
from ..evaluate import Evaluation
from ..jobs import Job, Outcome, merge_kinds
from ..phases import permutation_value

# Confusion matrices of every step go to metrics.json up to this many classes (else the last).
MAX_CLASSES_ALL_STEPS = 20


def needs(cfg: DictConfig, num_classes: int) -> list[list[int]]:
    """The rewarded sets of the store modules the job takes (the sweep planner asks)."""
    return [[c] for c in class_permutation(num_classes, cfg.permutation)]


def run(job: Job) -> Outcome:
    cfg = job.cfg
    if cfg.merge.logit_weights is not None:
        raise UserError("merge.logit_weights applies to pairwise and merge; complete averages "
                        "the logits of the first k modules with equal weights")
    splits = job.load_data()
    num_classes, kinds = splits.num_classes, merge_kinds(cfg)
    order = class_permutation(num_classes, cfg.permutation)
    records = job.modules([[c] for c in order])
    T = records[0].temperature
    # every step of both kinds in one pass: n module nets (each run once per batch; step k's
    # logit average reads the first k) and n weight sums
    evaluation = Evaluation()
    ids = [evaluation.net(net_from_record(rec)) for rec in records] if "logit" in kinds else []
    state = None
    for k, rec in enumerate(records, start=1):
        for kind in kinds:
            if kind == "weight":
                state = rec.state_dict if state is None else sum_states([state, rec.state_dict])
                terms = job.merged_net(evaluation, net_from_record(records[0], state))
            else:
                terms = [(i, 1.0 / k) for i in ids[:k]]
            evaluation.add(f"{kind}{k}", terms, order[:k])
    scored = job.evaluate(evaluation, T)
    rows, confusions, curves = [], [], {k: ([], []) for k in kinds}
    for k in range(1, len(records) + 1):
        rewarded = order[:k]
        for kind in kinds:
            values, confusion = scored[f"{kind}{k}"]
            rows.append(job.row(permutation=permutation_value(cfg.permutation), step=k, merge=kind,
                                class_set=class_set(rewarded), split="test", **values))
            curves[kind][0].append(k)
            curves[kind][1].append(values["rewarded_acc"])
            if num_classes <= MAX_CLASSES_ALL_STEPS or k == num_classes:
                confusions.append({"step": k, "merge": kind, "class_set": class_set(rewarded),
                                   "matrix": confusion.tolist()})
            if k == num_classes:
                job.confusion(f"confusion_{kind}", confusion, splits.classes,
                              title=f"complete {kind} merge, {k} modules, seed={cfg.seed}")
    job.plot("merge_curve", curves, "modules merged (step)", "rewarded accuracy",
             title=f"complete merge, permutation {cfg.permutation}, seed {cfg.seed}")
    final = {kind: curves[kind][1][-1] for kind in kinds}
    print(f"complete {cfg.data.name} permutation {cfg.permutation} {order} seed={cfg.seed}: "
          + ", ".join(f"{kind} " + " ".join(f"{a:.3f}" for a in curves[kind][1])
                      for kind in kinds))
    summary = {"order": order, "final_rewarded_acc": final, "confusions": confusions,
               "rewarded_acc_by_step": {kind: curves[kind][1] for kind in kinds}}
    return Outcome(rows, summary, run_name=f"perm{cfg.permutation}-seed{cfg.seed}")
