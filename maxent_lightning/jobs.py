"""The composition-job skeleton every task but ``train`` runs through: start (or skip when
done), data, modules from the store, composability check, scores, finish (results.csv,
metrics.json, one W&B run); plus GPU assignment, pair sampling and class permutations.

Every job writes into its Hydra job directory: ``config.yaml`` (resolved config),
``results.csv`` (one row per evaluated model, ``results.COLUMNS``), ``confusions.json``
(confusion matrices, rows: true label), ``metrics.json`` (summary with the job ``fingerprint``;
written last, so it marks the job done) and PNG figures.
"""

import time
from collections.abc import Mapping, Sequence
from itertools import combinations
from math import comb
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import nn

from . import moduledir
from .builders import data_source, model_name
from .errors import UserError
from .evaluate import Plan, lean_trainer, run_plan
from .identity import checkpoint_paths, job_fingerprint, model_identity
from .loggers import (
    WandbLogger,
    build_loggers,
    coordinates,
    finish_loggers,
    log_module,
    run_tags,
)
from .merge import check_composable, has_batchnorm, logit_weights, weight_sum
from .phases import ORDERED, imp_used, permutation_value, validate
from .plots import confusion_png, wants_figures
from .results import COLUMNS
from .storage import ModuleRecord, read_module, write_json, write_text
from .store import ModuleStore

# The x axes of a job's W&B curves (``wandb.define_metric``): the number of modules merged (the
# complete merge's R-Acc and entropy, the highest barrier at each step) and t along the path
# γ(t) (the barrier curves). Runs grouped in the W&B UI average their curves on these axes.
AXES = {"merge": "merge/step", "barrier": "barrier/t"}
GPU_ACCELERATORS = ("auto", "gpu", "cuda")


def job_num() -> int:
    return int(HydraConfig.get().job.get("num") or 0) if HydraConfig.initialized() else 0


def class_set(classes: Sequence[int]) -> str:
    return "-".join(str(int(c)) for c in sorted(classes))


# ---------------------------------------------------------------- devices
def assign_device(num: int, device_count: int, accelerator: str) -> int | None:
    """CUDA device of job ``num`` when several are visible: ``num % device_count``."""
    if str(accelerator) not in GPU_ACCELERATORS or device_count < 2:
        return None
    return int(num) % int(device_count)


def setup_device(cfg: DictConfig):
    """Pin this job (its store training and its evaluation) to one device; the ``devices`` of
    its evaluation Trainer (one device: a job never spreads its evaluation)."""
    accelerator, count = str(cfg.trainer.get("accelerator", "auto")), torch.cuda.device_count()
    index = assign_device(job_num(), count, accelerator)
    if index is not None:
        cfg.trainer.devices = [index]
    devices = cfg.trainer.get("devices", 1)
    return list(devices) if OmegaConf.is_list(devices) or isinstance(devices, list) else 1


# ---------------------------------------------------------------- class sets
def sample_pairs(num_classes: int, cardinality: int, n_pairs: int, seed: int = 0):
    """``n_pairs`` distinct pairs (R1, R2) of disjoint sorted class sets of size
    ``cardinality``; deterministic in (seed, num_classes, cardinality) only, so every seed,
    loss and model sees the same pairs. Fewer when fewer distinct pairs exist."""
    c, k = int(num_classes), int(cardinality)
    if k < 1 or 2 * k > c:
        raise UserError(
            f"cardinality={k} needs 2*{k} <= {c} classes for two disjoint class sets; "
            f"choose cardinality in 1..{c // 2}"
        )
    rng = np.random.default_rng([int(seed), c, k])
    total = comb(c, k) * comb(c - k, k) // 2
    if total <= 20000:  # enumerate every unordered pair, then draw without replacement
        pairs = [(a, b) for a in combinations(range(c), k)
                 for b in combinations([x for x in range(c) if x not in a], k) if a < b]
        return [(list(pairs[i][0]), list(pairs[i][1]))
                for i in rng.permutation(len(pairs))[:n_pairs]]
    seen, out = set(), []
    while len(out) < n_pairs:
        p = rng.permutation(c)
        a, b = sorted(tuple(sorted(int(x) for x in s)) for s in (p[:k], p[k:2 * k]))
        if (a, b) not in seen:
            seen.add((a, b))
            out.append((list(a), list(b)))
    return out


def pick_pair(cfg: DictConfig, num_classes: int):
    """Pair ``cfg.pair`` of cardinality ``cfg.cardinality``; None if only fewer exist."""
    pairs = sample_pairs(num_classes, cfg.cardinality, cfg.n_pairs, cfg.pair_seed)
    if not 0 <= int(cfg.pair) < int(cfg.n_pairs):
        raise UserError(f"pair={cfg.pair} must be in 0..{cfg.n_pairs - 1} (n_pairs={cfg.n_pairs})")
    return pairs[int(cfg.pair)] if int(cfg.pair) < len(pairs) else None


