"""The directory protocol of a module (and of a job): lock, finished?, resume point, round
artifacts and final artifacts. Both trainers, the store, the train task and composition jobs
read and write their directories only through these functions.

A directory is *finished* when its ``metrics.json`` (written last, atomically) records the
fingerprint of the config that produced it; for a module, ``module.pt`` must also load with a
verified digest. ``imp/round_<r>.{pt,json}`` hold the masks and validation record of each
finished IMP round: an interrupted module resumes after the last readable one.
"""

import fcntl
import logging
from contextlib import contextmanager
from pathlib import Path

import torch

from . import masks as M
from .errors import UserError
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

DONE, MODULE, ROUNDS = "metrics.json", "module.pt", "imp"
MISSING = "missing"
log = logging.getLogger(__name__)


@contextmanager
def locked(directory: Path):
    """Exclusive lock on a directory, so concurrent processes never train it twice."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def finished_run(directory: Path, fingerprint: str, kind: str, fix: str) -> dict | None:
    """The ``metrics.json`` of the finished run of ``fingerprint`` in ``directory``, None when
    there is none; a finished run of another config is refused (UserError naming ``fix``)."""
    done = Path(directory) / DONE
    if not done.exists():
        return None
    metrics = read_json(done)
    recorded = metrics.get("fingerprint")
    if recorded != fingerprint:
        raise UserError(f"{directory} holds a finished {kind} of a different config ({done} "
                        f"records {kind} {recorded}, not {fingerprint}); {fix}")
    return metrics


def module_status(directory: Path, fingerprint: str) -> tuple[str | None, dict | None]:
    """(None, metrics) when ``directory`` holds the finished module ``fingerprint``; else
    ('missing', None) or (what is corrupt, None). Another module's files are refused."""
    directory = Path(directory)
    if not (directory / MODULE).exists():
        return MISSING, None
    try:
        metrics = finished_run(directory, fingerprint, "module",
                               "delete that directory to retrain it")
        if metrics is None:
            return MISSING, None
        load_module(directory / MODULE, fingerprint)
    except CorruptFile as err:
        return err.problem, None
    return None, metrics


def finished_module(directory: Path, fingerprint: str) -> dict | None:
    """The metrics of the finished module, or None; a corrupt one is retrained (warned)."""
    problem, metrics = module_status(directory, fingerprint)
    if problem not in (None, MISSING):
        log.warning("%s; retraining the module", problem)
    return metrics


def discard(directory: Path) -> None:
    """Drop the done marker of a module so that it is trained again."""
    (Path(directory) / DONE).unlink(missing_ok=True)


def resume_point(directory: Path, fingerprint: str, rounds: int) -> tuple[M.Masks, int] | None:
    """Masks and next round of the last finished round of this very module; an unreadable
    round artifact is skipped (that round is trained again)."""
    for r in reversed(range(rounds)):
        path = Path(directory) / ROUNDS / f"round_{r}.pt"
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


def save_round(directory: Path, r: int, masks: M.Masks, fingerprint: str, best_epoch: int,
               best_val_loss: float) -> None:
    """The artifacts of finished IMP round ``r`` (what ``resume_point`` reads back)."""
    record = {"round": r, "sparsity": M.sparsity(masks), "best_epoch": best_epoch,
              "best_val_loss": best_val_loss}
    save_torch(Path(directory) / ROUNDS / f"round_{r}.pt",
               {"masks": masks, "fingerprint": fingerprint, **record})
    write_json(Path(directory) / ROUNDS / f"round_{r}.json", record)


def save_trained(directory: Path, seed: int, dm, rewarded, test: dict, confusion: torch.Tensor,
                 state_dict, masks: M.Masks, spec: dict, fingerprint: str, theta0_id: str,
                 temperature: float, stop_epochs: list[int], wall_s: float) -> dict:
    """``module.pt`` and ``confusion.png`` of a trained module (either trainer); returns its
    metrics, which the caller writes with ``mark_done`` last, after its loggers."""
    metrics = dict(test)
    metrics.update(
        sparsity=M.sparsity(masks), rewarded=rewarded, seed=int(seed), fingerprint=fingerprint,
        theta0_id=theta0_id, data=dm.name, num_classes=dm.num_classes,
        confusion=confusion.tolist(), stop_epochs=stop_epochs, wall_s=round(wall_s, 2),
    )
    record = ModuleRecord(
        state_dict=state_dict, masks=masks, theta0_id=theta0_id, rewarded=rewarded,
        num_classes=dm.num_classes, input_shape=tuple(dm.input_shape), temperature=temperature,
        seed=int(seed), spec=spec, fingerprint=fingerprint, metrics=dict(metrics),
    )
    save_module(Path(directory) / MODULE, record)
    confusion_png(Path(directory) / "confusion.png", confusion, dm.splits.classes,
                  title=f"R={rewarded} seed={seed}")
    return metrics


def mark_done(directory: Path, metrics: dict) -> None:
    """Write ``metrics.json``, last: from now on the directory is finished."""
    write_json(Path(directory) / DONE, metrics)
