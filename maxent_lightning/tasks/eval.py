"""The ``eval`` task: evaluate one module checkpoint (``checkpoints=[a/module.pt]``) on the
test split of its data set, on its own rewarded set or on ``eval.rewarded``."""

from ..builders import net_from_record
from ..classsets import class_set
from ..data.datamodule import check_rewarded
from ..errors import UserError
from ..evaluate import Evaluation
from ..jobs import Job, Outcome


def run(job: Job) -> Outcome:
    cfg = job.cfg
    records = job.checkpoints()
    if len(records) != 1:
        raise UserError("eval takes exactly one module: checkpoints=[path/to/module.pt]")
    rec = records[0]
    rewarded = (rec.rewarded if cfg.eval.rewarded is None
                else check_rewarded(list(cfg.eval.rewarded), rec.num_classes,
                                    rec.spec["data"]["name"]))
    evaluation = Evaluation()
    evaluation.add("module", evaluation.net(net_from_record(rec)), rewarded)
    values, confusion = job.evaluate(evaluation, rec.temperature)["module"]
    row = job.record_row(rec, class_set=class_set(rewarded), merge="none", split="test",
                         **values)
    job.confusion("confusion", confusion, job.splits.classes, title=f"R={rewarded}")
    print(f"eval {job.module_paths[0]} on R={rewarded}: rewarded acc "
          f"{values['rewarded_acc']:.4f}, non-rewarded entropy "
          f"{values['nonrewarded_entropy']:.3f}, accuracy {values['acc']:.4f}")
    summary = {"checkpoint": str(job.module_paths[0]), "rewarded": rewarded, **values,
               "confusions": [{"merge": "none", "class_set": class_set(rewarded),
                               "matrix": confusion.tolist()}]}
    return Outcome([row], summary, run_name=f"eval-R{class_set(rewarded)}-seed{rec.seed}")