def class_permutation(num_classes: int, index) -> list[int]:
    """The class order of ``permutation=index``: 0, 1, 2, ... for ``ordered``, else random
    permutation ``index`` (seeded by the index only)."""
    value = permutation_value(index)
    if value == ORDERED:  # the paper's Figures 5, 19-21, 23, 24 and the authors' README
        return list(range(int(num_classes)))
    return [int(c) for c in np.random.default_rng(value).permutation(int(num_classes))]


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


def line_png(path: Path, curves: dict, xlabel: str, ylabel: str, title: str = "",
             hline: float | None = None) -> Path:
    """One line per label: ``curves = {label: (xs, ys)}``."""
    import matplotlib.pyplot as plt  # plots sets the headless backend

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (xs, ys) in curves.items():
        ax.plot(xs, ys, marker="o", markersize=3, label=str(label))
    if hline is not None:
        ax.axhline(hline, color="gray", linestyle="--", linewidth=1)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if 1 < len(curves) <= 20:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- the job
class Job:
    """One composition job in its Hydra output directory."""

    def __init__(self, cfg: DictConfig, task: str):
        self.cfg, self.task, self.t0 = cfg, task, time.perf_counter()
        self.out = Path(HydraConfig.get().runtime.output_dir)
        self.fingerprint = job_fingerprint(cfg)
        self.images: dict[str, Path] = {}
        self.curves: dict[str, tuple] = {}
        self.devices = 1
        self.splits, self.module_paths = None, []
        self.figures = wants_figures(cfg)

    @classmethod
    def start(cls, cfg: DictConfig, task: str) -> "Job | None":
        """The job, or None (after printing 'skip') when it already finished."""
        validate(cfg)
        run_tags(cfg)  # bad tags fail before any work
        job = cls(cfg, task)
        fix = "choose another hydra.sweep.dir / hydra.run.dir or delete it"
        if moduledir.finished_run(job.out, job.fingerprint, "job", fix) is not None:
            print(f"skip: {task} job already done in {job.out}")
            return None
        moduledir.write_config(job.out, cfg)
        job.devices = setup_device(cfg)
        return job

    # ------------------------------------------------------------ data and modules
    def load_data(self, recorded: Mapping | None = None):
        """The data set of the job (or the ``recorded`` data settings of given checkpoints)."""
        self.splits = data_source(self.cfg, recorded)
        return self.splits

    def modules(self, rewarded_sets: Sequence[Sequence[int]],
                compose: bool = True) -> list[ModuleRecord]:
        """The job's modules from the store (training the missing ones); checked to compose
        unless ``compose=False`` (modules evaluated only alone)."""
        store = ModuleStore(self.cfg.store.root, self.cfg.store.train_missing)
        self.module_paths = store.get_many(self.cfg, rewarded_sets)
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

    def evaluate(self, plan: Plan, temperature: float) -> dict[str, tuple[dict, torch.Tensor]]:
        """{candidate: (row values, confusion)} of every candidate of ``plan``, all scored by
        one ``Trainer.test`` on the job's device (its precision, ``setup_device``)."""
        s = self.splits
        data = {"test": (s.x_test, s.y_test), "train": (s.x_train, s.y_train),
                "calibrate": (s.x_train, s.y_train)}
        scores = run_plan(plan, data, s.num_classes, temperature, self.trainer())
        return {name: row_values(v) for name, v in scores.items()}

    def merged_net(self, plan: Plan, net: nn.Module) -> int:
        """A composed net in ``plan``, its BatchNorm statistics recomputed (as configured)."""
        return plan.net(net, calibrate=wants_recalibration(self.cfg, net))

    def plan_merges(self, plan: Plan, records, module_ids, rewarded, kinds,
                    weights=None) -> dict[str, nn.Module | None]:
        """Candidates ``weight`` (the weight sum) and/or ``logit`` (the logit average of the
        plan's nets ``module_ids``) on ``rewarded``; {kind: its merged net or None}."""
        nets = {}
        for kind in kinds:
            if kind == "weight":
                nets[kind] = weight_sum(records)[0]
                plan.add(kind, self.merged_net(plan, nets[kind]), rewarded)
            else:
                ws = logit_weights(len(records), weights)
                plan.add(kind, list(zip(module_ids, ws, strict=True)), rewarded)
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
        loggers = build_loggers(self.cfg, self.out, self.run_name(run_name), job_type=self.task)
        flat = flat_numbers(metrics)
        for logger in loggers:
            if isinstance(logger, WandbLogger):  # the summary and tables: one row, one write
                run = logger.job_run()
                define_axes(run)
                run.log({**flat, **modules_alone(frame),
                         **wandb_results(frame, self.curves, self.images)})
                for rows in curve_history(frame).values():
                    for row in rows:
                        run.log(row)
            else:
                logger.log_metrics(flat)
            logger.save()
        if "merged_checkpoint" in metrics:
            log_module(loggers, Path(metrics["merged_checkpoint"]), self.fingerprint,
                       {k: v for k, v in flat.items() if "/" not in k})
        finish_loggers(loggers)


