"""Composition of modules: weight summation, logit averaging, BatchNorm recalibration and
the piecewise-linear path of mode connectivity. Pure functions over state dicts and nets."""

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from . import masks as M
from .builders import net_from_record
from .errors import UserError
from .modulefile import ModuleRecord

State = dict[str, torch.Tensor]
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def check_composable(records: Sequence[ModuleRecord]) -> None:
    """Refuse modules that do not share data, architecture, class set, θ0 or temperature,
    or whose rewarded sets overlap."""
    if not records:
        raise UserError("no modules to compose; give at least one module checkpoint")
    first = records[0]
    for i, rec in enumerate(records[1:], start=1):
        for what, a, b in (
            ("data set", first.spec["data"]["name"], rec.spec["data"]["name"]),
            ("data digest", first.spec["data"].get("digest"), rec.spec["data"].get("digest")),
            ("architecture", first.spec["model"], rec.spec["model"]),
            ("class count", first.num_classes, rec.num_classes),
            ("θ0", first.theta0_id, rec.theta0_id),
            ("temperature", first.temperature, rec.temperature),
        ):
            if a != b:
                raise UserError(
                    f"module {i} (R={rec.rewarded}) has a different {what} than module 0 "
                    f"(R={first.rewarded}); only modules of the same seed, model and data compose"
                )
    seen: dict[int, int] = {}
    for i, rec in enumerate(records):
        for c in rec.rewarded:
            if c in seen:
                raise UserError(
                    f"rewarded sets overlap: modules {seen[c]} and {i} both reward class {c}; "
                    "composed modules need disjoint rewarded sets"
                )
            seen[c] = i


def sum_states(states: Sequence[Mapping[str, torch.Tensor]]) -> State:
    """θ = Σ_i θ_i over every floating tensor; integer buffers are taken from the first."""
    out = {}
    for name, first in states[0].items():
        if first.is_floating_point():
            out[name] = torch.stack([s[name] for s in states]).sum(0)
        else:
            out[name] = first.clone()
    return out


def weight_sum(records: Sequence[ModuleRecord]) -> tuple[nn.Module, M.Masks]:
    """The merged net Σ_i θ_i and its mask (OR of the modules' masks)."""
    check_composable(records)
    net = net_from_record(records[0], sum_states([r.state_dict for r in records]))
    return net, M.union([r.masks for r in records])


def logit_weights(n: int, weights: Sequence[float] | None = None) -> list[float]:
    """The weights w_i of a logit average of ``n`` modules (default 1/n), checked."""
    if weights is None:
        return [1.0 / n] * n
    example = "e.g. merge.logit_weights=null (equal weights)"
    try:
        weights = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise UserError(f"logit weights {weights} must be a list of numbers; {example}") from None
    if len(weights) != n:
        raise UserError(f"{len(weights)} logit weights given for {n} modules; give one each")
    if not all(math.isfinite(w) for w in weights):
        raise UserError(f"logit weights {weights} must be finite numbers; {example}")
    if any(w < 0 for w in weights):
        raise UserError(f"logit weights {weights} must be non-negative")
    if not sum(weights) > 0:
        raise UserError(f"logit weights {weights} are all zero; give at least one positive "
                        f"weight, {example}")
    return weights


class LogitAverage(nn.Module):
    """Product of experts: z̄ = Σ_i w_i z^(i), default w_i = 1/n."""

    def __init__(self, nets: Sequence[nn.Module], weights: Sequence[float] | None = None):
        super().__init__()
        self.nets = nn.ModuleList(nets)
        self.register_buffer("weights", torch.tensor(logit_weights(len(nets), weights)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(w * net(x) for w, net in zip(self.weights, self.nets, strict=True))


def logit_average(records: Sequence[ModuleRecord], weights=None) -> LogitAverage:
    check_composable(records)
    return LogitAverage([net_from_record(r) for r in records], weights).eval()


def has_batchnorm(net: nn.Module) -> bool:
    return any(isinstance(m, BATCH_NORMS) for m in net.modules())


def begin_calibration(net: nn.Module) -> list:
    """Reset the BatchNorm statistics of ``net`` to accumulate an exact (cumulative) average
    over the batches it sees next in train mode; returns what ``end_calibration`` restores."""
    norms = [m for m in net.modules() if isinstance(m, BATCH_NORMS)]
    for m in norms:
        m.reset_running_stats()
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = None  # cumulative moving average
    return momenta


def end_calibration(net: nn.Module, momenta: list) -> nn.Module:
    norms = [m for m in net.modules() if isinstance(m, BATCH_NORMS)]
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    return net.eval()


@torch.no_grad()
def recalibrate_batchnorm(net: nn.Module, x: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """Recompute BatchNorm running statistics as the exact average over ``x`` (on the device
    of ``net``; jobs do this inside their ``Trainer.test``, see evaluate.py)."""
    momenta = begin_calibration(net)
    net.train()
    device = next(net.parameters()).device
    for start in range(0, len(x), batch_size):
        net(x[start : start + batch_size].to(device))
    return end_calibration(net, momenta)


def path_point(theta1: Mapping, theta2: Mapping, t: float) -> State:
    """γ(t) = θ1 + 2tθ2 for t ≤ ½, 2(1−t)θ1 + θ2 for t > ½; γ(½) = θ1 + θ2."""
    a, b = (1.0, 2.0 * t) if t <= 0.5 else (2.0 * (1.0 - t), 1.0)
    return {
        k: a * v + b * theta2[k] if v.is_floating_point() else v.clone()
        for k, v in theta1.items()
    }


def relative_barrier(losses: Sequence[float], ts: Sequence[float]) -> list[float]:
    """(L(γ(t)) − [(1−t)L1 + tL2]) / [(1−t)L1 + tL2] in %, with L1 = L(t=0), L2 = L(t=1)."""
    l1, l2 = losses[0], losses[-1]
    out = []
    for loss, t in zip(losses, ts, strict=True):
        base = (1 - t) * l1 + t * l2
        out.append(100.0 * (loss - base) / base)
    return out
