"""The configured Lightning loggers of one module or composition job, and their end.

With ``logger=wandb`` each module and each job is one W&B run: grouped by experiment
(``conf/logger/wandb.yaml``), job type ``train`` or the task, a name unique within a sweep
(coordinates + fingerprint), the resolved config and the ``tags`` of the config. Several runs
may be open at once (``reinit='create_new'``: the family trainer logs its modules live). The
step keeps rising across IMP rounds and every logged row carries ``imp/round``. A composition
job's results go to its run as a flat numeric summary, a Table, curves on ``AXES`` and figures
(``log_job``).
"""

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from lightning.pytorch import loggers as pl_loggers
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from . import moduledir
from .builders import model_name, plain
from .compat import close_logger_run, open_logger_run, wandb_git_settings, wandb_init_args
from .errors import UserError
from .extras import require
from .phases import imp_used
from .results import COLUMNS

# The x axes of a job's W&B curves (``wandb.define_metric``): the number of modules merged (the
# complete merge's R-Acc and entropy, the highest barrier at each step) and t along the path
# γ(t) (the barrier curves). Runs grouped in the W&B UI average their curves on these axes.
AXES = {"merge": "merge/step", "barrier": "barrier/t"}


class RoundSteps:
    """Logger mixin: steps offset by the training steps of the IMP rounds before this one (each
    round is a fresh Lightning fit whose step starts at 0); rows carry ``imp/round``."""

    step_offset: int = 0
    imp_round: int | None = None

    def begin_round(self, imp_round: int, step_offset: int = 0) -> None:
        self.imp_round, self.step_offset = int(imp_round), int(step_offset)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self.imp_round is not None:
            metrics = {**metrics, "imp/round": self.imp_round}
        super().log_metrics(metrics, None if step is None else step + self.step_offset)


class CSVLogger(RoundSteps, pl_loggers.CSVLogger):
    """Lightning's CSV logger with steps rising across IMP rounds."""


class WandbLogger(RoundSteps, pl_loggers.WandbLogger):
    """Lightning's W&B logger for one run among several open at once, with steps rising across
    IMP rounds, module checkpoints as artifacts when ``log_model`` is set, ``settings`` (the
    ``wandb.Settings`` fields of ``conf/logger/wandb.yaml``; the git fields read once per
    process unless given) and without W&B's deprecated ``anonymous`` setting (whose warning
    every run printed)."""

    def __init__(self, *args, log_model: bool | str = False, settings=None, **kwargs):
        require("wandb", "wandb", "logger=wandb (the default logger)", "logger=csv")
        kwargs.setdefault("reinit", "create_new")
        settings = dict(OmegaConf.to_container(settings, resolve=True)
                        if OmegaConf.is_config(settings) else settings or {})
        if not settings.get("disable_git"):
            settings = {**wandb_git_settings(os.getcwd()), **settings}
        kwargs["settings"] = settings
        super().__init__(*args, log_model=log_model, **kwargs)
        self.log_modules = bool(log_model)
        init = wandb_init_args(self)
        if init.get("anonymous") is None:
            init.pop("anonymous", None)

    def job_run(self):
        """The run of a composition job, opened without Lightning's ``trainer/global_step``
        axis: a job trains nothing, so its rows carry no training step (else its summary
        says ``trainer/global_step: 0``); its curves have their own axes (``jobs.AXES``)."""
        return open_logger_run(self)

    def log_module(self, path: Path, fingerprint: str, metadata: Mapping) -> None:
        """The module checkpoint ``path`` as a ``model`` artifact (when ``log_model``)."""
        if not self.log_modules:
            return
        import wandb  # only with logger=wandb

        artifact = wandb.Artifact(f"module-{fingerprint}", type="model", metadata=dict(metadata))
        artifact.add_file(str(path), name=Path(path).name)
        self.experiment.log_artifact(artifact, aliases=["latest"])

    def finish(self, exit_code: int = 0) -> None:
        close_logger_run(self, exit_code)


def resolved(cfg: DictConfig) -> dict:
    """The resolved config of a run; outside a Hydra run (tests, notebooks), where
    ``${hydra:...}`` cannot resolve, the config as written."""
    try:
        return plain(cfg)
    except InterpolationResolutionError:
        return OmegaConf.to_container(cfg, resolve=False)


def run_tags(cfg: DictConfig) -> list[str]:
    """The ``tags`` of the config as W&B takes them (a list of strings of 1-64 characters)."""
    tags = cfg.get("tags") or []
    tags = [tags] if isinstance(tags, str) else tags
    if not OmegaConf.is_list(tags) and not isinstance(tags, list):
        raise UserError(f"tags={tags} must be a list of words, e.g. tags=[baseline,mnist]")
    bad = [t for t in tags if not 1 <= len(str(t)) <= 64]
    if bad:
        raise UserError(f"tag '{bad[0]}' must have 1 to 64 characters")
    return [str(t) for t in tags]


