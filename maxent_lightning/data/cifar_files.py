"""Small CIFAR-10/100 data sets in the real python pickle format, for machines without the data:
the smoke scale of the paper targets, the tests and the benchmark read them through the real
loader. Learnable images: a fixed random picture per class plus noise.

    python -m maxent_lightning.data.cifar_files DIR [--which cifar10] [--per-batch 40] [--test 100]
"""

import argparse
import pickle
import tempfile
from pathlib import Path

import numpy as np

from .datamodule import split_indices


def cycled_labels(n: int, n_cls: int, val_fraction: float = 0.2) -> np.ndarray:
    """``n`` training labels cycling through the classes in each part of the fixed
    train/validation split (seed 0): every class has samples in both once there are enough."""
    labels = np.empty(n, dtype=np.int64)
    for part in split_indices(n, val_fraction, 0):
        labels[part.numpy()] = np.arange(len(part)) % n_cls
    return labels


def write_cifar(root: Path, which: str, n_train: int = 6, n_test: int = 4,
                learnable: bool = False, labels=None, val_fraction: float = 0.2) -> Path:
    """CIFAR python pickle batches (rows channel-major: R, G, B planes) under ``root``; the
    folder written, whole or not at all (built beside it, then renamed). Images are pure red,
    or with ``learnable`` a fixed random picture per class plus noise. ``n_train`` images per
    training batch (CIFAR-10: 5 batches, CIFAR-100: one); ``labels``: all training labels in
    batch order (default: ``cycled_labels`` for ``val_fraction``)."""
    ten = which == "cifar10"
    folder = Path(root) / ("cifar-10-batches-py" if ten else "cifar-100-python")
    if folder.exists():
        raise FileExistsError(f"{folder} exists")
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    n_cls = 10 if ten else 100
    label_key = b"labels" if ten else b"fine_labels"
    rng = np.random.default_rng(n_cls)
    templates = rng.integers(0, 256, (n_cls, 3072))
    train_files = [f"data_batch_{i}" for i in range(1, 6)] if ten else ["train"]
    if labels is None:
        labels = cycled_labels(n_train * len(train_files), n_cls, val_fraction)
    labels = [int(c) for c in labels]
    if len(labels) != n_train * len(train_files):
        raise ValueError(f"{len(labels)} labels for {len(train_files)} batches of {n_train}")

    def batch(labels: list[int]) -> dict:
        n = len(labels)
        if learnable:
            noisy = templates[labels] + rng.integers(-40, 41, (n, 3072))
            data = noisy.clip(0, 255).astype(np.uint8)
        else:
            data = np.zeros((n, 3072), dtype=np.uint8)
            data[:, :1024] = 255  # pure red images
        return {b"data": data, label_key: labels}

    for i, f in enumerate(train_files):
        (building / f).write_bytes(pickle.dumps(batch(labels[i * n_train:(i + 1) * n_train])))
    test = batch([i % n_cls for i in range(n_test)])
    (building / ("test_batch" if ten else "test")).write_bytes(pickle.dumps(test))
    names = [f"class{i}" for i in range(n_cls)]
    meta = {(b"label_names" if ten else b"fine_label_names"): names}
    (building / ("batches.meta" if ten else "meta")).write_bytes(pickle.dumps(meta))
    building.chmod(folder.parent.stat().st_mode & 0o777)  # not mkdtemp's 0700
    building.rename(folder)
    return folder


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--which", choices=("cifar10", "cifar100"), default="cifar10")
    parser.add_argument("--per-batch", type=int, default=40, help="images per training batch")
    parser.add_argument("--test", type=int, default=100, help="test images")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    args = parser.parse_args(argv)
    folder = write_cifar(args.root, args.which, args.per_batch, args.test, learnable=True,
                         val_fraction=args.val_fraction)
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
