"""Content-addressed module store: each (data, model, loss, IMP, optimizer, epochs, rewarded
set, seed) is trained once and reused by every experiment that needs it. The store owns the
training plan: which modules train together, by which trainer (the family where the config
allows it, else the sequential one), how many per pass and which dense twins a pass stores
(``ModuleStore.passes``); single runs (``get_many``) and the sweep planner go through it."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import moduledir
from .builders import build_net, data_source
from .data.datamodule import check_rewarded, check_split_samples
from .errors import UserError
from .family import (
    passes,
    pick_device,
    plan_sizes,
    reduced_precision,
    train_family,
    unsupported_reason,
)
from .identity import module_spec, spec_fingerprint
from .phases import imp_used
from .recipe import Recipe
from .training import train_module

log = logging.getLogger(__name__)
FAMILY, SEQUENTIAL = "family", "sequential"
Members = Sequence[tuple[Sequence[int], Path]]  # (rewarded set, module directory) each


@dataclass
class TrainingPass:
    """Modules of one config (all but the rewarded set alike) trained together: by the family
    trainer in one vectorized pass, or one module by the sequential (Lightning) trainer."""

    recipe: Recipe
    trainer: str  # FAMILY or SEQUENTIAL
    members: list[tuple[list[int], Path]]
    twins: dict = field(default_factory=dict)  # rewarded tuple -> (dense recipe, dir) it yields
    chunk: int = 1  # members per pass of this config (what fits in memory; 1: sequential)
    device: str = "cpu"  # where the plan expects it to train
    why: str | None = None  # why the family does not train it (sequential only)


def _key(rewarded) -> tuple[int, ...]:
    return tuple(sorted(int(c) for c in rewarded))


def _trainer(recipe: Recipe) -> tuple[str, int, str | None]:
    """(trainer, members per pass, why not the family) for ``recipe``. Reduced precision is the
    family's wherever it can train it, with ``family.enabled=false`` a family of one each."""
    if not (recipe.family.enabled or reduced_precision(recipe)):
        return SEQUENTIAL, 1, None
    if (why := unsupported_reason(recipe)) is not None:
        return SEQUENTIAL, 1, why
    if not recipe.family.enabled:
        return FAMILY, 1, None
    src = data_source(recipe.data)
    net = build_net(recipe.model, src.input_shape, src.num_classes)
    device = pick_device(str(recipe.trainer.get("accelerator", "auto")),
                         recipe.trainer.get("devices"))
    return FAMILY, plan_sizes(net, src.input_shape, int(recipe.data.batch_size), device,
                              recipe.family.chunk_size)[0], None


def _twins(members: Members, dense) -> dict:
    """The dense modules of ``dense`` ((recipe, members) each) that the IMP round 0 of
    ``members`` yields: same rewarded set, the first claim wins; both trained as a family."""
    twins, wanted = {}, {_key(r) for r, _ in members}
    for dense_recipe, dense_members in dense:
        dense_recipe = Recipe.of(dense_recipe)
        if (imp_used(dense_recipe.imp) or not dense_recipe.family.enabled
                or unsupported_reason(dense_recipe) is not None):
            continue
        for r, d in dense_members:
            if _key(r) in wanted and _key(r) not in twins:
                twins[_key(r)] = (dense_recipe, Path(d))
    return twins


