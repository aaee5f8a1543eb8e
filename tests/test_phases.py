"""The phase plan: phases, seeds and epochs from the config, IMP strategies, early stopping."""

import math

import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping

from maxent_lightning import masks as M
from maxent_lightning.cpu import denormals_flushed
from maxent_lightning.errors import UserError
from maxent_lightning.imp import STRATEGIES, strategy
from maxent_lightning.models import MLP
from maxent_lightning.phases import StopRule, imp_used, schedule


def _net():
    torch.manual_seed(0)
    return MLP(input_shape=(20,), num_classes=4, hidden=[16], dropout=0.0)


def test_plan_lists_rounds_then_the_final_phase(make_cfg):
    phases = schedule(make_cfg("seed=3", "imp=global", "imp.rounds=2", "imp.sparsity=0.99",
                           "trainer.max_epochs=6", "imp.round_epochs=null"), _net())
    assert phases.rounds == 2 and [p.round for p in phases.phases] == [0, 1, 2]
    assert [p.final for p in phases.phases] == [False, False, True]
    assert [p.epochs for p in phases.phases] == [3, 3, 6]  # E // N per round, E at the end
    assert [p.seed for p in phases.phases] == [3, 4, 5]
    assert [p.shuffle_seed for p in phases.phases] == [3000, 3001, 3002]
    assert phases.rate == pytest.approx(0.9)
    assert phases.prunable == ("features.1.weight", "classifier.weight")
    assert phases.output_layer == "classifier"


def test_dense_plan_has_only_the_final_phase(make_cfg):
    cfg = make_cfg("imp=none")
    phases = schedule(cfg, _net())
    assert len(phases.phases) == 1 and phases.phases[0].final and phases.rate == 0.0
    assert not imp_used(cfg.imp)


@pytest.mark.parametrize("scope", sorted(STRATEGIES))
def test_plan_prunes_with_the_configured_strategy(make_cfg, scope):
    net = _net()
    phases = schedule(make_cfg(f"imp.scope={scope}", "imp.rounds=1", "imp.sparsity=0.5"), net)
    assert any(n.endswith(".bias") for n in phases.prunable) == (scope == "layerwise")
    masks = phases.next_masks(dict(net.named_parameters()), phases.full_masks(net))
    if scope == "global":
        assert M.sparsity(masks) == pytest.approx(0.5, abs=0.01)
    else:  # output layer at half the rate
        assert 1 - masks["classifier.weight"].float().mean() == pytest.approx(0.25, abs=0.02)


def test_unknown_strategy_is_one_line():
    with pytest.raises(UserError, match="imp.scope=nope must be one of: global, layerwise"):
        strategy("nope")


def _decisions(rule, values):
    return [rule.should_stop(torch.tensor(v)) for v in values]


def test_stop_rule_follows_early_stopping_patience_and_min_delta():
    rule = StopRule(EarlyStopping(monitor="val/loss", mode="min", patience=2))
    assert _decisions(rule, [1.0, 0.9, 0.95, 0.9, 0.8]) == [False, False, False, True, False]
    rule = StopRule(EarlyStopping(monitor="val/loss", mode="min", patience=1, min_delta=0.2))
    assert _decisions(rule, [1.0, 0.85]) == [False, True]  # 0.15 is no improvement
    rule = StopRule(EarlyStopping(monitor="val/loss", mode="min", patience=5))
    assert _decisions(rule, [1.0, math.nan]) == [False, True]  # not finite: stop
    rule = StopRule(EarlyStopping(monitor="val/acc", mode="max", patience=1))
    assert _decisions(rule, [0.5, 0.6, 0.6]) == [False, False, True]


def _adam_after_the_gradient_vanishes(flush: bool):
    """Weights and first moments of Adam after one real gradient and 900 zero ones (the first
    moment decays by 0.9 per step into the denormal range)."""
    torch.manual_seed(0)
    w = torch.randn(1000, requires_grad=True)
    opt = torch.optim.Adam([w], lr=1e-3)
    with denormals_flushed(flush):
        for step in range(900):
            w.grad = torch.randn(1000) * 1e-3 if step == 0 else torch.zeros(1000)
            opt.step()
    return w.detach().clone(), opt.state[w]["exp_avg"].clone()


def test_flushing_denormals_leaves_the_weights_and_is_undone_afterwards():
    tiny = torch.finfo(torch.float32).tiny  # smallest normal float32
    w_ieee, m_ieee = _adam_after_the_gradient_vanishes(False)
    assert ((m_ieee != 0) & (m_ieee.abs() < tiny)).any()  # denormal moments without flushing
    w_flush, m_flush = _adam_after_the_gradient_vanishes(True)
    assert not ((m_flush != 0) & (m_flush.abs() < tiny)).any()
    assert torch.equal(w_flush, w_ieee)
    _ = torch.ones(1 << 20) * 2.0  # torch's worker threads exist before the flush starts
    denormal = torch.full((1 << 20,), tiny / 8)  # large enough to be split over the threads
    with denormals_flushed(True):
        assert torch.count_nonzero(denormal * 1.0) == 0  # on every thread
    assert torch.count_nonzero(denormal * 1.0) == denormal.numel()  # off again afterwards
    with denormals_flushed(False):
        assert torch.count_nonzero(denormal * 1.0) == denormal.numel()
