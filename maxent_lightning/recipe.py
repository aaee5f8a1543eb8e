"""Recipe: what the store, both trainers and the planner read of a job's config, built once
(``Recipe.of``) from the config the CLI composed (its runtime facts written in: cli.py). The
config groups a fit instantiates stay config nodes; the rest is typed."""

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from .plots import wants_figures


@dataclass(frozen=True)
class Recipe:
    """The modules of one config, all but the rewarded set alike."""

    config: DictConfig  # the whole config: identity.py fingerprints it, validate checks it
    # the config groups a fit instantiates (hydra.utils.instantiate), as configured
    data: DictConfig
    model: DictConfig
    loss: DictConfig
    imp: DictConfig
    optimizer: DictConfig
    callbacks: DictConfig
    trainer: DictConfig
    family: DictConfig  # the family trainer's settings (conf/family)
    seed: int
    rewarded: tuple[int, ...]  # the config's own rewarded set (a module's default)
    store_root: Path
    train_missing: bool  # store.train_missing: train what the store lacks, else refuse it
    figures: bool  # PNG figures (``figures``: auto resolved for this job)
    flush_denormals: bool

    @classmethod
    def of(cls, cfg: "DictConfig | Recipe") -> "Recipe":
        """The recipe of ``cfg`` (a validated job config; a recipe is its own)."""
        if isinstance(cfg, Recipe):
            return cfg
        return cls(cfg, cfg.data, cfg.model, cfg.loss, cfg.imp, cfg.optimizer, cfg.callbacks,
                   cfg.trainer, cfg.family, int(cfg.seed), tuple(int(c) for c in cfg.rewarded),
                   Path(cfg.store.root), bool(cfg.store.get("train_missing", True)),
                   wants_figures(cfg), bool(cfg.get("flush_denormals", True)))
