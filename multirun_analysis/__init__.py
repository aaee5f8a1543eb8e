"""Analysis of multirun directories: the paper's tables (markdown, CSV, LaTeX) and figures (PNG).

``analyze(dirs, out, which)`` loads every finished job's ``results.csv`` below ``dirs`` and
writes the requested artifacts into ``out``; see ``python -m multirun_analysis --help``.
"""

from dataclasses import dataclass, field
from pathlib import Path

from . import compare, figures, tables
from .circuit_report import report as circuits_report
from .load import AnalysisError, NoRows, Runs, load_runs

TABLES = {"table1": tables.table1, "table2": tables.table2, "table4": tables.table4}
FIGURES = {f"fig{i}": getattr(figures, f"fig{i}") for i in range(3, 9)}
# Summaries with both a table and a figure.
BOTH = {"cifar10": (tables.cifar10, figures.cifar10),
        "cifar100": (tables.cifar100, figures.cifar100),
        "width": (tables.width, figures.width)}
# paper: the published values beside ours (compare.py).
ARTIFACTS = [*TABLES, "paper", *FIGURES, "confusion", *BOTH]
# Names for several artifacts, each written where the data support it (else skipped, noted).
GROUPS = {"all": ARTIFACTS, "report": [*TABLES, "paper"]}

__all__ = ["ARTIFACTS", "GROUPS", "AnalysisError", "Report", "Runs", "analyze", "load_runs"]


@dataclass
class Report:
    runs: Runs
    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _make(name: str, runs: Runs, out: Path, bold) -> list[Path]:
    df = runs.frame
    if name in TABLES:
        return [p for t in TABLES[name](df, bold) for p in t.write(out)]
    if name in FIGURES:
        return FIGURES[name](df, out)
    if name == "paper":
        return compare.write(runs, out)
    if name == "confusion":
        return figures.confusion(runs.jobs, df, out)
    table, figure = BOTH[name]
    return [p for t in table(df, bold) for p in t.write(out)] + figure(df, out)


def _index(report: Report, out: Path) -> Path:
    """``index.md``: every markdown table inline and every figure as an image link."""
    lines = [f"# Analysis of {', '.join(sorted({str(j.parent) for j in report.runs.jobs}))}",
             "", report.runs.summary(), ""]
    for path in report.written:
        if path.suffix == ".md":
            lines += [path.read_text(), ""]
        elif path.suffix == ".png":
            lines += [f"![{path.stem}]({path.name})", ""]
    lines += [f"- {note}" for note in report.notes]
    index = out / "index.md"
    index.write_text("\n".join(lines) + "\n")
    return index


def analyze(dirs, out, which=("all",), bold=tables.BOLD) -> Report:
    """Write the artifacts named in ``which`` (or all that the data supports) into ``out``;
    the tables bold the best values of the metrics in ``bold`` (the paper's: R-Acc only).

    A requested artifact without matching rows raises :class:`AnalysisError`; one requested
    through a group (``all``, ``report``) is skipped and noted in ``Report.notes``.
    """
    which = list(which)
    unknown = [w for w in which if w not in GROUPS and w not in ARTIFACTS]
    if unknown:
        raise AnalysisError(f"unknown table/figure {unknown[0]!r}; choose from "
                            + ", ".join([*GROUPS, *ARTIFACTS]))
    report = Report(load_runs(dirs))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grouped = {a for w in which for a in GROUPS.get(w, [])}
    names = [a for a in ARTIFACTS if a in grouped or a in which]
    for name in names:
        try:
            report.written += _make(name, report.runs, out, tuple(bold))
        except NoRows as err:
            if name not in grouped:
                raise AnalysisError(f"{name}: {err} in {', '.join(map(str, dirs))}") from None
            report.notes.append(f"skipped {name}: {err}")
    if "all" in which and (report.runs.frame["task"] == "circuits").any():
        report.written += circuits_report(report.runs.frame, out)
    if not report.written:
        raise AnalysisError(f"nothing to write: {'; '.join(report.notes)}")
    report.written.append(_index(report, out))
    return report
