"""Sparse products for the Linear layers of a family in its pruned IMP phases.

After a pruning round most entries of a weight are 0 for every member (10 % alive after the first
of two rounds at P = 0.99, 1 % after the second), yet a dense product still multiplies them all.
Here the K members' alive entries of one Linear weight are the values of one CSR matrix: rows are
(member, output unit), columns the shared input (first layer) or (member, input unit) for inputs
that differ per member (a block-diagonal matrix). The forward product and the gradient of the
values (a sampled product: only at alive entries) then cost in proportion to the alive entries,
and the optimizer steps only those. Each alive entry is computed exactly as in the dense product,
up to the order of the sums.
"""

import functools
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..builders import trace_calls

# torch flags every CSR tensor as beta; the products used here are plain and tested.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


@dataclass(frozen=True)
class Pattern:
    """The alive entries of a (K, out, in) stacked weight, in CSR order (member, row, column)."""

    mask: torch.Tensor  # (K, out, in) bool
    crow: torch.Tensor  # (K * out + 1,) row starts
    col: torch.Tensor  # (nnz,) input unit
    block_col: torch.Tensor  # (nnz,) member * in + input unit
    # The transposed block-diagonal matrix (for the input gradient): its rows' starts, its
    # columns, and the order of the values in it.
    t_crow: torch.Tensor
    t_col: torch.Tensor
    t_order: torch.Tensor

    @classmethod
    def of(cls, mask: torch.Tensor) -> "Pattern":
        k, out, inp = mask.shape
        rows, col = mask.reshape(k * out, inp).nonzero(as_tuple=True)
        block_col = col + rows.div(out, rounding_mode="floor") * inp
        t_order = torch.argsort(block_col * (k * out) + rows)
        return cls(mask, _starts(rows, k * out), col, block_col, _starts(block_col, k * inp),
                   rows[t_order], t_order)

    @functools.cached_property
    def zeros(self) -> torch.Tensor:
        """Zero values of every alive entry: the sampled products' pattern operand."""
        return torch.zeros(len(self.col), device=self.col.device)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.mask.shape)

    def gather(self, weight: torch.Tensor) -> torch.Tensor:
        """The alive entries of a (K, out, in) weight, in pattern order."""
        return weight[self.mask]

    def scatter(self, values: torch.Tensor) -> torch.Tensor:
        """The dense (K, out, in) weight with ``values`` at the alive entries, 0 elsewhere."""
        dense = values.new_zeros(self.shape)
        dense[self.mask] = values
        return dense

    def span(self, k: int) -> slice:
        """Where member ``k``'s values sit."""
        out = self.shape[1]
        return slice(int(self.crow[k * out]), int(self.crow[(k + 1) * out]))

    def member(self, values: torch.Tensor, k: int) -> torch.Tensor:
        """Member ``k``'s dense (out, in) weight."""
        dense = values.new_zeros(self.shape[1:])
        dense[self.mask[k]] = values[self.span(k)]
        return dense

    def select(self, members: torch.Tensor) -> tuple["Pattern", torch.Tensor]:
        """The pattern of the given members only, and where their values sit in this one."""
        index = torch.cat([torch.arange(s.start, s.stop, device=self.mask.device)
                           for s in map(self.span, members.tolist())])
        return Pattern.of(self.mask.index_select(0, members)), index

    def matrix(self, values: torch.Tensor, per_member_input: bool) -> torch.Tensor:
        k, out, inp = self.shape
        if per_member_input:
            return _csr(self.crow, self.block_col, values, (k * out, k * inp))
        return _csr(self.crow, self.col, values, (k * out, inp))

    def values_grad(self, grad_out: torch.Tensor, rows: torch.Tensor,
                    per_member_input: bool) -> torch.Tensor:
        """The gradient of the alive values: the product of the output gradient (K * out,
        batch) and the input (batch, in or K * in) sampled at the alive entries only."""
        where = self.matrix(self.zeros, per_member_input)
        return torch.sparse.sampled_addmm(where, grad_out.contiguous(), rows.contiguous(),
                                          beta=0.0).values()

    def transposed(self, values: torch.Tensor) -> torch.Tensor:
        """The (K * in, K * out) transpose of the block-diagonal matrix, as CSR."""
        k, out, inp = self.shape
        return _csr(self.t_crow, self.t_col, values[self.t_order], (k * inp, k * out))


