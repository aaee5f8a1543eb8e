"""The directory protocol of a module (and of a job): lock, claim, finished?, resume point,
round artifacts, config file and done marker. Both trainers (through ``modulerun.ModuleRun``),
the store, the train task and composition jobs read and write their directories only through
these functions and names; this module draws and trains nothing.

A directory is *finished* when its ``metrics.json`` (written last, atomically) records the
fingerprint of the config that produced it; for a module, ``module.pt`` must also load with a
verified digest. ``imp/round_<r>.{pt,json}`` hold the masks and validation record of each
finished IMP round: an interrupted module resumes after the last readable one.
"""

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import NamedTuple

from omegaconf import DictConfig, OmegaConf

from . import masks as M
from .compat import hydra_config
from .errors import UserError
from .files import CorruptFile, load_torch, read_json, save_torch, write_json, write_text
from .modulefile import read_module, state_digest
from .phases import BestRule

DONE, MODULE, ROUNDS = "metrics.json", "module.pt", "imp"
# What a finished module's metrics.json must hold (else it is retrained, with a warning).
REQUIRED = ("fingerprint", "rewarded", "seed", "data", "num_classes", "sparsity", "test/acc",
            "test/rewarded_acc", "wall_s")
MISSING = "missing"
log = logging.getLogger(__name__)

# A process waiting for a lock says who holds it when it starts waiting and then this often
# (seconds); it retries every LOCK_POLL_S, so it proceeds as soon as the lock is free.
LOCK_REPORT_S = 60.0
LOCK_POLL_S = 0.1


@contextmanager
def _lock(path: Path, wait: bool):
    """An exclusive ``flock`` on ``path`` while the context runs, recorded in the file (pid,
    host, since, command: ``lock_holder``); without ``wait`` a held lock raises
    BlockingIOError. Opened to append: a holder's record is never cut before the lock is ours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        if not _try_flock(fh):
            if not wait:
                raise BlockingIOError(errno.EWOULDBLOCK, "locked", str(path))
            _wait_for(fh, path)
        _record_holder(fh)
        try:
            yield
        finally:
            _record_holder(fh, clear=True)  # released: nobody holds it


def _try_flock(fh) -> bool:
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _wait_for(fh, path: Path) -> None:
    """Retry the lock every LOCK_POLL_S; a line on stderr at once and every LOCK_REPORT_S."""
    start, reports = time.monotonic(), 0
    while True:
        waited = time.monotonic() - start
        if waited >= reports * LOCK_REPORT_S:
            print(f"{'still ' if reports else ''}waiting for {path.parent}: locked by "
                  f"{lock_holder(path)}; waited {_duration(waited)}", file=sys.stderr,
                  flush=True)
            reports += 1
        time.sleep(LOCK_POLL_S)
        if _try_flock(fh):
            return


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _record_holder(fh, clear: bool = False) -> None:
    """Write this process into the lock file ``fh`` it holds (``clear``: empty it). Best
    effort: the record only informs waiters (a full disk must not fail the lock)."""
    try:
        fh.seek(0)
        fh.truncate()
        if not clear:
            fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.time(), "command": _command()}) + "\n")
        fh.flush()
    except OSError:
        pass


def _command(limit: int = 120) -> str:
    """This process's command line, short: 'maxent_lightning task=pairwise ...'."""
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    name = program.parent.name if program.name == "__main__.py" else program.name
    line = " ".join([name, *sys.argv[1:]])
    return line if len(line) <= limit else line[:limit - 3] + "..."


def lock_holder(path: Path) -> str:
    """Who holds the lock file ``path``, as its holder recorded itself: 'pid 123 on host
    (command) since 2025-01-31 12:00:00', and whether that process is stopped or gone."""
    try:
        rec = json.loads(Path(path).read_text())
        pid, host, since = int(rec["pid"]), str(rec["host"]), float(rec["since"])
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (not recorded yet)"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
    state = _process_state(pid) if host == socket.gethostname() else ""
    return f"pid {pid} on {host} ({rec.get('command', '?')}) since {when}{state}"


