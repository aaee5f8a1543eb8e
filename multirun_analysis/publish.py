"""Publish an analysis to W&B (``--wandb``): one run of job type ``analysis`` holding every
written table as a W&B Table of its statistics (numeric mean, std and n per cell) and every
figure as an image. Offline unless ``WANDB_MODE=online``; ``wandb sync`` uploads the run."""

import os
from pathlib import Path

import pandas as pd


def publish(report, out: Path, project: str = "maxent_lightning") -> Path:
    """Log ``report``'s tables and figures; the directory of the (offline) run."""
    import wandb  # only with --wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    dirs = sorted({str(j.parent) for j in report.runs.jobs})
    run = wandb.init(project=project, job_type="analysis", group="analysis",
                     name=f"analysis-{Path(out).name}", dir=str(out),
                     mode=os.environ.get("WANDB_MODE", "offline"), reinit="create_new",
                     config={"dirs": dirs, "jobs": len(report.runs.jobs),
                             "rows": len(report.runs.frame)})
    data = {}
    for path in report.written:
        if path.suffix == ".csv":
            data[f"tables/{path.stem}"] = wandb.Table(dataframe=pd.read_csv(path))
        elif path.suffix == ".png":
            data[f"figures/{path.stem}"] = wandb.Image(str(path))
    run.log(data)
    run.finish()
    return Path(run.dir).parent
