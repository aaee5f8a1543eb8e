"""Train one module: IMP rounds as separate fits, resumable, skip-if-done."""

import ctypes
import logging
import os
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from . import masks as M
from .builders import build_datamodule, init_theta0, module_spec, spec_fingerprint
from .callbacks import RestoreBestWeights
from .errors import UserError
from .imp import IterativeMagnitudePruning
from .module import MaxEntModule
from .plots import confusion_png
from .storage import (
    CorruptFile,
    ModuleRecord,
    load_module,
    load_torch,
    read_json,
    save_module,
    save_torch,
    write_json,
)

ROUNDS_DIR = "imp"
log = logging.getLogger(__name__)


def _fast_cuda_check() -> None:
    """Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 on import; where NVML is absent (CPU-only
    machines) torch then retries loading it on every cuda.is_available(), i.e. every Adam step
    (~0.2 ms). Without NVML torch falls back to the runtime check anyway: drop the variable."""
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)


_fast_cuda_check()


def validate(cfg: DictConfig) -> None:
    """Checks that need no data; the rewarded set is checked against the data set later."""
    imp, T = cfg.imp, cfg.loss.temperature
    if not 0.0 <= float(imp.sparsity) < 1.0:
        raise UserError(f"imp.sparsity={imp.sparsity} must be in [0, 1), e.g. imp.sparsity=0.99")
    if int(imp.rounds) < 0:
        raise UserError(f"imp.rounds={imp.rounds} must be >= 0 (0 trains dense)")
    if imp.scope not in ("global", "layerwise"):
        raise UserError(f"imp.scope={imp.scope} must be 'global' or 'layerwise'")
    if not float(T) > 0:
        raise UserError(f"loss.temperature={T} must be > 0, e.g. loss.temperature=5")


def build_logger(cfg: DictConfig, out_dir: Path, name: str, job_type: str = "train"):
    """The configured loggers (W&B, CSV, none), writing under ``out_dir``."""
    loggers = []
    for key, lcfg in (cfg.get("logger") or {}).items():
        extra = {"name": name, "job_type": job_type} if key == "wandb" else {}
        loggers.append(instantiate(lcfg, save_dir=str(out_dir), **extra))
    return loggers


def finish_loggers(loggers) -> None:
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger" and logger._experiment is not None:
            logger.experiment.finish()


