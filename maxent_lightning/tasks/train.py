"""The ``train`` task: one module into the Hydra output directory."""

import math
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ..builders import module_spec, spec_fingerprint
from ..errors import UserError
from ..storage import read_json, write_text
from ..training import train_module, validate


def output_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def claim_output_dir(out: Path, cfg: DictConfig, fingerprint: str) -> None:
    """Refuse a directory that holds a finished run of another config; record this config."""
    done = out / "metrics.json"
    if done.exists() and read_json(done).get("fingerprint") != fingerprint:
        raise UserError(
            f"{out} already holds a finished run of a different config; "
            "choose another hydra.run.dir or delete that run"
        )
    write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))


def summary(metrics: dict, requested_sparsity: float, out: Path) -> str:
    entropy = metrics.get("test/nonrewarded_entropy")
    ceiling = math.log(metrics["num_classes"])
    entropy_text = "undefined (R = C)" if entropy is None else f"{entropy:.3f} (max {ceiling:.3f})"
    return "\n".join([
        f"module R={metrics['rewarded']} seed={metrics['seed']} on {metrics['data']}",
        f"  rewarded accuracy     {metrics['test/rewarded_acc']:.4f}",
        f"  non-rewarded entropy  {entropy_text}",
        f"  overall accuracy      {metrics['test/acc']:.4f}",
        f"  sparsity              {metrics['sparsity']:.4f} (requested {requested_sparsity})",
        f"  wall time             {metrics['wall_s']:.1f} s",
        f"  outputs               {out} (module.pt, metrics.json, confusion.png, config.yaml)",
    ])


def run(cfg: DictConfig) -> dict:
    validate(cfg)
    out = output_dir()
    fingerprint = spec_fingerprint(module_spec(cfg))
    claim_output_dir(out, cfg, fingerprint)
    metrics = train_module(cfg, out)
    requested = cfg.imp.sparsity if cfg.imp.enabled and cfg.imp.rounds > 0 else 0.0
    print(summary(metrics, requested, out))
    return metrics
