"""Which configs the family trains (the rest trains one by one through Lightning)."""

from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping
from torch import nn

from ..builders import build_net, data_source
from ..identity import FAMILY_TRAINER_KEYS, FULL_PRECISION
from ..phases import VAL_KEYS, BestRule, phase_callbacks
from .memory import pick_device

# Optimizers whose update of an entry depends only on that entry's history.
ELEMENTWISE = ("Adam", "AdamW", "Adamax", "NAdam", "RAdam", "SGD", "RMSprop", "Adagrad")
# trainer.precision values the family reproduces (autocast to bfloat16 for bf16-mixed).
PRECISIONS = ("32", "32-true", "bf16-mixed")
# Why conv nets train one by one on CPU: family vs one by one on a 2-core CPU (`make bench`).
CPU_CONVOLUTIONS = "LeNet 0.64x; ResNet18 and VGG11 at width 8: 1.11x"
# Dropout layers other than nn.Dropout (no per-member stream for them).
OTHER_DROPOUTS = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                  nn.FeatureAlphaDropout)
CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def unsupported_reason(cfg) -> str | None:
    """Why ``cfg`` is not trained as a family (then it is trained sequentially), or None: the
    family cannot train it (``cannot_train``), or on CPU it would be slower."""
    src = data_source(cfg.data)
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


def reduced_precision(cfg) -> bool:
    """Whether ``cfg`` trains in reduced precision (bf16-mixed). Its bfloat16 roundings differ
    from Lightning's autocast beyond the order of sums, so such a module is defined by the family
    trainer wherever it can train it (alone, as a family of one): the same module by every path
    (one fingerprint, one module); only what the family cannot train goes to Lightning."""
    return str(cfg.trainer.get("precision", "32-true")) not in FULL_PRECISION


def cannot_train(cfg, net: nn.Module) -> str | None:
    """Why the family trainer cannot train ``cfg`` (its backbone: ``net``) at all, or None."""
    extra = sorted(k for k in cfg.trainer if k not in FAMILY_TRAINER_KEYS)
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

