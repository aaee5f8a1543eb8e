"""Training and validation samples of a family's members.

MaxEnt and Quasi-MaxEnt members all train on every sample (each with its own targets): one
batch stream serves them all, the very batches of the data module. A cross-entropy member trains
only on the samples whose label is in its rewarded set: each member then has its own stream,
the batches its own data module would serve (same subset, same order), stacked over the
members. Members of one stack must take equally many steps per epoch (the optimizer's step
count is shared): ``steps_per_epoch`` is what the family groups them by. A last batch smaller
than the others is padded to the stack's largest with samples of weight 0.
"""

import math
from dataclasses import dataclass

import torch
from torch.utils.data import BatchSampler, RandomSampler

from ..data.datamodule import check_own_samples
from ..targets import rewarded_mask


def steps_per_epoch(labels: torch.Tensor, rewarded, batch_size: int) -> int:
    """Optimizer steps of one epoch of a member's own stream (its samples among ``labels``)."""
    return math.ceil(int(rewarded_mask(labels, rewarded).sum()) / batch_size)


@dataclass
class Batch:
    """Positions in the split's tensors: (B,) shared by every member, or (K, B) one row per
    member; ``weight`` (K, B): each sample's share of its member's batch mean (None when every
    row is a whole batch of equal size: the plain mean)."""

    index: torch.Tensor
    weight: torch.Tensor | None = None

    @property
    def shared(self) -> bool:
        return self.index.dim() == 1

    @property
    def size(self) -> int:
        return self.index.shape[-1]


class Streams:
    """The batches of an epoch and the validation weights, for the members' rewarded sets."""

    def __init__(self, dm, sets, per_member: bool, device):
        """``dm``: a data module serving every sample of the split (MaxEnt targets)."""
        self.dm, self.per_member, self.device = dm, per_member, device
        self.batch_size = dm.batch_size
        for r in sets if per_member else ():
            check_own_samples(dm.train[2], dm.val[2], r, dm.name)
        self.train = [rewarded_mask(dm.train[2], r).nonzero().flatten() for r in sets]
        val = torch.stack([rewarded_mask(dm.val[2], r) for r in sets])
        # cross-entropy: validation on the member's own classes (mean over its samples)
        self.val_keep = val.to(device) if per_member else None
        self.val_weight = (val / val.sum(1, keepdim=True)).to(device) if per_member else None

    def begin(self, shuffle_seed: int) -> None:
        """A phase's batch orders: each epoch draws the next order from them, as the loader of
        one Lightning fit does (its shuffle generator is seeded once per fit)."""
        if not self.per_member:  # the very batch sampler of the data module's loader
            self.dm.shuffle_seed = shuffle_seed
            self.samplers = [self.dm.train_dataloader().sampler]
            return
        self.samplers = [BatchSampler(RandomSampler(range(len(idx)), generator=torch.Generator()
                                                    .manual_seed(shuffle_seed)),
                                      self.batch_size, drop_last=False) for idx in self.train]

    def epoch(self, rows: list[int]):
        """The batches of the next epoch for the members ``rows`` (their order in the stack)."""
        if not self.per_member:
            for idx in self.samplers[0]:
                yield Batch(torch.as_tensor(idx, device=self.device))
            return
        samplers = [self.samplers[k] for k in rows]
        lengths = {len(s) for s in samplers}
        if len(lengths) > 1:
            raise ValueError(f"members with {sorted(lengths)} steps per epoch in one stack")
        for parts in zip(*samplers, strict=True):
            size = max(map(len, parts))
            index = torch.zeros(len(rows), size, dtype=torch.long)
            weight = torch.zeros(len(rows), size) if min(map(len, parts)) < size else None
            for i, (k, part) in enumerate(zip(rows, parts, strict=True)):
                index[i, :len(part)] = self.train[k][torch.as_tensor(part)]
                if weight is not None:
                    weight[i, :len(part)] = 1.0 / len(part)
            yield Batch(index.to(self.device),
                        None if weight is None else weight.to(self.device))

    def samples(self, k: int) -> int:
        """Training samples of member ``k``."""
        return len(self.train[k]) if self.per_member else len(self.dm.train[2])

    def steps(self, k: int) -> int:
        """Steps per epoch of member ``k``."""
        return math.ceil(self.samples(k) / self.batch_size)
