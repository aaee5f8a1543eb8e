"""The sweep's training pool: the planner's passes (``store.TrainingPass``) trained at once, one
worker per device the sweep may use (the visible GPUs, or the ``trainer.devices`` list; on CPU
``sweep.workers`` processes), largest passes first (module-epochs); a pass stays on its
worker's device. One worker trains in this process; several are spawned processes (safe with
torch), each with its torch threads set and its log records handled here, prefixed with its
device. The store locks each module directory while it trains (``moduledir.locked``), so
workers, and other sweeps on the same store, never train a module twice. A pass that fails is
one line; SIGINT/SIGTERM stop every worker (a rerun resumes from the finished IMP rounds)."""

import copy
import logging
import multiprocessing
import os
import queue
import signal
import sys
import time
from dataclasses import dataclass, replace
from logging.handlers import QueueHandler
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from .builders import named_model
from .compat import set_hydra_config
from .devices import GPU_ACCELERATORS
from .errors import UserError
from .launcher import clock
from .modulestore import ModuleStore, TrainingPass
from .phases import imp_rounds, phase_epochs
from .process import RUNNING, end_processes, quiet_libraries

log = logging.getLogger(__name__)
# CPU workers when sweep.workers is null: on the 2-core CPU, two processes of one torch thread
# trained 4 MLP families in 0.45x the wall time of one process of two (docs/scaling.md).
CPU_WORKERS = 2
POLL_S = 0.5  # how often the pool checks that its workers are alive
_STORES: dict = {}  # store root -> ModuleStore, in this process


@dataclass
class Work:
    """One pass of the plan with what its lines say: group ``group`` of ``groups``."""

    index: int  # its position in the plan (1-based in the lines)
    group: int
    groups: int
    label: str  # loss, model and seed
    model: str  # the jobs' model name (``builders.named_model``)
    store: Path
    p: TrainingPass
    cost: int  # module-epochs (at most: early stopping ends some sooner)

    @property
    def modules(self) -> int:
        """The modules it stores: its members and their dense twins."""
        return len(self.p.members) + len(self.p.twins)


def module_epochs(cfg: DictConfig) -> int:
    """Epochs one module of ``cfg`` trains at most: every IMP round and the final phase."""
    return imp_rounds(cfg.imp) * phase_epochs(cfg, False) + phase_epochs(cfg, True)


def twin_epochs(cfg: DictConfig, twins: dict) -> int:
    """Epochs the dense ``twins`` of a pass of ``cfg`` add to its rows' IMP round 0."""
    first = phase_epochs(cfg, imp_rounds(cfg.imp) == 0)
    return sum(max(0, module_epochs(recipe) - first) for recipe, _ in twins.values())


def largest_first(works: list[Work]) -> list[Work]:
    """The passes in the order workers take them: most module-epochs first, else plan order."""
    return sorted(works, key=lambda w: (-w.cost, w.index))


def pool_devices(accelerator: str, devices, cuda_count: int, workers=None) -> list[str]:
    """The device of each worker: with GPUs visible (and accelerator auto/gpu/cuda) one per GPU
    of the ``devices`` list (``trainer.devices=[0,2]``; a count or auto: every visible GPU),
    at most ``workers`` of them; else ``workers`` (default ``CPU_WORKERS``) CPU workers."""
    if workers is not None and int(workers) < 1:
        raise UserError(f"sweep.workers={workers} must be at least 1 (or null: one per GPU, "
                        "else the CPU default); e.g. sweep.workers=2")
    if str(accelerator).lower() in GPU_ACCELERATORS and cuda_count > 0:
        if OmegaConf.is_list(devices) or isinstance(devices, list | tuple):
            ids = [int(d) for d in devices]
        elif isinstance(devices, str) and "," in devices:  # Lightning's "0,2"
            ids = [int(d) for d in devices.split(",") if d.strip()]
        else:
            ids = list(range(cuda_count))
        gpus = [f"cuda:{i}" for i in ids]
        return gpus[:int(workers)] if workers is not None else gpus
    return ["cpu"] * (int(workers) if workers is not None else CPU_WORKERS)


