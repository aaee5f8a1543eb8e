"""One module of a family: its lifecycle (``ModuleRun``) and its per-round training state."""

from dataclasses import dataclass, field
from pathlib import Path

from ..builders import data_source
from ..data.datamodule import check_rewarded, check_split_samples
from ..identity import first_phase_key
from ..modulerun import ModuleRun
from ..phases import BestRule
from ..recipe import Recipe


@dataclass
class Member(ModuleRun):
    """One module of the family (``ModuleRun``: who it is, its masks, stop epochs, steps,
    loggers, why it failed) and its per-round training state."""

    val_metrics: object = None  # its MetricCollection, built once and reset every epoch
    # per round
    keeper: BestRule | None = None  # the checkpoint criterion
    stoppers: list = field(default_factory=list)
    best: dict | None = None
    last: dict | None = None
    weights: dict | None = None
    first_key: str = ""  # identity.first_phase_key: keys the dropout stream of round 0
    twin: "Member | None" = None  # the dense module (its own recipe) trained with its round 0
    epochs: int = 0  # a twin's: the epochs of its training (it may end before or after round 0)

    @classmethod
    def of(cls, recipe: Recipe, rewarded, out_dir: Path, num_classes: int,
           name: str) -> "Member":
        """The member that trains the module of ``recipe`` rewarding ``rewarded`` in
        ``out_dir``."""
        m = cls.open(recipe, rewarded, out_dir)
        check_split_samples(data_source(recipe.data), check_rewarded(rewarded, num_classes, name),
                            recipe.data.val_fraction, recipe.data.split_seed)  # every member's
        m.first_key = first_phase_key(recipe, rewarded)
        return m
