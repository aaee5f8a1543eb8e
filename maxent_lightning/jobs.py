"""Shared machinery of the composition tasks (single, pairwise, complete, mode_connectivity,
merge, eval): the job's output directory and skip-if-done fingerprint, results.csv rows,
metrics.json, one W&B run per job, GPU assignment, pair sampling and class permutations.

Every job writes into its Hydra job directory: ``config.yaml`` (resolved config),
``results.csv`` (one row per evaluated model, columns ``COLUMNS``; empty where not applicable),
``confusions.json`` (confusion matrices, rows: true label), ``metrics.json`` (summary with the
job ``fingerprint``; written last, so it marks the job done) and PNG figures.
Rows: ``model`` is the model config name (mlp_shallow, lenet, ...), else the class name;
``class_set`` the rewarded classes joined by "-" (a merge: their union); ``step`` the number of
modules merged; ``loss_value`` KL(ỹ ‖ softmax(z/T)) with MaxEnt targets on ``class_set``.
"""

import time
from collections.abc import Sequence
from itertools import combinations
from math import comb
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .builders import plain
from .data.datamodule import cached_source
from .errors import UserError
from .evaluate import evaluate
from .merge import has_batchnorm, logit_average, recalibrate_batchnorm, weight_sum
from .plots import confusion_png
from .storage import ModuleRecord, config_digest, read_json, write_json, write_text

COLUMNS = (
    "task", "experiment", "data", "model", "loss", "imp", "sparsity", "temperature", "seed",
    "cardinality", "pair", "permutation", "step", "class_set", "merge", "t", "split",
    "rewarded_acc", "nonrewarded_entropy", "acc", "loss_value", "barrier_pct",
)
# Config keys that do not change a job's results (left out of its fingerprint).
IGNORED_KEYS = ("paths", "logger", "store", "family")
IGNORED_TRAINER_KEYS = ("devices", "accelerator", "enable_progress_bar")
GPU_ACCELERATORS = ("auto", "gpu", "cuda")


# ---------------------------------------------------------------- identity of a job
def model_name(cfg: DictConfig) -> str:
    """The model config name (mlp_shallow, lenet, ...) when Hydra knows it, else the class."""
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get("model")
        if choice:
            return str(choice)
    return str(cfg.model._target_).rsplit(".", 1)[-1].lower()


def job_fingerprint(cfg: DictConfig) -> str:
    """Digest of the resolved config minus what does not change the results."""
    def value(node):
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node

    spec = {k: value(cfg[k]) for k in cfg if k not in IGNORED_KEYS}
    for key, ignored in (("trainer", IGNORED_TRAINER_KEYS), ("data", ("root", "download"))):
        spec[key] = {k: v for k, v in (spec.get(key) or {}).items() if k not in ignored}
    return config_digest(spec)


def job_num() -> int:
    return int(HydraConfig.get().job.get("num") or 0) if HydraConfig.initialized() else 0


def class_set(classes: Sequence[int]) -> str:
    return "-".join(str(int(c)) for c in sorted(classes))


# ---------------------------------------------------------------- devices
def assign_device(num: int, device_count: int, accelerator: str) -> int | None:
    """CUDA device of job ``num`` when several are visible: ``num % device_count``."""
    if str(accelerator) not in GPU_ACCELERATORS or device_count < 2:
        return None
    return int(num) % int(device_count)


def setup_device(cfg: DictConfig) -> torch.device:
    """Pin this job (its store training and its evaluation) to one device."""
    accelerator, count = str(cfg.trainer.get("accelerator", "auto")), torch.cuda.device_count()
    index = assign_device(job_num(), count, accelerator)
    if index is not None:
        cfg.trainer.devices = [index]
        return torch.device(f"cuda:{index}")
    return torch.device("cuda" if count and accelerator in GPU_ACCELERATORS else "cpu")


# ---------------------------------------------------------------- class sets
def sample_pairs(num_classes: int, cardinality: int, n_pairs: int, seed: int = 0):
    """``n_pairs`` distinct pairs (R1, R2) of disjoint sorted class sets of size
    ``cardinality``; deterministic in (seed, num_classes, cardinality) only, so every seed,
    loss and model sees the same pairs. Fewer when fewer distinct pairs exist."""
    c, k = int(num_classes), int(cardinality)
    if k < 1 or 2 * k > c:
        raise UserError(
            f"cardinality={k} needs 2*{k} <= {c} classes for two disjoint class sets; "
            f"choose cardinality in 1..{c // 2}"
        )
    rng = np.random.default_rng([int(seed), c, k])
    total = comb(c, k) * comb(c - k, k) // 2
    if total <= 20000:  # enumerate every unordered pair, then draw without replacement
        pairs = [(a, b) for a in combinations(range(c), k)
                 for b in combinations([x for x in range(c) if x not in a], k) if a < b]
        return [(list(pairs[i][0]), list(pairs[i][1]))
                for i in rng.permutation(len(pairs))[:n_pairs]]
    seen, out = set(), []
    while len(out) < n_pairs:
        p = rng.permutation(c)
        a, b = sorted(tuple(sorted(int(x) for x in s)) for s in (p[:k], p[k:2 * k]))
        if (a, b) not in seen:
            seen.add((a, b))
            out.append((list(a), list(b)))
    return out


