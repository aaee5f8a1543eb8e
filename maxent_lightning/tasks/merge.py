"""The ``merge`` task: compose module checkpoints ``checkpoints=[a/module.pt,b/module.pt,...]``
by weight sum and/or logit averaging (``merge.kind``), evaluate each module alone and the
compositions on the union of their rewarded sets, and save the weight sum as ``merged.pt``
(a module checkpoint itself: it can be evaluated or merged again)."""

from .. import masks as M
from ..builders import net_from_record
from ..classsets import class_set
from ..evaluate import Evaluation
from ..files import config_digest
from ..jobs import Job, Outcome, merge_kinds
from ..module import save_module
from ..modulefile import ModuleRecord


def merged_record(records: list[ModuleRecord], net, union: list[int], metrics: dict):
    first = records[0]
    sources = [r.fingerprint for r in records]
    spec = {**first.spec, "rewarded": union, "merged_from": sources}
    return ModuleRecord(
        state_dict=net.state_dict(), masks=M.union([r.masks for r in records]),
        theta0_id=first.theta0_id, rewarded=union, num_classes=first.num_classes,
        input_shape=tuple(first.input_shape), temperature=first.temperature, seed=first.seed,
        spec=spec, fingerprint=config_digest(spec), metrics=metrics,
    )


def run(job: Job) -> Outcome:
    cfg = job.cfg
    records = job.checkpoints()
    first = records[0]
    union = sorted({c for r in records for c in r.rewarded})
    evaluation = Evaluation()
    ids = [evaluation.net(net_from_record(rec)) for rec in records]
    for i, rec in zip(ids, records, strict=True):
        evaluation.add(f"module{i}", i, rec.rewarded)
    nets = job.add_merges(evaluation, records, ids, union, merge_kinds(cfg),
                          cfg.merge.logit_weights)
    scored = job.evaluate(evaluation, first.temperature)
    rows = [job.record_row(rec, class_set=class_set(rec.rewarded), merge="none", split="test",
                           **scored[f"module{i}"][0]) for i, rec in zip(ids, records, strict=True)]
    summary = {"checkpoints": [str(p) for p in job.module_paths], "union": union,
               "confusions": []}
    for kind, net in nets.items():
        values, confusion = scored[kind]
        rows.append(job.record_row(first, step=len(records), class_set=class_set(union),
                                   merge=kind, split="test", **values))
        summary[kind] = values
        summary["confusions"].append({"merge": kind, "class_set": class_set(union),
                                      "matrix": confusion.tolist()})
        job.confusion(f"confusion_{kind}", confusion, job.splits.classes,
                      title=f"{kind} merge of {len(records)} modules, R={union}")
        if kind == "weight":
            save_module(job.out / "merged.pt", merged_record(records, net, union, values))
            summary["merged_checkpoint"] = str(job.out / "merged.pt")
        print(f"merge of {len(records)} modules R={union} {kind:6s}: rewarded acc "
              f"{values['rewarded_acc']:.4f}, non-rewarded entropy "
              f"{values['nonrewarded_entropy']:.3f}")
    return Outcome(rows, summary, run_name=f"merge-{class_set(union)}-seed{first.seed}")
