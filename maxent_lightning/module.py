"""LightningModule that wraps any backbone with the MaxEnt loss and evaluation metrics."""

import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn

from .builders import build_net, plain, trust_backbone
from .errors import UserError
from .files import CorruptFile, load_torch, save_torch
from .loss import MaxEntLoss
from .metrics import confusion_matrix, evaluation_metrics
from .modulefile import (
    HPARAMS,
    LOSS_TARGET,
    ModuleRecord,
    lightning_version,
    module_hparams,
    record_of,
    seal,
    state_digest,
    stored_fields,
)
from .targets import TARGET_KINDS

NOT_RESUMABLE = ("a module.pt holds a finished module, not a fit's state (no optimizer or loop "
                 "state); load it with MaxEntModule.load_from_checkpoint and call fit without "
                 "ckpt_path")
REQUIRED_HPARAMS = {"net", "loss", "rewarded", "num_classes"}
WEIGHTS_ONLY = ("the checkpoint holds weights only, not a fit's state (no optimizer state); load "
                "it with MaxEntModule.load_from_checkpoint and call fit without ckpt_path")


class MaxEntModule(L.LightningModule):
    """One subnetwork module: a backbone trained to classify ``rewarded`` and stay uniform
    elsewhere. Batches are ``(x, target distribution, label)``. ``val_metrics=False``: validation
    logs the loss only (when neither a logger nor a callback reads the other metrics).

    Built from configs, which are its hyper-parameters (``hparams``: ``net`` and ``loss`` as
    ``_target_`` configs, ``rewarded``, ``num_classes``, ``input_shape``): so any Lightning
    checkpoint of it reloads with ``MaxEntModule.load_from_checkpoint(path)``, a module.pt
    verified whole first (format, fields, digest). ``backbone``: the net already built from
    ``net`` (a trainer's θ0 net), used instead of building another. Recorded configs never run
    code: the backbone must be one of the project's or named in ``backbones`` (your own
    classes), the loss is MaxEntLoss.

    ``masks`` (pruned entries False) are enforced by the module in every fit: gradients masked
    before each optimizer step, weights re-masked after it, so no fit revives a pruned weight.
    A module read from the store writes the store's fields back into its checkpoints only while
    its weights and masks are those stored (never after a fit)."""

    def __init__(
        self,
        net: Mapping,
        loss: Mapping | MaxEntLoss,
        rewarded: Sequence[int],
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        val_metrics: bool = True,
        input_shape: Sequence[int] | None = None,
        backbones: Sequence[str] = (),
        backbone: nn.Module | None = None,
    ):
        super().__init__()
        if not isinstance(net, Mapping):
            raise TypeError("MaxEntModule: net is the backbone's config (a _target_ mapping); "
                            "pass a net built from it as backbone=")
        for target in backbones:
            trust_backbone(target)
        if isinstance(loss, MaxEntLoss):
            loss = {"_target_": LOSS_TARGET, "temperature": loss.temperature,
                    "targets": loss.targets}
        self.loss = recorded_loss(loss)
        shape = None if input_shape is None else list(input_shape)
        self.save_hyperparameters({
            "net": dict(plain(net)), "input_shape": shape,
            "loss": {"_target_": LOSS_TARGET, "temperature": self.loss.temperature,
                     "targets": self.loss.targets},
            "rewarded": list(rewarded), "num_classes": int(num_classes)})
        self.net = backbone if backbone is not None else build_net(
            net, input_shape, num_classes, where="the checkpoint")
        self.masks = {}
        self.stored: dict | None = None  # the store's fields of a module read from the store
        self.rewarded, self.num_classes = list(rewarded), num_classes
        self.optimizer_factory = optimizer or (lambda params: torch.optim.Adam(params, lr=1e-3))
        self.val_metrics = (evaluation_metrics(rewarded, num_classes).clone(prefix="val/")
                            if val_metrics else None)
        self.test_metrics = evaluation_metrics(rewarded, num_classes).clone(prefix="test/")
        self.test_confusion = confusion_matrix(num_classes)

    @classmethod
    def from_record(cls, record: ModuleRecord) -> "MaxEntModule":
        """The stored module of ``record``: its net, weights, masks and store fields."""
        with torch.random.fork_rng(devices=[]):  # building draws weights: leave the RNG as it was
            module = cls(**module_hparams(record), val_metrics=False)
        module.net.load_state_dict(record.state_dict)
        module._store(record)
        return module

    def _store(self, record: ModuleRecord) -> None:
        """Hold the store's fields of ``record`` (whose weights this module has or gets) and its
        masks; they are written back only while weights and masks are still the record's."""
        self.masks, self.stored = record.masks, stored_fields(record)
        self._stored_content = _content(record.state_dict, record.masks)

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        return self._masks

    @masks.setter
    def masks(self, masks: Mapping[str, torch.Tensor]) -> None:
        self._masks, self._factors = dict(masks), None

    def _mask_factors(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """(parameter, mask as 0/1 of its dtype and device): a bool factor is ~10x slower."""
        if self._factors is None:
            params = dict(self.net.named_parameters())
            self._factors = [(params[n], m.to(params[n].device, params[n].dtype))
                             for n, m in self._masks.items()]
        return self._factors

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero the pruned entries of the net."""
        for param, factor in self._mask_factors():
            param.mul_(factor)

    def on_fit_start(self) -> None:
        self.stored = None  # a fit changes the weights: no longer the module the store holds
        self._factors = None  # the net is on the fit's device now
        self.apply_masks()

    def on_before_optimizer_step(self, optimizer) -> None:
        for param, factor in self._mask_factors():
            if param.grad is not None:
                param.grad.mul_(factor)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.apply_masks()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tempered logits z/T, the quantity every metric is computed on."""
        return self.loss.scale(self.net(x))

    def on_train_epoch_start(self) -> None:
        self._train_loss = None

    def _epoch_loss(self) -> list:
        """[sum, count] of this epoch's training losses (a fit resumed mid-epoch starts one)."""
        if getattr(self, "_train_loss", None) is None:
            self._train_loss = [torch.zeros((), device=self.device), 0]
        return self._train_loss

    def training_step(self, batch, batch_idx):
        x, target, _ = batch
        loss = self.loss(self.net(x), target)
        # The epoch mean is accumulated here and logged once: a self.log per step costs more
        # than a small net's step. Same value as Lightning's batch-size weighted epoch mean.
        epoch = self._epoch_loss()
        epoch[0] = epoch[0] + loss.detach() * len(x)
        epoch[1] += len(x)
        return loss

    def on_train_epoch_end(self) -> None:
        total, count = self._epoch_loss()
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

    def checkpoint(self) -> dict:
        """This module as a weights-only Lightning checkpoint (what ``Trainer.save_checkpoint``
        holds but the loops), completed by ``on_save_checkpoint``: the one way a module file is
        written (``save_module``)."""
        checkpoint = {"epoch": 0, "global_step": 0,
                      "pytorch-lightning_version": lightning_version(),
                      "state_dict": {k: v.cpu() for k, v in self.state_dict().items()},
                      "hyper_parameters": dict(self.hparams)}
        self.on_save_checkpoint(checkpoint)
        return checkpoint

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Adds the masks; a module of the store (read from it, its weights and masks still
        those stored, not fitted since) also gets the store's fields, format tag and digest
        (``modulefile.seal``). A checkpoint of a fit (e.g. Lightning's ModelCheckpoint) or of an
        edited module holds the masks and hyper-parameters, and claims nothing of the store."""
        checkpoint["masks"] = {k: v.cpu() for k, v in self.masks.items()}
        if self.stored is not None and \
                _content(self.net.state_dict(), self.masks) == self._stored_content:
            seal(checkpoint, self.stored)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None,
                             strict=None, weights_only=True, **kwargs):
        """Lightning's loading of a checkpoint, after the whole file is verified (a module.pt:
        format, fields, digest; any other: its hyper-parameters name nothing but the recipe):
        read once, checked, then handed to Lightning from memory."""
        if not weights_only:
            raise ValueError("module checkpoints load with weights_only=True only")
        try:
            data = Path(checkpoint_path).read_bytes()
        except OSError as err:
            raise UserError(f"cannot read checkpoint {checkpoint_path}: {err.strerror}") from None
        payload = load_torch(io.BytesIO(data), "checkpoint", name=checkpoint_path)
        if isinstance(payload, dict) and "format" in payload:
            record_of(payload, str(checkpoint_path))
        elif not isinstance(payload, dict) or not isinstance(payload.get("hyper_parameters"),
                                                             dict):
            raise CorruptFile(f"{checkpoint_path} is not a checkpoint of a MaxEntModule",
                              "give a module.pt or a .ckpt of a MaxEntModule's fit")
        elif not REQUIRED_HPARAMS <= set(payload["hyper_parameters"]) <= set(HPARAMS):
            raise CorruptFile(f"{checkpoint_path} records hyper-parameters other than a "
                              f"MaxEntModule's ({', '.join(HPARAMS)})",
                              "give a checkpoint of a MaxEntModule")
        return super().load_from_checkpoint(io.BytesIO(data), map_location=map_location,
                                            hparams_file=hparams_file, strict=strict,
                                            weights_only=True, **kwargs)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A module.pt is checked as the store checks it (format, digest, finite weights) and
        restores masks and store fields; a fit's checkpoint restores its masks. A module.pt or a
        weights-only checkpoint cannot resume a fit (no optimizer or loop state): UserError."""
        fitting = self._trainer is not None and self._trainer.state.fn == TrainerFn.FITTING
        if fitting and "format" in checkpoint:
            raise UserError(NOT_RESUMABLE)
        if fitting and not checkpoint.get("optimizer_states"):
            raise UserError(WEIGHTS_ONLY)
        if "format" in checkpoint:
            self._store(record_of(checkpoint, "the checkpoint"))
        elif "masks" in checkpoint:
            self.masks = checked_masks(checkpoint["masks"], self.net)

    def configure_optimizers(self):
        return self.optimizer_factory(self.parameters())


def _content(state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> str:
    return state_digest({**{f"state/{k}": v for k, v in state.items()},
                         **{f"mask/{k}": v for k, v in masks.items()}})


def checked_masks(masks, net: nn.Module) -> dict[str, torch.Tensor]:
    """The masks of a fit's checkpoint: bool tensors shaped as parameters of ``net``."""
    params = dict(net.named_parameters())
    if not isinstance(masks, dict) or not all(
            isinstance(v, torch.Tensor) and v.dtype == torch.bool and k in params
            and v.shape == params[k].shape for k, v in masks.items()):
        raise CorruptFile("the checkpoint's masks are not bool masks of its net's parameters",
                          "give a checkpoint of a MaxEntModule")
    return masks


def recorded_loss(cfg: Mapping) -> MaxEntLoss:
    """The loss of a module checkpoint's hyper-parameters: MaxEntLoss and plain values only."""
    cfg = dict(cfg)
    if cfg.pop("_target_", LOSS_TARGET) != LOSS_TARGET or set(cfg) - {"temperature", "targets"} \
            or cfg.get("targets", "maxent") not in TARGET_KINDS:
        raise CorruptFile(f"the checkpoint records a loss other than {LOSS_TARGET}: {cfg}",
                          "give a module trained by this project")
    return MaxEntLoss(float(cfg.get("temperature", 5.0)), cfg.get("targets", "maxent"))


def save_module(path: Path, record: ModuleRecord) -> Path:
    """``record`` as a store module file, written atomically: the Lightning checkpoint of the
    module built from it (``MaxEntModule.checkpoint``: its own hooks add the record's fields,
    the format tag and the content digest)."""
    return save_torch(path, MaxEntModule.from_record(record).checkpoint())