def pick_pair(cfg: DictConfig, num_classes: int):
    """Pair ``cfg.pair`` of cardinality ``cfg.cardinality``; None if only fewer exist."""
    pairs = sample_pairs(num_classes, cfg.cardinality, cfg.n_pairs, cfg.pair_seed)
    if not 0 <= int(cfg.pair) < int(cfg.n_pairs):
        raise UserError(f"pair={cfg.pair} must be in 0..{cfg.n_pairs - 1} (n_pairs={cfg.n_pairs})")
    return pairs[int(cfg.pair)] if int(cfg.pair) < len(pairs) else None


def class_permutation(num_classes: int, index: int) -> list[int]:
    """Permutation ``index`` of the classes (seeded by the index only)."""
    if int(index) < 0:
        raise UserError(f"permutation={index} must be >= 0")
    return [int(c) for c in np.random.default_rng(int(index)).permutation(int(num_classes))]


# ---------------------------------------------------------------- data and evaluation
def load_data(cfg: DictConfig, name: str | None = None):
    d = cfg.data
    return cached_source(name or d.name, d.get("root"), bool(d.get("download", True)))


def on_device(net: torch.nn.Module, device: torch.device):
    net = net.to(device).eval()
    return lambda x: net(x.to(device))


@torch.no_grad()
def logits_of(net: torch.nn.Module, x: torch.Tensor, device, batch_size: int = 1000):
    model = on_device(net, device)
    return torch.cat([model(x[i : i + batch_size]).float().cpu()
                      for i in range(0, len(x), batch_size)])


def precomputed(logits: torch.Tensor):
    """A 'model' over sample indices: evaluate(precomputed(z), torch.arange(n), y, ...)."""
    return lambda index: logits[index]


def wants_recalibration(cfg: DictConfig, net: torch.nn.Module) -> bool:
    mode = str(cfg.merge.recalibrate_bn).lower()
    if mode not in ("auto", "true", "false"):
        raise UserError(f"merge.recalibrate_bn={mode} must be auto, true or false")
    return mode != "false" and has_batchnorm(net)


def recalibrate(cfg, net, x_train, device):
    if wants_recalibration(cfg, net):
        recalibrate_batchnorm(net.to(device), x_train)
    return net


def scores(model, x, y, rewarded, num_classes, temperature) -> tuple[dict, torch.Tensor]:
    """Row values and confusion matrix of ``model`` on (x, y) for the rewarded set."""
    m = evaluate(model, x, y, list(rewarded), num_classes, float(temperature), "maxent")
    values = {k: m[k] for k in ("rewarded_acc", "nonrewarded_entropy", "acc")}
    values["loss_value"] = m["loss"]
    return values, torch.tensor(m["confusion"])


def score_merges(job, records, rewarded, splits, kinds, weights=None) -> dict:
    """{kind: (row values, confusion, net)} of the weight sum and/or logit average of the modules
    on ``rewarded`` (the union of their classes); BN recalibrated after a weight merge."""
    out, first = {}, records[0]
    for kind in kinds:
        if kind == "weight":
            net = recalibrate(job.cfg, weight_sum(records)[0], splits.x_train, job.device)
        else:
            net = logit_average(records, weights)
        values, confusion = scores(on_device(net, job.device), splits.x_test, splits.y_test,
                                   rewarded, first.num_classes, first.temperature)
        out[kind] = (values, confusion, net.cpu())
    return out


def merge_kinds(cfg: DictConfig) -> list[str]:
    kind = str(cfg.merge.kind)
    if kind not in ("both", "weight", "logit"):
        raise UserError(f"merge.kind={kind} must be both, weight or logit")
    return ["weight", "logit"] if kind == "both" else [kind]


def line_png(path: Path, curves: dict, xlabel: str, ylabel: str, title: str = "",
             hline: float | None = None) -> Path:
    """One line per label: ``curves = {label: (xs, ys)}``."""
    import matplotlib.pyplot as plt  # plots sets the headless backend

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (xs, ys) in curves.items():
        ax.plot(xs, ys, marker="o", markersize=3, label=str(label))
    if hline is not None:
        ax.axhline(hline, color="gray", linestyle="--", linewidth=1)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if 1 < len(curves) <= 20:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- the job