def _process_state(pid: int) -> str:
    """', stopped (...)' or ', which no longer runs (...)' for a process of this host that
    cannot go on; '' otherwise."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return ", which no longer runs (a child process it started may hold the lock)"
    except OSError:  # another user's process: it exists
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):  # no /proc here
        return ""
    return f", stopped (resume it: kill -CONT {pid}, or fg in its shell)" if state in "Tt" else ""


@contextmanager
def locked(directory: Path):
    """Exclusive lock on a directory, so concurrent processes never train it twice; a process
    that has to wait says who holds it (``LOCK_REPORT_S``)."""
    with _lock(Path(directory) / ".lock", wait=True):
        yield


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
        missing = [k for k in REQUIRED if k not in metrics]
        if missing:
            raise CorruptFile(f"{directory / DONE} lacks {', '.join(missing)}")
        read_module(directory / MODULE, fingerprint)
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


class Resume(NamedTuple):
    """Where an interrupted module goes on: its masks, next round, and the stop epochs of the
    phases already trained."""

    masks: M.Masks
    start: int
    stop_epochs: list[int]


def resume_point(directory: Path, fingerprint: str, rounds: int) -> Resume | None:
    """The last finished round of this very module; a round artifact that is unreadable or
    fails its digest is discarded with a warning (that round is trained again)."""
    for r in reversed(range(rounds)):
        path = Path(directory) / ROUNDS / f"round_{r}.pt"
        if not path.exists():
            continue
        try:
            saved = load_torch(path, "IMP round artifact")
            if not isinstance(saved, dict) or saved.get("fingerprint") != fingerprint:
                continue
            if saved.get("digest") != state_digest(saved["masks"]):
                raise CorruptFile(f"IMP round artifact {path} is corrupt (digest mismatch)")
        except CorruptFile as err:
            log.warning("%s; training that round again", err.problem)
            continue
        return Resume(saved["masks"], r + 1, list(saved.get("stop_epochs", [])))
    return None


def save_round(directory: Path, r: int, masks: M.Masks, fingerprint: str, best: BestRule,
               stop_epochs: list[int]) -> None:
    """The artifacts of finished IMP round ``r`` (what ``resume_point`` reads back, verified
    by the digest of its masks); ``best``: the round's checkpoint criterion (its kept epoch and
    value); ``stop_epochs``: of every phase so far."""
    record = {"round": r, "sparsity": M.sparsity(masks), "best_epoch": best.best_epoch,
              "monitor": best.monitor, "best_value": best.best_score,
              "stop_epochs": list(stop_epochs)}
    save_torch(Path(directory) / ROUNDS / f"round_{r}.pt",
               {"masks": masks, "fingerprint": fingerprint, "digest": state_digest(masks),
                **record})
    write_json(Path(directory) / ROUNDS / f"round_{r}.json", record)


@contextmanager
def claimed(directory: Path):
    """This run's exclusive claim on its output directory: a second run on the same directory
    (two runs started in the same second share a timestamped one) is refused."""
    lock, claim = Path(directory) / ".run.lock", ExitStack()
    try:
        claim.enter_context(_lock(lock, wait=False))
    except BlockingIOError:
        raise UserError(f"{directory} is in use by another run ({lock_holder(lock)}); wait for "
                        "it to finish or choose another hydra.run.dir / hydra.sweep.dir") from None
    with claim:
        yield


def write_config(directory: Path, cfg: DictConfig) -> None:
    """A run's ``config.yaml`` (resolved) and, as Hydra keeps them, ``.hydra/overrides.yaml``
    (the overrides of its command line) and ``.hydra/hydra.yaml``; written by the task once the
    directory is known to be this run's (Hydra writes ``.hydra/`` before the task claims the
    directory; a job composed by ``config.compose_config`` gets them here only)."""
    directory = Path(directory)
    write_text(directory / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    hc = hydra_config()  # Hydra's own record of the run, as Hydra keeps it
    if hc is not None:
        write_text(directory / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(hc.overrides.task))
        write_text(directory / ".hydra" / "hydra.yaml",
                   OmegaConf.to_yaml(OmegaConf.create({"hydra": hc})))


def mark_done(directory: Path, metrics: dict) -> None:
    """Write ``metrics.json``, last: from now on the directory is finished."""
    write_json(Path(directory) / DONE, metrics)
