"""The ``single`` task: the modules of one seed, each evaluated alone on its own classes
(Table 1). ``cardinality=1``: one module per class of ``classes`` (default every class);
``cardinality>1``: the class sets of the ``n_pairs`` sampled pairs of that cardinality."""

import math

import numpy as np
from omegaconf import DictConfig

from ..builders import net_from_record
from ..classsets import class_set, sample_pairs
from ..data.datamodule import check_rewarded
from ..evaluate import Evaluation
from ..jobs import Job, Outcome


def rewarded_sets(cfg: DictConfig, num_classes: int) -> list[list[int]]:
    if int(cfg.cardinality) == 1:
        classes = range(num_classes) if cfg.classes is None else [int(c) for c in cfg.classes]
        return [[c] for c in check_rewarded(list(classes), num_classes, cfg.data.name)]
    sets = []
    for pair in sample_pairs(num_classes, cfg.cardinality, cfg.n_pairs, cfg.pair_seed):
        sets += [s for s in pair if s not in sets]
    return sets


needs = rewarded_sets  # the store modules a job takes (the sweep planner asks)


def run(job: Job) -> Outcome:
    cfg = job.cfg
    splits = job.load_data()
    sets = rewarded_sets(cfg, splits.num_classes)
    records = job.modules(sets, compose=False)
    evaluation = Evaluation()
    for rewarded, rec in zip(sets, records, strict=True):
        evaluation.add(class_set(rewarded), evaluation.net(net_from_record(rec)), rewarded)
    # one pass for all modules; temperatures are equal (one config)
    scored = job.evaluate(evaluation, records[0].temperature)
    rows, confusions = [], []
    for rewarded in sets:
        name = class_set(rewarded)
        values, confusion = scored[name]
        rows.append(job.row(cardinality=len(rewarded), class_set=name, merge="none",
                            split="test", **values))
        confusions.append({"class_set": name, "merge": "none", "matrix": confusion.tolist()})
        job.confusion(f"confusion_R{name}", confusion, splits.classes,
                      title=f"module R={rewarded} seed={cfg.seed}")
    acc = float(np.nanmean([r["rewarded_acc"] for r in rows]))
    entropy = float(np.nanmean([r["nonrewarded_entropy"] for r in rows]))
    print(f"single {cfg.data.name} seed={cfg.seed}: {len(rows)} modules, mean rewarded acc "
          f"{acc:.4f}, mean non-rewarded entropy {entropy:.3f} "
          f"(max {math.log(splits.num_classes):.3f}) -> {job.out}")
    summary = {"modules": len(rows), "rewarded_acc": acc, "nonrewarded_entropy": entropy,
               "class_sets": sets, "confusions": confusions}
    return Outcome(rows, summary, run_name=f"single-seed{cfg.seed}")
