import pytest
import torch
from torch import nn

from maxent_lightning import masks as M
from maxent_lightning.builders import init_theta0
from maxent_lightning.callbacks import IterativeMagnitudePruning
from maxent_lightning.loss import MaxEntLoss
from maxent_lightning.models import MLP
from maxent_lightning.module import MaxEntModule
from maxent_lightning.modulefile import load_module
from maxent_lightning.phases import schedule
from maxent_lightning.training import train_module


def _net(seed=0):
    torch.manual_seed(seed)
    return MLP(input_shape=(20,), num_classes=4, hidden=[16, 8], dropout=0.0)


def test_per_round_rate_reaches_final_sparsity():
    k = M.per_round_rate(0.99, 2)
    assert k == pytest.approx(0.9)
    assert (1 - k) ** 2 == pytest.approx(0.01)
    assert M.per_round_rate(0.5, 0) == 0.0


@pytest.mark.parametrize("sparsity,rounds", [(0.99, 2), (0.6, 3), (0.9, 1)])
def test_global_density_after_each_round_is_one_minus_k_to_the_r(sparsity, rounds):
    net = _net()
    names = M.prunable_names(net)
    masks = M.full_masks(net, names)
    k = M.per_round_rate(sparsity, rounds)
    total = sum(m.numel() for m in masks.values())
    for r in range(1, rounds + 1):
        with torch.no_grad():  # new "trained" weights each round
            for p in net.parameters():
                p.copy_(torch.randn_like(p))
        masks = M.prune_global(dict(net.named_parameters()), masks, k)
        assert abs(M.density(masks) - (1 - k) ** r) <= 1.0 / total + 1e-9
    assert M.sparsity(masks) == pytest.approx(sparsity, abs=2.0 / total)


def test_global_prunes_smallest_magnitudes_across_tensors():
    params = {"a": torch.tensor([0.1, -5.0, 0.2]), "b": torch.tensor([3.0, -0.05])}
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()}
    out = M.prune_global(params, masks, 0.6)  # prune 3 of 5
    assert out["a"].tolist() == [False, True, False]
    assert out["b"].tolist() == [True, False]


def test_ties_at_the_threshold_are_pruned_lowest_index_first():
    params = {"a": torch.tensor([0.5, 0.1, 0.5, 0.5, 0.9]), "b": torch.tensor([0.5, 0.05])}
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()}
    out = M.prune_global(params, masks, 4 / 7)  # 0.05, 0.1, then the first two 0.5s
    assert out["a"].tolist() == [False, False, False, True, True]
    assert out["b"].tolist() == [True, False]


def test_pruned_entries_stay_pruned_in_later_rounds():
    params = {"a": torch.tensor([0.0, 0.0, 1.0, 2.0])}
    masks = {"a": torch.tensor([False, True, True, True])}
    out = M.prune_global(params, masks, 1 / 3)  # 1 of the 3 alive: the 0.0 at index 1
    assert out["a"].tolist() == [False, False, True, True]


def test_layerwise_prunes_biases_and_output_layer_at_half_rate():
    net = _net()
    names = M.prunable_names(net, include_bias=True)
    assert any(n.endswith(".bias") for n in names)
    output = names[-1].rsplit(".", 1)[0]
    rates = M.layerwise_rates(names, 0.5, output)
    masks = M.prune_layerwise(dict(net.named_parameters()), M.full_masks(net, names), rates)
    for n, m in masks.items():
        expected = 0.25 if n.startswith(output + ".") else 0.5
        assert 1 - m.float().mean().item() == pytest.approx(expected, abs=1.0 / m.numel())


def test_rewind_restores_theta0_times_mask_and_callback_prunes_at_fit_end(make_cfg):
    net = _net()
    theta0 = {k: v.clone() for k, v in net.state_dict().items()}
    phases = schedule(make_cfg("imp=global", "imp.rounds=2", "imp.sparsity=0.75"), net)
    pruner = IterativeMagnitudePruning(phases, theta0, phases.full_masks(net))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    holder = nn.Module()
    holder.net = net
    pruner.on_fit_end(None, holder)
    assert pruner.round == 1
    state = net.state_dict()
    for n, mask in pruner.masks.items():
        assert torch.equal(state[n], theta0[n] * mask)
    assert M.density(pruner.masks) == pytest.approx(0.5, abs=0.01)


def test_masked_gradients_and_weights_stay_zero_through_adam_steps(make_cfg):
    """The module enforces its masks (the IMP callback only hands them over): gradients masked
    before each optimizer step, weights re-masked after it."""
    net = _net()
    phases = schedule(make_cfg("imp.rounds=1", "imp.sparsity=0.7"), net)
    masks = M.prune_global(dict(net.named_parameters()), phases.full_masks(net), 0.7)
    config = {"_target_": "maxent_lightning.models.MLP", "hidden": [16, 8], "dropout": 0.0}
    module = MaxEntModule(config, MaxEntLoss(), [0], 4, input_shape=(20,), backbone=net)
    pruner = IterativeMagnitudePruning(phases, {}, masks)
    pruner.on_fit_start(None, module)
    module.on_fit_start()
    opt = torch.optim.Adam(net.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(5):
        opt.zero_grad()
        net(torch.randn(8, 20)).pow(2).sum().backward()
        module.on_before_optimizer_step(opt)
        opt.step()
        module.apply_masks()  # what module.optimizer_step does after the step
        assert all(torch.count_nonzero(opt.state[p]["exp_avg"][~masks[n]]) == 0
                   for n, p in net.named_parameters() if n in masks)
    params = dict(net.named_parameters())
    for n, mask in masks.items():
        assert torch.count_nonzero(params[n][~mask]) == 0


def test_theta0_depends_only_on_seed_model_and_shape():
    cfg = {"_target_": "maxent_lightning.models.MLP", "hidden": [8], "temperature": 5.0}
    _, a, ida = init_theta0(cfg, (1, 8, 8), 10, seed=3)
    _, b, idb = init_theta0(cfg, (1, 8, 8), 10, seed=3)
    _, _, idc = init_theta0(cfg, (1, 8, 8), 10, seed=4)
    assert ida == idb != idc
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_trained_module_checkpoint_is_sparse_and_shares_theta0(make_cfg, tmp_path, scope):
    cfg = make_cfg(f"imp.scope={scope}", "imp.sparsity=0.9", "imp.round_epochs=1")
    m3 = train_module(cfg, tmp_path / "r3", rewarded=[3])
    m5 = train_module(cfg, tmp_path / "r5", rewarded=[5])
    assert m3["theta0_id"] == m5["theta0_id"]
    rec = load_module(tmp_path / "r3" / "module.pt")
    for n, mask in rec.masks.items():
        assert torch.count_nonzero(rec.state_dict[n][~mask]) == 0
    if scope == "global":
        assert m3["sparsity"] == pytest.approx(0.9, abs=1e-3)
    else:
        assert any(n.endswith("bias") for n in rec.masks)
    rounds = sorted(p.name for p in (tmp_path / "r3" / "imp").iterdir())
    assert rounds == ["round_0.json", "round_0.pt", "round_1.json", "round_1.pt"]
