"""Evaluation through Lightning: the named candidates of a job (modules alone, weight sums,
logit averages, path points) scored by one ``Trainer.test`` of a thin LightningModule.

A candidate's logits are a weighted sum of the logits of some of the plan's nets: a module
alone is ``[(i, 1.0)]``, a logit average ``[(i, w_i), (j, w_j)]``, a weight sum its merged net.
Each net runs once per batch however many candidates read it, so the ``complete`` task's k
logit averages cost n forward passes, not n(n+1)/2. Memory: every net of the plan is resident
on the device (n modules: n times a module's parameters); activations and logits are those of
one batch; nothing of the size of the test set is kept. Nets marked ``calibrate`` get their
BatchNorm statistics recomputed on the ``calibrate`` split first (dataloader 0, batches of
``CALIBRATION_BATCH``), as an exact average over its batches."""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import lightning as L
import torch
from torch import nn

from .composition import begin_calibration, end_calibration
from .data.datamodule import batch_loader
from .loss import kl_to_target
from .metrics import confusion_matrix, evaluation_metrics
from .targets import make_targets

CALIBRATION_BATCH = 256
METRICS = ("rewarded_acc", "nonrewarded_entropy", "acc", "loss")


@dataclass
class Candidate:
    name: str
    terms: list[tuple[int, float]]  # (net index, weight): logits Σ w · net(x)
    rewarded: list[int]
    split: str = "test"


class Evaluation:
    """The nets and candidates of one evaluation."""

    def __init__(self):
        self.nets: list[nn.Module] = []
        self.calibrate: list[int] = []
        self.candidates: list[Candidate] = []

    def net(self, net: nn.Module, calibrate: bool = False) -> int:
        self.nets.append(net)
        if calibrate:
            self.calibrate.append(len(self.nets) - 1)
        return len(self.nets) - 1

    def add(self, name: str, terms, rewarded: Sequence[int], split: str = "test") -> str:
        terms = [(terms, 1.0)] if isinstance(terms, int) else [(int(i), float(w)) for i, w in terms]
        self.candidates.append(Candidate(name, terms, [int(c) for c in rewarded], split))
        return name

    def splits(self) -> list[str]:
        return list(dict.fromkeys(c.split for c in self.candidates))


class CandidateTester(L.LightningModule):
    """Scores every candidate of a plan in one test epoch: rewarded accuracy, non-rewarded
    entropy, accuracy, KL loss against ``targets`` built for its rewarded set, confusion and
    per-class mean entropy; every score NaN when an output of the candidate is not finite."""

    def __init__(self, evaluation: Evaluation, num_classes: int, temperature: float,
                 targets: str = "maxent"):
        super().__init__()
        self.nets = nn.ModuleList(evaluation.nets)
        self.calibrate, self.candidates = list(evaluation.calibrate), list(evaluation.candidates)
        self.num_classes, self.temperature, self.targets = num_classes, temperature, targets
        self.stages = (["calibrate"] if self.calibrate else []) + evaluation.splits()
        self.scores = nn.ModuleList(evaluation_metrics(c.rewarded, num_classes)
                                    for c in self.candidates)
        self.confusions = nn.ModuleList(confusion_matrix(num_classes) for _ in self.candidates)
        self.results: dict[str, dict] = {}

    def on_test_start(self) -> None:
        n, c = len(self.candidates), self.num_classes
        self.sums = {"loss": torch.zeros(n, dtype=torch.float64, device=self.device),
                     "count": torch.zeros(n, dtype=torch.int64, device=self.device),
                     "finite": torch.ones(n, dtype=torch.bool, device=self.device),
                     "entropy": torch.zeros(n, c, dtype=torch.float64, device=self.device),
                     "per_class": torch.zeros(c, dtype=torch.int64, device=self.device)}
        self.momenta = [begin_calibration(self.nets[i]) for i in self.calibrate]

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        x, y = batch
        stage = self.stages[dataloader_idx]
        if stage == "calibrate":
            for i in self.calibrate:
                self.nets[i].train()(x)
            return
        if self.momenta is not None:  # calibration over: eval mode, usual momentum
            for i, momenta in zip(self.calibrate, self.momenta, strict=True):
                end_calibration(self.nets[i], momenta)
            self.momenta = None
        which = [k for k, c in enumerate(self.candidates) if c.split == stage]
        logits = {i: self.nets[i](x).float()
                  for i in dict.fromkeys(i for k in which for i, _ in self.candidates[k].terms)}
        for k in which:
            cand = self.candidates[k]
            scaled = sum(w * logits[i] for i, w in cand.terms) / self.temperature
            self.sums["finite"][k] &= torch.isfinite(scaled).all()
            self.scores[k].update(scaled, y)
            self.confusions[k].update(scaled, y)
            target = make_targets(y, cand.rewarded, self.num_classes, self.targets)
            self.sums["loss"][k] += kl_to_target(scaled, target).double().sum()
            self.sums["count"][k] += len(y)
            log_p = torch.log_softmax(scaled.double(), dim=-1)
            entropy = -(log_p.exp() * log_p).sum(-1)
            self.sums["entropy"][k].index_add_(0, y, entropy)

    def on_test_epoch_end(self) -> None:
        sums = {k: v.cpu() for k, v in self.sums.items()}
        for k, cand in enumerate(self.candidates):
            values = {m: float(v) for m, v in self.scores[k].compute().items()}
            values["loss"] = float(sums["loss"][k] / max(int(sums["count"][k]), 1))
            confusion = self.confusions[k].compute().cpu()
            counts = confusion.sum(1).double()
            values["class_entropy"] = (sums["entropy"][k] / counts).float().tolist()
            if not sums["finite"][k]:  # an argmax over NaN would name class 0 "correct"
                values = {m: (math.nan if m != "class_entropy" else [math.nan] * len(v))
                          for m, v in values.items()}
            values["confusion"] = confusion
            self.results[cand.name] = values
            self.log_dict({f"{cand.name}/{m}": values[m] for m in METRICS},
                          add_dataloader_idx=False)


def lean_trainer(accelerator="auto", devices=1, precision="32-true") -> L.Trainer:
    """A Trainer for evaluation only: no logger, checkpoints, summary or progress bar."""
    return L.Trainer(accelerator=accelerator, devices=devices, precision=precision,
                     logger=False, enable_checkpointing=False, enable_model_summary=False,
                     enable_progress_bar=False, num_sanity_val_steps=0)


def run_evaluation(evaluation: Evaluation, data: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
             num_classes: int, temperature: float, trainer: L.Trainer | None = None,
             targets: str = "maxent", batch_size: int = 1000) -> dict[str, dict]:
    """{candidate name: scores} of every candidate of ``evaluation``; ``data``: (x, labels) of each
    split the candidates name (and of ``calibrate`` when a net is calibrated)."""
    tester = CandidateTester(evaluation, num_classes, float(temperature), targets)
    loaders = [batch_loader(data[s], CALIBRATION_BATCH if s == "calibrate" else batch_size)
               for s in tester.stages]
    (trainer or lean_trainer()).test(tester, dataloaders=loaders, verbose=False)
    for net in evaluation.nets:
        net.cpu()
    return tester.results