def _round_epochs(cfg: DictConfig, final: bool) -> int:
    epochs = int(cfg.trainer.max_epochs)
    if final or cfg.imp.round_epochs is None:
        return epochs if final else max(1, epochs // max(int(cfg.imp.rounds), 1))
    return int(cfg.imp.round_epochs)


def _resume(out_dir: Path, fingerprint: str, rounds: int):
    """Masks and next round index from the last finished round of this very module; an
    unreadable round artifact is skipped (that round is trained again)."""
    for r in reversed(range(rounds)):
        path = out_dir / ROUNDS_DIR / f"round_{r}.pt"
        if not path.exists():
            continue
        try:
            saved = load_torch(path, "IMP round artifact")
        except CorruptFile as err:
            log.warning("%s; training that round again", err.problem)
            continue
        if isinstance(saved, dict) and saved.get("fingerprint") == fingerprint:
            return saved["masks"], r + 1
    return None


def save_round(out_dir: Path, r: int, masks: M.Masks, fingerprint: str, best_epoch: int,
               best_val_loss: float) -> None:
    """The artifacts of finished IMP round ``r`` (what ``_resume`` reads back)."""
    record = {"round": r, "sparsity": M.sparsity(masks), "best_epoch": best_epoch,
              "best_val_loss": best_val_loss}
    save_torch(out_dir / ROUNDS_DIR / f"round_{r}.pt",
               {"masks": masks, "fingerprint": fingerprint, **record})
    write_json(out_dir / ROUNDS_DIR / f"round_{r}.json", record)


def _finished(out_dir: Path, fingerprint: str) -> dict | None:
    """The metrics of the finished module in ``out_dir`` when it is this very module and its
    checkpoint loads; a corrupt one is retrained (with a warning)."""
    done, module = out_dir / "metrics.json", out_dir / "module.pt"
    if not (done.exists() and module.exists()):
        return None
    try:
        metrics = read_json(done)
        if metrics.get("fingerprint") != fingerprint:
            return None
        load_module(module, fingerprint)
    except CorruptFile as err:
        log.warning("%s; retraining the module", err.problem)
        return None
    return metrics


def tracks_val_metrics(cfg: DictConfig) -> bool:
    """Whether anything reads the per-epoch validation metrics other than the loss: a logger,
    or a callback monitoring one of them."""
    monitored = {str(c.get("monitor", "")) for c in (cfg.get("callbacks") or {}).values()}
    return bool(cfg.get("logger")) or any(m.startswith("val/") and m != "val/loss"
                                          for m in monitored)


def save_trained(out_dir: Path, cfg, dm, rewarded, test: dict, confusion: torch.Tensor,
                 state_dict, masks, spec, theta0_id, temperature, stop_epochs, wall_s) -> dict:
    """Write a trained module's module.pt and confusion.png (either trainer); returns its
    metrics, which the caller writes to metrics.json last, after its loggers."""
    metrics = dict(test)
    metrics.update(
        sparsity=M.sparsity(masks), rewarded=rewarded, seed=int(cfg.seed),
        fingerprint=spec_fingerprint(spec), theta0_id=theta0_id, data=dm.name,
        num_classes=dm.num_classes, confusion=confusion.tolist(), stop_epochs=stop_epochs,
        wall_s=round(wall_s, 2),
    )
    record = ModuleRecord(
        state_dict=state_dict, masks=masks, theta0_id=theta0_id, rewarded=rewarded,
        num_classes=dm.num_classes, input_shape=tuple(dm.input_shape), temperature=temperature,
        seed=int(cfg.seed), spec=spec, fingerprint=metrics["fingerprint"], metrics=dict(metrics),
    )
    save_module(out_dir / "module.pt", record)
    confusion_png(out_dir / "confusion.png", confusion, dm.splits.classes,
                  title=f"R={rewarded} seed={cfg.seed}")
    return metrics


def train_module(cfg: DictConfig, out_dir: Path, rewarded=None, quiet: bool = False) -> dict:
    """Train (or reuse) the module of ``cfg`` for ``rewarded``; returns its metrics."""
    out_dir = Path(out_dir)
    spec = module_spec(cfg, rewarded)
    fingerprint = spec_fingerprint(spec)
    done = out_dir / "metrics.json"
    finished = _finished(out_dir, fingerprint)
    if finished is not None:
        return finished
    validate(cfg)
    start_time = time.perf_counter()
    dm = build_datamodule(cfg, rewarded)
    net, theta0, theta0_id = init_theta0(cfg.model, dm.input_shape, dm.num_classes, cfg.seed)
    loss = instantiate(cfg.loss)
    module = MaxEntModule(net, loss, dm.rewarded, dm.num_classes, instantiate(cfg.optimizer),
                          val_metrics=tracks_val_metrics(cfg))

    rounds = int(cfg.imp.rounds) if cfg.imp.enabled else 0
    names = M.prunable_names(net, include_bias=cfg.imp.scope == "layerwise")
    masks, start = _resume(out_dir, fingerprint, rounds) or (M.full_masks(net, names), 0)
    output_layer = names[-1].rsplit(".", 1)[0]
    pruner = IterativeMagnitudePruning(
        theta0, masks, rounds, cfg.imp.sparsity, cfg.imp.scope, output_layer, start_round=start
    )
    M.rewind(net, theta0, masks)
    loggers = build_logger(cfg, out_dir, name=f"R{'-'.join(map(str, dm.rewarded))}_s{cfg.seed}")
    stop_epochs = []
    for r in range(start, rounds + 1):
        dm.shuffle_seed = int(cfg.seed) * 1000 + r
        L.seed_everything(int(cfg.seed) + r, verbose=False)
        best = RestoreBestWeights()
        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
        trainer = instantiate(
            cfg.trainer,
            max_epochs=_round_epochs(cfg, final=r == rounds),
            callbacks=[*callbacks, best, pruner],
            logger=loggers or False,
            default_root_dir=str(out_dir),
            enable_progress_bar=not quiet and cfg.trainer.enable_progress_bar,
        )
        trainer.fit(module, datamodule=dm)
        stop_epochs.append(trainer.current_epoch)
        if r < rounds:
            save_round(out_dir, r, pruner.masks, fingerprint, best.best_epoch, best.best_score)

    results = trainer.test(module, datamodule=dm, verbose=False)[0]
    metrics = save_trained(
        out_dir, cfg, dm, dm.rewarded, {k: float(v) for k, v in results.items()},
        module.test_confusion.compute(), net.cpu().state_dict(), pruner.masks, spec,
        theta0_id, loss.temperature, stop_epochs, time.perf_counter() - start_time)
    for logger in loggers:
        logger.log_metrics({"sparsity": metrics["sparsity"]})
        if hasattr(logger, "log_image"):
            logger.log_image("test/confusion", [str(out_dir / "confusion.png")])
    finish_loggers(loggers)
    write_json(done, metrics)
    return metrics



def train_modules(cfg: DictConfig, jobs: list[tuple[list[int], Path]]) -> list[dict]:
    """Train several modules of one seed (``(rewarded, out_dir)`` each), skipping finished
    ones; each directory is locked while its module trains. With ``family.enabled`` they are
    trained together in one vectorized pass (``family.py``) where the config allows it."""
    from .family import train_family, unsupported_reason
    from .store import locked

    if (cfg.get("family") or {}).get("enabled", False):
        reason = unsupported_reason(cfg)
        if reason is None:
            return train_family(cfg, jobs)
        log.info("family training off (%s): training %d module(s) one by one", reason, len(jobs))
    results = []
    for rewarded, out_dir in jobs:
        with locked(Path(out_dir)):
            results.append(train_module(cfg, out_dir, rewarded, quiet=True))
    return results
