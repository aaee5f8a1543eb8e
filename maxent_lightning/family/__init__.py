"""Train a family of modules of one seed in one vectorized pass.

Every module of a seed shares θ0 and the training data; only its targets (rewarded set), masks,
optimizer state and early stopping differ (a cross-entropy module reads only its own classes'
samples: a stream per member, ``streams.py``). The K parameter sets are stacked into leaf tensors of
shape (K, ...) and every batch goes through all of them at once (``torch.func.vmap`` over
``functional_call``). The optimizer is elementwise, so one instance over the stacked tensors is
K independent ones. A member that stops early is dropped from the stack (its optimizer state
sliced out), so it is never touched again. Dropout masks come from each member's own stream
(``dropout.py``), the one the sequential trainer draws too, so a module is the same whichever
members train beside it. The rest is the phase plan (``phases.py``) that the sequential trainer
executes too: same θ0, batch order per phase, gradient/weight masking, Lightning's EarlyStopping
rule, best-validation restore, IMP pruning, and the same artifacts in each member's directory
(``moduledir.py``): equal to a module trained alone up to the order of float sums (float32).
On CPU, a large Linear weight with few alive entries (the pruned IMP phases) is
trained as the 1-D leaf of its alive entries and multiplied sparsely (``family.sparse_below``,
sparse.py).
"""

import copy
import logging
import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping
from omegaconf import DictConfig
from torch import nn
from torch.func import functional_call, vmap

from .. import masks as M
from .. import moduledir
from ..builders import (
    FULL_PRECISION,
    build_datamodule,
    build_net,
    data_source,
    init_theta0,
    module_spec,
    spec_fingerprint,
    trace_calls,
)
from ..cpu import denormals_flushed, reused_host_memory
from ..data.datamodule import check_rewarded, check_split_samples
from ..dropout import generator, keep_mask, stream_dropouts
from ..evaluate import Plan, lean_trainer, run_plan
from ..loggers import (
    begin_round,
    build_loggers,
    finish_loggers,
    log_trained,
    module_config,
    module_run_name,
)
from ..loss import MaxEntLoss, kl_to_target
from ..metrics import evaluation_metrics
from ..phases import (
    VAL_KEYS,
    BestRule,
    Phase,
    StopRule,
    first_phase_key,
    phase_callbacks,
    plan,
    validate,
)
from ..plots import wants_figures
from ..targets import make_targets
from .sparse import Pattern, family_linears
from .streams import Streams, steps_per_epoch

log = logging.getLogger(__name__)

# Optimizers whose update of an entry depends only on that entry's history.
ELEMENTWISE = ("Adam", "AdamW", "Adamax", "NAdam", "RAdam", "SGD", "RMSprop", "Adagrad")
# Trainer keys that do not change what a fit computes.
TRAINER_KEYS = {"_target_", "max_epochs", "accelerator", "devices", "num_sanity_val_steps",
                "enable_checkpointing", "enable_model_summary", "enable_progress_bar",
                "log_every_n_steps", "deterministic", "benchmark", "default_root_dir", "precision"}
# trainer.precision values the family reproduces (autocast to bfloat16 for bf16-mixed).
PRECISIONS = ("32", "32-true", "bf16-mixed")
# Why conv nets train one by one on CPU: family vs one by one on a 2-core CPU (`make bench`).
CPU_CONVOLUTIONS = "LeNet 0.64x; ResNet18 and VGG11 at width 8: 1.11x"
# Dropout layers other than nn.Dropout (no per-member stream for them).
OTHER_DROPOUTS = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                  nn.FeatureAlphaDropout)
CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)
# Smaller Linear weights keep dense products: theirs cost less than a sparse product's overhead.
SPARSE_MIN_WEIGHTS = 1 << 16
EVAL_BATCH = 1000  # MaxEntDataModule's default eval_batch_size (for memory planning)


def _fused(factory):
    """The optimizer with its fused kernel (one pass per step instead of one per operation;
    equal to the unfused update up to rounding) where the class and device have one."""

    def build(params):
        try:
            return factory(params, fused=True)
        except (TypeError, RuntimeError):  # no fused kernel for this optimizer or device
            return factory(params)

    return build


