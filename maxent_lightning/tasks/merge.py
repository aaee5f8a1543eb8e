"""The ``merge`` task: compose module checkpoints ``checkpoints=[a/module.pt,b/module.pt,...]``
by weight sum and/or logit averaging (``merge.kind``), evaluate each module alone and the
compositions on the union of their rewarded sets, and save the weight sum as ``merged.pt``
(a module checkpoint itself: it can be evaluated or merged again)."""

from pathlib import Path

from omegaconf import DictConfig

from .. import masks as M
from ..errors import UserError
from ..jobs import (
    Job,
    class_set,
    load_data,
    merge_kinds,
    on_device,
    record_row,
    score_merges,
    scores,
)
from ..merge import check_composable
from ..storage import ModuleRecord, config_digest, load_module, save_module


def merged_record(records: list[ModuleRecord], net, union: list[int], metrics: dict):
    first = records[0]
    sources = [r.fingerprint for r in records]
    return ModuleRecord(
        state_dict=net.state_dict(), masks=M.union([r.masks for r in records]),
        theta0_id=first.theta0_id, rewarded=union, num_classes=first.num_classes,
        input_shape=tuple(first.input_shape), temperature=first.temperature, seed=first.seed,
        spec={**first.spec, "rewarded": union, "merged_from": sources},
        fingerprint=config_digest({"merged_from": sources}), metrics=metrics,
    )


def run(cfg: DictConfig):
    job = Job.start(cfg, "merge")
    if job is None:
        return None
    paths = [Path(p) for p in cfg.checkpoints or []]
    if not paths:
        raise UserError("no modules to merge; give checkpoints=[a/module.pt,b/module.pt]")
    records = [load_module(p) for p in paths]
    check_composable(records)
    first = records[0]
    splits = load_data(cfg, first.spec["data"]["name"])
    union = sorted({c for r in records for c in r.rewarded})
    rows = []
    for rec in records:
        values, _ = scores(on_device(rec.build_net(), job.device), splits.x_test, splits.y_test,
                           rec.rewarded, first.num_classes, first.temperature)
        rows.append(record_row(job, rec, class_set=class_set(rec.rewarded), merge="none",
                               split="test", **values))
    merged = score_merges(job, records, union, splits, merge_kinds(cfg), cfg.merge.logit_weights)
    summary = {"checkpoints": [str(p) for p in paths], "union": union, "confusions": []}
    for kind, (values, confusion, net) in merged.items():
        rows.append(record_row(job, first, step=len(records), class_set=class_set(union),
                               merge=kind, split="test", **values))
        summary[kind] = values
        summary["confusions"].append({"merge": kind, "class_set": class_set(union),
                                      "matrix": confusion.tolist()})
        job.confusion(f"confusion_{kind}", confusion, splits.classes,
                      title=f"{kind} merge of {len(records)} modules, R={union}")
        if kind == "weight":
            save_module(job.out / "merged.pt", merged_record(records, net, union, values))
            summary["merged_checkpoint"] = str(job.out / "merged.pt")
        print(f"merge of {len(records)} modules R={union} {kind:6s}: rewarded acc "
              f"{values['rewarded_acc']:.4f}, non-rewarded entropy "
              f"{values['nonrewarded_entropy']:.3f}")
    return job.finish(rows, summary, run_name=f"merge-{class_set(union)}-seed{first.seed}")
