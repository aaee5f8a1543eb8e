"""A seed's modules trained as a family: in passes of members that fit, each pass's directories
locked, finished modules skipped, interrupted ones resumed, and dense twins trained with round 0."""

import logging
import os
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch

from .. import moduledir
from ..builders import build_datamodule, build_net, data_source
from ..cpu import denormals_flushed, reused_host_memory
from ..modulerun import Diverged
from ..phases import schedule
from ..recipe import Recipe
from .member import Member
from .memory import pick_device, plan_sizes
from .streams import steps_per_epoch
from .trainer import FamilyTrainer

log = logging.getLogger(__package__)  # maxent_lightning.family, as for the whole family


@contextmanager
def _deterministic(setting):
    """``trainer.deterministic`` as Lightning applies it to a fit (true: torch's deterministic
    algorithms, "warn": the same with warnings instead of errors), undone afterwards."""
    if setting is None:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    if setting:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(bool(setting), warn_only=setting == "warn")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def _train_chunk(recipe: Recipe, members: list[Member], device, group: int) -> list[dict]:
    start_time = time.perf_counter()
    trainer = FamilyTrainer(recipe, members, device, group)
    phases = trainer.schedule
    origin = {"dm": trainer.dm, "theta0_id": trainer.theta0_id,
              "temperature": trainer.loss.temperature}
    for k, m in enumerate(members):
        m.resume(phases, trainer.net, trainer.streams.steps(k), **origin)
        if m.twin is not None and m.start > 0:  # round 0 is done: the twin trains on its own
            m.twin = None
        if (t := m.twin) is not None:
            dense = schedule(t.recipe, trainer.net)
            t.resume(dense, trainer.net, trainer.streams.steps(k), **origin)
            t.epochs = dense.phases[0].epochs
    twins = [m.twin for m in members if m.twin is not None]
    with (_deterministic(recipe.trainer.get("deterministic")), reused_host_memory(),
          denormals_flushed(recipe.flush_denormals)):
        for phase in phases.phases[min(m.start for m in members):]:
            trainer.run_phase(phase)
    share = (time.perf_counter() - start_time) / len(members)
    trainer.net.cpu()
    done = [m for m in members if m.failed is None]
    stored = trainer.finish(done + [t for t in twins if t.weights is not None], share)
    results = stored[:len(done)]
    failed = [m.failed for m in members if m.failed is not None]
    for m in members + twins:
        if m.failed is not None or m.weights is None:
            m.fail()
    if failed:
        raise Diverged(f"{failed[0]} ({len(failed)} of {len(members)} modules diverged; the "
                       f"other {len(results)} were stored)")
    return results


def passes(cfg, sets: list, chunk: int) -> list[list[int]]:
    """The rewarded ``sets`` (their indices) in training passes of up to ``chunk``; with
    per-member streams (cross-entropy) a pass holds sets of equally many steps per epoch (the
    members of a stack share the optimizer's step count)."""
    groups = {}
    if cfg.loss.targets == "cross_entropy" and sets:
        labels = build_datamodule(cfg, sets[0], targets="maxent").train[2]
        for i, r in enumerate(sets):
            groups.setdefault(steps_per_epoch(labels, r, int(cfg.data.batch_size)), []).append(i)
    else:
        groups[0] = list(range(len(sets)))
    return [ix[s:s + chunk] for _, ix in sorted(groups.items()) for s in range(0, len(ix), chunk)]


def train_family(recipe: Recipe, jobs, twins=None) -> list[dict]:
    """Train the ``(rewarded, out_dir)`` modules of one seed of ``recipe`` (a job config: its
    recipe) together (chunked to fit memory), skipping finished ones; every member directory
    is locked while its chunk trains. ``twins``: {rewarded tuple: (dense recipe, out_dir)}, the
    dense modules whose training starts as the IMP round 0 of these, or is its start
    (``first_phase_key``): each trained on the stack row of that round 0, not apart."""
    recipe = Recipe.of(recipe)
    src = data_source(recipe.data)
    device = pick_device(str(recipe.trainer.get("accelerator", "auto")),
                         recipe.trainer.get("devices"))
    probe = build_net(recipe.model, src.input_shape, src.num_classes)
    chunk, group = plan_sizes(probe, src.input_shape, int(recipe.data.batch_size), device,
                              recipe.family.chunk_size)
    members, results = {}, {}
    for rewarded, out_dir in jobs:
        m = Member.of(recipe, rewarded, out_dir, src.num_classes, recipe.data.name)
        key = str(m.out_dir.resolve())
        if key not in members:
            members[key] = m
    for key, m in members.items():
        if (done := moduledir.finished_module(m.out_dir, m.fingerprint)) is not None:
            results[key] = done
    todo = [m for key, m in members.items() if key not in results]
    for m in todo:
        if (twin := (twins or {}).get(tuple(m.rewarded))) is not None:
            m.twin = Member.of(Recipe.of(twin[0]), m.rewarded, twin[1], src.num_classes,
                               recipe.data.name)
            if m.twin.first_key != m.first_key:
                raise ValueError(f"{twin[1]} is not the round 0 of R={m.rewarded}")
    parts = [sorted((todo[i] for i in ix), key=lambda m: str(m.out_dir.resolve()))
             for ix in passes(recipe, [m.rewarded for m in todo], chunk)]
    log.info("family training: %d module(s) of seed %s in %d pass(es) of up to %d, on %s",
             len(todo), recipe.seed, len(parts), chunk, device)
    for part in parts:
        with ExitStack() as locks:
            dirs = [m.out_dir for m in part] + [m.twin.out_dir for m in part if m.twin]
            for d in sorted(dirs, key=lambda d: str(d.resolve())):
                locks.enter_context(moduledir.locked(d))
            ready = []
            for m in part:  # another process may have finished it meanwhile
                if m.twin and moduledir.finished_module(m.twin.out_dir, m.twin.fingerprint):
                    m.twin = None
                if (done := moduledir.finished_module(m.out_dir, m.fingerprint)) is not None:
                    results[str(m.out_dir.resolve())] = done
                else:
                    ready.append(m)
            if ready:
                trained = _train_chunk(recipe, ready, device, group)
                for m, metrics in zip(ready, trained, strict=True):
                    results[str(m.out_dir.resolve())] = metrics
    return [results[str(Path(d).resolve())] for _, d in jobs]