def flat_numbers(tree: Mapping, prefix: str = "") -> dict:
    """The numeric leaves of a nested summary as flat keys: ``weight/rewarded_acc``."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_numbers(value, f"{name}/"))
        elif isinstance(value, bool | int | float | np.bool_ | np.number):
            out[name] = value.item() if isinstance(value, np.generic) else value
    return out


def modules_alone(frame: pd.DataFrame) -> dict:
    """The scores of each module alone in a composition job (``merge=none`` rows beside merged
    ones) as ``module_a/rewarded_acc``, ``module_a/nonrewarded_entropy``, ``module_a/class_set``,
    then ``module_b/...`` in the job's order; nothing for jobs that merge nothing."""
    if not set(COLUMNS) <= set(frame.columns) or not frame["merge"].isin(["weight",
                                                                           "logit"]).any():
        return {}
    alone = frame[frame["merge"].eq("none") & frame["split"].fillna("test").eq("test")]
    out = {}
    for letter, row in zip("abcdefghijklmnopqrstuvwxyz", alone.itertuples(), strict=False):
        out[f"module_{letter}/class_set"] = str(row.class_set)
        for key in ("rewarded_acc", "nonrewarded_entropy"):
            if not pd.isna(getattr(row, key)):
                out[f"module_{letter}/{key}"] = float(getattr(row, key))
    return out


def curve_history(frame: pd.DataFrame) -> dict[str, list[dict]]:
    """A job's curves as W&B history rows on the ``AXES`` (``wandb.define_metric`` binds
    ``merge/*`` to ``merge/step`` and ``barrier/*`` to ``barrier/t``):

    - complete merge: at ``merge/step`` k, ``merge/<kind>/rewarded_acc`` and
      ``merge/<kind>/nonrewarded_entropy`` of the first k modules merged (Figure 4);
    - mode connectivity: at ``barrier/t`` t, ``barrier/<split>/step<k>`` (or ``/pair``), the
      relative barrier in % (Figure 5), and along the merge ``merge/max_barrier_pct/<split>``.
    """
    out = {axis: {} for axis in AXES}

    def put(axis: str, x, key: str, value) -> None:
        if not pd.isna(value):
            row = out[axis].setdefault(float(x), {AXES[axis]: _number(x)})
            row[f"{axis}/{key}"] = float(value)

    if frame.empty or not set(COLUMNS) <= set(frame.columns):  # (circuits: other columns)
        return {}
    merged = frame[frame["merge"].isin(["weight", "logit"]) & frame["step"].notna()
                   & frame["t"].isna() & frame["split"].fillna("test").eq("test")]
    if (frame["task"] == "complete").any():
        for row in merged.itertuples():
            for key in ("rewarded_acc", "nonrewarded_entropy"):
                put("merge", row.step, f"{row.merge}/{key}", getattr(row, key))
    path = frame[frame["t"].notna() & frame["barrier_pct"].notna()]
    for row in path.itertuples():
        curve = "pair" if pd.isna(row.step) else f"step{int(row.step)}"
        put("barrier", row.t, f"{row.split}/{curve}", row.barrier_pct)
    if path["step"].notna().any():
        worst = path.groupby(["step", "split"])["barrier_pct"].max()
        for (step, split), value in worst.items():
            put("merge", step, f"max_barrier_pct/{split}", value)
    return {axis: [rows[x] for x in sorted(rows)] for axis, rows in out.items() if rows}


def _number(x) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


def define_axes(run) -> None:
    """``merge/*`` plotted against ``merge/step`` (summary: the last step's), ``barrier/*``
    against ``barrier/t`` (summary: the highest barrier)."""
    for axis, step in AXES.items():
        run.define_metric(step, hidden=True)
        run.define_metric(f"{axis}/*", step_metric=step,
                          summary="max" if axis == "barrier" else "last")


def wandb_results(frame: pd.DataFrame, curves: dict, images: dict) -> dict:
    """A job's results as a W&B Table (numeric columns kept numeric), its curves as line series
    and its other figures (confusions) as images."""
    import wandb  # only with logger=wandb

    out = {"results": wandb.Table(dataframe=frame.dropna(axis=1, how="all"))}
    for name, (lines, xlabel, title) in curves.items():
        out[name] = wandb.plot.line_series(
            xs=[[float(x) for x in xs] for xs, _ in lines.values()],
            ys=[[float(y) for y in ys] for _, ys in lines.values()],
            keys=[str(k) for k in lines], title=title, xname=xlabel)
    return out | {name: wandb.Image(str(path)) for name, path in images.items() if name not in out}
