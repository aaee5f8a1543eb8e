"""Load the ``results.csv`` rows of every finished job under one or more multirun directories."""

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from maxent_lightning.results import COLUMNS, METRICS, NUMERIC, TEXT

_TRUE = {"true", "1", "1.0", "yes"}
_FALSE = {"false", "0", "0.0", "no"}


class AnalysisError(Exception):
    """A problem with the user's input, reported as one line (exit status 2)."""


class NoRows(Exception):
    """The loaded runs have no rows for a requested table or figure."""


@dataclass
class Runs:
    """All rows (one per job, task-dependent granularity) plus bookkeeping."""

    frame: pd.DataFrame
    jobs: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        return (f"found {len(self.jobs)} job(s) with results.csv ({len(self.frame)} rows), "
                f"skipped {len(self.skipped)} without results.csv (unfinished)")


def _to_bool(value):
    if isinstance(value, bool) or pd.isna(value):
        return value
    text = str(value).strip().lower()
    return True if text in _TRUE else False if text in _FALSE else pd.NA


def normalize(frame: pd.DataFrame) -> pd.DataFrame:
    """Add missing columns and give every column its type (numbers, text, imp as bool)."""
    frame = frame.copy()
    for col in COLUMNS:
        if col not in frame:
            frame[col] = pd.NA
    for col in NUMERIC + METRICS:
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    for col in TEXT:
        frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
        frame[col] = frame[col].map(lambda v: None if v is None else str(v))
    frame["merge"] = frame["merge"].fillna("none")
    frame["split"] = frame["split"].fillna("test")
    frame["imp"] = frame["imp"].map(_to_bool).astype(object)
    return frame


def _job_candidates(root: Path) -> set[Path]:
    """Directories that look like Hydra jobs: numbered sweep subdirs or dirs with a config."""
    found = {p.parent for p in root.rglob("config.yaml")}
    found |= {p.parent for p in root.rglob("metrics.json")}
    for sweep in {p.parent for p in root.rglob("multirun.yaml")} | {root}:
        found |= {d for d in sweep.iterdir() if d.is_dir() and d.name.isdigit()}
    return found


def _read(path: Path) -> pd.DataFrame | None:
    try:
        frame = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError):
        return None
    return frame if len(frame) else None


def load_runs(dirs) -> Runs:
    """Concatenate ``**/results.csv`` under each directory; jobs without one are skipped."""
    frames, jobs, skipped = [], [], []
    for given in dirs:
        root = Path(given)
        if not root.is_dir():
            raise AnalysisError(f"{given}: no such directory")
        done = []
        for csv in sorted(root.rglob("results.csv")):
            frame = _read(csv)
            if frame is None:
                continue
            frame["job"] = str(csv.parent)
            frames.append(frame)
            done.append(csv.parent)
        if not done:
            raise AnalysisError(f"{given}: no finished job (no non-empty results.csv below it)")
        jobs += done
        cands = _job_candidates(root) | set(done)
        for cand in sorted(cands - set(done)):
            if cands.isdisjoint(cand.parents):  # nested dirs belong to their job
                skipped.append(cand)
    return Runs(normalize(pd.concat(frames, ignore_index=True)), jobs, skipped)


def _matrices(node, path=()):
    """Yield (key path, matrix) for every value under a key named like ``*confusion``."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _matrices(value, (*path, str(key)))
        return
    name = "/".join(path)
    if path and name.endswith("confusion") and _square(node):
        yield name, node


def _square(node) -> bool:
    return (isinstance(node, list) and bool(node)
            and all(isinstance(r, list) and len(r) == len(node) for r in node))


def _json(path: Path):
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


CONFUSION = ["job", "merge", "step", "class_set", "matrix"]


def confusion_matrices(jobs) -> pd.DataFrame:
    """One row per confusion matrix of each job: the entries of its ``confusions.json``
    (``{"confusions": [{merge, step, class_set, matrix}, ...]}``) and every metrics.json value
    under a key ending in 'confusion' (its key path, e.g. ``weight/confusion``, as merge)."""
    rows = []
    for job in jobs:
        listed = _json(Path(job) / "confusions.json") or {}
        for entry in listed.get("confusions", []) if isinstance(listed, dict) else []:
            if isinstance(entry, dict) and _square(entry.get("matrix")):
                rows.append({"job": str(job), **{k: entry.get(k) for k in CONFUSION[1:]}})
        for key, matrix in _matrices(_json(Path(job) / "metrics.json") or {}):
            merge = key.rsplit("/", 1)[0] if "/" in key else "none"
            rows.append({"job": str(job), "merge": merge, "matrix": matrix})
    frame = pd.DataFrame(rows, columns=CONFUSION)
    frame["merge"] = frame["merge"].fillna("none")
    return frame
