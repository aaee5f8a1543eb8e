"""FamilyTrainer: the members of one pass through every phase of the plan, then tested and stored.

Every batch goes through all K members at once (``torch.func.vmap`` over ``functional_call``);
each member's dropout masks come from its own stream (``dropout.py``). The rest is the phase plan
(``phases.py``) that the sequential trainer executes too: same θ0, batch order per phase,
gradient/weight masking, Lightning's EarlyStopping rule, best-validation restore, IMP pruning,
and the same artifacts in each member's directory (``modulerun.py``).
"""

import copy
import logging
import time

import torch
from hydra.utils import instantiate
from torch import nn
from torch.func import functional_call, vmap

from ..builders import build_datamodule, init_theta0
from ..dropout import generator, keep_mask, stream_dropouts
from ..evaluate import Evaluation, lean_trainer, run_evaluation
from ..loss import MaxEntLoss, batch_means, kl_to_target
from ..metrics import evaluation_metrics
from ..modulerun import Diverged
from ..phases import Phase, StopRule, phase_callbacks, schedule
from ..recipe import Recipe
from ..targets import make_targets
from .member import Member
from .mlp import StackedMLP, mlp_layers
from .sparse import family_linears
from .stack import Stack, fused
from .streams import Streams

log = logging.getLogger(__package__)  # maxent_lightning.family, as for the whole family

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)
# Smaller Linear weights keep dense products: theirs cost less than a sparse product's overhead.
SPARSE_MIN_WEIGHTS = 1 << 16


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


