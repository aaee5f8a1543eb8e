"""The running process: what interrupted it and where (``RUNNING``, read by the CLI's one-line
interrupt report), and the library settings every process of a run starts with, the CLI's and
a sweep's training workers alike (``quiet_libraries``), and how a run ends the worker processes
it spawned (``end_processes``: the training pool's and the job workers')."""

import logging
import os
import warnings

# {"signal": the signal that stopped the run, "job": its job number, "out": where it ran}
RUNNING: dict = {}


def quiet_libraries() -> None:
    # a log file that cannot be written (a full disk) must not print tracebacks: the write
    # that matters fails with its own one-line error
    logging.raiseExceptions = False
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*Your `IterableDataset` has `__len__`.*")
    warnings.filterwarnings("ignore", r".*isinstance\(treespec, LeafSpec\)`? is deprecated.*")
    # small rewarded-only (cross-entropy) epochs have fewer batches than the logging interval
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)


def end_processes(procs, at_once: bool, grace_s: float = 5.0) -> None:
    """Spawned worker processes ended: stopped (SIGTERM) ``at_once``, else given ``grace_s``
    each to end on their own (their work is done); any still running then is killed."""
    if at_once:
        for p in procs:
            if p.pid is not None and p.is_alive():
                p.terminate()
    for p in procs:
        if p.pid is None:  # never started
            continue
        p.join(timeout=grace_s)
        if p.is_alive():
            p.kill()
            p.join()
