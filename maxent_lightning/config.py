"""Where the Hydra configs live, and the config composed as the CLI composes it (for tests,
notebooks and scripts)."""

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict, read_write

from .compat import set_hydra_config

# The repository's top-level conf/ (maxent_lightning/conf links to it); a wheel carries a copy
# there, so a non-editable install finds every config too.
CONFIG_DIR = str((Path(__file__).resolve().parent / "conf").resolve())
CONFIG_NAME = "train"


# Groups of the main defaults list that default to null (conf/train.yaml): ``+GROUP=NAME``
# (appending, the long-documented form) means the same as ``GROUP=NAME`` there.
NULL_GROUPS = ("experiment", "debug")


def normalize_overrides(args: Sequence[str]) -> list[str]:
    """``+experiment=X`` and ``+debug=X`` as ``experiment=X`` and ``debug=X``: Hydra 1.3 refuses
    to append a group the defaults list already holds ("Multiple values for experiment"), so
    both spellings choose the experiment and debug entries of conf/train.yaml."""
    return [a[1:] if a.startswith(tuple(f"+{g}=" for g in NULL_GROUPS)) else a for a in args]


def at_the_door(cfg: DictConfig, hydra: DictConfig, multirun: bool | None = None) -> DictConfig:
    """Write Hydra's runtime facts of a job into its config ``cfg``, once, as the job starts:
    ``paths.output_dir`` and the ``runtime`` node (job number, multirun or not, the model
    choice; conf/train.yaml). ``hydra``: the job's Hydra config (``HydraConfig.get()`` at the
    CLI, the ``hydra`` node of a composed config); ``multirun``: else from its ``mode``. Every
    module below the CLI reads these keys, never Hydra's global."""
    if multirun is None:
        multirun = hydra.get("mode") == RunMode.MULTIRUN
    model = hydra.runtime.choices.get("model")
    with read_write(cfg), open_dict(cfg):
        cfg.paths.output_dir = str(hydra.runtime.output_dir)
        cfg.runtime = {"num": int(hydra.job.get("num") or 0), "multirun": bool(multirun),
                       "model": None if model is None else str(model)}
    return cfg


def compose_config(overrides: Sequence[str] = (), output_dir: str | Path | None = None,
                   keep_hydra: bool = False) -> DictConfig:
    """The main config with ``overrides``, as a CLI job gets it (a notebook's entry point):
    Hydra's runtime config is set, so ``${hydra:...}`` interpolations (an experiment's recipe,
    ``trainer.max_epochs``) resolve. The job writes to ``output_dir``, by default where a
    single run would (``hydra.run.dir``), its runtime facts written in as the CLI writes them
    (``at_the_door``); the ``hydra`` node is dropped unless ``keep_hydra``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(CONFIG_NAME, overrides=normalize_overrides(overrides),
                      return_hydra_config=True)
    with read_write(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = str(output_dir if output_dir is not None
                                           else cfg.hydra.run.dir)
    set_hydra_config(cfg)  # the ${hydra:...} of an experiment's recipe resolve
    at_the_door(cfg, cfg.hydra)
    if not keep_hydra:
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg
