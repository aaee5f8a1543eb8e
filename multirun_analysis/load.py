"""Load the ``results.csv`` rows of every finished job under one or more multirun directories."""

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from maxent_lightning.results import ADDED, COLUMNS, KEYS, METRICS, NUMERIC, ORDERED, TEXT

# A circuits job's results.csv starts with these columns (``tasks.circuits.ID_COLUMNS``), then
# its own; every other job's holds exactly ``COLUMNS`` (or, written before they were added,
# ``COLUMNS`` without ``ADDED``).
LEGACY = [c for c in COLUMNS if c not in ADDED]
CIRCUIT_KEYS = [*KEYS[:KEYS.index("seed") + 1], "num_classes"]

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
                f"skipped {len(self.skipped)} unfinished (no metrics.json)")


def _to_bool(value):
    if isinstance(value, bool) or pd.isna(value):
        return value
    text = str(value).strip().lower()
    return True if text in _TRUE else False if text in _FALSE else pd.NA


def _permutation(text):
    """``ordered`` or a random permutation's index ('3', whether the file reads 3 or 3.0)."""
    if pd.isna(text) or text == ORDERED:
        return None if pd.isna(text) else text
    try:
        return str(int(float(text)))
    except ValueError:
        return text


def _order(permutation) -> str | None:
    return None if pd.isna(permutation) else ORDERED if permutation == ORDERED else "random"


def normalize(frame: pd.DataFrame) -> pd.DataFrame:
    """Add missing columns and give every column its type (numbers, text, imp as bool); ``order``
    tells complete merges in increasing class order (``ordered``) from ``random`` ones."""
    frame = frame.copy()
    for col in COLUMNS:
        if col not in frame:
            frame[col] = pd.NA
    for col in NUMERIC + METRICS:
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    for col in TEXT:
        frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
        frame[col] = frame[col].map(lambda v: None if v is None else str(v))
    frame["permutation"] = frame["permutation"].map(_permutation).astype(object)
    frame["order"] = frame["permutation"].map(_order).astype(object)
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


def _rerun(job: Path) -> str:
    return f"rerun the job: delete {job / 'metrics.json'} and rerun its sweep command"


def _metrics(job: Path) -> dict | None:
    """The job's metrics.json (written last: the job is done); None while it has none."""
    path = job / "metrics.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise AnalysisError(f"{path} does not parse ({err}); {_rerun(job)}") from None
    if not isinstance(data, dict):
        raise AnalysisError(f"{path} holds no JSON object; {_rerun(job)}")
    return data


def _header_problem(header: list[str], task) -> str | None:
    circuits = task == "circuits"
    want = CIRCUIT_KEYS if circuits else LEGACY if header == LEGACY else COLUMNS
    got = header[:len(want)] if circuits else header
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        if g != w:
            return f"header column {i + 1} is {g!r}, expected {w!r}"
    if len(got) != len(want):
        return f"header has {len(header)} columns, expected {len(want)}{' or more' * circuits}"
    return None


def _read(job: Path, metrics: dict) -> pd.DataFrame:
    """The rows of a finished job's results.csv, checked whole against its metrics.json."""
    path, rows = job / "results.csv", metrics.get("rows")

    def bad(problem):
        return AnalysisError(f"{path}: {problem}; {_rerun(job)}")

    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
        raise AnalysisError(f"{job / 'metrics.json'} records no row count (rows={rows!r}); "
                            + _rerun(job))
    if not path.exists():
        raise AnalysisError(f"finished job {job} has no results.csv (deleted?); rerun it: "
                            f"delete {job / 'metrics.json'} and rerun its sweep command")
    try:
        text = path.read_bytes().decode()
    except OSError as err:
        raise bad(f"cannot be read ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise bad("does not parse (not UTF-8 text)") from None
    if not text.endswith("\n"):  # to_csv ends every line, the last included
        raise bad("is empty" if not text else "its last line is incomplete (truncated)")
    try:
        lines = list(csv.reader(io.StringIO(text), strict=True))
    except csv.Error as err:
        raise bad(f"does not parse ({err})") from None
    problem = _header_problem(lines[0], metrics.get("task"))
    if problem:
        raise bad(problem)
    odd = next((i for i, line in enumerate(lines) if len(line) != len(lines[0])), None)
    if odd is not None:  # pandas would fill missing fields or shift extra ones into an index
        raise bad(f"row {odd} has {len(lines[odd])} fields, expected {len(lines[0])}")
    try:
        frame = pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise bad(f"does not parse ({str(err).splitlines()[0]})") from None
    if len(frame) != rows:
        raise bad(f"{len(frame)} rows, but its metrics.json records {rows} (truncated?)")
    return frame


def load_runs(dirs) -> Runs:
    """Concatenate the ``results.csv`` rows of every finished job (a job directory with
    ``metrics.json``, written last) under each directory, each job once; unfinished jobs are
    skipped, a finished job whose results.csv is missing or not whole is refused."""
    found, skipped = {}, {}  # resolved job directory -> (job, its rows) / job
    for given in dirs:
        root = Path(given)
        if not root.is_dir():
            raise AnalysisError(f"{given}: no such directory")
        cands = _job_candidates(root) | {p.parent for p in root.rglob("results.csv")}
        rows = 0
        for job in sorted(c for c in cands if cands.isdisjoint(c.parents)):  # nested: its job's
            key, metrics = job.resolve(), _metrics(job)
            if metrics is None:
                skipped.setdefault(key, job)
            elif "rows" in metrics or (job / "results.csv").exists():  # not a module's run
                if key not in found:
                    found[key] = (job, _read(job, metrics).assign(job=str(job)))
                rows += len(found[key][1])
        if not rows:
            raise AnalysisError(f"{given}: no finished job with rows below it; pass a sweep "
                                "directory whose jobs wrote results.csv and metrics.json")
    frames = [frame for _, frame in found.values() if len(frame)]
    return Runs(normalize(pd.concat(frames, ignore_index=True)),
                [job for job, _ in found.values()], list(skipped.values()))


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
