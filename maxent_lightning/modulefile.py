"""The module file: its checkpoint format, digests, seal and verified reads."""

import hashlib
import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .files import (
    CorruptFile,
    config_digest,
    jsonable,
    load_torch,
)

# /3: a Lightning checkpoint (``MaxEntModule.load_from_checkpoint``, ``Trainer.test(ckpt_path=)``)
# whose state_dict holds the backbone under ``net.``, with a digest of the whole record; written
# by the module's own ``on_save_checkpoint`` (``seal``). Files of /1 and /2 (digests of the
# tensors only) are refused: their other fields cannot be verified.
MODULE_FORMAT = "maxent_lightning.module/3"
OLD_FORMATS = ("maxent_lightning.module/1", "maxent_lightning.module/2")
NET_PREFIX = "net."
LOSS_TARGET = "maxent_lightning.loss.MaxEntLoss"


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """Content hash of a state dict (names, shapes, dtypes and values; 0-dim and integer
    tensors such as BatchNorm's ``num_batches_tracked`` included)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


@dataclass
class ModuleRecord:
    """Everything a merge/eval task needs to rebuild a trained module without its command."""

    state_dict: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    theta0_id: str
    rewarded: list[int]
    num_classes: int
    input_shape: tuple[int, ...]
    temperature: float
    seed: int
    spec: dict
    fingerprint: str
    metrics: dict = field(default_factory=dict)
    digest: str = ""  # of the whole file it was read from (set by record_of; not saved)


def record_digest(payload: dict) -> str:
    """Digest of a whole module checkpoint: every tensor (weights, buffers, masks) and every
    other field (format, spec, fingerprint, hyper-parameters, rewarded set, temperature, θ0 id,
    metrics, ...), all but the digest itself. TypeError/ValueError: a field that is not data."""
    tensors = {**{f"state/{k}": v for k, v in payload["state_dict"].items()},
               **{f"mask/{k}": v for k, v in payload["masks"].items()}}
    rest = {k: v for k, v in payload.items() if k not in ("digest", "state_dict", "masks")}
    text = json.dumps(jsonable(rest), sort_keys=True, allow_nan=False)
    return hashlib.sha256(f"{state_digest(tensors)};{text}".encode()).hexdigest()[:16]


# A MaxEntModule's hyper-parameters (its constructor's recipe arguments).
HPARAMS = ("net", "input_shape", "loss", "rewarded", "num_classes")
# The store's fields of a module that its hyper-parameters and state do not give.
STORED = ("theta0_id", "seed", "spec", "fingerprint", "metrics")


def module_hparams(record: ModuleRecord) -> dict:
    """The ``MaxEntModule`` arguments of a module: backbone and loss as ``_target_`` configs."""
    return {"net": record.spec["model"], "input_shape": list(record.input_shape),
            "loss": {"_target_": LOSS_TARGET, "temperature": float(record.temperature),
                     "targets": record.spec.get("loss", {}).get("targets", "maxent")},
            "rewarded": list(record.rewarded), "num_classes": int(record.num_classes)}


def stored_fields(record: ModuleRecord) -> dict:
    return {k: getattr(record, k) for k in STORED}


@cache
def lightning_version() -> str:
    return version("lightning")  # reads the package metadata: once per process


def seal(checkpoint: dict, stored: dict) -> None:
    """Make a module's Lightning checkpoint (state_dict, hyper_parameters, masks) a store
    module file: the record's fields, the format tag and the digest of the whole
    (``MaxEntModule.on_save_checkpoint``; ``record_of`` verifies it)."""
    hp = checkpoint["hyper_parameters"]
    checkpoint.update(format=MODULE_FORMAT, rewarded=list(hp["rewarded"]),
                      num_classes=int(hp["num_classes"]), input_shape=list(hp["input_shape"]),
                      temperature=float(hp["loss"]["temperature"]), **stored)
    checkpoint["digest"] = record_digest(checkpoint)  # of the record as stored


def _fields_ok(p: dict) -> bool:
    """The record's fields have their types (a file that passes its digest may still be
    crafted: nothing in it is trusted further than its types)."""
    def ints(v):
        return isinstance(v, list | tuple) and all(type(i) is int for i in v)

    tensors = [p["state_dict"], p["masks"]]
    return (all(isinstance(t, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in t.items()) for t in tensors)
            and ints(p["rewarded"]) and ints(p["input_shape"]) and type(p["num_classes"]) is int
            and type(p["seed"]) is int and isinstance(p["temperature"], float | int)
            and math.isfinite(p["temperature"]) and p["temperature"] > 0
            and isinstance(p["spec"], dict) and isinstance(p["metrics"], dict)
            and all(isinstance(p[k], str) for k in ("theta0_id", "fingerprint"))
            and all(v.dtype == torch.bool for v in p["masks"].values()))


def record_of(payload: Any, where: str) -> ModuleRecord:
    """The module of a checkpoint dict, checked before any of it is used: format, every field
    and its type, the digest of the whole record, the fingerprint against the recorded spec,
    finite weights (CorruptFile naming ``where`` otherwise)."""
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if fmt in OLD_FORMATS:
        raise CorruptFile(f"{where} is a module checkpoint of an older maxent_lightning ({fmt}) "
                          "whose fields cannot be verified", "retrain it")
    if fmt != MODULE_FORMAT:
        raise CorruptFile(f"{where} is not a maxent_lightning module checkpoint ({MODULE_FORMAT})",
                          "give the module.pt of a trained module")
    names = [f.name for f in fields(ModuleRecord)]
    missing = [n for n in (*names, "hyper_parameters") if n not in payload]
    if missing:
        raise CorruptFile(f"{where} is an incomplete module checkpoint (no {', '.join(missing)})",
                          "retrain it")
    try:
        intact = _fields_ok(payload) and record_digest(payload) == payload["digest"]
    except (TypeError, ValueError, AttributeError):  # a field that is not plain data
        intact = False
    if not intact:
        raise CorruptFile(f"module checkpoint {where} is corrupt (content digest mismatch)",
                          "retrain it")
    if config_digest(payload["spec"]) != payload["fingerprint"]:
        raise CorruptFile(f"module checkpoint {where} records fingerprint "
                          f"{payload['fingerprint']}, but its spec hashes to "
                          f"{config_digest(payload['spec'])}", "retrain it")
    values = {n: payload[n] for n in names}
    values["state_dict"] = {k.removeprefix(NET_PREFIX): v for k, v in payload["state_dict"].items()}
    values["input_shape"] = tuple(values["input_shape"])
    values["temperature"] = float(values["temperature"])
    record = ModuleRecord(**values)
    if jsonable(payload["hyper_parameters"]) != jsonable(module_hparams(record)):
        raise CorruptFile(f"module checkpoint {where} records hyper-parameters that are not "
                          "those of its module", "retrain it")
    if any(v.is_floating_point() and not torch.isfinite(v).all()
           for v in record.state_dict.values()):
        raise CorruptFile(f"module checkpoint {where} holds weights that are not finite "
                          "(a diverged module)", "retrain it with a lower optimizer.lr")
    return record


def load_module(path: Path, fingerprint: str | None = None) -> ModuleRecord:
    """The module at ``path``, checked (``record_of``) and, when given, against the
    fingerprint of the config it was trained with."""
    record = record_of(load_torch(path, "module checkpoint"), str(path))
    if fingerprint is not None and record.fingerprint != fingerprint:
        raise UserError(
            f"{path} holds module {record.fingerprint} (R={record.rewarded}, seed={record.seed}),"
            f" not the requested {fingerprint}; delete that directory to retrain it"
        )
    return record


# Modules read in this process: (path, inode, size, mtime) -> record, the most recent READ_CACHE.
_READ: OrderedDict = OrderedDict()
READ_CACHE = 256


def read_module(path: Path, fingerprint: str | None = None) -> ModuleRecord:
    """``load_module``, read and digest-checked once per file version per process (a sweep's
    jobs share their modules); the record is shared, so callers must not modify it."""
    try:
        st = Path(path).stat()
    except OSError:
        return load_module(path, fingerprint)  # its own error for a missing file
    key = (str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    record = _READ.get(key)
    if record is None or (fingerprint is not None and record.fingerprint != fingerprint):
        record = _READ[key] = load_module(path, fingerprint)
        while len(_READ) > READ_CACHE:
            _READ.popitem(last=False)
    _READ.move_to_end(key)
    return record
