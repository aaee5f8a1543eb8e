"""Hydra's ``--experimental-rerun RUN/.hydra/config.pickle``: the record a job leaves
(``RerunRecord``) and the check of a record before Hydra reads it (``verified_rerun``).

A pickle can run any code when it is loaded, and Hydra loads the file it is given without
restriction. So the file is first read with an unpickler that knows only the classes a
Hydra config is made of (OmegaConf's nodes, Hydra's config dataclasses, plain containers);
Hydra then reads a private copy of exactly those verified bytes."""

import copy
import importlib
import io
import os
import pickle
import tempfile
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from .errors import UserError

FLAG = "--experimental-rerun"
# module -> the names a config record may name there (None: every class of omegaconf's nodes)
ALLOWED = {
    "builtins": {"bool", "dict", "float", "int", "list", "str", "tuple", "set", "frozenset",
                 "NoneType"},
    "collections": {"defaultdict", "OrderedDict"},
    "typing": {"Any", "Dict", "List", "Optional", "Tuple", "Union"},
    "hydra.types": {"RunMode"},
    "omegaconf.base": {"ContainerMetadata", "Metadata"},
    "omegaconf.dictconfig": {"DictConfig"},
    "omegaconf.listconfig": {"ListConfig"},
    "omegaconf.nodes": None,
    "hydra.conf": None,
}


class _Refused(pickle.UnpicklingError):
    """A name outside ``ALLOWED``."""


class _ConfigOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        names = ALLOWED.get(module, set())
        if names is not None and name not in names:
            raise _Refused(f"{module}.{name}")
        found = super().find_class(module, name)
        if names is None and not isinstance(found, type):  # a class of those modules only
            raise _Refused(f"{module}.{name}")
        return found


def read_record(data: bytes) -> DictConfig:
    """The config in a record's bytes, refused (UserError) unless it is one."""
    try:
        record = _ConfigOnly(io.BytesIO(data)).load()
    except _Refused as err:
        raise UserError(f"the rerun file names '{err}', which no config record holds (a "
                        "pickle that runs code when read?); rerun only a job's "
                        ".hydra/config.pickle written by this tool") from None
    except Exception as err:  # noqa: BLE001 - truncated or not a pickle at all
        raise UserError(f"the rerun file is not a readable config record ({err}); pass a "
                        "job's .hydra/config.pickle") from None
    if not isinstance(record, DictConfig) or "hydra" not in record:
        raise UserError("the rerun file holds no job config; pass a job's .hydra/config.pickle")
    return record


def verified_rerun(argv: list[str]) -> str | None:
    """Checks the file after ``--experimental-rerun`` in ``argv`` and points the flag at a
    private copy of the verified bytes; returns that copy's path (the caller removes it),
    None when no rerun is asked for."""
    if FLAG not in argv or argv.index(FLAG) + 1 >= len(argv):
        return None
    i = argv.index(FLAG) + 1
    try:
        data = Path(argv[i]).read_bytes()
    except OSError as err:
        raise UserError(f"cannot read the rerun file {argv[i]} ({err.strerror}); pass a "
                        "job's .hydra/config.pickle") from None
    read_record(data)
    fd, copy_path = tempfile.mkstemp(prefix="rerun-", suffix=".pickle")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    argv[i] = copy_path
    return copy_path


class RerunRecord(Callback):
    """Hydra callback: the job's config as ``.hydra/config.pickle``, which
    ``--experimental-rerun`` reads (Hydra's PickleJobInfoCallback, without its return value
    and log lines: the results are in the run's files)."""

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        subdir = config.hydra.output_subdir
        if subdir is None:
            return
        out = Path(config.hydra.runtime.output_dir) / str(subdir)
        record = copy.deepcopy(config)
        with read_write(record.hydra), open_dict(record.hydra):
            for key in ("launcher", "sweeper"):  # plugin classes a joblib worker cannot pickle
                record.hydra[key] = OmegaConf.create(OmegaConf.to_container(record.hydra[key]))
        # the atomic writer (files.py imports torch: loaded here, when a job runs)
        write_bytes = importlib.import_module("maxent_lightning.files").write_bytes
        write_bytes(out / "config.pickle", pickle.dumps(record, protocol=4))