def coordinates(cfg: DictConfig) -> str:
    """model-loss-imp of a config, as results rows name them."""
    imp = cfg.imp.scope if imp_used(cfg.imp) else "dense"
    return f"{model_name(cfg)}-{cfg.loss.targets}-{imp}"


def module_run_name(cfg: DictConfig, rewarded: Sequence[int], fingerprint: str) -> str:
    """The run name of a module: rewarded set, seed, coordinates, fingerprint (unique)."""
    return f"R{'-'.join(map(str, rewarded))}-s{cfg.seed}-{coordinates(cfg)}-{fingerprint[:6]}"


def build_loggers(logger: DictConfig, out_dir: Path, name: str, job_type: str = "train", *,
                  tags: Sequence[str], config: Mapping) -> list:
    """The ``logger`` settings' loggers (conf/logger: W&B, CSV, none), writing under
    ``out_dir``; W&B gets the run name, job type, ``tags`` and ``config`` (the run's resolved
    config)."""
    loggers = []
    for key, lcfg in logger.items():
        extra = {}
        if key == "wandb":  # (config passed to the partial: instantiate has its own 'config')
            extra = {"name": name, "job_type": job_type, "tags": list(tags),
                     "config": dict(config)}
        loggers.append(instantiate(lcfg, _partial_=True, save_dir=str(out_dir))(**extra))
    return loggers


def module_config(run_config: Mapping, rewarded, fingerprint: str) -> dict:
    """The resolved config of a module's run (its job's ``run_config``, ``resolved``): its
    rewarded set and fingerprint."""
    return {**run_config, "task": "train", "rewarded": list(rewarded),
            "fingerprint": fingerprint}


def log_trained(loggers, out_dir: Path, metrics: dict, figure: bool = True,
                classes: Sequence[str] | None = None) -> None:
    """What a trained module adds to its loggers: sparsity, wall time, the confusion matrix
    (W&B: ``confusion.png`` as an image with ``figure``, else W&B's confusion-matrix chart of
    the counts, rows named by ``classes``), and module.pt as an artifact
    (``logger.wandb.log_model=true``)."""
    for logger in loggers:
        logger.log_metrics({"sparsity": metrics["sparsity"], "wall_s": metrics["wall_s"]})
        if not isinstance(logger, WandbLogger):
            continue
        if figure:
            logger.log_image("test/confusion", [str(out_dir / "confusion.png")])
        else:
            title = f"R={metrics['rewarded']} seed={metrics['seed']}"
            logger.log_metrics({"test/confusion": confusion_chart(metrics["confusion"], classes,
                                                                  title)})
    log_module(loggers, out_dir / moduledir.MODULE, metrics["fingerprint"],
               {k: v for k, v in metrics.items() if isinstance(v, int | float | str)})


def confusion_chart(matrix: Sequence[Sequence[int]], classes: Sequence[str] | None = None,
                    title: str = ""):
    """W&B's confusion-matrix chart (``wandb.plot.confusion_matrix``) of a count matrix (rows:
    true labels), without the per-sample predictions that function asks for."""
    import wandb  # only with logger=wandb

    names = [str(c) for c in classes] if classes is not None else [str(i)
                                                                     for i in range(len(matrix))]
    table = wandb.Table(columns=["Actual", "Predicted", "nPredictions"],
                        data=[[names[i], names[j], int(n)] for i, row in enumerate(matrix)
                              for j, n in enumerate(row)])
    fields = {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"}
    return wandb.plot_table("wandb/confusion_matrix/v1", table, fields, {"title": title})


def begin_round(loggers, imp_round: int, step_offset: int = 0) -> None:
    for logger in loggers:
        if isinstance(logger, RoundSteps):
            logger.begin_round(imp_round, step_offset)


def log_module(loggers, path: Path, fingerprint: str, metadata: Mapping) -> None:
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_module(path, fingerprint, metadata)


def finish_loggers(loggers, failed: bool = False) -> None:
    """End the W&B run of these loggers (each module and job has its own)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.finish(exit_code=1 if failed else 0)


# ---------------------------------------------------------------- a composition job's results
def log_job(loggers, frame: pd.DataFrame, metrics: Mapping, curves: dict, images: dict) -> dict:
    """A composition job's results to each logger (W&B: flat numeric summary, the results as a
    Table, curves as line series, figures); the flat summary."""
    flat = flat_numbers(metrics)
    for logger in loggers:
        if isinstance(logger, WandbLogger):  # the summary and tables: one row, one write
            run = logger.job_run()
            define_axes(run)
            run.log({**flat, **modules_alone(frame), **wandb_results(frame, curves, images)})
            for rows in curve_history(frame).values():
                for row in rows:
                    run.log(row)
        else:
            logger.log_metrics(flat)
        logger.save()
    return flat


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
