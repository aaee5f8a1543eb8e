"""DataModule that relabels targets per rewarded set and serves in-memory batches."""

import json
from collections.abc import Sequence
from functools import lru_cache

import lightning as L
import torch
from omegaconf import OmegaConf
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from ..errors import UserError
from ..targets import make_targets, rewarded_mask
from .sources import TensorSplits, load_source


class IndexedTensors(Dataset):
    """Tensors indexed by a whole batch of positions at once (no per-sample collate)."""

    def __init__(self, *tensors: torch.Tensor):
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index):
        # one list -> tensor conversion (on the tensors' device), not one per tensor
        index = torch.as_tensor(index, device=self.tensors[0].device)
        return tuple(t[index] for t in self.tensors)


def batch_loader(tensors: Sequence[torch.Tensor], batch_size: int, generator=None) -> DataLoader:
    """Shuffled when a generator is given, sequential otherwise."""
    data = IndexedTensors(*tensors)
    base = RandomSampler(data, generator=generator) if generator else SequentialSampler(data)
    sampler = BatchSampler(base, batch_size, drop_last=False)
    return DataLoader(data, sampler=sampler, batch_size=None)


def normalize_key(normalize) -> str | None:
    """``data.normalize`` (a config node, plain data or None) as a hashable cache key."""
    if OmegaConf.is_config(normalize):
        normalize = OmegaConf.to_container(normalize, resolve=True)
    return None if normalize is None else json.dumps(normalize, sort_keys=True)


@lru_cache(maxsize=4)
def cached_source(name: str, root: str | None, download: bool,
                  normalize: str | None = None) -> TensorSplits:
    """The data set, loaded once per process per setting (``normalize``: ``normalize_key``)."""
    return load_source(name, root=root, download=download,
                       normalize=None if normalize is None else json.loads(normalize))


def check_class_indices(rewarded: Sequence) -> list[int]:
    """A rewarded set's entries as given, refused unless each is an integer (no data needed)."""
    values = list(rewarded)
    if any(not isinstance(c, int) or isinstance(c, bool) for c in values):
        raise UserError(f"rewarded={values} must hold integer class indices, e.g. rewarded=[3]")
    return values


def check_rewarded(rewarded: Sequence[int], num_classes: int, name: str) -> list[int]:
    """Validate a rewarded class set against the data set; returns it sorted."""
    values = list(rewarded)
    if not values:
        raise UserError("rewarded set is empty; give at least one class, e.g. rewarded=[3]")
    check_class_indices(values)
    if len(set(values)) != len(values):
        raise UserError(f"rewarded={values} repeats a class; list each class once")
    bad = [c for c in values if not 0 <= c < num_classes]
    if bad:
        raise UserError(
            f"rewarded class {bad[0]} is outside data set '{name}' (classes 0..{num_classes - 1})"
        )
    return sorted(values)


def split_indices(n: int, val_fraction: float, split_seed: int):
    """The fixed train/validation split of ``n`` training samples, shared by every module:
    (training positions, validation positions)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    n_val = int(round(val_fraction * n))
    return order[n_val:], order[:n_val]


def check_own_samples(train_labels, val_labels, rewarded, name: str, classes=None) -> None:
    """Each rewarded class needs a training and a validation sample (else a one-line
    UserError naming the class): a module learns and is selected on its own classes."""
    for split, labels in (("training", train_labels), ("validation", val_labels)):
        present = set(torch.as_tensor(labels).unique().tolist())
        for c in rewarded:
            if c not in present:
                label = f"class {c}" + (f" ({classes[c]!r})" if classes is not None else "")
                raise UserError(
                    f"rewarded={list(rewarded)} has no {split} samples of {label} in data set "
                    f"'{name}' (after the fixed train/validation split); choose another "
                    "rewarded set or use more data")


def check_split_samples(splits: TensorSplits, rewarded, val_fraction: float,
                        split_seed: int) -> None:
    """``check_own_samples`` for the fixed split of ``splits`` (what a data module would hold)."""
    train, val = split_indices(len(splits.y_train), val_fraction, split_seed)
    check_own_samples(splits.y_train[train], splits.y_train[val], rewarded, splits.name,
                      splits.classes)


class MaxEntDataModule(L.LightningDataModule):
    """Train/val/test batches ``(x, target distribution, label)`` for one rewarded set.

    The train/val split is a fixed permutation drawn from ``split_seed`` (shared by every
    module); the shuffle order of training batches is drawn from ``shuffle_seed``.
    ``normalize``: the data set's normalization (``data.normalize``; None: the source's default).
    Built from the config by ``hydra.utils.instantiate(cfg.data)`` (conf/train.yaml), it holds
    no data until ``prepare_data`` (loads or downloads the source, cached per process) and
    ``setup`` (the split, relabelled for the rewarded set; a rewarded class without samples is
    refused there), which a Trainer calls and ``builders.build_datamodule`` calls at once.
    """

    def __init__(
        self,
        name: str,
        rewarded: Sequence[int],
        targets: str = "maxent",
        root: str | None = None,
        download: bool = True,
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        shuffle_seed: int = 0,
        normalize=None,
    ):
        super().__init__()
        self.name, self.root, self.download = name, root, download
        self.targets, self.batch_size, self.eval_batch_size = targets, batch_size, eval_batch_size
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.shuffle_seed = shuffle_seed
        self.requested, self.normalize = list(rewarded), normalize_key(normalize)
        self.splits: TensorSplits | None = None

    def prepare_data(self) -> None:
        """Load (or download) the data set into this process's cache."""
        cached_source(self.name, self.root, self.download, self.normalize)

    def _source(self) -> TensorSplits:
        if self.splits is None:
            raise RuntimeError("MaxEntDataModule holds no data before setup(); call "
                               "prepare_data() and setup('fit') (a Trainer calls them)")
        return self.splits

    @property
    def num_classes(self) -> int:
        return self._source().num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._source().input_shape

    def _relabel(self, x: torch.Tensor, y: torch.Tensor, train: bool):
        if train and self.targets == "cross_entropy":
            keep = rewarded_mask(y, self.rewarded)
            x, y = x[keep], y[keep]
        return x, make_targets(y, self.rewarded, self.num_classes, self.targets), y

    def _build(self) -> None:
        self.splits = s = cached_source(self.name, self.root, self.download, self.normalize)
        self.rewarded = check_rewarded(self.requested, s.num_classes, self.name)
        train_idx, val_idx = split_indices(len(s.y_train), self.val_fraction, self.split_seed)
        check_own_samples(s.y_train[train_idx], s.y_train[val_idx], self.rewarded, self.name,
                          s.classes)
        self.train = self._relabel(s.x_train[train_idx], s.y_train[train_idx], train=True)
        self.val = self._relabel(s.x_train[val_idx], s.y_train[val_idx], train=True)
        self.test = self._relabel(s.x_test, s.y_test, train=False)

    def setup(self, stage: str | None = None) -> None:
        """The split for the rewarded set (once); on an accelerator the tensors then move to its
        memory once: every batch is a slice taken there (no per-step host work or copy)."""
        if self.splits is None:
            self._build()
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        if device is not None and device.type != "cpu":
            self.train, self.val, self.test = (tuple(t.to(device) for t in part)
                                               for part in (self.train, self.val, self.test))

    def train_dataloader(self) -> DataLoader:
        gen = torch.Generator().manual_seed(self.shuffle_seed)
        return batch_loader(self.train, self.batch_size, generator=gen)

    def val_dataloader(self) -> DataLoader:
        return batch_loader(self.val, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return batch_loader(self.test, self.eval_batch_size)
