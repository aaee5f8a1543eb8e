"""The ``train`` task: one module into the Hydra output directory."""

import math
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .. import moduledir
from ..builders import module_spec, spec_fingerprint
from ..phases import imp_used, validate
from ..training import train_module


def claim_output_dir(out: Path, cfg: DictConfig, fingerprint: str) -> None:
    """Refuse a directory that holds a finished run of another config; record this config."""
    moduledir.finished_run(out, fingerprint, "run",
                           "choose another hydra.run.dir or delete that run")
    moduledir.write_config(out, cfg)


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
    out = Path(HydraConfig.get().runtime.output_dir)
    claim_output_dir(out, cfg, spec_fingerprint(module_spec(cfg)))
    metrics = train_module(cfg, out)
    print(summary(metrics, cfg.imp.sparsity if imp_used(cfg.imp) else 0.0, out))
    return metrics
