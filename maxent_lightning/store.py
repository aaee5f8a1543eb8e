"""Content-addressed module store: each (data, model, loss, IMP, optimizer, epochs, rewarded
set, seed) is trained once and reused by every experiment that needs it."""

import fcntl
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig

from .builders import module_spec, spec_fingerprint
from .errors import UserError
from .storage import read_json


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

    def is_done(self, cfg: DictConfig, rewarded: Sequence[int]) -> bool:
        d = self.dir_for(cfg, rewarded)
        if not ((d / "metrics.json").exists() and (d / "module.pt").exists()):
            return False
        return read_json(d / "metrics.json").get("fingerprint") == d.name

    def get_many(self, cfg: DictConfig, rewarded_sets: Sequence[Sequence[int]]) -> list[Path]:
        """Checkpoint paths of the modules, training those missing (all at once if possible)."""
        from .training import train_modules

        dirs = [self.dir_for(cfg, r) for r in rewarded_sets]
        missing = [(list(r), d) for r, d in zip(rewarded_sets, dirs, strict=True)
                   if not self.is_done(cfg, r)]
        if missing and not self.train_missing:
            r, d = missing[0]
            raise UserError(
                f"module R={r} seed={cfg.seed} is not in the store ({d}); train it first "
                "or set store.train_missing=true"
            )
        if missing:
            train_modules(cfg, missing)
        return [d / "module.pt" for d in dirs]

    def get(self, cfg: DictConfig, rewarded: Sequence[int]) -> Path:
        return self.get_many(cfg, [rewarded])[0]