def _csr(crow, col, values, size) -> torch.Tensor:
    # Indices come from Pattern.of (valid by construction): no per-call invariant check.
    return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


def _starts(rows: torch.Tensor, n: int) -> torch.Tensor:
    """CSR row starts of sorted-by-row entries with these row indices."""
    crow = torch.zeros(n + 1, dtype=torch.int64, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=n).cumsum(0)
    return crow


class StackedSparseLinear(torch.autograd.Function):
    """y[k] = x[k] @ W[k]^T for every member k, W given as a Pattern and its values.

    ``x`` is (batch, in) when shared by all members or (K, batch, in); ``token`` is a tensor
    batched over the members whose only role is to make vmap hand the whole stack to
    :meth:`vmap` (every other input may be unbatched)."""

    @staticmethod
    def forward(x, token, values, pattern):
        k, out, _ = pattern.shape
        per_member = x.dim() == 3
        xt = x.permute(0, 2, 1).reshape(-1, x.shape[1]) if per_member else x.t()
        y = pattern.matrix(values, per_member) @ xt.contiguous()  # (K * out, batch)
        return y.view(k, out, -1).transpose(1, 2)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, _, values, pattern = inputs
        ctx.save_for_backward(x, values)
        ctx.pattern = pattern

    @staticmethod
    def backward(ctx, grad_y):
        x, values = ctx.saved_tensors
        pattern, per_member = ctx.pattern, x.dim() == 3
        k, out, inp = pattern.shape
        g = grad_y.transpose(1, 2).reshape(k * out, -1).contiguous()  # (K * out, batch)
        rows = x.transpose(0, 1).reshape(x.shape[1], -1) if per_member else x  # (batch, cols)
        grad_values = pattern.values_grad(g, rows, per_member)
        grad_x = None
        if ctx.needs_input_grad[0]:
            gx = (pattern.transposed(values) @ g).view(k, inp, -1)  # (K, in, batch)
            grad_x = gx.transpose(1, 2) if per_member else gx.sum(0).t()
        return grad_x, None, grad_values, None

    @staticmethod
    def vmap(info, in_dims, x, token, values, pattern):
        if in_dims[0] is not None:
            x = x.movedim(in_dims[0], 0)
        return StackedSparseLinear.apply(x, token, values, pattern), 0


class FamilyLinear(nn.Linear):
    """nn.Linear that, while ``sparse = (values, pattern)`` and ``token`` are set (inside the
    family's vmap), computes all members' products at once from the alive entries."""

    sparse: tuple[torch.Tensor, Pattern] | None = None
    token: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sparse is None:
            return F.linear(x, self.weight, self.bias)
        y = StackedSparseLinear.apply(x, self.token, *self.sparse)
        return y if self.bias is None else y + self.bias


def family_linears(net: nn.Module, names: list[str], input_shape) -> dict[str, FamilyLinear]:
    """Swap the Linear layers of the weights ``names`` whose per-sample input is a vector for
    FamilyLinear (same parameters); returns them by weight name."""
    prefixes = {m: prefix for prefix, m in net.named_modules()
                if type(m) is nn.Linear and f"{prefix}.weight" in names}
    dims = {}  # input ranks of every call of each layer
    for m, inputs, _ in trace_calls(net, input_shape, prefixes):
        dims.setdefault(prefixes[m], set()).add(inputs[0].dim())
    swapped = {}
    for prefix in (p for p, d in dims.items() if d == {2}):
        parent_name, _, child = prefix.rpartition(".")
        parent, old = net.get_submodule(parent_name), net.get_submodule(prefix)
        new = FamilyLinear(old.in_features, old.out_features, bias=old.bias is not None,
                           device=old.weight.device, dtype=old.weight.dtype)
        new.load_state_dict(old.state_dict())
        setattr(parent, child, new)
        swapped[f"{prefix}.weight"] = new
    return swapped
