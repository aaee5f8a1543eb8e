"""The composition job every task but ``train`` runs through: start (or skip when done; the
dispatcher in ``tasks/__init__.py`` calls it), data, modules from the store, composability
check, scores, finish (results.csv, metrics.json, one W&B run) of the task's ``Outcome``.

Every job writes into its Hydra job directory: ``config.yaml`` (resolved config),
``results.csv`` (one row per evaluated model, ``results.COLUMNS``), ``confusions.json``
(confusion matrices, rows: true label), ``metrics.json`` (summary with the job ``fingerprint``;
written last, so it marks the job done) and PNG figures.
"""

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from . import moduledir
from .builders import data_source, model_name
from .composition import check_composable, has_batchnorm, logit_weights, weight_sum
from .devices import setup_device
from .errors import UserError
from .evaluate import Evaluation, lean_trainer, run_evaluation
from .files import write_json, write_text
from .identity import checkpoint_paths, job_fingerprint, model_identity
from .loggers import (
    build_loggers,
    coordinates,
    finish_loggers,
    log_job,
    log_module,
)
from .modulefile import ModuleRecord, read_module
from .modulestore import ModuleStore
from .phases import imp_used
from .plots import confusion_png, line_png
from .recipe import Recipe
from .results import COLUMNS


def job_num(cfg: DictConfig) -> int:
    """The job's number in its multirun (0 in a single run; ``runtime.num``: cli.py)."""
    return int(OmegaConf.select(cfg, "runtime.num", default=0) or 0)


def skip_line(task: str, out) -> str:
    """What a finished job prints instead of running (its sweep's planner prints it for it)."""
    return f"skip: {task} job already done in {out}"


# ---------------------------------------------------------------- evaluation
def wants_recalibration(cfg: DictConfig, net: nn.Module) -> bool:
    mode = str(cfg.merge.recalibrate_bn).lower()
    if mode not in ("auto", "true", "false"):
        raise UserError(f"merge.recalibrate_bn={mode} must be auto, true or false")
    return mode != "false" and has_batchnorm(net)


def row_values(scores: dict) -> tuple[dict, torch.Tensor]:
    """Row values (results.csv) and confusion matrix of one evaluated candidate."""
    values = {k: scores[k] for k in ("rewarded_acc", "nonrewarded_entropy", "acc")}
    values["loss_value"] = scores["loss"]
    return values, scores["confusion"]


def merge_kinds(cfg: DictConfig) -> list[str]:
    kind = str(cfg.merge.kind)
    if kind not in ("both", "weight", "logit"):
        raise UserError(f"merge.kind={kind} must be both, weight or logit")
    return ["weight", "logit"] if kind == "both" else [kind]


# ---------------------------------------------------------------- the job
@dataclass
class Outcome:
    """What a composition task computed (``run(job)``): its results.csv ``rows``, its
    ``summary`` (metrics.json; ``confusions`` go to confusions.json), the W&B run name and the
    results columns."""

    rows: list[dict]
    summary: dict
    run_name: str = ""
    columns: Sequence[str] = tuple(COLUMNS)


