"""The family's written-out MLP steps (family/mlp.py) equal vmap and autograd's: each member's
loss and the gradient of every leaf, whichever Linear weights are sparse."""

from types import SimpleNamespace

import pytest
import torch

from maxent_lightning.dropout import generator
from maxent_lightning.family.mlp import mlp_layers
from maxent_lightning.family.stack import Stack
from maxent_lightning.family.trainer import FamilyTrainer
from maxent_lightning.recipe import Recipe

LAYERS = ["features.1.weight", "features.4.weight", "classifier.weight"]


def trainer_and_stack(make_cfg, loss, sparse):
    sets = [[0], [7, 1], [3]] if loss == "maxent" else [[0], [3]]
    cfg = make_cfg("model=mlp_deep", "model.hidden=[32, 16]", "model.dropout=0.5",
                   f"loss={loss}")
    fam = FamilyTrainer(Recipe.of(cfg), [SimpleNamespace(rewarded=tuple(r)) for r in sets],
                        torch.device("cpu"), eval_group=len(sets))
    gen = torch.Generator().manual_seed(0)
    shapes = dict(fam.net.named_parameters())
    masks = {n: (torch.rand(len(sets), *shapes[n].shape, generator=gen) < 0.3).float()
             for n in fam.prunable}
    theta0 = {n: v + 0.1 * torch.randn(v.shape, generator=gen) for n, v in fam.theta0.items()}
    stack = Stack(theta0, masks, fam.tables, fam.optimizer, fam.orders, fam.device, sparse,
                  fam.buffers)
    return fam, stack


@pytest.mark.parametrize("loss", ["maxent", "cross_entropy"])
@pytest.mark.parametrize("sparse", [LAYERS[:1], LAYERS[1:2], LAYERS[2:], LAYERS])
def test_written_out_step_equals_autograd(make_cfg, loss, sparse):
    fam, stack = trainer_and_stack(make_cfg, loss, set(sparse))
    assert fam.mlp is not None and stack.patterns.keys() == set(sparse)
    fam.streams.begin(0)
    batch = next(iter(fam.streams.epoch(list(range(len(stack))))))
    x, y = fam.train_xy[0][batch.index], fam.train_xy[1][batch.index]
    gens = [generator("ab" * 8, i) for i in range(len(stack))]
    keep = [k[:, :batch.size] for k in fam._keep_masks(gens, fam.dm.batch_size)]
    assert keep and keep[0].shape[0] == len(stack)
    fam.train_net.train()
    losses = fam.mlp.step(stack, x, fam._targets(stack.tables, y), y.dim() == 2, keep,
                          batch.weight)
    written = {n: leaf.grad.clone() for n, leaf in stack.leaves.items()}
    stack.opt.zero_grad(set_to_none=True)
    fam.mlp = None  # vmap and autograd
    reference, _ = fam._losses(stack.state(), stack.tables, x, y, keep, sparse=stack,
                               weight=batch.weight)
    reference.sum().backward()
    torch.testing.assert_close(losses, reference.detach(), rtol=1e-5, atol=1e-6)
    for n, leaf in stack.leaves.items():
        assert written[n].shape == leaf.shape and written[n].abs().sum() > 0, n
        torch.testing.assert_close(written[n], leaf.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_only_the_mlp_backbone_is_written_out(make_cfg):
    cfg = make_cfg("model=lenet", "model.channels=[4]", "model.hidden=[16]")
    fam = FamilyTrainer(Recipe.of(cfg), [SimpleNamespace(rewarded=(0,))], torch.device("cpu"),
                        eval_group=1)
    assert fam.mlp is None and mlp_layers(fam.train_net, fam.drops) is None
    off = make_cfg("family.explicit_mlp=false")
    assert FamilyTrainer(Recipe.of(off), [SimpleNamespace(rewarded=(0,))],
                         torch.device("cpu"), eval_group=1).mlp is None
