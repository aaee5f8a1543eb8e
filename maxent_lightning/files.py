"""Files written atomically (a reader sees the old file or the new one, never a part), their
reads that refuse a corrupt file in one line, and the digest of a config."""

import hashlib
import io
import json
import math
import os
import re
import socket
import tempfile
import time
from functools import cache
from pathlib import Path
from typing import Any

import torch

from .errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give: mkstemp alone makes files 0600


def _atomic(path: Path, write) -> Path:
    """Write through a temporary file in the same folder, then rename over ``path``: a kill
    leaves either the old file or the new one, never a half-written one. The temporary,
    ``.<name>.<pid>@<host>.<random>``, names its writer: the next write into the folder removes
    those of writers that died (``remove_stale_temporaries``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}@{_host()}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# What _atomic's temporaries are called (mkstemp adds 8 random characters), and those of
# versions that did not name their writer.
_TEMPORARY = re.compile(r"\..+\.(?P<pid>\d+)@(?P<host>[^/]+)\.[a-z0-9_]{8}")
_UNNAMED_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}")
# A temporary this old (seconds) is stale whoever wrote it: a write takes seconds.
STALE_TEMPORARY_S = 24 * 3600


@cache
def _host() -> str:
    return socket.gethostname().replace("/", "_")


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Remove the temporaries of ``_atomic`` in ``directory`` whose writer died (a kill during
    a write): those of this host whose process no longer exists, and any older than
    STALE_TEMPORARY_S (other hosts' writers cannot be asked). Returns what it removed."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if entry.name.startswith(".") and _stale(entry):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


def _stale(entry: os.DirEntry) -> bool:
    match = _TEMPORARY.fullmatch(entry.name)
    if match is None and _UNNAMED_TEMPORARY.fullmatch(entry.name) is None:
        return False
    try:
        if not entry.is_file(follow_symlinks=False):
            return False
        if time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMPORARY_S:
            return True
    except OSError:
        return False
    return match is not None and match["host"] == _host() and not _alive(int(match["pid"]))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        pass
    return True


def jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return jsonable(value.tolist())
    return value


def write_json(path: Path, data: dict) -> Path:
    text = json.dumps(jsonable(data), indent=2, sort_keys=True) + "\n"
    return _atomic(path, lambda fh: fh.write(text.encode()))


def write_text(path: Path, text: str) -> Path:
    return _atomic(path, lambda fh: fh.write(text.encode()))


def write_bytes(path: Path, data: bytes) -> Path:
    return _atomic(path, lambda fh: fh.write(data))


def save_torch(path: Path, obj: Any) -> Path:
    """torch.save through memory: a full disk then fails in the file write as an OSError (No
    space left), not inside torch's zip writer as a RuntimeError."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return _atomic(path, lambda fh: fh.write(buffer.getbuffer()))


class CorruptFile(UserError):
    """A file that exists but cannot be used (truncated, foreign format, bad digest)."""

    def __init__(self, problem: str, fix: str = "delete it to recompute"):
        super().__init__(f"{problem}; {fix}")
        self.problem = problem


def read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise CorruptFile(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise CorruptFile(f"{path} holds no JSON object")
    return data


def load_torch(path, what: str = "file", name=None) -> Any:
    """``torch.load`` of tensors and plain data only (``weights_only``: nothing in the file is
    unpickled freely); ``path`` may be an open buffer, then ``name`` says where it came from."""
    name = path if name is None else name
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {name}") from None
    except Exception as err:  # truncated or foreign files raise many kinds of errors
        raise CorruptFile(
            f"{what} {name} is unreadable (truncated or not a torch file: {type(err).__name__})",
            "retrain it or give a valid file",
        ) from None


def config_digest(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
