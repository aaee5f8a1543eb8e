"""``python -m multirun_analysis DIR [DIR...] --out reports/NAME [--table NAME ...]``."""

import argparse
import sys

from maxent_lightning.extras import missing

from . import ARTIFACTS, AnalysisError, analyze
from .publish import publish
from .tables import BOLD, ENTROPY, RACC


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="maxent-analysis",
        description="Tables (md/csv/tex) and figures (png) from Hydra multirun directories.")
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="multirun (sweep) directories")
    parser.add_argument("--out", required=True, help="output directory, e.g. reports/table2")
    parser.add_argument("--table", nargs="+", default=["all"], metavar="NAME",
                        help="what to write: all (default); report (tables 1, 2, 4 and paper: "
                             "the paper's published values beside ours), each where the data "
                             f"support it; or any of {', '.join(ARTIFACTS)}")
    parser.add_argument("--bold-entropy", action="store_true",
                        help="bold the best non-rewarded entropy too (default: the best rewarded "
                             "accuracy only, as the paper)")
    parser.add_argument("--wandb", nargs="?", const="", metavar="PROJECT",
                        help="also publish the tables (as W&B Tables) and figures as one W&B run "
                             "in the jobs' project, entity, group and tags (their logger.wandb; "
                             "PROJECT overrides the project; offline unless the jobs' mode or "
                             "WANDB_MODE says online)")
    args = parser.parse_args(argv)
    if args.wandb is not None and (problem := missing("wandb", "wandb", "--wandb")):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        bold = (RACC, ENTROPY) if args.bold_entropy else BOLD
        report = analyze(args.dirs, args.out, args.table, bold)
    except AnalysisError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.runs.summary())
    for note in report.notes:
        print(note)
    for path in report.written:
        print(f"wrote {path}")
    if args.wandb is not None:
        run_dir = publish(report, args.out, args.wandb or None)
        print(f"W&B run {run_dir} (upload: wandb sync {run_dir})")
    return 0


def console() -> None:
    """The ``maxent-analysis`` command."""
    sys.exit(main())


if __name__ == "__main__":
    console()
