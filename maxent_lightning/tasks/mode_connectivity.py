"""The ``mode_connectivity`` task (Figure 5): MaxEnt loss on R1 ∪ R2 along the piecewise
linear path γ(t) from θ1 to θ2 (γ(½) = θ1 + θ2), on the test and the train split, and the
relative barrier in %. ``path.between=complete``: at each step k >= 2 of the complete merge
of permutation ``permutation`` (``ordered``: 0, 1, 2, ...), θ1 = sum of the first k-1 modules
and θ2 = module k. ``path.between=pair``: θ1, θ2 = the two modules of pair ``pair`` of
``cardinality``."""

import numpy as np
from omegaconf import DictConfig

from ..builders import net_from_record
from ..classsets import class_permutation, class_set, pick_pair
from ..composition import path_point, relative_barrier, sum_states
from ..errors import UserError
from ..evaluate import Evaluation
from ..jobs import Job, Outcome
from ..phases import permutation_value


def segments(cfg: DictConfig, num_classes: int):
    """(step, rewarded sets of the modules, (θ1 modules, θ2 module)) of each path."""
    if cfg.path.between == "pair":
        pair = pick_pair(cfg, num_classes)
        return None if pair is None else list(pair), [(None, 1)]
    if cfg.path.between != "complete":
        raise UserError(f"path.between={cfg.path.between} must be complete or pair")
    order = class_permutation(num_classes, cfg.permutation)
    return [[c] for c in order], [(k, k - 1) for k in range(2, num_classes + 1)]


def needs(cfg: DictConfig, num_classes: int) -> list[list[int]]:
    """The rewarded sets of the store modules the job takes (the sweep planner asks)."""
    return segments(cfg, num_classes)[0] or []


def run(job: Job) -> Outcome:
    cfg = job.cfg
    if int(cfg.path.points) < 3:
        raise UserError(f"path.points={cfg.path.points} must be >= 3")
    splits = job.load_data()
    sets, steps = segments(cfg, splits.num_classes)
    if sets is None:
        print(f"skip: fewer than {int(cfg.pair) + 1} distinct pairs of cardinality "
              f"{cfg.cardinality}")
        return Outcome([], {"skipped": "fewer distinct pairs than the pair index"})
    records = job.modules(sets)
    ts = [float(t) for t in np.linspace(0.0, 1.0, int(cfg.path.points))]
    connected_pct, splits_scored = float(cfg.path.connected_pct), ("test", "train")
    pair = cfg.path.between == "pair"
    extra = ({"cardinality": int(cfg.cardinality), "pair": int(cfg.pair)} if pair
             else {"permutation": permutation_value(cfg.permutation)})
    rows, worst, curves = [], {s: {} for s in splits_scored}, {s: {} for s in splits_scored}
    theta1 = None
    for step, last in steps:
        theta1 = (sum_states([r.state_dict for r in records[:last]]) if theta1 is None
                  else sum_states([theta1, records[last - 1].state_dict]))
        theta2, rewarded = records[last].state_dict, sorted(sum(sets[: last + 1], []))
        # one Trainer.test per path: its points (BatchNorm recalibrated) on both splits
        evaluation = Evaluation()
        for t in ts:
            point = net_from_record(records[0], path_point(theta1, theta2, t))
            i = job.merged_net(evaluation, point)
            for split in splits_scored:
                evaluation.add(f"{split}{t}", i, rewarded, split)
        result = job.evaluate(evaluation, records[0].temperature)
        scored = {split: [result[f"{split}{t}"][0] for t in ts] for split in splits_scored}
        for split, values in scored.items():
            barrier = relative_barrier([v["loss_value"] for v in values], ts)
            key = "pair" if pair else str(step)
            worst[split][key], curves[split][key] = max(barrier), (ts, barrier)
            for t, b, v in zip(ts, barrier, values, strict=True):
                rows.append(job.row(step=step, t=t, split=split, merge="weight",
                                    class_set=class_set(rewarded), barrier_pct=b, **extra, **v))
    for split in splits_scored:
        job.plot(f"barrier_{split}", curves[split], "t", "relative barrier (%)",
                 title=f"loss barrier along γ(t), {split} split", hline=connected_pct)
    connected = {k: all(worst[s][k] <= connected_pct for s in splits_scored)
                 for k in worst["test"]}
    print(f"mode connectivity {cfg.data.name} seed={cfg.seed}: max barrier % (test) "
          + " ".join(f"{k}:{v:.2f}" for k, v in worst["test"].items())
          + f"; connected everywhere: {all(connected.values())}")
    summary = {"max_barrier_pct": worst, "connected_by_step": connected,
               "connected": all(connected.values()), "t": ts, "class_sets": sets}
    return Outcome(rows, summary, run_name=f"mc-{'pair' if pair else 'perm'}-seed{cfg.seed}")