def _mixed_precision(net: nn.Module) -> set[str]:
    """bf16-mixed for a vmapped net (autocast does not reach vmapped operations): the names of
    the parameters to cast to bfloat16 per call (all but normalization layers'); each norm
    layer computes in float32 on a float32 copy of its input (hooks) and hands back bfloat16."""
    norms = [m for m in net.modules() if isinstance(m, NORMS)]
    for m in norms:
        m.register_forward_pre_hook(lambda mod, args: (args[0].float(), *args[1:]))
        m.register_forward_hook(lambda mod, args, out: out.to(torch.bfloat16))
    skip = {id(p) for m in norms for p in m.parameters()}
    return {n for n, p in net.named_parameters() if id(p) not in skip}


def unsupported_reason(cfg: DictConfig) -> str | None:
    """Why ``cfg`` is not trained as a family (then it is trained sequentially), or None: the
    family cannot train it (``cannot_train``), or on CPU it would be slower."""
    src = data_source(cfg)
    net = build_net(cfg.model, src.input_shape, src.num_classes)
    reason = cannot_train(cfg, net)
    if reason is not None or reduced_precision(cfg):  # reduced precision: see reduced_precision
        return reason
    convolutions = any(isinstance(m, CONVOLUTIONS) for m in net.modules())
    on_cpu = pick_device(str(cfg.trainer.get("accelerator", "auto"))).type == "cpu"
    if convolutions and on_cpu and not cfg.family.cpu_convolutions:
        return ("vectorized convolutions run slower on CPU than one module at a time "
                f"({CPU_CONVOLUTIONS}; family.cpu_convolutions=true uses them anyway)")
    return None


def reduced_precision(cfg: DictConfig) -> bool:
    """Whether ``cfg`` trains in reduced precision (bf16-mixed). Its bfloat16 roundings differ
    from Lightning's autocast beyond the order of sums, so such a module is defined by the family
    trainer wherever it can train it (alone, as a family of one): the same module by every path
    (one fingerprint, one module); only what the family cannot train goes to Lightning."""
    return str(cfg.trainer.get("precision", "32-true")) not in FULL_PRECISION


def cannot_train(cfg: DictConfig, net: nn.Module) -> str | None:
    """Why the family trainer cannot train ``cfg`` (its backbone: ``net``) at all, or None."""
    extra = sorted(k for k in cfg.trainer if k not in TRAINER_KEYS)
    if extra:
        return f"trainer option(s) {extra} are not supported by the family trainer"
    precision = str(cfg.trainer.get("precision", 32))
    if precision not in PRECISIONS:
        return f"precision {precision} is not supported (the family runs {', '.join(PRECISIONS)})"
    for name, cb in phase_callbacks(cfg).items():
        if not isinstance(cb, BestRule | EarlyStopping) or cb.monitor not in VAL_KEYS:
            return (f"callback '{name}' is neither the checkpoint criterion nor EarlyStopping on "
                    f"one of {', '.join(VAL_KEYS)}")
    opt = instantiate(cfg.optimizer)
    opt_name = getattr(getattr(opt, "func", opt), "__name__", str(opt))
    if opt_name not in ELEMENTWISE:
        return f"optimizer {opt_name} is not elementwise"
    odd = [type(m).__name__ for m in net.modules() if isinstance(m, OTHER_DROPOUTS) and m.p > 0]
    if odd:
        return f"{odd[0]} is not supported (only nn.Dropout gets per-member streams)"
    return None


def pick_device(accelerator: str) -> torch.device:
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 4 << 30


def _activations_per_sample(net: nn.Module, input_shape) -> int:
    """Numel of all leaf-module outputs for one sample (what a forward keeps for backward)."""
    leaves = [m for m in net.modules() if not list(m.children())]
    return sum(out.numel() for _, _, out in trace_calls(net, input_shape, leaves))


