"""The configured Lightning loggers of a module's training run, and their end."""

from pathlib import Path

from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig


def build_loggers(cfg: DictConfig, out_dir: Path, name: str, job_type: str = "train") -> list:
    """The configured loggers (W&B, CSV, none), writing under ``out_dir``."""
    loggers = []
    for key, lcfg in cfg.logger.items():
        extra = {"name": name, "job_type": job_type} if key == "wandb" else {}
        loggers.append(instantiate(lcfg, save_dir=str(out_dir), **extra))
    return loggers


def finish_loggers(loggers) -> None:
    """End the W&B run of these loggers, so that the next module starts its own."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        if wandb.run is not None:
            wandb.run.finish()
