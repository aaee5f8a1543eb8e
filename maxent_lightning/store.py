"""Content-addressed module store: each (data, model, loss, IMP, optimizer, epochs, rewarded
set, seed) is trained once and reused by every experiment that needs it. The store decides what
to train and hands it to a trainer: the family trainer where the config allows it, else the
sequential one."""

import logging
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from . import moduledir
from .builders import data_source
from .data.datamodule import check_rewarded, check_split_samples
from .errors import UserError
from .family import reduced_precision, train_family, unsupported_reason
from .identity import module_spec, spec_fingerprint
from .training import train_module

log = logging.getLogger(__name__)


def train_modules(cfg: DictConfig, jobs: list[tuple[list[int], Path]], twins=None,
                  quiet: bool = True) -> list[dict]:
    """Train several modules of one seed (``(rewarded, out_dir)`` each), skipping finished
    ones; each directory is locked while its module trains. With ``family.enabled`` they are
    trained together in one vectorized pass (``family/``) where the config allows it, which
    also stores the ``twins`` (dense modules equal to their IMP round 0; see train_family).
    Modules trained one by one show Lightning's progress unless ``quiet``."""
    if cfg.family.enabled or reduced_precision(cfg):
        reason = unsupported_reason(cfg)
        if reason is None and cfg.family.enabled:
            return train_family(cfg, jobs, twins)
        if reason is None:  # reduced precision one by one: each a family of one
            return [train_family(cfg, [job])[0] for job in jobs]
        log.info("family training off (%s): training %d module(s) one by one", reason, len(jobs))
    results = []
    for rewarded, out_dir in jobs:
        with moduledir.locked(Path(out_dir)):
            results.append(train_module(cfg, out_dir, rewarded, quiet=quiet))
    return results


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
        return moduledir.module_status(directory, directory.name)[0]

    def is_done(self, cfg: DictConfig, rewarded: Sequence[int]) -> bool:
        return self.check(self.dir_for(cfg, rewarded)) is None

    def _discard(self, directory: Path, why: str, rewarded, seed) -> None:
        """Drop the done marker of a corrupt module (re-checked under its lock) to retrain it."""
        with moduledir.locked(directory):
            if self.check(directory) not in (None, moduledir.MISSING):
                log.warning("module R=%s seed=%s: %s; retraining it", rewarded, seed, why)
                moduledir.discard(directory)

    def get_many(self, cfg: DictConfig, rewarded_sets: Sequence[Sequence[int]],
                 twins=None, quiet: bool = True) -> list[Path]:
        """Checkpoint paths of the modules, training those missing or corrupt (all at once if
        possible); with ``train_missing=False`` those are refused instead. ``twins``,
        ``quiet``: see ``train_modules``."""
        dirs = [self.dir_for(cfg, r) for r in rewarded_sets]
        missing = [(list(r), d, why) for r, d in zip(rewarded_sets, dirs, strict=True)
                   if (why := self.check(d)) is not None]
        if missing and not self.train_missing:
            r, d, why = missing[0]
            what = "is not in the store" if why == moduledir.MISSING else f"is unusable ({why})"
            raise UserError(
                f"module R={r} seed={cfg.seed} {what} ({d}); train it first "
                "or set store.train_missing=true"
            )
        src = data_source(cfg)  # every missing module's classes have samples: before any lock
        for r, _, _ in missing:
            check_split_samples(src, check_rewarded(r, src.num_classes, src.name),
                                cfg.data.val_fraction, cfg.data.split_seed)
        for r, d, why in missing:
            if why != moduledir.MISSING:
                self._discard(d, why, r, cfg.seed)
        if missing:
            log.info("store %s: training %d missing module(s) of seed %s: %s", self.root,
                     len(missing), cfg.seed, " ".join(f"R={r}" for r, _, _ in missing))
            train_modules(cfg, [(r, d) for r, d, _ in missing], twins, quiet)
        return [d / moduledir.MODULE for d in dirs]

    def get(self, cfg: DictConfig, rewarded: Sequence[int]) -> Path:
        return self.get_many(cfg, [rewarded])[0]
