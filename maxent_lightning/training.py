"""The sequential trainer: one module, each phase of its plan a Lightning fit; resumable,
skip-if-done (``modulerun.ModuleRun``)."""

import time
from pathlib import Path

from hydra.utils import instantiate

from . import masks as M
from .builders import build_datamodule, init_theta0
from .callbacks import IterativeMagnitudePruning, progress_bar
from .cpu import denormals_flushed
from .dropout import begin_stream, stream_dropouts
from .identity import first_phase_key
from .module import MaxEntModule
from .modulerun import Diverged, ModuleRun
from .phases import phase_callbacks, schedule
from .recipe import Recipe


def train_module(recipe: Recipe, out_dir: Path, rewarded=None, quiet: bool = False) -> dict:
    """Train (or reuse) the module of ``recipe`` (a job config: its recipe) for ``rewarded`` in
    ``out_dir``; its metrics."""
    recipe = Recipe.of(recipe)
    run = ModuleRun.open(recipe, rewarded, out_dir)
    if (finished := run.finished()) is not None:
        return finished
    start_time = time.perf_counter()
    dm = build_datamodule(recipe, rewarded)
    net, theta0, theta0_id = init_theta0(recipe.model, dm.input_shape, dm.num_classes,
                                         recipe.seed)
    drops = stream_dropouts(net, dm.input_shape)
    first_key = first_phase_key(recipe, dm.rewarded)
    phases = schedule(recipe, net)
    # built from the recipe's configs (its hyper-parameters), on the θ0 net already built
    module = MaxEntModule(run.spec["model"], instantiate(recipe.loss), dm.rewarded,
                          dm.num_classes, instantiate(recipe.optimizer),
                          val_metrics=phases.val_metrics, input_shape=dm.input_shape, backbone=net)
    # the loggers' step keeps rising across rounds (a resumed run counts the finished rounds')
    run.resume(phases, net, len(dm.train_dataloader()), dm=dm, theta0_id=theta0_id,
               temperature=module.loss.temperature)
    pruner = IterativeMagnitudePruning(phases, theta0, run.masks, start_round=run.start)
    M.rewind(net, theta0, run.masks)
    shown = not quiet and recipe.trainer.enable_progress_bar
    try:
        with denormals_flushed(recipe.flush_denormals):
            for phase in phases.phases[run.start:]:
                phase.begin(dm)
                begin_stream(drops, first_key if phase.round == 0 else run.fingerprint,
                             phase.round, dm.batch_size)
                run.begin_round(phase.round, run.steps)
                # the checkpoint criterion first
                best, *others = phase_callbacks(recipe).values()
                trainer = instantiate(
                    recipe.trainer,
                    max_epochs=phase.epochs,
                    callbacks=[best, *others, pruner,
                               *([progress_bar(phases.label(phase))] if shown else [])],
                    logger=run.loggers or False,
                    default_root_dir=str(run.out_dir),
                    enable_progress_bar=shown,
                )
                trainer.fit(module, datamodule=dm)
                run.stop_epochs.append(trainer.current_epoch)
                if not phase.final:
                    run.steps += trainer.global_step
                run.check_round(phase, best, best.best_state or {})
                run.end_round(phase, best, pruner.masks)
    except Diverged:
        run.fail()
        raise
    results = trainer.test(module, datamodule=dm, verbose=False)[0]
    return run.store(net.cpu().state_dict(), {k: float(v) for k, v in results.items()},
                     module.test_confusion.compute(), time.perf_counter() - start_time)
