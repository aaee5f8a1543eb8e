"""The ``pairwise`` task (Tables 2 and 4, Figure 3): pair ``pair`` of disjoint class sets of
size ``cardinality``; both modules alone on their own classes, then merged by weight sum
(BatchNorm recalibrated) and logit averaging, evaluated on R1 ∪ R2."""

from omegaconf import DictConfig

from ..builders import net_from_record
from ..classsets import class_set, pick_pair
from ..evaluate import Evaluation
from ..jobs import Job, Outcome, merge_kinds


def needs(cfg: DictConfig, num_classes: int) -> list[list[int]]:
    """The rewarded sets of the store modules the job takes (the sweep planner asks)."""
    pair = pick_pair(cfg, num_classes)
    return [] if pair is None else list(pair)


def run(job: Job) -> Outcome:
    cfg = job.cfg
    splits = job.load_data()
    pair = pick_pair(cfg, splits.num_classes)
    if pair is None:
        print(f"skip: data set '{cfg.data.name}' has fewer than {int(cfg.pair) + 1} distinct "
              f"pairs of cardinality {cfg.cardinality}")
        return Outcome([], {"skipped": "fewer distinct pairs than the pair index"})
    records = job.modules(list(pair))
    union = sorted(pair[0] + pair[1])
    common = {"cardinality": int(cfg.cardinality), "pair": int(cfg.pair), "split": "test"}
    evaluation = Evaluation()
    ids = [evaluation.net(net_from_record(rec)) for rec in records]
    for i, rewarded in zip(ids, pair, strict=True):
        evaluation.add(f"R{class_set(rewarded)}", i, rewarded)
    kinds = job.add_merges(evaluation, records, ids, union, merge_kinds(cfg),
                           cfg.merge.logit_weights)
    scored = job.evaluate(evaluation, records[0].temperature)
    rows = [job.row(class_set=class_set(rewarded), merge="none", **common,
                    **scored[f"R{class_set(rewarded)}"][0]) for rewarded in pair]
    summary = {"pair": [pair[0], pair[1]], "union": union, "confusions": []}
    for kind in kinds:
        values, confusion = scored[kind]
        rows.append(job.row(class_set=class_set(union), merge=kind, **common, **values))
        summary[kind] = values
        summary["confusions"].append({"class_set": class_set(union), "merge": kind,
                                      "matrix": confusion.tolist()})
        job.confusion(f"confusion_{kind}", confusion, splits.classes,
                      title=f"{kind} merge R1={pair[0]} R2={pair[1]} seed={cfg.seed}")
        print(f"pairwise {cfg.data.name} |R|={cfg.cardinality} pair {cfg.pair} R1={pair[0]} "
              f"R2={pair[1]} seed={cfg.seed} {kind:6s}: rewarded acc "
              f"{values['rewarded_acc']:.4f}, non-rewarded entropy "
              f"{values['nonrewarded_entropy']:.3f}")
    name = f"pair{cfg.pair}-card{cfg.cardinality}-seed{cfg.seed}"
    return Outcome(rows, summary, run_name=name)