class FamilyTrainer:
    """Trains the members of one chunk: all IMP rounds, then test, then every artifact."""

    def __init__(self, recipe: Recipe, members: list[Member], device, eval_group: int):
        self.recipe, self.members, self.device, self.group = recipe, members, device, eval_group
        # every sample of the split; a cross-entropy member's own ones are its stream
        self.dm = build_datamodule(recipe, members[0].rewarded, targets="maxent")
        self.per_member = recipe.loss.targets == "cross_entropy"
        self.streams = Streams(self.dm, [m.rewarded for m in members], self.per_member, device)
        self.net, self.theta0, self.theta0_id = init_theta0(
            recipe.model, self.dm.input_shape, self.dm.num_classes, recipe.seed)
        self.net.to(device)
        self.loss = instantiate(recipe.loss)
        assert isinstance(self.loss, MaxEntLoss)
        self.schedule = schedule(recipe, self.net)
        self.prunable, self.track = list(self.schedule.prunable), self.schedule.val_metrics
        c = self.dm.num_classes
        labels = torch.arange(c)
        self.tables = torch.stack([make_targets(labels, m.rewarded, c, recipe.loss.targets)
                                   for m in members]).to(device)
        self.train_xy = [t.to(device) for t in (self.dm.train[0], self.dm.train[2])]
        self.val_xy = [t.to(device) for t in (self.dm.val[0], self.dm.val[2])]
        self.train_net = copy.deepcopy(self.net)
        self.drops = stream_dropouts(self.train_net, self.dm.input_shape)
        self.low = torch.bfloat16 if str(recipe.trainer.precision) == "bf16-mixed" else None
        self.low_params = _mixed_precision(self.train_net) if self.low else set()
        self.sparse_below = 0.0 if self.low else float(recipe.family.sparse_below)
        self.linears = (family_linears(self.train_net, self.prunable, self.dm.input_shape)
                        if self.sparse_below > 0 and device.type == "cpu" else {})
        self.buffers = [n for n, _ in self.net.named_buffers()]
        self.fwd = vmap(self._forward, in_dims=(0, None, 0, 0), randomness="same")
        self.fwd_each = vmap(self._forward, in_dims=(0, 0, 0, 0), randomness="same")
        layers = (mlp_layers(self.train_net, self.drops)
                  if recipe.family.explicit_mlp and not self.low and device.type == "cpu" else None)
        self.mlp = StackedMLP(layers, self.loss) if layers else None
        self.orders = self._grad_layouts()
        self.optimizer = instantiate(recipe.optimizer)
        if recipe.family.fused_optimizer:
            self.optimizer = fused(self.optimizer)

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
            if sparse is not None and self._written_out(sparse):  # validation, pruned phase
                logits = self.mlp.logits(sparse, x, each)
            else:
                logits = (self.fwd_each if each else self.fwd)(
                    params, x, list(keep), torch.zeros(len(tables), device=self.device)).float()
        finally:
            for module in self.linears.values():
                module.sparse = None
        kl = kl_to_target(self.loss.scale(logits), self._targets(tables, y))
        return batch_means(kl, weight), logits

    def _written_out(self, stack: Stack) -> bool:
        """Whether the steps on ``stack`` are mlp.py's: an MLP in a phase with sparse products."""
        return self.mlp is not None and bool(stack.patterns)

    @staticmethod
    def _targets(tables: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(K, B, C) targets of the labels ``y``: (B,) shared, or (K, B) one row per member."""
        if y.dim() == 2:
            return tables[torch.arange(len(tables), device=y.device)[:, None], y]
        return tables[:, y]

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
            x, y = x_all[batch.index], y_all[batch.index]
            stack.opt.zero_grad(set_to_none=True)
            if self._written_out(stack):
                losses = self.mlp.step(stack, x, self._targets(stack.tables, y), y.dim() == 2,
                                       keep, batch.weight)
            else:
                losses, _ = self._losses(stack.state(), stack.tables, x, y, keep, sparse=stack,
                                         weight=batch.weight)
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
        # what each row trains: its member's round r and, in round 0, its dense twin's
        # training (of its own length: this row serves both until both have ended)
        runs = {k: [(self.members[k], phase.epochs)] for k in rows}
        for k in rows:
            if r == 0 and (twin := self.members[k].twin) is not None:
                runs[k].append((twin, twin.epochs))
            for run, _ in runs[k]:
                run.begin_round(r)
                run.keeper, *others = phase_callbacks(run.recipe).values()
                run.stoppers = [StopRule(cb) for cb in others]
                run.best, run.last = None, None
        gens = {k: generator(self.members[k].first_key if r == 0 else
                             self.members[k].fingerprint, r) for k in rows}
        phase.begin(self.dm)
        self.streams.begin(phase.shuffle_seed)
        epochs = max(end for k in rows for _, end in runs[k])
        entries = sum(m.numel() for m in masks.values())
        share = sum(float(m.sum()) for m in masks.values()) / entries if entries else 1.0
        twins = sum(len(runs[k]) - 1 for k in rows)
        log.info("family %s: %d module(s), up to %d epochs%s%s",
                 self.schedule.label(phase) or "dense", len(rows), epochs,
                 f" ({twins} with their dense twin)" if twins else "",
                 "".join(f", {n} sparse ({alive[n]:.1%} alive)" for n in sorted(sparse)))
        for epoch in range(epochs):
            began, cpu = time.perf_counter(), time.process_time()
            train_loss = self.train_epoch(stack, rows, [gens[k] for k in rows])
            val, extra = self.val_losses(stack, rows)
            seconds = time.perf_counter() - began  # and in the record, for benchmarks/bench.py
            log.info("family %s epoch %d/%d: %d module(s), mean val/loss %.4f, %.1f s",
                     self.schedule.label(phase) or "dense", epoch + 1, epochs, len(rows),
                     float(val.mean()), seconds,
                     extra={"epoch_s": seconds, "epoch_cpu_s": time.process_time() - cpu,
                            "round": r, "alive": share})
            ended = []
            for i, k in enumerate(rows):
                row = {"epoch": epoch, "train/loss": float(train_loss[i]),
                       "val/loss": float(val[i]), **(extra[i] if self.track else {})}
                runs[k] = self._epoch_end(runs[k], row, epoch, stack, i, self.streams.steps(k))
                if not runs[k]:
                    ended.append(i)
            if ended:
                keep = [i for i in range(len(rows)) if i not in ended]
                rows = [rows[i] for i in keep]
                if not rows:
                    break
                stack.keep(keep)
        self._end_phase(phase)

    @staticmethod
    def _epoch_end(runs, row: dict, epoch: int, stack: Stack, i: int, steps: int) -> list:
        """Log an epoch's ``row`` for each (module, last epoch) of stack row ``i``, keep its
        best weights and apply its stopping rules: the runs still training."""
        state, going = None, []
        for run, end in runs:
            run.steps += steps
            for logger in run.loggers:
                logger.log_metrics(row, step=run.steps)
            if run.keeper.update(row[run.keeper.monitor], epoch):  # RestoreBestWeights
                run.best = state = state or stack.row(i)
            if (any([rule.should_stop(torch.tensor(row[rule.callback.monitor]))
                     for rule in run.stoppers]) or epoch + 1 == end):
                run.stop_epochs.append(epoch + 1)
                run.last = state = state or stack.row(i)
            else:
                going.append((run, end))
        return going

    def _end_phase(self, phase: Phase) -> None:
        """Restore each member's (and dense twin's) best weights; before the final phase prune
        and record."""
        for m in self.members:
            if m.start > phase.round:
                continue
            for run in [m, m.twin] if phase.round == 0 and m.twin is not None else [m]:
                run.weights = run.best if run.best is not None else run.last
                try:
                    run.check_round(phase, run.keeper, run.weights)
                except Diverged as err:
                    run.failed, run.weights = str(err), None
            if m.failed is not None:
                m.start = self.schedule.rounds + 1
            elif not phase.final:
                m.end_round(phase, m.keeper, self.schedule.next_masks(m.weights, m.masks))

    def finish(self, members: list[Member], wall_s: float) -> list[dict]:
        """Test the members together (one ``Trainer.test`` of a plan with one net each, a
        module's scores its own), then store each one (``ModuleRun.store``)."""
        recipe, dm = self.recipe, self.dm
        if not members:
            return []
        evaluation, nets = Evaluation(), []
        for i, m in enumerate(members):
            net = copy.deepcopy(self.net)
            net.load_state_dict({n: w.cpu() for n, w in m.weights.items()})
            nets.append(net)
            evaluation.add(str(i), evaluation.net(net), m.rewarded)
        x, _, y = dm.test
        cuda = self.device.type == "cuda"
        trainer = lean_trainer("gpu" if cuda else "cpu", [self.device.index or 0] if cuda else 1,
                               recipe.trainer.get("precision", "32-true"))
        scores = run_evaluation(evaluation, {"test": (x, y)}, dm.num_classes,
                                self.loss.temperature, trainer, targets=recipe.loss.targets,
                                batch_size=dm.eval_batch_size)
        return [self._store(m, net, scores[str(i)], wall_s)
                for i, (m, net) in enumerate(zip(members, nets, strict=True))]

    def _store(self, m: Member, net: nn.Module, res: dict, wall_s: float) -> dict:
        """One tested member stored, its test scores logged here (no Lightning test did)."""
        res = dict(res)
        res.pop("class_entropy")
        confusion = res.pop("confusion")
        state = {k: v.detach() for k, v in net.state_dict().items()}
        return m.store(state, {f"test/{k}": v for k, v in res.items()}, confusion, wall_s,
                       log_test=True)
