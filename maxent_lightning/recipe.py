"""Recipe: what the store, both trainers and the planner read of a job's config, built once
(``Recipe.of``, which validates it) from the config the CLI composed (its runtime facts written
in: cli.py). The config groups a fit instantiates stay config nodes; the rest is typed. Functions
below the door read these fields (``identity``, ``builders``, ``phases`` and the family's
eligibility read a recipe and a job config alike: both carry these names)."""

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from .builders import model_choice
from .loggers import resolved, run_tags
from .phases import validate
from .plots import wants_figures


@dataclass(frozen=True)
class Recipe:
    """The modules of one config, all but the rewarded set alike."""

    # the config groups a fit instantiates (hydra.utils.instantiate), as configured
    data: DictConfig
    model: DictConfig
    loss: DictConfig
    imp: DictConfig
    optimizer: DictConfig
    callbacks: DictConfig
    trainer: DictConfig
    family: DictConfig  # the family trainer's settings (conf/family)
    logger: DictConfig  # a module's loggers (conf/logger)
    temperature: float | None  # the model's softmax temperature (conf/model), in its identity
    seed: int
    rewarded: tuple[int, ...]  # the config's own rewarded set (a module's default)
    store_root: Path
    train_missing: bool  # store.train_missing: train what the store lacks, else refuse it
    figures: bool  # PNG figures (``figures``: auto resolved for this job)
    flush_denormals: bool
    model_choice: str | None  # the model config chosen (runtime.model): runs are named by it
    tags: tuple[str, ...]  # W&B run tags
    run_config: dict  # the job's resolved config, what W&B records of a module's run (or {})

    @classmethod
    def of(cls, cfg: "DictConfig | Recipe") -> "Recipe":
        """The recipe of the job config ``cfg`` (validated here; a recipe is its own)."""
        if isinstance(cfg, Recipe):
            return cfg
        validate(cfg)
        return cls(cfg.data, cfg.model, cfg.loss, cfg.imp, cfg.optimizer, cfg.callbacks,
                   cfg.trainer, cfg.family, cfg.logger, cfg.get("temperature"), int(cfg.seed),
                   tuple(int(c) for c in cfg.rewarded), Path(cfg.store.root),
                   bool(cfg.store.get("train_missing", True)), wants_figures(cfg),
                   bool(cfg.get("flush_denormals", True)), model_choice(cfg),
                   tuple(run_tags(cfg)), resolved(cfg) if "wandb" in cfg.logger else {})
