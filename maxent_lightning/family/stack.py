"""The K members' parameters stacked into (K, ...) leaves, and one optimizer over all of them.

The optimizer is elementwise, so one instance over the stacked tensors is K independent ones; a
member that stops early is dropped from the stack with its optimizer state sliced out.
"""

import torch

from .sparse import Pattern


def fused(factory):
    """The optimizer with its fused kernel (one pass per step instead of one per operation;
    equal to the unfused update up to rounding) where the class and device have one."""

    def build(params):
        try:
            return factory(params, fused=True)
        except (TypeError, RuntimeError):  # no fused kernel for this optimizer or device
            return factory(params)

    return build


def _inverse(order: list[int]) -> list[int]:
    return sorted(range(len(order)), key=order.__getitem__)


class Stack:
    """K members' parameters, buffers, masks, targets and one optimizer over all of them.

    Each parameter is a contiguous (K, ...) leaf stored in the dimension order in which vmap's
    backward produces its gradient (Linear weights transposed); the net sees permuted views.
    So gradients arrive without a copy and the optimizer runs on contiguous memory. A weight
    named in ``sparse`` is instead the 1-D leaf of its alive entries (see sparse.py). Each
    buffer (BatchNorm running statistics) is a (K, ...) tensor that the members' forward passes
    update in place, each its own row."""

    def __init__(self, theta0, masks, tables, optimizer, orders, device, sparse=(), buffers=()):
        k = len(tables)
        self.orders, self.factory, self.tables = orders, optimizer, tables
        self.leaves, self.masks, self.patterns = {}, {}, {}
        self.buffers = {n: theta0[n].to(device).expand(k, *theta0[n].shape).clone()
                        for n in buffers}
        for n, order in orders.items():
            full = theta0[n].to(device).expand(k, *theta0[n].shape)
            if n in sparse:
                self.patterns[n] = Pattern.of(masks[n] > 0)
                self.leaves[n] = self.patterns[n].gather(full).requires_grad_()
                continue
            p = full.permute(order).clone(memory_format=torch.contiguous_format)
            if n in masks and not bool(masks[n].all()):  # all-ones masks need no masking
                self.masks[n] = masks[n].permute(order).contiguous()
                p.mul_(self.masks[n])
            self.leaves[n] = p.requires_grad_()
        self.opt = optimizer(list(self.leaves.values()))

    def __len__(self) -> int:
        return len(self.tables)

    def params(self) -> dict[str, torch.Tensor]:
        """The stacked dense parameters in the net's own shapes (views of the leaves)."""
        return {n: p.permute(_inverse(self.orders[n])) for n, p in self.leaves.items()
                if n not in self.patterns}

    def sparse(self) -> dict[str, tuple[torch.Tensor, Pattern]]:
        return {n: (self.leaves[n], pattern) for n, pattern in self.patterns.items()}

    def state(self) -> dict[str, torch.Tensor]:
        """What the forward pass takes: the dense parameters and the buffers."""
        return self.params() | self.buffers

    def dense_state(self) -> dict[str, torch.Tensor]:
        """Every stacked parameter in the net's own shapes (sparse ones written out), and the
        buffers."""
        return self.state() | {n: pattern.scatter(self.leaves[n].detach())
                               for n, pattern in self.patterns.items()}

    @torch.no_grad()
    def mask_weights(self) -> None:
        """Zero the pruned entries again after a step. (Their gradients are not masked: with an
        elementwise optimizer a pruned entry's state never reaches an alive one, so the
        weights equal those of imp.py's masked gradients exactly, for one multiply less.)"""
        for n, m in self.masks.items():
            self.leaves[n].mul_(m)

    def keep(self, rows: list[int]) -> None:
        """Drop every row but ``rows``, slicing the optimizer state alongside."""
        index = torch.as_tensor(rows, device=self.tables.device)
        where = {n: index for n in self.leaves}
        for n, pattern in self.patterns.items():
            self.patterns[n], where[n] = pattern.select(index)
        state = self.opt.state_dict()
        for pid, (n, p) in enumerate(self.leaves.items()):
            for key, v in state["state"].get(pid, {}).items():
                if torch.is_tensor(v) and v.dim() > 0 and v.shape == p.shape:
                    state["state"][pid][key] = v.index_select(0, where[n])
        self.leaves = {n: p.detach().index_select(0, where[n]).requires_grad_()
                       for n, p in self.leaves.items()}
        self.masks = {n: m.index_select(0, index) for n, m in self.masks.items()}
        self.buffers = {n: b.index_select(0, index) for n, b in self.buffers.items()}
        self.tables = self.tables.index_select(0, index)
        self.opt = self.factory(list(self.leaves.values()))
        self.opt.load_state_dict(state)

    def row(self, i: int) -> dict[str, torch.Tensor]:
        """Member ``i``'s parameters and buffers (a state dict of the net)."""
        dense = self.params()
        return {n: self.patterns[n].member(p.detach(), i) if n in self.patterns
                else dense[n][i].detach().clone(memory_format=torch.contiguous_format)
                for n, p in self.leaves.items()} | {n: b[i].clone()
                                                   for n, b in self.buffers.items()}