def threads_per_worker(workers: int, cpus: int | None = None) -> int:
    """Torch threads of each worker: the cores shared out, at least one."""
    cpus = cpus or len(os.sched_getaffinity(0))
    return max(1, cpus // max(workers, 1))


def worker_names(devices: list[str]) -> list[str]:
    """What the lines call each worker: its GPU, or ``cpu/k`` (k-th CPU worker)."""
    if devices.count("cpu") < 2:
        return list(devices)
    return [f"cpu/{k}" if d == "cpu" else d for k, d in enumerate(devices, 1)]


def describe(works: list[Work], devices: list[str], threads: int | None) -> str:
    """The plan's line of the training work and where it runs."""
    devices = devices[:max(len(works), 1)]  # as many workers as passes at most
    where = ", ".join(worker_names(devices))
    each = f", {threads} torch thread(s) each" if threads and len(devices) > 1 else ""
    return (f"plan: training {sum(w.modules for w in works)} module(s) in {len(works)} "
            f"pass(es), {sum(w.cost for w in works):,} module-epochs at most, on "
            f"{len(devices)} worker(s): {where}{each}")


class Progress:
    """One line per finished pass (and a bar on a terminal): its group, modules done / total,
    elapsed time and the ETA from the module-epochs of the passes finished so far."""

    def __init__(self, works: list[Work], stream=None):
        self.passes, self.modules = len(works), sum(w.modules for w in works)
        self.cost, self.done_passes, self.done_modules, self.done_cost = \
            sum(w.cost for w in works), 0, 0, 0
        self.start = time.monotonic()
        stream = stream or sys.stderr
        self.bar = None
        if stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.modules, unit="module", file=stream, leave=False)

    def line(self, w: Work, where: str, failed: str | None = None) -> str:
        self.done_passes += 1
        self.done_modules += w.modules
        self.done_cost += w.cost
        elapsed = time.monotonic() - self.start
        left = self.cost - self.done_cost
        eta = clock(elapsed / self.done_cost * left) if self.done_cost and left else "0:00"
        what = "failed" if failed else "done"
        line = (f"train: pass {self.done_passes}/{self.passes} {what} on {where}: group "
                f"{w.group} of {w.groups} ({w.label}), {w.modules} module(s); modules "
                f"{self.done_modules}/{self.modules}, {clock(elapsed)} elapsed, ETA {eta}")
        if self.bar is not None:
            self.bar.set_description(f"group {w.group}/{w.groups} {w.label}")
            self.bar.update(w.modules)
        return line

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def pinned(p: TrainingPass, device: str) -> TrainingPass:
    """The pass with its config on ``device`` (a GPU: ``trainer.devices=[k]``, which both
    trainers honour; not in any fingerprint)."""
    if not device.startswith("cuda:"):
        return p
    trainer = copy.deepcopy(p.recipe.trainer)
    with open_dict(trainer):
        trainer.devices = [int(device.split(":")[1])]
    return replace(p, recipe=replace(p.recipe, trainer=trainer), device=device)


def train_work(w: Work, device: str) -> None:
    if device.startswith("cuda:"):
        import torch

        torch.cuda.set_device(int(device.split(":")[1]))
    if w.store not in _STORES:  # one per process: its notes are logged once
        _STORES[w.store] = ModuleStore(w.store)
    with named_model(w.model):
        _STORES[w.store].train(pinned(w.p, device))


def failure(err: BaseException) -> str:
    return str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"


