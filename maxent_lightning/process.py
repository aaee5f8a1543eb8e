"""The running process: what interrupted it and where (``RUNNING``, read by the CLI's one-line
interrupt report), and the library settings every process of a run starts with, the CLI's and
a sweep's training workers alike (``quiet_libraries``)."""

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
