"""One module of a family: who it is and its training state."""

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from .. import masks as M
from ..builders import data_source
from ..data.datamodule import check_rewarded, check_split_samples
from ..identity import first_phase_key, module_spec, spec_fingerprint
from ..phases import BestRule


@dataclass
class Member:
    """One module of the family and its per-round training state."""

    rewarded: list[int]
    out_dir: Path
    fingerprint: str
    spec: dict
    masks: M.Masks
    start: int
    stop_epochs: list[int] = field(default_factory=list)
    failed: str | None = None  # why it diverged (then it trains no further and is not stored)
    loggers: list = field(default_factory=list)  # its own runs, logged live every epoch
    steps: int = 0
    val_metrics: object = None  # its MetricCollection, built once and reset every epoch
    # per round
    keeper: BestRule | None = None  # the checkpoint criterion
    stoppers: list = field(default_factory=list)
    best: dict | None = None
    last: dict | None = None
    weights: dict | None = None
    first_key: str = ""  # identity.first_phase_key: keys the dropout stream of round 0
    twin: "Member | None" = None  # the dense module that its IMP round 0 yields
    cfg: DictConfig | None = None  # a twin's own config (a dense one)

    @classmethod
    def of(cls, cfg: DictConfig, rewarded, out_dir: Path, num_classes: int, name: str) -> "Member":
        """The member that trains the module of ``cfg`` rewarding ``rewarded`` in ``out_dir``."""
        spec = module_spec(cfg, rewarded)
        fingerprint = spec_fingerprint(spec)
        check_split_samples(data_source(cfg), check_rewarded(rewarded, num_classes, name),
                            cfg.data.val_fraction, cfg.data.split_seed)  # every member's classes
        return cls(check_rewarded(rewarded, num_classes, name), Path(out_dir), fingerprint, spec,
                   masks={}, start=0, first_key=first_phase_key(cfg, rewarded))