def run(works: list[Work], devices: list[str], threads: int | None = None,
        hydra: DictConfig | None = None) -> list[str]:
    """Train ``works`` on one worker per device; the lines of the passes that failed."""
    works, devices = largest_first(works), devices[:max(len(works), 1)]  # no idle workers
    if len({w.index for w in works}) < len(works):
        raise ValueError("pool.run: every pass needs its own index")
    progress, failed = Progress(works), []
    try:
        if len(devices) == 1:
            _run_here(works, devices[0], progress, failed)
        else:
            _run_pool(works, devices, threads or threads_per_worker(len(devices)), hydra,
                      progress, failed)
    finally:
        progress.close()
    return failed


def _report(progress: Progress, w: Work, where: str, failed: list, why: str | None) -> None:
    log.info(progress.line(w, where, why))
    if why is not None:
        failed.append(f"pass {w.index} ({w.label}, group {w.group} of {w.groups}) on {where} "
                      f"failed: {why}")


def _run_here(works, device, progress, failed) -> None:

    for w in works:
        try:
            train_work(w, device)
        except Exception as err:  # the other passes still train; an interrupt stops them
            if RUNNING.get("signal") is not None:
                raise
            _report(progress, w, device, failed, failure(err))
        else:
            _report(progress, w, device, failed, None)


def _run_pool(works, devices, threads, hydra, progress, failed) -> None:
    ctx = multiprocessing.get_context("spawn")  # fork would copy torch's threads and locks
    tasks, results = ctx.Queue(), ctx.Queue()
    for w in works:
        tasks.put(w)
    for _ in devices:
        tasks.put(None)  # each worker stops at one
    names = worker_names(devices)
    procs = [ctx.Process(target=_worker, args=(k, d, threads, hydra, tasks, results),
                         daemon=True, name=f"maxent-{names[k]}") for k, d in enumerate(devices)]
    by_index, pending, current = {w.index: w for w in works}, {w.index for w in works}, {}
    try:
        for p in procs:
            p.start()
        pids = {p.pid: n for p, n in zip(procs, names, strict=True)}
        checked = time.monotonic()
        while pending:
            if time.monotonic() - checked > POLL_S:
                _check_alive(procs, names, current, pending, by_index, progress, failed)
                checked = time.monotonic()
            try:
                msg = results.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if isinstance(msg, logging.LogRecord):  # a worker's log record, named by device
                msg.msg = f"[{pids.get(msg.process, '?')}] {msg.msg}"
                logging.getLogger(msg.name).handle(msg)
                continue
            kind, k, index, why = msg
            if kind == "start":
                current[k] = index
            elif index in pending:
                current.pop(k, None)
                pending.discard(index)
                _report(progress, by_index[index], names[k], failed, why)
    finally:
        end_processes(procs, at_once=True)


def _check_alive(procs, names, current, pending, by_index, progress, failed) -> None:
    """A worker that died (killed, out of memory) fails the pass it held; with none left, every
    pass not trained fails."""
    for k, p in enumerate(procs):
        if not p.is_alive() and current.get(k) in pending:
            index = current.pop(k)
            pending.discard(index)
            _report(progress, by_index[index], names[k], failed,
                    f"its worker stopped (exit code {p.exitcode})")
    if pending and not any(p.is_alive() for p in procs):
        for index in sorted(pending):
            _report(progress, by_index[index], "-", failed, "no worker left to train it")
        pending.clear()


def _worker(k: int, device: str, threads: int, hydra, tasks, results) -> None:
    """A spawned worker: takes passes until it gets None, reporting each on ``results``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the parent stops us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    root = logging.getLogger()
    root.handlers, root.level = [QueueHandler(results)], logging.INFO
    import torch

    quiet_libraries()
    torch.set_num_threads(threads)
    if hydra is not None:  # the sweep's runtime config, as the planner's own process has it
        set_hydra_config(hydra)
    while (w := tasks.get()) is not None:
        results.put(("start", k, w.index, None))
        try:
            train_work(w, device)
        except Exception as err:  # reported as one line; an interrupt ends the worker
            results.put(("end", k, w.index, failure(err)))
        else:
            results.put(("end", k, w.index, None))