class Job:
    """One composition job in its Hydra output directory."""

    def __init__(self, cfg: DictConfig, task: str):
        self.cfg, self.task, self.t0 = cfg, task, time.perf_counter()
        self.out = Path(HydraConfig.get().runtime.output_dir)
        self.fingerprint = job_fingerprint(cfg)
        self.images: dict[str, Path] = {}
        self.device = torch.device("cpu")

    @classmethod
    def start(cls, cfg: DictConfig, task: str) -> "Job | None":
        """The job, or None (after printing 'skip') when it already finished."""
        job = cls(cfg, task)
        done = job.out / "metrics.json"
        if done.exists():
            if read_json(done).get("fingerprint") == job.fingerprint:
                print(f"skip: {task} job already done in {job.out}")
                return None
            raise UserError(f"{job.out} already holds a finished job of a different config; "
                            "choose another hydra.sweep.dir / hydra.run.dir or delete it")
        write_text(job.out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        job.device = setup_device(cfg)
        return job

    def row(self, **values) -> dict:
        """A results row: this job's config columns, then ``values``."""
        cfg = self.cfg
        imp = bool(cfg.imp.enabled) and int(cfg.imp.rounds) > 0
        row = dict.fromkeys(COLUMNS)
        row.update(task=self.task, experiment=cfg.experiment_name, data=cfg.data.name,
                   model=model_name(cfg), loss=cfg.loss.targets, imp=imp,
                   sparsity=float(cfg.imp.sparsity) if imp else 0.0,
                   temperature=float(cfg.loss.temperature), seed=int(cfg.seed))
        row.update(values)
        return row

    def confusion(self, name: str, matrix: torch.Tensor, classes, title: str) -> Path:
        path = confusion_png(self.out / f"{name}.png", matrix, classes, title)
        self.images[name] = path
        return path

    def plot(self, name: str, curves: dict, xlabel: str, ylabel: str, title: str = "",
             hline: float | None = None) -> Path:
        path = line_png(self.out / f"{name}.png", curves, xlabel, ylabel, title, hline)
        self.images[name] = path
        return path

    def finish(self, rows: list[dict], summary: dict, run_name: str = "") -> dict:
        """Write results.csv (and confusions.json: the ``confusions`` of the summary), log to
        W&B (one run, finished here), then metrics.json."""
        frame = pd.DataFrame(rows, columns=list(COLUMNS))
        write_text(self.out / "results.csv", frame.to_csv(index=False))
        confusions = summary.pop("confusions", None)
        if confusions:
            write_json(self.out / "confusions.json", {"confusions": confusions})
        metrics = {"fingerprint": self.fingerprint, "task": self.task,
                   "experiment": self.cfg.experiment_name, "rows": len(rows),
                   "wall_s": round(time.perf_counter() - self.t0, 2), **summary}
        self._wandb(frame, metrics, run_name)
        write_json(self.out / "metrics.json", metrics)
        return metrics

    def _wandb(self, frame: pd.DataFrame, metrics: dict, run_name: str) -> None:
        wcfg = (self.cfg.get("logger") or {}).get("wandb")
        if wcfg is None:
            return
        import wandb

        run = wandb.init(
            project=wcfg.get("project", "maxent_lightning"),
            group=f"{self.cfg.experiment_name}-seed{self.cfg.seed}", job_type=self.task,
            name=run_name or f"{self.task}-{self.out.name}", dir=str(self.out),
            mode=wcfg.get("mode", "offline"), config=plain(self.cfg), reinit="finish_previous",
        )
        try:
            run.log({k: wandb.Image(str(p)) for k, p in self.images.items()})
            run.log({"results": wandb.Table(dataframe=frame.astype(str))})
            run.summary.update({k: v for k, v in metrics.items()
                                if isinstance(v, int | float | str | bool)})
        finally:
            run.finish()


def record_row(job: Job, rec: ModuleRecord, **values) -> dict:
    """A results row whose config columns come from a module checkpoint."""
    spec, imp = rec.spec, rec.spec["imp"]
    imp_on = bool(imp["enabled"]) and int(imp["rounds"]) > 0
    same_model = plain(job.cfg.model) == spec["model"]
    name = model_name(job.cfg) if same_model else spec["model"]["_target_"].rsplit(".", 1)[-1]
    return job.row(data=spec["data"]["name"], model=name.lower(), loss=spec["loss"]["targets"],
                   imp=imp_on, sparsity=float(imp["sparsity"]) if imp_on else 0.0,
                   temperature=float(rec.temperature), seed=int(rec.seed), **values)
