"""Publish an analysis to W&B (``--wandb``): one run of job type ``analysis`` holding every written
table as a W&B Table of its statistics (numeric mean, std and n per cell) and every figure as an
image. The run joins the analysed jobs' runs: the project, entity, tags and mode of their W&B
logger (``logger.wandb`` in each job's ``config.yaml``; ``WANDB_MODE`` wins, as for the jobs)
and their group: the one group of the jobs (``<experiment>``) where they share one, else the
experiment's name, else ``analysis`` (several experiments). A project given as ``--wandb
PROJECT`` wins over the jobs'. ``wandb sync`` (or ``make sync``) uploads the run."""

import os
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

DEFAULT_PROJECT = "maxent_lightning"


def job_settings(jobs) -> dict:
    """The W&B settings of the analysed jobs: project, entity, group, tags, mode."""
    configs = [OmegaConf.load(job / "config.yaml") for job in jobs
               if (Path(job) / "config.yaml").is_file()]
    loggers = [OmegaConf.select(c, "logger.wandb") or {} for c in configs]

    def one(values, default=None):
        values = sorted({str(v) for v in values if v is not None})
        return values[0] if len(values) == 1 else default

    experiments = [c.get("experiment_name") for c in configs]
    group = (one([lg.get("group") for lg in loggers]) or one(experiments)
             or "analysis")
    tags = sorted({str(t) for c in configs for t in (c.get("tags") or [])})
    return {"project": one([lg.get("project") for lg in loggers], DEFAULT_PROJECT),
            "entity": one([lg.get("entity") for lg in loggers]), "group": group, "tags": tags,
            "mode": os.environ.get("WANDB_MODE") or one([lg.get("mode") for lg in loggers],
                                                         "offline"),
            "experiment_name": one(experiments)}


def publish(report, out: Path, project: str | None = None) -> Path:
    """Log ``report``'s tables and figures; the directory of the (offline) run."""
    import wandb  # only with --wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    dirs = sorted({str(j.parent) for j in report.runs.jobs})
    settings = job_settings(report.runs.jobs)
    run = wandb.init(project=project or settings["project"], entity=settings["entity"],
                     job_type="analysis", group=settings["group"], tags=settings["tags"],
                     name=f"analysis-{Path(out).name}", dir=str(out), mode=settings["mode"],
                     reinit="create_new",
                     config={"dirs": dirs, "jobs": len(report.runs.jobs),
                             "rows": len(report.runs.frame),
                             "experiment_name": settings["experiment_name"]})
    data = {}
    for path in report.written:
        if path.suffix == ".csv":
            data[f"tables/{path.stem}"] = wandb.Table(dataframe=pd.read_csv(path))
        elif path.suffix == ".png":
            data[f"figures/{path.stem}"] = wandb.Image(str(path))
    run.log(data)
    run.finish()
    return Path(run.dir).parent