def plan_sizes(net, input_shape, batch_size: int, device, chunk_size=None, fraction=0.5):
    """(members per chunk, members per evaluation group) that fit in ``fraction`` of free memory:
    per member params + grad + optimizer state + best copy + masks, plus activations."""
    n = sum(p.numel() for p in net.parameters())
    acts = _activations_per_sample(net, input_shape)
    budget = fraction * _free_bytes(device)
    train = 4 * (8 * n + 3 * batch_size * acts)
    chunk = int(chunk_size) if chunk_size else max(1, int(budget // train))
    group = max(1, int(budget / 2 // (4 * 2 * EVAL_BATCH * acts)))
    return chunk, group


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
    first_key: str = ""  # phases.first_phase_key: keys the dropout stream of round 0
    twin: "Member | None" = None  # the dense module that its IMP round 0 yields
    cfg: DictConfig | None = None  # a twin's own config (a dense one)


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


class FamilyTrainer:
    """Trains the members of one chunk: all IMP rounds, then test, then every artifact."""

    def __init__(self, cfg: DictConfig, members: list[Member], device, eval_group: int):
        self.cfg, self.members, self.device, self.group = cfg, members, device, eval_group
        # every sample of the split; a cross-entropy member's own ones are its stream
        self.dm = build_datamodule(cfg, members[0].rewarded, targets="maxent")
        self.per_member = cfg.loss.targets == "cross_entropy"
        self.streams = Streams(self.dm, [m.rewarded for m in members], self.per_member, device)
        self.net, self.theta0, self.theta0_id = init_theta0(
            cfg.model, self.dm.input_shape, self.dm.num_classes, cfg.seed)
        self.net.to(device)
        self.loss = instantiate(cfg.loss)
        assert isinstance(self.loss, MaxEntLoss)
        self.plan = plan(cfg, self.net)
        self.prunable, self.track = list(self.plan.prunable), self.plan.val_metrics
        c = self.dm.num_classes
        labels = torch.arange(c)
        self.tables = torch.stack([make_targets(labels, m.rewarded, c, cfg.loss.targets)
                                   for m in members]).to(device)
        self.train_xy = [t.to(device) for t in (self.dm.train[0], self.dm.train[2])]
        self.val_xy = [t.to(device) for t in (self.dm.val[0], self.dm.val[2])]
        self.train_net = copy.deepcopy(self.net)
        self.drops = stream_dropouts(self.train_net, self.dm.input_shape)
        self.low = torch.bfloat16 if str(cfg.trainer.precision) == "bf16-mixed" else None
        self.low_params = _mixed_precision(self.train_net) if self.low else set()
        self.sparse_below = 0.0 if self.low else float(cfg.family.sparse_below)
        self.linears = (family_linears(self.train_net, self.prunable, self.dm.input_shape)
                        if self.sparse_below > 0 and device.type == "cpu" else {})
        self.buffers = [n for n, _ in self.net.named_buffers()]
        self.fwd = vmap(self._forward, in_dims=(0, None, 0, 0), randomness="same")
        self.fwd_each = vmap(self._forward, in_dims=(0, 0, 0, 0), randomness="same")
        self.orders = self._grad_layouts()
        self.optimizer = instantiate(cfg.optimizer)
        if cfg.family.fused_optimizer:
            self.optimizer = _fused(self.optimizer)

    def _grad_layouts(self) -> dict[str, list[int]]:
        """Dimension order (members first) in which vmap's backward lays out each gradient."""
        probe = {n: p.detach().expand(2, *p.shape).clone().requires_grad_()
                 for n, p in self.net.named_parameters()}
        buffers = {n: b.expand(2, *b.shape).clone() for n, b in self.net.named_buffers()}
        out = self.fwd(probe | buffers, self.train_xy[0][:2], [],
                       torch.zeros(2, device=self.device))
        grads = torch.autograd.grad(out.sum(), list(probe.values()), allow_unused=True)
        return {n: [0, *sorted(range(1, p.dim()), key=lambda d: (-g.stride(d), d))]
                if g is not None else list(range(p.dim()))
                for (n, p), g in zip(probe.items(), grads, strict=True)}

    def _forward(self, params, x, keep, token):
        """One member's logits; ``params``: its parameters and buffers; ``keep``: its dropout
        keep-masks (none: no dropout); ``token``: its entry of a member-batched tensor, handed
        to the sparse layers."""
        for (module, _), mask in zip(self.drops, keep, strict=False):
            module.mask = mask
        for module in self.linears.values():
            module.token = token
        if self.low:  # bf16-mixed: bfloat16 products, float32 normalization and leaves
            params = {n: v.to(self.low) if n in self.low_params else v for n, v in params.items()}
            x = x.to(self.low)
        try:
            return functional_call(self.train_net, params, (x,))
        finally:
            for module, _ in self.drops:
                module.mask = None
            for module in self.linears.values():
                module.token = None

    def _losses(self, params, tables, x, y, keep=(), sparse=None, weight=None):
        """Per-member batch-mean KL(ỹ ‖ softmax(z/T)), shape (K,), and the logits. ``x``, ``y``:
        one batch for all members, or (K, B, ...) one per member; ``weight`` (K, B): each
        sample's share of its member's mean (None: the plain mean). ``sparse``: the Stack whose
        sparse weights complete ``params``."""
        for n, state in (sparse.sparse() if sparse else {}).items():
            self.linears[n].sparse = state
        each = y.dim() == 2
        try:
            logits = (self.fwd_each if each else self.fwd)(
                params, x, list(keep), torch.zeros(len(tables), device=self.device)).float()
        finally:
            for module in self.linears.values():
                module.sparse = None
        targets = tables[torch.arange(len(tables), device=y.device)[:, None], y] if each \
            else tables[:, y]
        kl = kl_to_target(self.loss.scale(logits), targets)
        return (kl.mean(-1) if weight is None else (kl * weight).sum(-1)), logits

    def _keep_masks(self, gens: list[torch.Generator], batch: int) -> list[torch.Tensor]:
        """Dropout keep-masks scaled by 1/(1-p), (K, batch, ...) per dropout layer, each
        member's drawn from its own generator: independent of the other members."""
        return [keep_mask(gens, (batch, *shape), module.p, self.device, 1.0 / (1.0 - module.p),
                          self.low) for module, shape in self.drops]

    def train_epoch(self, stack: Stack, rows: list[int], gens):
        """One epoch of the members ``rows``; their mean training losses (when tracked)."""
        x_all, y_all = self.train_xy
        total = torch.zeros(len(stack), device=self.device)
        self.train_net.train()
        for batch in self.streams.epoch(rows):
            keep = ()
            if self.drops:  # a full batch of draws each step, as dropout.py specifies
                keep = [k[:, :batch.size] for k in self._keep_masks(gens, self.dm.batch_size)]
            losses, _ = self._losses(stack.state(), stack.tables, x_all[batch.index],
                                     y_all[batch.index], keep, sparse=stack, weight=batch.weight)
            stack.opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            stack.opt.step()
            stack.mask_weights()
            if self.track:
                count = batch.size if batch.weight is None else (batch.weight > 0).sum(1)
                total += losses.detach() * count
        return total / torch.tensor([self.streams.samples(k) for k in rows], device=self.device)

    @torch.no_grad()
    def val_losses(self, stack: Stack, rows: list[int]):
        """val/loss per row, accumulated over val batches exactly as Lightning's epoch mean
        (per-member streams: over the member's own validation samples)."""
        x_all, y_all = self.val_xy
        value, count = torch.zeros(len(stack), device=self.device), 0
        weights = self.streams.val_weight
        own = None if weights is None else self.streams.val_keep[rows]
        metrics = [self._val_metrics(self.members[k]) for k in rows] if self.track else []
        whole = self.group >= len(stack)  # one group: the training step's (sparse) products
        size, params = self.dm.eval_batch_size, stack.state() if whole else stack.dense_state()
        self.train_net.eval()  # BatchNorm: the running statistics
        for s in range(0, len(y_all), size):
            x, y = x_all[s:s + size], y_all[s:s + size]
            parts = []
            for g in range(0, len(stack), self.group):
                sub = {n: p[g:g + self.group] for n, p in params.items()}
                w = None if weights is None else weights[rows[g:g + self.group], s:s + size]
                losses, logits = self._losses(sub, stack.tables[g:g + self.group], x, y,
                                              sparse=stack if whole else None, weight=w)
                parts.append(losses if w is not None else losses * len(y))
                for i, z in enumerate(self.loss.scale(logits) if metrics else []):
                    keep = slice(None) if own is None else own[g + i, s:s + size]
                    metrics[g + i].update(z[keep].cpu(), y[keep].cpu())
            value = value + torch.cat(parts)
            count += len(y)
        val = (value if weights is not None else
               value / torch.tensor(count, device=self.device)).cpu()
        extra = [{f"val/{k}": float(v) for k, v in m.compute().items()} for m in metrics]
        for m in metrics:
            m.reset()
        return val, extra

    def _val_metrics(self, m: Member):
        if m.val_metrics is None:
            m.val_metrics = evaluation_metrics(m.rewarded, self.dm.num_classes)
        return m.val_metrics

    def run_phase(self, phase: Phase) -> None:
        r = phase.round
        rows = [k for k, m in enumerate(self.members) if m.start <= r]
        if not rows:
            return
        masks = {n: torch.stack([self.members[k].masks[n] for k in rows]).to(
            self.device, torch.get_default_dtype()) for n in self.prunable}
        alive = {n: float(masks[n].mean()) for n in self.linears}
        sparse = {n for n, lin in self.linears.items()
                  if lin.weight.numel() >= SPARSE_MIN_WEIGHTS and alive[n] < self.sparse_below}
        stack = Stack(self.theta0, masks, self.tables[rows], self.optimizer, self.orders,
                      self.device, sparse, self.buffers)
        for k in rows:
            m = self.members[k]
            begin_round(m.loggers, r)
            m.keeper, *others = phase_callbacks(self.cfg).values()
            m.stoppers = [StopRule(cb) for cb in others]
            m.best, m.last = None, None
        gens = {k: generator(self.members[k].first_key if r == 0 else
                             self.members[k].fingerprint, r) for k in rows}
        phase.begin(self.dm)
        self.streams.begin(phase.shuffle_seed)
        epochs = phase.epochs
        log.info("family %s: %d module(s), up to %d epochs%s", self.plan.label(phase) or "dense",
                 len(rows), epochs, "".join(f", {n} sparse ({alive[n]:.1%} alive)"
                                            for n in sorted(sparse)))
        for epoch in range(epochs):
            train_loss = self.train_epoch(stack, rows, [gens[k] for k in rows])
            val, extra = self.val_losses(stack, rows)
            stopped = []
            for i, k in enumerate(rows):
                m = self.members[k]
                m.steps += self.streams.steps(k)
                row = {"epoch": epoch, "train/loss": float(train_loss[i]),
                       "val/loss": float(val[i]), **(extra[i] if self.track else {})}
                for logger in m.loggers + (m.twin.loggers if m.twin and r == 0 else []):
                    logger.log_metrics(row, step=m.steps)
                if m.keeper.update(row[m.keeper.monitor], epoch):  # RestoreBestWeights
                    m.best = stack.row(i)
                if any([rule.should_stop(torch.tensor(row[rule.callback.monitor]))
                        for rule in m.stoppers]):
                    m.stop_epochs.append(epoch + 1)
                    m.last = stack.row(i)
                    stopped.append(i)
            if stopped:
                keep = [i for i in range(len(rows)) if i not in stopped]
                rows = [rows[i] for i in keep]
                if not rows:
                    break
                stack.keep(keep)
        for i, k in enumerate(rows):
            self.members[k].stop_epochs.append(epochs)
            self.members[k].last = stack.row(i)
        self._end_phase(phase)

    def _end_phase(self, phase: Phase) -> None:
        """Restore each member's best weights; before the final phase prune and record."""
        for m in self.members:
            if m.start > phase.round:
                continue
            m.weights = m.best if m.best is not None else m.last
            what = f"module R={m.rewarded} seed={self.cfg.seed} in IMP phase {phase.round}"
            try:
                moduledir.check_phase(m.keeper, m.weights, what)
            except moduledir.Diverged as err:
                m.failed, m.start = str(err), self.plan.rounds + 1
                continue
            if phase.final:
                continue
            if phase.round == 0 and m.twin is not None:  # its round 0 is this dense module
                m.twin.weights, m.twin.stop_epochs = m.weights, m.stop_epochs[:1]
                m.twin.steps = m.steps
            m.masks = self.plan.next_masks(m.weights, m.masks)
            moduledir.save_round(m.out_dir, phase.round, m.masks, m.fingerprint, m.keeper,
                                 m.stop_epochs)

    def finish(self, members: list[Member], wall_s: float) -> list[dict]:
        """Test the members together (one ``Trainer.test`` of a plan with one net each, a
        module's scores its own), then write each one's module.pt, confusion.png (where
        ``figures`` asks for it), loggers and metrics.json (last)."""
        cfg, dm = self.cfg, self.dm
        if not members:
            return []
        figure = wants_figures(cfg)
        plan, nets = Plan(), []
        for i, m in enumerate(members):
            net = copy.deepcopy(self.net)
            net.load_state_dict({n: w.cpu() for n, w in m.weights.items()})
            nets.append(net)
            plan.add(str(i), plan.net(net), m.rewarded)
        x, _, y = dm.test
        cuda = self.device.type == "cuda"
        trainer = lean_trainer("gpu" if cuda else "cpu", [self.device.index or 0] if cuda else 1,
                               cfg.trainer.get("precision", "32-true"))
        scores = run_plan(plan, {"test": (x, y)}, dm.num_classes, self.loss.temperature, trainer,
                          targets=cfg.loss.targets, batch_size=dm.eval_batch_size)
        return [self._store(m, net, scores[str(i)], wall_s, figure)
                for i, (m, net) in enumerate(zip(members, nets, strict=True))]

    def _store(self, m: Member, net: nn.Module, res: dict, wall_s: float, figure: bool) -> dict:
        """One tested member's artifacts, loggers and done marker."""
        cfg, dm = self.cfg, self.dm
        res = dict(res)
        res.pop("class_entropy")
        confusion = res.pop("confusion")
        state = {k: v.detach() for k, v in net.state_dict().items()}
        metrics = moduledir.save_trained(
            m.out_dir, cfg.seed, dm, m.rewarded, {f"test/{k}": v for k, v in res.items()},
            confusion, state, m.masks, m.spec, m.fingerprint, self.theta0_id,
            self.loss.temperature, m.stop_epochs, wall_s, figure=figure)
        for logger in m.loggers:
            logger.log_metrics({k: v for k, v in metrics.items() if k.startswith("test/")},
                               step=m.steps)
            logger.save()
            logger.finalize("success")
        log_trained(m.loggers, m.out_dir, metrics, figure, dm.splits.classes)
        finish_loggers(m.loggers)
        moduledir.mark_done(m.out_dir, metrics)
        return metrics


def _member(cfg: DictConfig, rewarded, out_dir: Path, num_classes: int, name: str) -> Member:
    spec = module_spec(cfg, rewarded)
    fingerprint = spec_fingerprint(spec)
    check_split_samples(data_source(cfg), check_rewarded(rewarded, num_classes, name),
                        cfg.data.val_fraction, cfg.data.split_seed)  # every member's classes
    return Member(check_rewarded(rewarded, num_classes, name), Path(out_dir), fingerprint, spec,
                  masks={}, start=0, first_key=first_phase_key(cfg, rewarded))


@contextmanager
def _deterministic(setting):
    """``trainer.deterministic`` as Lightning applies it to a fit (true: torch's deterministic
    algorithms, "warn": the same with warnings instead of errors), undone afterwards."""
    if setting is None:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    if setting:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(bool(setting), warn_only=setting == "warn")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def _train_chunk(cfg, members: list[Member], device, group: int) -> list[dict]:
    start_time = time.perf_counter()
    trainer = FamilyTrainer(cfg, members, device, group)
    phases = trainer.plan
    for k, m in enumerate(members):
        resumed = moduledir.resume_point(m.out_dir, m.fingerprint, phases.rounds)
        m.masks, m.start, m.stop_epochs = resumed or (phases.full_masks(trainer.net), 0, [])
        m.masks = {n: v.cpu() for n, v in m.masks.items()}
        m.steps = sum(m.stop_epochs) * trainer.streams.steps(k)  # resumed rounds
        m.loggers = build_loggers(cfg, m.out_dir, module_run_name(cfg, m.rewarded, m.fingerprint),
                                  config=module_config(cfg, m.rewarded, m.fingerprint))
        if m.twin is not None and m.start > 0:  # round 0 is done: the twin trains on its own
            m.twin = None
        if (t := m.twin) is not None:
            t.masks = {n: v.cpu() for n, v in plan(t.cfg, trainer.net).full_masks(
                trainer.net).items()}
            t.loggers = build_loggers(t.cfg, t.out_dir, module_run_name(
                t.cfg, t.rewarded, t.fingerprint), config=module_config(
                t.cfg, t.rewarded, t.fingerprint))
    twins = [m.twin for m in members if m.twin is not None]
    with (_deterministic(cfg.trainer.get("deterministic")), reused_host_memory(),
          denormals_flushed(cfg.flush_denormals)):
        for phase in phases.phases[min(m.start for m in members):]:
            trainer.run_phase(phase)
    share = (time.perf_counter() - start_time) / len(members)
    trainer.net.cpu()
    done = [m for m in members if m.failed is None]
    stored = trainer.finish(done + [t for t in twins if t.weights is not None], share)
    results = stored[:len(done)]
    failed = [m.failed for m in members if m.failed is not None]
    for m in members + twins:
        if m.failed is not None or m.weights is None:
            finish_loggers(m.loggers, failed=True)
    if failed:
        raise moduledir.Diverged(f"{failed[0]} ({len(failed)} of {len(members)} modules "
                                 f"diverged; the other {len(results)} were stored)")
    return results


def passes(cfg: DictConfig, sets: list, chunk: int) -> list[list[int]]:
    """The rewarded ``sets`` (their indices) in training passes of up to ``chunk``; with
    per-member streams (cross-entropy) a pass holds sets of equally many steps per epoch (the
    members of a stack share the optimizer's step count)."""
    groups = {}
    if cfg.loss.targets == "cross_entropy" and sets:
        labels = build_datamodule(cfg, sets[0], targets="maxent").train[2]
        for i, r in enumerate(sets):
            groups.setdefault(steps_per_epoch(labels, r, int(cfg.data.batch_size)), []).append(i)
    else:
        groups[0] = list(range(len(sets)))
    return [ix[s:s + chunk] for _, ix in sorted(groups.items()) for s in range(0, len(ix), chunk)]


def train_family(cfg: DictConfig, jobs, twins=None) -> list[dict]:
    """Train the ``(rewarded, out_dir)`` modules of one seed together (chunked to fit memory),
    skipping finished ones; every member directory is locked while its chunk trains.
    ``twins``: {rewarded tuple: (dense config, out_dir)}, the dense modules whose training is
    the IMP round 0 of these (``first_phase_key``): stored from it, not trained again."""
    validate(cfg)
    src = data_source(cfg)
    device = pick_device(str(cfg.trainer.get("accelerator", "auto")))
    probe = build_net(cfg.model, src.input_shape, src.num_classes)
    chunk, group = plan_sizes(probe, src.input_shape, int(cfg.data.batch_size), device,
                              cfg.family.chunk_size)
    members, results = {}, {}
    for rewarded, out_dir in jobs:
        m = _member(cfg, rewarded, out_dir, src.num_classes, cfg.data.name)
        key = str(m.out_dir.resolve())
        if key not in members:
            members[key] = m
    for key, m in members.items():
        if (done := moduledir.finished_module(m.out_dir, m.fingerprint)) is not None:
            results[key] = done
    todo = [m for key, m in members.items() if key not in results]
    for m in todo:
        if (twin := (twins or {}).get(tuple(m.rewarded))) is not None:
            m.twin = _member(twin[0], m.rewarded, twin[1], src.num_classes, cfg.data.name)
            m.twin.cfg = twin[0]
            if m.twin.first_key != m.first_key:
                raise ValueError(f"{twin[1]} is not the round 0 of R={m.rewarded}")
    parts = [sorted((todo[i] for i in ix), key=lambda m: str(m.out_dir.resolve()))
             for ix in passes(cfg, [m.rewarded for m in todo], chunk)]
    log.info("family training: %d module(s) of seed %s in %d pass(es) of up to %d, on %s",
             len(todo), cfg.seed, len(parts), chunk, device)
    for part in parts:
        with ExitStack() as locks:
            dirs = [m.out_dir for m in part] + [m.twin.out_dir for m in part if m.twin]
            for d in sorted(dirs, key=lambda d: str(d.resolve())):
                locks.enter_context(moduledir.locked(d))
            ready = []
            for m in part:  # another process may have finished it meanwhile
                if m.twin and moduledir.finished_module(m.twin.out_dir, m.twin.fingerprint):
                    m.twin = None
                if (done := moduledir.finished_module(m.out_dir, m.fingerprint)) is not None:
                    results[str(m.out_dir.resolve())] = done
                else:
                    ready.append(m)
            if ready:
                for m, metrics in zip(ready, _train_chunk(cfg, ready, device, group), strict=True):
                    results[str(m.out_dir.resolve())] = metrics
    return [results[str(Path(d).resolve())] for _, d in jobs]
