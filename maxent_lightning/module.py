"""LightningModule that wraps any backbone with the MaxEnt loss and evaluation metrics."""

import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import lightning as L
import torch
from torch import nn

from .builders import build_net, trust_backbone
from .errors import UserError
from .loss import MaxEntLoss
from .metrics import confusion_matrix, evaluation_metrics
from .storage import LOSS_TARGET, CorruptFile, load_torch, record_of
from .targets import TARGET_KINDS


class MaxEntModule(L.LightningModule):
    """One subnetwork module: a backbone trained to classify ``rewarded`` and stay uniform
    elsewhere. Batches are ``(x, target distribution, label)``. ``val_metrics=False``: validation
    logs the loss only (when neither a logger nor a callback reads the other metrics).

    ``net`` and ``loss`` may be the configs a module checkpoint records (a backbone config needs
    ``input_shape``): so a trained module's ``module.pt`` loads with
    ``MaxEntModule.load_from_checkpoint(path)``, which verifies the whole file first and restores
    its pruning ``masks``. Recorded configs never run code: the backbone must be one of the
    project's or named in ``backbones`` (your own classes), the loss is MaxEntLoss."""

    def __init__(
        self,
        net: nn.Module | Mapping,
        loss: MaxEntLoss | Mapping,
        rewarded: Sequence[int],
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        val_metrics: bool = True,
        input_shape: Sequence[int] | None = None,
        backbones: Sequence[str] = (),
    ):
        super().__init__()
        for target in backbones:
            trust_backbone(target)
        if isinstance(net, Mapping):
            net = build_net(net, input_shape, num_classes, where="the checkpoint")
        if isinstance(loss, Mapping):
            loss = recorded_loss(loss)
        self.masks: dict[str, torch.Tensor] = {}
        self.net, self.loss = net, loss
        self.rewarded, self.num_classes = list(rewarded), num_classes
        self.optimizer_factory = optimizer or (lambda params: torch.optim.Adam(params, lr=1e-3))
        self.val_metrics = (evaluation_metrics(rewarded, num_classes).clone(prefix="val/")
                            if val_metrics else None)
        self.test_metrics = evaluation_metrics(rewarded, num_classes).clone(prefix="test/")
        self.test_confusion = confusion_matrix(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tempered logits z/T, the quantity every metric is computed on."""
        return self.loss.scale(self.net(x))

    def on_train_epoch_start(self) -> None:
        self._train_loss = [torch.zeros((), device=self.device), 0]

    def training_step(self, batch, batch_idx):
        x, target, _ = batch
        loss = self.loss(self.net(x), target)
        # The epoch mean is accumulated here and logged once: a self.log per step costs more
        # than a small net's step. Same value as Lightning's batch-size weighted epoch mean.
        self._train_loss[0] = self._train_loss[0] + loss.detach() * len(x)
        self._train_loss[1] += len(x)
        return loss

    def on_train_epoch_end(self) -> None:
        total, count = self._train_loss
        self.log("train/loss", total / max(count, 1), prog_bar=True)

    def _evaluate(self, batch, stage: str, metrics) -> torch.Tensor:
        x, target, y = batch
        logits = self.net(x)
        scaled = self.loss.scale(logits)
        loss = self.loss(logits, target)
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=stage == "val")
        if metrics is not None:
            metrics.update(scaled, y)
            self.log_dict(metrics, on_epoch=True)
        return scaled

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val", self.val_metrics)

    def test_step(self, batch, batch_idx):
        scaled = self._evaluate(batch, "test", self.test_metrics)
        self.test_confusion.update(scaled, batch[2])

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None,
                             strict=None, weights_only=True, **kwargs):
        """Lightning's loading of a module.pt, after the whole file is verified (format, fields,
        digest): read once, checked, then handed to Lightning from memory."""
        if not weights_only:
            raise ValueError("module checkpoints load with weights_only=True only")
        try:
            data = Path(checkpoint_path).read_bytes()
        except OSError as err:
            raise UserError(f"cannot read checkpoint {checkpoint_path}: {err.strerror}") from None
        payload = load_torch(io.BytesIO(data), "checkpoint", name=checkpoint_path)
        if isinstance(payload, dict) and "format" in payload:
            record_of(payload, str(checkpoint_path))
        return super().load_from_checkpoint(io.BytesIO(data), map_location=map_location,
                                            hparams_file=hparams_file, strict=strict,
                                            weights_only=True, **kwargs)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A module.pt is checked as the store checks it (format, digest, finite weights); a
        checkpoint of Lightning's own ModelCheckpoint has no masks to restore."""
        if "format" in checkpoint:
            self.masks = record_of(checkpoint, "the checkpoint").masks

    def configure_optimizers(self):
        return self.optimizer_factory(self.parameters())


def recorded_loss(cfg: Mapping) -> MaxEntLoss:
    """The loss of a module checkpoint's hyper-parameters: MaxEntLoss and plain values only."""
    cfg = dict(cfg)
    if cfg.pop("_target_", LOSS_TARGET) != LOSS_TARGET or set(cfg) - {"temperature", "targets"} \
            or cfg.get("targets", "maxent") not in TARGET_KINDS:
        raise CorruptFile(f"the checkpoint records a loss other than {LOSS_TARGET}: {cfg}",
                          "give a module trained by this project")
    return MaxEntLoss(float(cfg.get("temperature", 5.0)), cfg.get("targets", "maxent"))
