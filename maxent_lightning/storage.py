"""Atomic writes and the module checkpoint format."""

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import UserError

MODULE_FORMAT = "maxent_lightning.module/1"


def _atomic(path: Path, write) -> Path:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    return value


def write_json(path: Path, data: dict) -> Path:
    text = json.dumps(_jsonable(data), indent=2, sort_keys=True) + "\n"
    return _atomic(path, lambda fh: fh.write(text.encode()))


def write_text(path: Path, text: str) -> Path:
    return _atomic(path, lambda fh: fh.write(text.encode()))


def save_torch(path: Path, obj: Any) -> Path:
    return _atomic(path, lambda fh: torch.save(obj, fh))


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path}: {err}; delete it to recompute") from None


def load_torch(path: Path, what: str = "file") -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except Exception as err:  # truncated or foreign files raise many kinds of errors
        raise UserError(f"{what} {path} is unreadable ({type(err).__name__}); delete it") from None


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """Content hash of a state dict (names, shapes, dtypes and values)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def config_digest(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


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

    def build_net(self) -> nn.Module:
        """Instantiate the backbone from the recorded model config and load the weights."""
        from .builders import build_net

        net = build_net(self.spec["model"], self.input_shape, self.num_classes)
        net.load_state_dict(self.state_dict)
        return net.eval()


def save_module(path: Path, record: ModuleRecord) -> Path:
    payload = {"format": MODULE_FORMAT, **record.__dict__}
    payload["state_dict"] = {k: v.detach().cpu() for k, v in record.state_dict.items()}
    return save_torch(path, payload)


def load_module(path: Path) -> ModuleRecord:
    payload = load_torch(path, "module checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != MODULE_FORMAT:
        raise UserError(f"{path} is not a maxent_lightning module checkpoint ({MODULE_FORMAT})")
    payload.pop("format")
    try:
        return ModuleRecord(**payload)
    except TypeError as err:
        raise UserError(f"{path} is an incomplete module checkpoint ({err})") from None
