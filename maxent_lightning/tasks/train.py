"""The ``train`` task: one module, trained into (or taken from) the module store, reported in
the Hydra output directory. The next composition job that needs the same module reuses it."""

import math
import os
import shutil
from pathlib import Path

import torch
from omegaconf import DictConfig

from .. import moduledir
from ..builders import data_source
from ..data.datamodule import check_rewarded
from ..files import read_json
from ..identity import module_spec, spec_fingerprint
from ..modulestore import ModuleStore
from ..phases import imp_used
from ..plots import confusion_png
from ..recipe import Recipe


def claim_output_dir(out: Path, cfg: DictConfig, fingerprint: str) -> None:
    """Refuse a directory that holds a finished run of another config; record this config."""
    moduledir.finished_run(out, fingerprint, "run",
                           "choose another hydra.run.dir or delete that run")
    moduledir.write_config(out, cfg)


def summary(metrics: dict, requested_sparsity: float, out: Path, files: str) -> str:
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
        f"  outputs               {out} ({files})",
        f"  stored as             {metrics['module']}",
    ])


def link_or_copy(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (no second copy of the weights), else a copy."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(source, target)


def run(cfg: DictConfig) -> dict:
    alone = cfg.copy()  # one module: Lightning's fit and progress (the family's module too)
    alone.family.enabled = False
    recipe = Recipe.of(alone)  # validated
    out, src = Path(cfg.paths.output_dir), data_source(recipe.data)
    rewarded = check_rewarded(recipe.rewarded, src.num_classes, recipe.data.name)
    claim_output_dir(out, cfg, spec_fingerprint(module_spec(recipe, rewarded)))
    module = ModuleStore(recipe.store_root).get_many(recipe, [rewarded], quiet=False)[0]
    metrics = {**read_json(module.parent / moduledir.DONE), "module": str(module.resolve())}
    link_or_copy(module, out / moduledir.MODULE)
    files = "module.pt, metrics.json, config.yaml"
    if recipe.figures:
        confusion_png(out / "confusion.png", torch.tensor(metrics["confusion"]), src.classes,
                      title=f"R={rewarded} seed={recipe.seed}")
        files = "module.pt, metrics.json, confusion.png, config.yaml"
    moduledir.mark_done(out, metrics)
    print(summary(metrics, cfg.imp.sparsity if imp_used(cfg.imp) else 0.0, out, files))
    return metrics
