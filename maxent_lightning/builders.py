"""Build nets, θ0 and data modules from the Hydra config (module specs: ``identity``)."""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from . import models
from .data.datamodule import MaxEntDataModule, cached_source, normalize_key
from .errors import UserError
from .files import CorruptFile
from .modulefile import ModuleRecord, state_digest

# Keys of a module's recorded model that describe the training recipe rather than the
# constructor (the rows "model" of the identity table: ``identity.model_identity`` puts them
# there; identity imports this module, so the list is repeated here and a test holds them equal).
MODEL_META_KEYS = ("temperature",)
# conf/model/custom.yaml: a user's backbone (model=custom model._target_=mypkg.Tiny).
CUSTOM = "custom"
# Backbones a module file may name: the project's own, plus those a user's config names in this
# process (``trust_backbone``). Nothing recorded in a file is ever passed to ``instantiate``.
BACKBONES = {f"maxent_lightning.models.{name}": getattr(models, name) for name in models.__all__}
BACKBONES |= {f"{cls.__module__}.{cls.__name__}": cls for cls in list(BACKBONES.values())}
_TRUSTED: set[str] = set()
HYDRA_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")


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


# The model config name of the modules being trained where Hydra's runtime config is another
# job's (the sweep planner's training passes, ``task=train_pass``): set by ``named_model``.
_MODEL_NAME: ContextVar[str | None] = ContextVar("model_name", default=None)


@contextmanager
def named_model(name: str | None) -> Iterator[None]:
    """Inside: ``model_name`` is ``name`` (the model choice of the jobs whose modules these are),
    so a module is called the same in a sweep as in a single run (``mlp_shallow``, not the
    class ``mlp``)."""
    token = _MODEL_NAME.set(None if name in (None, "None", CUSTOM) else str(name))
    try:
        yield
    finally:
        _MODEL_NAME.reset(token)


def model_name(cfg: DictConfig) -> str:
    """The model config name (mlp_shallow, lenet, ...) where known (``named_model``, else
    the model choice, ``runtime.model``), else (and for ``model=custom``) the class."""
    if _MODEL_NAME.get() is not None:
        return _MODEL_NAME.get()
    choice = model_choice(cfg)
    if choice and choice != CUSTOM:
        return str(choice)
    return backbone_target(cfg).rsplit(".", 1)[-1].lower()


def model_choice(cfg) -> str | None:
    """The model config chosen for the job of ``cfg`` (``runtime.model``: cli.py; a recipe
    carries it), if known."""
    if not isinstance(cfg, DictConfig):
        return cfg.model_choice
    return OmegaConf.select(cfg, "runtime.model", default=None)


def backbone_target(cfg: DictConfig) -> str:
    """``model._target_``: the backbone class the config names (``model=custom`` names none)."""
    if OmegaConf.is_missing(cfg.model, "_target_"):
        raise UserError("model=custom needs your backbone class; name it: "
                        "model=custom model._target_=mypkg.Tiny (importable, e.g. on PYTHONPATH)")
    return str(cfg.model._target_)


def plain(cfg: Any) -> Any:
    """Resolved plain Python containers from an OmegaConf node (or the value itself)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def trust_backbone(target: str) -> None:
    """Let module files name ``target``: the backbone of the user's own config."""
    _TRUSTED.add(str(target))


def _plain_data(value, where: str) -> None:
    """Refuse anything but plain data (no Hydra keys such as a nested ``_target_``)."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str) or k in HYDRA_KEYS:
                raise CorruptFile(f"{where} records '{k}' in its model config (a module file "
                                  "names no code to run)", "give a module trained by this project")
            _plain_data(v, where)
    elif isinstance(value, list | tuple):
        for v in value:
            _plain_data(v, where)
    elif not (value is None or isinstance(value, bool | int | float | str)):
        raise CorruptFile(f"{where} records a {type(value).__name__} in its model config",
                          "give a module trained by this project")


def recorded_backbone(model_cfg, where: str) -> tuple[type, dict]:
    """(class, keyword arguments) of a model config read from a file: its ``_target_`` must be a
    registered backbone (``BACKBONES``) or one the user's config names; the rest plain data."""
    if not isinstance(model_cfg, Mapping) or not isinstance(model_cfg.get("_target_"), str):
        raise CorruptFile(f"{where} records no model '_target_'", "give a valid module file")
    target = model_cfg["_target_"]
    kwargs = {k: v for k, v in model_cfg.items() if k != "_target_" and k not in MODEL_META_KEYS}
    _plain_data(kwargs, where)
    if target in BACKBONES:
        return BACKBONES[target], kwargs
    if target in _TRUSTED:
        return get_class(target), kwargs
    raise UserError(f"{where} names backbone '{target}', which is not a maxent_lightning "
                    f"backbone; trust it by naming it in your config: model=custom "
                    f"model._target_={target}")


