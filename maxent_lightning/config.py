"""Where the Hydra configs live, and the config composed as the CLI composes it (for tests,
notebooks and scripts)."""

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

# The repository's top-level conf/ (maxent_lightning/conf links to it); a wheel carries a copy
# there, so a non-editable install finds every config too.
CONFIG_DIR = str((Path(__file__).resolve().parent / "conf").resolve())
CONFIG_NAME = "train"


def debug_last(args: Sequence[str]) -> list[str]:
    """``debug=NAME`` as ``+debug=NAME`` after the other overrides: a debug config is appended
    last, so it wins over an experiment's epochs and paths (``+experiment=X debug=limit``).
    Flags (``--cfg job``) keep their places."""
    args = [f"+{a}" if a.startswith("debug=") else a for a in args]
    debug = [a for a in args if a.startswith("+debug=")]
    rest = [a for a in args if a not in debug]
    overrides = [i for i, a in enumerate(rest) if "=" in a and not a.startswith("-")]
    if not debug or not overrides:
        return args
    return rest[:overrides[-1] + 1] + debug + rest[overrides[-1] + 1:]


def compose_config(overrides: Sequence[str] = (), output_dir: str | Path | None = None,
                   keep_hydra: bool = False) -> DictConfig:
    """The main config with ``overrides``. With ``output_dir`` it is a job's config: Hydra's
    runtime config is set (as in a CLI job writing to ``output_dir``), so ``${hydra:...}``
    interpolations resolve and tasks can run; the ``hydra`` node is dropped unless
    ``keep_hydra``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(CONFIG_NAME, overrides=debug_last(overrides),
                      return_hydra_config=output_dir is not None or keep_hydra)
    if output_dir is not None:
        cfg.hydra.runtime.output_dir = str(output_dir)
        HydraConfig.instance().set_config(cfg)
        if not keep_hydra:
            with open_dict(cfg):
                del cfg["hydra"]
    return cfg
