"""The sequential trainer: one module, each phase of its plan a Lightning fit; resumable,
skip-if-done (``moduledir``)."""

import time
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from . import masks as M
from . import moduledir
from .builders import build_datamodule, init_theta0
from .callbacks import IterativeMagnitudePruning, progress_bar
from .cpu import denormals_flushed
from .dropout import begin_stream, stream_dropouts
from .identity import first_phase_key, module_spec, spec_fingerprint
from .loggers import (
    begin_round,
    build_loggers,
    finish_loggers,
    log_trained,
    module_config,
    module_run_name,
)
from .module import MaxEntModule
from .phases import phase_callbacks, plan
from .plots import wants_figures


def train_module(cfg: DictConfig, out_dir: Path, rewarded=None, quiet: bool = False) -> dict:
    """Train (or reuse) the module of ``cfg`` for ``rewarded`` in ``out_dir``; its metrics."""
    out_dir = Path(out_dir)
    spec = module_spec(cfg, rewarded)
    fingerprint = spec_fingerprint(spec)
    finished = moduledir.finished_module(out_dir, fingerprint)
    if finished is not None:
        return finished
    start_time = time.perf_counter()
    dm = build_datamodule(cfg, rewarded)
    net, theta0, theta0_id = init_theta0(cfg.model, dm.input_shape, dm.num_classes, cfg.seed)
    drops = stream_dropouts(net, dm.input_shape)
    first_key = first_phase_key(cfg, dm.rewarded)
    phases = plan(cfg, net)
    # built from the recipe's configs (its hyper-parameters), on the θ0 net already built
    module = MaxEntModule(spec["model"], instantiate(cfg.loss), dm.rewarded, dm.num_classes,
                          instantiate(cfg.optimizer), val_metrics=phases.val_metrics,
                          input_shape=dm.input_shape, backbone=net)

    resumed = moduledir.resume_point(out_dir, fingerprint, phases.rounds)
    masks, start, stop_epochs = resumed or (phases.full_masks(net), 0, [])
    pruner = IterativeMagnitudePruning(phases, theta0, masks, start_round=start)
    M.rewind(net, theta0, masks)
    loggers = build_loggers(cfg, out_dir, module_run_name(cfg, dm.rewarded, fingerprint),
                            config=module_config(cfg, dm.rewarded, fingerprint))
    what = f"module R={dm.rewarded} seed={cfg.seed}"
    shown = not quiet and cfg.trainer.enable_progress_bar
    # training steps of the rounds before this phase: the loggers' step keeps rising (a resumed
    # run counts the finished rounds' epochs)
    steps = sum(stop_epochs) * len(dm.train_dataloader())
    with denormals_flushed(cfg.flush_denormals):
        for phase in phases.phases[start:]:
            phase.begin(dm)
            begin_stream(drops, first_key if phase.round == 0 else fingerprint, phase.round,
                         dm.batch_size)
            begin_round(loggers, phase.round, steps)
            best, *others = phase_callbacks(cfg).values()  # the checkpoint criterion first
            trainer = instantiate(
                cfg.trainer,
                max_epochs=phase.epochs,
                callbacks=[best, *others, pruner,
                           *([progress_bar(phases.label(phase))] if shown else [])],
                logger=loggers or False,
                default_root_dir=str(out_dir),
                enable_progress_bar=shown,
            )
            trainer.fit(module, datamodule=dm)
            stop_epochs.append(trainer.current_epoch)
            if not phase.final:
                steps += trainer.global_step
            moduledir.check_phase(best, best.best_state or {}, f"{what} in IMP phase {phase.round}")
            if not phase.final:
                moduledir.save_round(out_dir, phase.round, pruner.masks, fingerprint, best,
                                     stop_epochs)

    results = trainer.test(module, datamodule=dm, verbose=False)[0]
    metrics = moduledir.save_trained(
        out_dir, cfg.seed, dm, dm.rewarded, {k: float(v) for k, v in results.items()},
        module.test_confusion.compute(), net.cpu().state_dict(), pruner.masks, spec,
        fingerprint, theta0_id, module.loss.temperature, stop_epochs,
        time.perf_counter() - start_time, figure=wants_figures(cfg))
    log_trained(loggers, out_dir, metrics, wants_figures(cfg), dm.splits.classes)
    finish_loggers(loggers)
    moduledir.mark_done(out_dir, metrics)
    return metrics