class ModuleStore:
    """The store under ``root``. Its methods take a job's ``Recipe`` (``recipe.py``; a job
    config is taken as its recipe, ``Recipe.of``)."""

    def __init__(self, root: str | Path, train_missing: bool = True):
        self.root, self.train_missing = Path(root), train_missing
        self._told = set()  # reasons for training one by one, logged once per store

    def dir_for(self, recipe: Recipe, rewarded: Sequence[int]) -> Path:
        spec = module_spec(Recipe.of(recipe), rewarded)
        return self.root / spec["data"]["name"] / spec_fingerprint(spec)

    def check(self, directory: Path) -> str | None:
        """None when ``directory`` holds its finished module (readable, digest and fingerprint
        verified), else why not: 'missing' or what is corrupt. A directory holding another
        module's files (recorded fingerprint differs from its name) is refused: UserError."""
        return moduledir.module_status(directory, directory.name)[0]

    def is_done(self, recipe: Recipe, rewarded: Sequence[int]) -> bool:
        return self.check(self.dir_for(recipe, rewarded)) is None

    def _discard(self, directory: Path, why: str, rewarded, seed) -> None:
        """Drop the done marker of a corrupt module (re-checked under its lock) to retrain it."""
        with moduledir.locked(directory):
            if self.check(directory) not in (None, moduledir.MISSING):
                log.warning("module R=%s seed=%s: %s; retraining it", rewarded, seed, why)
                moduledir.discard(directory)

    def passes(self, recipe: Recipe, members: Members, dense=()) -> list[TrainingPass]:
        """The passes that train ``members`` ((rewarded, dir) modules of ``recipe``, to train):
        a family pass holds up to ``chunk`` of them (cross-entropy ones with equally many steps
        per epoch: ``family.passes``), a sequential pass one. ``dense``: (config, members) of
        dense modules whose training starts as the IMP round 0 of these, or is its start (the
        same first phase: the caller groups them, ``identity.first_group_key``); those with a
        rewarded set of ``members`` are the passes' twins, trained on that round's rows."""
        recipe, members = Recipe.of(recipe), [(list(r), Path(d)) for r, d in members]
        if not members:
            return []
        trainer, chunk, why = _trainer(recipe)
        device = pick_device(str(recipe.trainer.get("accelerator", "auto"))).type
        if trainer == SEQUENTIAL:
            return [TrainingPass(recipe, trainer, [m], chunk=1, device=device, why=why)
                    for m in members]
        twins = _twins(members, dense) if recipe.family.enabled and imp_used(recipe.imp) else {}
        parts = [[members[i] for i in ix]
                 for ix in passes(recipe, [r for r, _ in members], chunk)]
        return [TrainingPass(recipe, trainer, part, {_key(r): twins[_key(r)] for r, _ in part
                                                  if _key(r) in twins}, chunk, device)
                for part in parts]

    def train(self, p: TrainingPass, quiet: bool = True) -> list[dict]:
        """Train a pass: its members' metrics. Finished members are skipped, corrupt ones
        trained again; each directory is locked while its module trains. Sequential modules
        show Lightning's progress unless ``quiet``."""
        src = data_source(p.recipe.data)  # every member's classes have samples: before any lock
        for r, _ in p.members:
            check_split_samples(src, check_rewarded(r, src.num_classes, src.name),
                                p.recipe.data.val_fraction, p.recipe.data.split_seed)
        for r, d in p.members:
            if (why := self.check(d)) not in (None, moduledir.MISSING):
                self._discard(d, why, r, p.recipe.seed)
        if p.trainer == FAMILY:
            return train_family(p.recipe, p.members, p.twins or None)
        if p.why is not None and p.why not in self._told:
            self._told.add(p.why)
            log.info("family training off (%s): training module(s) one by one", p.why)
        results = []
        for rewarded, out_dir in p.members:
            with moduledir.locked(out_dir):
                results.append(train_module(p.recipe, out_dir, rewarded, quiet=quiet))
        return results

    def get_many(self, recipe: Recipe, rewarded_sets: Sequence[Sequence[int]],
                 quiet: bool = True) -> list[Path]:
        """Checkpoint paths of the modules, training those missing or corrupt (``plan`` and
        ``train``: all at once where the family can); with ``train_missing=False`` those are
        refused instead. ``quiet``: see ``train``."""
        recipe = Recipe.of(recipe)
        dirs = [self.dir_for(recipe, r) for r in rewarded_sets]
        missing = [(list(r), d, why) for r, d in zip(rewarded_sets, dirs, strict=True)
                   if (why := self.check(d)) is not None]
        if missing and not self.train_missing:
            r, d, why = missing[0]
            what = "is not in the store" if why == moduledir.MISSING else f"is unusable ({why})"
            raise UserError(
                f"module R={r} seed={recipe.seed} {what} ({d}); train it first "
                "or set store.train_missing=true"
            )
        src = data_source(recipe.data)  # every missing module's classes have samples: first
        for r, _, _ in missing:
            check_split_samples(src, check_rewarded(r, src.num_classes, src.name),
                                recipe.data.val_fraction, recipe.data.split_seed)
        if missing:
            log.info("store %s: training %d missing module(s) of seed %s: %s", self.root,
                     len(missing), recipe.seed, " ".join(f"R={r}" for r, _, _ in missing))
            for p in self.passes(recipe, [(r, d) for r, d, _ in missing]):
                self.train(p, quiet)
        return [d / moduledir.MODULE for d in dirs]

    def get(self, recipe: Recipe, rewarded: Sequence[int]) -> Path:
        return self.get_many(recipe, [rewarded])[0]
