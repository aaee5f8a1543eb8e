"""Content-addressed module store: each (data, model, loss, IMP, optimizer, epochs, rewarded
set, seed) is trained once and reused by every experiment that needs it."""

import fcntl
import logging
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig

from .builders import module_spec, spec_fingerprint
from .errors import UserError
from .storage import CorruptFile, load_module, read_json

log = logging.getLogger(__name__)


@contextmanager
def locked(directory: Path):
    """Exclusive lock on a module directory, so concurrent jobs never train it twice."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class ModuleStore:
    def __init__(self, root: str | Path, train_missing: bool = True):
        self.root, self.train_missing = Path(root), train_missing

    def dir_for(self, cfg: DictConfig, rewarded: Sequence[int]) -> Path:
        spec = module_spec(cfg, rewarded)
        return self.root / spec["data"]["name"] / spec_fingerprint(spec)

    def check(self, directory: Path) -> str | None:
        """None when ``directory`` holds its finished module (readable, digest and fingerprint
        verified), else why not: 'missing' or what is corrupt. A directory holding another
        module's files (recorded fingerprint differs from its name) is refused: UserError."""
        done, module = directory / "metrics.json", directory / "module.pt"
        if not (done.exists() and module.exists()):
            return "missing"
        try:
            recorded = read_json(done).get("fingerprint")
            if recorded == directory.name:
                load_module(module, fingerprint=directory.name)
                return None
        except CorruptFile as err:
            return err.problem
        raise UserError(
            f"{done} records module {recorded}, not {directory.name} (files copied from another "
            "module?); delete that directory to retrain it"
        )

    def is_done(self, cfg: DictConfig, rewarded: Sequence[int]) -> bool:
        return self.check(self.dir_for(cfg, rewarded)) is None

    def _discard(self, directory: Path, why: str, rewarded, seed) -> None:
        """Drop the done marker of a corrupt module (re-checked under its lock) to retrain it."""
        with locked(directory):
            if self.check(directory) not in (None, "missing"):
                log.warning("module R=%s seed=%s: %s; retraining it", rewarded, seed, why)
                (directory / "metrics.json").unlink(missing_ok=True)

    def get_many(self, cfg: DictConfig, rewarded_sets: Sequence[Sequence[int]]) -> list[Path]:
        """Checkpoint paths of the modules, training those missing or corrupt (all at once if
        possible); with ``train_missing=False`` those are refused instead."""
        from .training import train_modules

        dirs = [self.dir_for(cfg, r) for r in rewarded_sets]
        missing = [(list(r), d, why) for r, d in zip(rewarded_sets, dirs, strict=True)
                   if (why := self.check(d)) is not None]
        if missing and not self.train_missing:
            r, d, why = missing[0]
            what = "is not in the store" if why == "missing" else f"is unusable ({why})"
            raise UserError(
                f"module R={r} seed={cfg.seed} {what} ({d}); train it first "
                "or set store.train_missing=true"
            )
        for r, d, why in missing:
            if why != "missing":
                self._discard(d, why, r, cfg.seed)
        if missing:
            log.info("store %s: training %d missing module(s) of seed %s: %s", self.root,
                     len(missing), cfg.seed, " ".join(f"R={r}" for r, _, _ in missing))
            train_modules(cfg, [(r, d) for r, d, _ in missing])
        return [d / "module.pt" for d in dirs]

    def get(self, cfg: DictConfig, rewarded: Sequence[int]) -> Path:
        return self.get_many(cfg, [rewarded])[0]
