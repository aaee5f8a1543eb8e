"""Sparse family products equal the dense ones at the alive entries."""

import pytest
import torch
from torch.func import vmap

from maxent_lightning.family.sparse import Pattern, StackedSparseLinear


@pytest.mark.parametrize("alive", [0.4, 0.0])
@pytest.mark.parametrize("per_member", [False, True])
def test_stacked_sparse_linear_matches_dense(per_member, alive):
    torch.manual_seed(0)
    k, batch, out, inp = 3, 5, 4, 6
    mask = torch.rand(k, out, inp) < alive
    weight = torch.randn(k, out, inp) * mask
    pattern = Pattern.of(mask)
    values = pattern.gather(weight).requires_grad_()
    dense = weight.clone().requires_grad_()
    x = torch.randn(k, batch, inp) if per_member else torch.randn(batch, inp)
    x.requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    y = vmap(lambda t, xi: StackedSparseLinear.apply(xi, t, values, pattern),
             in_dims=(0, 0 if per_member else None))(torch.zeros(k), x)
    y_dense = torch.einsum("koi,kbi->kbo" if per_member else "koi,bi->kbo", dense, x2)
    torch.testing.assert_close(y, y_dense)
    grad = torch.randn_like(y)
    (y * grad).sum().backward()
    (y_dense * grad).sum().backward()
    torch.testing.assert_close(values.grad, dense.grad[mask])  # only alive entries get one
    torch.testing.assert_close(x.grad, x2.grad)


def test_pattern_members_and_selection():
    torch.manual_seed(1)
    mask = torch.rand(4, 3, 5) < 0.5
    weight = torch.randn(4, 3, 5) * mask
    pattern = Pattern.of(mask)
    values = pattern.gather(weight)
    assert values.numel() == int(mask.sum())
    assert torch.equal(pattern.scatter(values), weight)
    for k in range(4):
        assert torch.equal(pattern.member(values, k), weight[k])
    kept, where = pattern.select(torch.tensor([3, 1]))
    assert torch.equal(kept.scatter(values[where]), weight[[3, 1]])
    assert torch.equal(pattern.transposed(values).to_dense(),
                       torch.block_diag(*weight).t())