def build_net(model_cfg: Mapping, input_shape, num_classes: int, where: str = "") -> nn.Module:
    """The backbone of ``model_cfg`` for this data shape. A config of the user's own is
    instantiated by Hydra; one read from a file (``where`` names it) only as a registered class
    with plain keyword arguments (``recorded_backbone``)."""
    cfg = {k: v for k, v in plain(model_cfg).items() if k not in MODEL_META_KEYS}
    shape = {"input_shape": tuple(input_shape), "num_classes": int(num_classes)}
    if where:
        cls, kwargs = recorded_backbone(plain(model_cfg), where)
        try:
            return cls(**kwargs, **shape)
        except Exception as err:  # arguments the class does not take, values it refuses
            raise CorruptFile(f"{where} records a model config that {cls.__name__} refuses "
                              f"({type(err).__name__}: {err})", "retrain it") from None
    target = cfg.get("_target_")
    try:
        net = instantiate(cfg, **shape)
    except InstantiationException as err:  # the class's own exception, whole, on one line
        cause = err.__cause__ if err.__cause__ is not None else err
        why = one_line(f"{type(cause).__name__}: {cause}")
        fix = ("start from model=custom (it passes only your +model.KEY=VALUE keys)"
               if "unexpected keyword argument" in why else
               "check model._target_ (an importable class) and its arguments (model.*)")
        raise UserError(f"cannot build model '{target}': {why}; {fix}") from None
    if target not in BACKBONES:  # a user's class: fail here, in one line, not inside a fit
        check_backbone(net, tuple(input_shape), int(num_classes), target)
    return net


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def check_backbone(net, input_shape: tuple, num_classes: int, target: str) -> None:
    """A user's backbone maps a batch (2, *input_shape) to logits (2, num_classes): one forward
    of zeros in eval mode, without gradients, leaving the random state as it was."""
    if not isinstance(net, nn.Module):
        raise UserError(f"model '{target}' built a {type(net).__name__}, not a torch.nn.Module; "
                        "name a torch.nn.Module class in model._target_")
    training = net.training
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            net.eval()
            out = net(torch.zeros(2, *input_shape))
    except Exception as err:
        raise UserError(f"model '{target}' fails on a batch of shape {(2, *input_shape)}: "
                        f"{one_line(f'{type(err).__name__}: {err}')}; its forward must map "
                        f"(batch, *input_shape) to logits (batch, {num_classes})") from None
    finally:
        net.train(training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (2, num_classes):
        raise UserError(f"model '{target}' returns {shape} for a batch of shape "
                        f"{(2, *input_shape)}; its forward must return logits of shape "
                        f"(batch, num_classes) = (2, {num_classes})")


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
    net = build_net(record.spec["model"], record.input_shape, record.num_classes,
                    where=f"module {record.fingerprint} (R={record.rewarded})")
    try:
        net.load_state_dict(record.state_dict if state is None else state)
    except RuntimeError as err:  # names or shapes that are not this architecture's
        first = str(err).strip().splitlines()[0]
        raise CorruptFile(f"module {record.fingerprint} (R={record.rewarded}) does not fit its "
                          f"recorded model: {first}", "retrain it or give a valid file") from None
    return net.eval()


def data_source(data: DictConfig, recorded: Mapping | None = None):
    """The (cached) tensors of the data set of the ``data`` settings (conf/data), or of a
    module's ``recorded`` data settings (its name and normalization) read from their folder."""
    d = recorded if recorded is not None else data
    return cached_source(d["name"], data.root, bool(data.download),
                         normalize_key(d.get("normalize")))


def build_datamodule(cfg, rewarded=None, targets: str | None = None):
    """The data module of ``cfg`` (a recipe or a job config) for one rewarded set (each phase
    sets its shuffle seed), its data loaded (``prepare_data``, ``setup``); ``targets``
    overrides the loss's target kind."""
    d = cfg.data
    dm = MaxEntDataModule(
        name=d.name,
        rewarded=list(rewarded if rewarded is not None else cfg.rewarded),
        targets=targets or cfg.loss.targets,
        root=d.root,
        download=d.download,
        batch_size=d.batch_size,
        val_fraction=d.val_fraction,
        split_seed=d.split_seed,
        shuffle_seed=cfg.seed,
        normalize=d.get("normalize"),
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm
