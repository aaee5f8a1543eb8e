"""Build nets, θ0, data modules and module specs from the Hydra config."""

from collections.abc import Mapping
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from .data.datamodule import MaxEntDataModule, cached_source
from .errors import UserError
from .storage import CorruptFile, ModuleRecord, config_digest, state_digest

# trainer.precision values of a float32 module (absent from its spec, as before the key existed).
FULL_PRECISION = ("32", "32-true")
# Trainer keys that do not change what a module computes (devices, logging, output).
NEUTRAL_TRAINER_KEYS = {"_target_", "accelerator", "devices", "num_nodes", "strategy",
                        "num_sanity_val_steps", "enable_checkpointing", "enable_model_summary",
                        "enable_progress_bar", "log_every_n_steps", "default_root_dir",
                        "deterministic", "benchmark", "logger", "callbacks", "profiler"}
# Keys of a model config that describe the training recipe rather than the constructor.
MODEL_META_KEYS = ("temperature",)


def trace_calls(net: nn.Module, input_shape, modules) -> list[tuple[nn.Module, tuple, Any]]:
    """(module, inputs, output) of each call of ``modules`` in call order, for one zero sample
    through ``net`` in eval mode (no gradients; BatchNorm statistics untouched)."""
    calls, training = [], net.training
    hooks = [m.register_forward_hook(lambda mod, i, o: calls.append((mod, i, o)))
             for m in modules]
    try:
        with torch.no_grad():
            net.eval()
            net(torch.zeros(1, *input_shape, device=next(net.parameters()).device))
    finally:
        net.train(training)
        for h in hooks:
            h.remove()
    return calls


def model_name(cfg: DictConfig) -> str:
    """The model config name (mlp_shallow, lenet, ...) when Hydra knows it, else the class."""
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get("model")
        if choice:
            return str(choice)
    return str(cfg.model._target_).rsplit(".", 1)[-1].lower()


def plain(cfg: Any) -> Any:
    """Resolved plain Python containers from an OmegaConf node (or the value itself)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def build_net(model_cfg: Mapping, input_shape, num_classes: int) -> nn.Module:
    """Instantiate the backbone named by ``_target_`` for this data shape."""
    cfg = {k: v for k, v in plain(model_cfg).items() if k not in MODEL_META_KEYS}
    try:
        return instantiate(cfg, input_shape=tuple(input_shape), num_classes=num_classes)
    except InstantiationException as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"cannot build model '{cfg.get('_target_')}': {first}") from None


def init_theta0(model_cfg: Mapping, input_shape, num_classes: int, seed: int):
    """θ0 depends only on (seed, model config, data shape): the same for every rewarded set."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_net(model_cfg, input_shape, num_classes)
    theta0 = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return net, theta0, state_digest(theta0)


def net_from_record(record: ModuleRecord, state: Mapping[str, torch.Tensor] | None = None):
    """The backbone of a module checkpoint in eval mode, with its weights or with ``state``
    (a merge, a path point, a subtraction)."""
    net = build_net(record.spec["model"], record.input_shape, record.num_classes)
    try:
        net.load_state_dict(record.state_dict if state is None else state)
    except RuntimeError as err:  # names or shapes that are not this architecture's
        first = str(err).strip().splitlines()[0]
        raise CorruptFile(f"module {record.fingerprint} (R={record.rewarded}) does not fit its "
                          f"recorded model: {first}", "retrain it or give a valid file") from None
    return net.eval()


def data_source(cfg: DictConfig, name: str | None = None):
    """The (cached) tensors of the data set of ``cfg``, or of data set ``name``."""
    d = cfg.data
    return cached_source(name or d.name, d.root, bool(d.download))


def build_datamodule(cfg: DictConfig, rewarded=None, targets: str | None = None):
    """The data module of ``cfg`` for one rewarded set (each phase sets its shuffle seed);
    ``targets`` overrides the loss's target kind."""
    d = cfg.data
    return MaxEntDataModule(
        name=d.name,
        rewarded=list(rewarded if rewarded is not None else cfg.rewarded),
        targets=targets or cfg.loss.targets,
        root=d.root,
        download=d.download,
        batch_size=d.batch_size,
        val_fraction=d.val_fraction,
        split_seed=d.split_seed,
        shuffle_seed=cfg.seed,
    )


def module_spec(cfg: DictConfig, rewarded=None) -> dict:
    """What identifies a trained module: equal specs give equal checkpoints."""
    data = {k: v for k, v in plain(cfg.data).items() if k not in ("root", "download")}
    callbacks = plain(cfg.callbacks)
    trainer = {k: v for k, v in plain(cfg.trainer).items() if k not in NEUTRAL_TRAINER_KEYS}
    if str(trainer.get("precision", "32-true")) in FULL_PRECISION:
        trainer.pop("precision", None)
    return {
        "data": data,
        "model": plain(cfg.model),
        "loss": plain(cfg.loss),
        "imp": plain(cfg.imp),
        "optimizer": plain(cfg.optimizer),
        "max_epochs": trainer.pop("max_epochs"),
        "callbacks": callbacks,
        "rewarded": sorted(rewarded if rewarded is not None else cfg.rewarded),
        "seed": cfg.seed,
        # every other setting that changes what a fit computes (precision, fast_dev_run,
        # limit_*_batches, max_steps, ...): debug runs never share a module with real ones
        **({"trainer": trainer} if trainer else {}),
    }


def spec_fingerprint(spec: dict) -> str:
    return config_digest(spec)
