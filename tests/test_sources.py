"""Data sources: real on-disk formats written small into tmp_path, loaded offline."""

import dataclasses
import gzip
import os
import pickle
import re
import shutil
import struct
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from maxent_lightning.data.sources import HAR_FEATURES, SOURCES, TensorSplits, load_source
from maxent_lightning.errors import UserError

RNG = np.random.default_rng(0)


def _write_idx(path: Path, arr: np.ndarray, compress: bool = False) -> None:
    """IDX (SN3) file: big-endian magic 0x08<ndim>, dims, then uint8 data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = struct.pack(f">I{arr.ndim}I", 0x800 + arr.ndim, *arr.shape) + arr.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        blob = gzip.compress(blob)
    path.write_bytes(blob)


def _write_mnist(root: Path, folder: str = "MNIST", compress: bool = False) -> dict:
    written = {}
    for split, n in (("train", 20), ("t10k", 10)):
        images = RNG.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        _write_idx(root / folder / "raw" / f"{split}-images-idx3-ubyte", images, compress)
        _write_idx(root / folder / "raw" / f"{split}-labels-idx1-ubyte", labels, compress)
        written[split] = (images, labels)
    return written


def _write_har(root: Path, bad_row: bool = False) -> None:
    base = root / "UCI HAR Dataset"
    for split, n in (("train", 24), ("test", 12)):
        (base / split).mkdir(parents=True)
        x = RNG.normal(size=(n, HAR_FEATURES))
        lines = [" " + " ".join(f"{v:.7e}" for v in row) for row in x]
        if bad_row:
            lines[3] = lines[3].replace(lines[3].split()[5], "abc", 1)
        (base / split / f"X_{split}.txt").write_text("\n".join(lines) + "\n")
        y = np.arange(n) % 6 + 1
        (base / split / f"y_{split}.txt").write_text("\n".join(map(str, y)) + "\n")
    (base / "activity_labels.txt").write_text(
        "1 WALKING\n2 WALKING_UPSTAIRS\n3 WALKING_DOWNSTAIRS\n4 SITTING\n5 STANDING\n6 LAYING\n"
    )


YEAST_COUNTS = {"CYT": 20, "NUC": 15, "MIT": 10, "ME3": 8, "ME2": 3, "EXC": 2}


def _write_yeast(path: Path, bad: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for cls, count in YEAST_COUNTS.items():
        for i in range(count):
            feats = " ".join(f"{v:.2f}" for v in RNG.uniform(0, 1, size=8))
            rows.append(f"{cls}_{i:04d}_YEAST  {feats}  {cls}")
    if bad:
        rows[7] = rows[7].rsplit(" ", 2)[0]  # drop a feature and the class
    path.write_text("\n".join(rows) + "\n")


def _one_line_error(name: str, root: Path, **kw) -> str:
    with pytest.raises(UserError) as info:
        load_source(name, root=str(root), **kw)
    msg = str(info.value)
    assert "\n" not in msg and msg
    return msg


def test_sources_registry_and_unknown_name():
    assert set(SOURCES) == {
        "mnist5k", "digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "har", "yeast"
    }
    with pytest.raises(UserError, match="unknown data source 'nope'; choose one of: .*mnist5k"):
        load_source("nope")


def test_mnist5k_fixed_stratified_split():
    a, b = load_source("mnist5k"), load_source("mnist5k")
    assert isinstance(a, TensorSplits) and a.name == "mnist5k"
    assert a.x_train.shape == (4000, 1, 28, 28) and a.x_test.shape == (1000, 1, 28, 28)
    assert a.input_shape == (1, 28, 28) and a.num_classes == 10
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert a.x_train.min() >= -1 and a.x_train.max() <= 1
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    assert torch.bincount(a.y_test).tolist() == [100] * 10


def test_digits_shapes():
    d = load_source("digits")
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10
    assert len(d.x_train) + len(d.x_test) == 1797 and len(d.x_test) == 360
    assert d.x_train.min() >= -1 and d.x_train.max() <= 1


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
)
@pytest.mark.parametrize("compress", [False, True])
def test_idx_sources(tmp_path, name, folder, compress):
    written = _write_mnist(tmp_path, folder, compress)
    s = load_source(name, root=str(tmp_path), download=False)
    assert s.x_train.shape == (20, 1, 28, 28) and s.x_test.shape == (10, 1, 28, 28)
    assert s.x_train.dtype == torch.float32 and s.num_classes == 10
    pixels = s.x_train * 0.5 + 0.5
    assert pixels.min() >= 0 and pixels.max() <= 1
    expected = torch.from_numpy(written["train"][0]).float().unsqueeze(1) / 255
    assert torch.allclose(pixels, expected, atol=1e-6)
    assert s.y_train.tolist() == written["train"][1].tolist()
    assert s.y_test.tolist() == written["t10k"][1].tolist()


@pytest.mark.parametrize("which", ["cifar10", "cifar100"])
def test_cifar_pickle_batches(tmp_path, which, write_cifar):
    write_cifar(tmp_path, which)
    s = load_source(which, root=str(tmp_path), download=False)
    n_train = 30 if which == "cifar10" else 6
    assert s.x_train.shape == (n_train, 3, 32, 32) and s.x_test.shape == (4, 3, 32, 32)
    assert s.num_classes == (10 if which == "cifar10" else 100)
    assert s.classes[:2] == ("class0", "class1")
    assert s.y_test.tolist() == [0, 1, 2, 3]
    red = s.x_train[0]
    assert torch.all(red[0] > 1.5) and torch.all(red[1:] < -1.5)  # channel 0 is max, others 0


def test_har_text_files(tmp_path):
    _write_har(tmp_path / "har")  # also found under <root>/har/UCI HAR Dataset
    s = load_source("har", root=str(tmp_path), download=False)
    assert s.classes == ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING")
    assert s.input_shape == (HAR_FEATURES,)
    assert len(s.x_train) == 20 and len(s.x_test) == 10  # LAYING rows dropped
    assert s.y_train.tolist() == [0, 1, 2, 3, 4] * 4
    assert torch.allclose(s.x_train.mean(0), torch.zeros(HAR_FEATURES), atol=1e-5)


def test_yeast_keeps_four_most_frequent(tmp_path):
    _write_yeast(tmp_path / "yeast" / "yeast.data")
    s = load_source("yeast", root=str(tmp_path), download=False)
    assert s.classes == ("CYT", "NUC", "MIT", "ME3") and s.input_shape == (8,)
    assert len(s.x_train) + len(s.x_test) == 53
    counts = Counter(torch.cat([s.y_train, s.y_test]).tolist())
    assert [counts[i] for i in range(4)] == [20, 15, 10, 8]
    assert torch.allclose(s.x_train.mean(0), torch.zeros(8), atol=1e-5)
    assert torch.allclose(s.x_train.std(0, unbiased=False), torch.ones(8), atol=1e-4)
    again = load_source("yeast", root=str(tmp_path), download=False)
    assert torch.equal(again.y_test, s.y_test)


@pytest.mark.parametrize(
    ("name", "where"),
    [("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
     ("har", "UCI HAR Dataset"), ("yeast", "")],
)
def test_missing_files_offline(tmp_path, name, where):
    msg = _one_line_error(name, tmp_path, download=False)
    assert str(tmp_path / where).rstrip("/") in msg and "download=False" in msg


@pytest.mark.parametrize("name", ["mnist", "cifar10", "har", "yeast"])
def test_failed_download_is_one_line(tmp_path, monkeypatch, name):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network\nsecond line")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    msg = _one_line_error(name, tmp_path, download=True)
    assert "download failed" in msg and "no network" in msg


def test_default_root_is_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"not found under data/MNIST/raw"):
        load_source("mnist", download=False)


@pytest.mark.parametrize("damage", ["truncate", "magic"])
def test_malformed_idx(tmp_path, damage):
    _write_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    blob = path.read_bytes()
    bad_magic = b"\x00\x00\x01\x07" + blob[4:]
    path.write_bytes(blob[: 16 + 5 * 784] if damage == "truncate" else bad_magic)
    assert "malformed mnist" in _one_line_error("mnist", tmp_path, download=False)


def test_malformed_cifar(tmp_path, write_cifar):
    write_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"this is not a pickle")
    assert "malformed cifar10" in _one_line_error("cifar10", tmp_path, download=False)


def test_malformed_har(tmp_path):
    _write_har(tmp_path, bad_row=True)
    assert "malformed har" in _one_line_error("har", tmp_path, download=False)


def test_malformed_yeast(tmp_path):
    _write_yeast(tmp_path / "yeast.data", bad=True)
    msg = _one_line_error("yeast", tmp_path, download=False)
    assert "malformed yeast" in msg and "expected 10 fields" in msg


# ------------------------------------------------------------------ CIFAR pickles, restricted
class _WritesMarker:
    """Unpickled by plain pickle, this creates its marker file."""

    def __init__(self, marker: Path, via: str):
        self.marker, self.via = marker, via

    def __reduce__(self):
        if self.via == "os.system":
            return os.system, (f"touch {self.marker}",)
        return Path.write_text, (self.marker, "ran")


@pytest.mark.parametrize("via", ["os.system", "Path.write_text"])
@pytest.mark.parametrize("target", ["data_batch_1", "batches.meta"])
def test_cifar_batch_that_imports_code_is_refused_unrun(tmp_path, write_cifar, via, target):
    folder = write_cifar(tmp_path / "data", "cifar10")
    marker = tmp_path / "marker"
    blob = pickle.dumps({b"data": _WritesMarker(marker, via), b"labels": [0],
                         b"label_names": [f"c{i}" for i in range(10)]})
    pickle.loads(blob)  # the payload is live: plain pickle runs it
    assert marker.exists()
    marker.unlink()
    (folder / target).write_bytes(blob)
    msg = _one_line_error("cifar10", tmp_path / "data", download=False)
    called = "posix.system" if via == "os.system" else "pathlib.Path.write_text"
    assert msg == (f"refusing to load {folder / target}: it asks to import {called} (not a "
                   "CIFAR batch); replace it with the original file")
    assert not marker.exists()


def _rewrite_batches(folder: Path, protocol, arrays: bool, numpy1: bool) -> None:
    """Pickle the data batches again (files this test wrote: safe to load unrestricted)."""
    for path in sorted(folder.glob("*_batch*")):
        batch = pickle.loads(path.read_bytes())
        if arrays:
            batch[b"labels"] = np.asarray(batch[b"labels"], dtype=np.int64)
        else:
            batch[b"data"] = batch[b"data"].tolist()
        blob = pickle.dumps(batch, protocol=protocol)
        if numpy1:  # numpy 1 writes numpy.core (a protocol-2 GLOBAL is plain text)
            assert protocol == 2 and b"numpy._core.multiarray\n" in blob
            blob = blob.replace(b"numpy._core.", b"numpy.core.")
        path.write_bytes(blob)


@pytest.mark.parametrize(("protocol", "arrays", "numpy1"), [
    (2, True, False), (2, True, True), (2, False, False), (None, True, False),
    (pickle.HIGHEST_PROTOCOL, True, False),
])
def test_cifar_batches_load_in_every_real_pickle_style(tmp_path, write_cifar, protocol, arrays,
                                                       numpy1):
    write_cifar(tmp_path / "a", "cifar10")
    folder = write_cifar(tmp_path / "b", "cifar10")
    _rewrite_batches(folder, protocol, arrays, numpy1)
    ref = load_source("cifar10", root=str(tmp_path / "a"), download=False)
    s = load_source("cifar10", root=str(tmp_path / "b"), download=False)
    assert s.digest == ref.digest and torch.equal(s.y_train, ref.y_train)


def test_pickled_numpy_arrays_load_with_either_numpy_name(tmp_path):
    from maxent_lightning.data.sources import _unpickle

    arr = np.arange(24, dtype=np.uint8).reshape(2, 12)
    blob = pickle.dumps({"a": arr, "i": np.int64(7), "e": b""}, protocol=2)
    for i, text in enumerate((blob, blob.replace(b"numpy._core.", b"numpy.core."))):
        (tmp_path / str(i)).write_bytes(text)
        d = _unpickle(tmp_path / str(i))
        assert np.array_equal(d["a"], arr) and d["a"].dtype == np.uint8
        assert d["i"] == 7 and d["e"] == b""


@pytest.mark.parametrize(("which", "count"), [("cifar10", 11), ("cifar10", 9), ("cifar100", 99)])
def test_cifar_class_names_must_match_the_data_set(tmp_path, write_cifar, which, count):
    folder = write_cifar(tmp_path, which)
    meta = folder / ("batches.meta" if which == "cifar10" else "meta")
    key = "label_names" if which == "cifar10" else "fine_label_names"
    meta.write_bytes(pickle.dumps({key: [f"c{i}" for i in range(count)]}))
    msg = _one_line_error(which, tmp_path, download=False)
    expected = 10 if which == "cifar10" else 100
    assert msg == (f"{meta} lists {count} class names ({key}) but {which} has {expected}; "
                   "replace it with the original file")


def test_cifar_label_outside_the_classes(tmp_path, write_cifar):
    write_cifar(tmp_path, "cifar10", n_train=2, labels=[0, 1] * 4 + [1, 10])
    msg = _one_line_error("cifar10", tmp_path, download=False)
    assert "malformed cifar10" in msg and "labels outside 0..9" in msg


# ------------------------------------------------------------------ the digest of the data
def _bump_byte(path: Path, offset: int) -> None:
    blob = bytearray(path.read_bytes())
    blob[offset] = (blob[offset] + 1) % 256
    path.write_bytes(bytes(blob))


def _fewer_cifar_images(root: Path) -> None:
    path = root / "cifar-10-batches-py" / "data_batch_5"
    batch = pickle.loads(path.read_bytes())  # written by this test
    path.write_bytes(pickle.dumps({k: v[:-1] for k, v in batch.items()}))


def _edit_field(path: Path, line: int, field: int, value: str) -> None:
    """Set one whitespace-separated field of one line of a text file."""
    lines = path.read_text().splitlines()
    fields = lines[line].split()
    fields[field] = value
    lines[line] = " ".join(fields)
    path.write_text("\n".join(lines) + "\n")


DIGEST_CASES = {  # name: (write the files under root, change one sample under root)
    "cifar10": (lambda root, write_cifar: write_cifar(root, "cifar10"), _fewer_cifar_images),
    "mnist": (lambda root, _: _write_mnist(root),
              lambda root: _bump_byte(root / "MNIST/raw/train-images-idx3-ubyte", 16 + 100)),
    "har": (lambda root, _: _write_har(root), lambda root: _edit_field(
        root / "UCI HAR Dataset/train/X_train.txt", 2, 0, "9.0000000e+00")),
    "yeast": (lambda root, _: _write_yeast(root / "yeast.data"), lambda root: _edit_field(
        root / "yeast.data", 4, 1, "9.00")),
}


@pytest.mark.parametrize("name", list(DIGEST_CASES))
def test_digest_follows_the_loaded_data(tmp_path, write_cifar, name):
    write, change = DIGEST_CASES[name]
    write(tmp_path / "a", write_cifar)
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    shutil.copytree(tmp_path / "a", tmp_path / "changed")
    change(tmp_path / "changed")
    a, copy, changed = (load_source(name, root=str(tmp_path / d), download=False)
                        for d in ("a", "copy", "changed"))
    assert re.fullmatch(r"[0-9a-f]{16}", a.digest)
    assert copy.digest == a.digest and changed.digest != a.digest


def test_digest_of_embedded_data_is_stable_and_names_the_data():
    a, b = load_source("digits"), load_source("digits")
    assert a is not b and a.digest == b.digest
    assert "digest" in vars(a)  # cached on the object
    assert dataclasses.replace(a, name="other").digest != a.digest
    assert dataclasses.replace(a, classes=a.classes[::-1]).digest != a.digest
    assert dataclasses.replace(a, y_test=a.y_test.flip(0)).digest != a.digest