class Job:
    """One composition job in its output directory (``paths.output_dir``)."""

    def __init__(self, cfg: DictConfig, task: str):
        self.cfg, self.task, self.t0 = cfg, task, time.perf_counter()
        self.recipe = Recipe.of(cfg)  # validated; bad tags fail here, before any work
        self.out = Path(cfg.paths.output_dir)
        self.fingerprint = job_fingerprint(cfg)
        self.images: dict[str, Path] = {}
        self.curves: dict[str, tuple] = {}
        self.devices = 1
        self.splits, self.module_paths = None, []
        self.figures = self.recipe.figures

    @classmethod
    def start(cls, cfg: DictConfig, task: str) -> "Job | None":
        """The job, or None (after printing 'skip') when it already finished."""
        job = cls(cfg, task)
        fix = "choose another hydra.sweep.dir / hydra.run.dir or delete it"
        if moduledir.finished_run(job.out, job.fingerprint, "job", fix) is not None:
            print(skip_line(task, job.out))
            return None
        moduledir.write_config(job.out, cfg)
        job.devices = setup_device(cfg, job_num(cfg))
        return job

    # ------------------------------------------------------------ data and modules
    def load_data(self, recorded: Mapping | None = None):
        """The data set of the job (or the ``recorded`` data settings of given checkpoints)."""
        self.splits = data_source(self.cfg.data, recorded)
        return self.splits

    def modules(self, rewarded_sets: Sequence[Sequence[int]],
                compose: bool = True) -> list[ModuleRecord]:
        """The job's modules from the store (training the missing ones); checked to compose
        unless ``compose=False`` (modules evaluated only alone)."""
        store = ModuleStore(self.recipe.store_root, self.recipe.train_missing)
        self.module_paths = store.get_many(self.recipe, rewarded_sets)
        records = [read_module(p) for p in self.module_paths]
        if compose:
            check_composable(records)
        return records

    def checkpoints(self) -> list[ModuleRecord]:
        """The modules given as ``checkpoints=[...]`` (merge, eval), and their data."""
        paths = checkpoint_paths(self.cfg)
        if not paths:
            raise UserError("no modules given; set checkpoints=[a/module.pt,b/module.pt]")
        self.module_paths = paths
        records = [read_module(p) for p in paths]
        check_composable(records)
        data = records[0].spec["data"]
        self.load_data(data)
        if self.splits.digest != data.get("digest"):
            raise UserError(f"{paths[0]} was trained on other {data['name']} data than "
                            f"data.root={self.cfg.data.root} holds (data digest "
                            f"{data.get('digest')}, here {self.splits.digest}); set data.root "
                            "to the folder it was trained on")
        return records

    # ------------------------------------------------------------ scores
    def trainer(self):
        """The evaluation Trainer of this job: its device, the configured precision."""
        return lean_trainer(self.cfg.trainer.get("accelerator", "auto"), self.devices,
                            self.cfg.trainer.get("precision", "32-true"))

    def evaluate(self, evaluation: Evaluation,
                 temperature: float) -> dict[str, tuple[dict, torch.Tensor]]:
        """{candidate: (row values, confusion)} of every candidate of ``evaluation``, all scored by
        one ``Trainer.test`` on the job's device (its precision, ``setup_device``)."""
        s = self.splits
        data = {"test": (s.x_test, s.y_test), "train": (s.x_train, s.y_train),
                "calibrate": (s.x_train, s.y_train)}
        scores = run_evaluation(evaluation, data, s.num_classes, temperature, self.trainer())
        return {name: row_values(v) for name, v in scores.items()}

    def merged_net(self, evaluation: Evaluation, net: nn.Module) -> int:
        """A composed net in ``evaluation``, its BatchNorm statistics recomputed (as configured)."""
        return evaluation.net(net, calibrate=wants_recalibration(self.cfg, net))

    def add_merges(self, evaluation: Evaluation, records, module_ids, rewarded, kinds,
                    weights=None) -> dict[str, nn.Module | None]:
        """Candidates ``weight`` (the weight sum) and/or ``logit`` (the logit average of the
        plan's nets ``module_ids``) on ``rewarded``; {kind: its merged net or None}."""
        nets = {}
        for kind in kinds:
            if kind == "weight":
                nets[kind] = weight_sum(records)[0]
                evaluation.add(kind, self.merged_net(evaluation, nets[kind]), rewarded)
            else:
                ws = logit_weights(len(records), weights)
                evaluation.add(kind, list(zip(module_ids, ws, strict=True)), rewarded)
                nets[kind] = None
        return nets

    # ------------------------------------------------------------ outputs
    def row(self, **values) -> dict:
        """A results row: this job's config columns, then ``values``."""
        cfg = self.cfg
        imp = imp_used(cfg.imp)
        row = dict.fromkeys(COLUMNS)
        row.update(task=self.task, experiment=cfg.experiment_name, data=cfg.data.name,
                   model=model_name(cfg), loss=cfg.loss.targets, imp=imp,
                   sparsity=float(cfg.imp.sparsity) if imp else 0.0,
                   temperature=float(cfg.loss.temperature), seed=int(cfg.seed),
                   width=cfg.model.get("width"))
        row.update(values)
        return row

    def record_row(self, rec: ModuleRecord, **values) -> dict:
        """A results row whose config columns come from a module checkpoint."""
        spec, imp = rec.spec, rec.spec["imp"]
        same_model = model_identity(self.cfg) == spec["model"]
        name = (model_name(self.cfg) if same_model
                else spec["model"]["_target_"].rsplit(".", 1)[-1])
        return self.row(data=spec["data"]["name"], model=name.lower(),
                        loss=spec["loss"]["targets"], imp=imp_used(imp),
                        sparsity=float(imp["sparsity"]) if imp_used(imp) else 0.0,
                        temperature=float(rec.temperature), seed=int(rec.seed),
                        width=spec["model"].get("width"), **values)

    def image(self, name: str) -> Path:
        """The path of figure ``name`` (a PNG in the job directory, logged with the job)."""
        self.images[name] = self.out / f"{name}.png"
        return self.images[name]

    def confusion(self, name: str, matrix: torch.Tensor, classes, title: str) -> Path | None:
        """A confusion-matrix PNG where ``figures`` asks for it (the matrices are in
        confusions.json either way)."""
        if not self.figures:
            return None
        return confusion_png(self.image(name), matrix, classes, title)

    def plot(self, name: str, curves: dict, xlabel: str, ylabel: str, title: str = "",
             hline: float | None = None) -> Path | None:
        """A line figure where ``figures`` asks for it (its values are in results.csv); logged
        to W&B as a line series either way."""
        self.curves[name] = (curves, xlabel, title or ylabel)
        if not self.figures:
            return None
        return line_png(self.image(name), curves, xlabel, ylabel, title, hline)

    def finish(self, rows: list[dict], summary: dict, run_name: str = "",
               columns: Sequence[str] = COLUMNS) -> dict:
        """Write results.csv (and confusions.json: the ``confusions`` of the summary), log to
        the configured loggers (one W&B run, finished here), then metrics.json."""
        frame = pd.DataFrame(rows, columns=list(columns))
        write_text(self.out / "results.csv", frame.to_csv(index=False))
        confusions = summary.pop("confusions", None)
        if confusions:
            write_json(self.out / "confusions.json", {"confusions": confusions})
        metrics = {"fingerprint": self.fingerprint, "task": self.task,
                   "experiment": self.cfg.experiment_name, "rows": len(rows),
                   "wall_s": round(time.perf_counter() - self.t0, 2), **summary}
        self.log(frame, metrics, run_name)
        write_json(self.out / "metrics.json", metrics)
        return metrics

    def run_name(self, name: str = "") -> str:
        """Unique within a sweep: task, the task's coordinates, model-loss-imp (from the config;
        not for given checkpoints), fingerprint."""
        name = name or self.task
        name = name if name.startswith(self.task) else f"{self.task}-{name}"
        coords = "" if self.cfg.checkpoints else f"{coordinates(self.cfg)}-"
        return f"{name}-{coords}{self.fingerprint[:6]}"

    def log(self, frame: pd.DataFrame, metrics: dict, run_name: str = "") -> None:
        """The job's run of each configured logger (W&B: flat numeric summary, the results as
        a Table, curves as line series, figures; the merged checkpoint as an artifact)."""
        loggers = build_loggers(self.cfg.logger, self.out, self.run_name(run_name),
                                job_type=self.task, tags=self.recipe.tags,
                                config=self.recipe.run_config)
        flat = log_job(loggers, frame, metrics, self.curves, self.images)
        if "merged_checkpoint" in metrics:
            log_module(loggers, Path(metrics["merged_checkpoint"]), self.fingerprint,
                       {k: v for k, v in flat.items() if "/" not in k})
        finish_loggers(loggers)
