"""``--help``: Hydra's help template (conf/hydra/default.yaml) filled from the package itself,
so it always lists the tasks, experiments and config groups that exist, one per line."""

import ast
import re
import textwrap
from pathlib import Path

from omegaconf import OmegaConf

from .config import CONFIG_DIR

TASK_DIR = Path(__file__).resolve().parent / "tasks"
# Groups that are plumbing, not choices for users (tasks and experiments have their own lists;
# local is the user's own, conf/local/README.md).
INTERNAL_GROUPS = ("experiment", "hydra", "local", "paths", "recipe", "task")
WIDTH = 100


def _summary(text: str, room: int) -> str:
    """The first sentence of ``text`` in one line of at most ``room`` characters."""
    text = " ".join(text.split()).replace("``", "")
    text = re.sub(r"^The \S+ task(?: \([^)]*\))?: ", "", text)
    first = re.split(r"(?<=[\w)])\. ", text, maxsplit=1)[0].rstrip(".")
    first = re.sub(r" \([^()]*\)", "", first)  # asides: "(Figure 4)", "(shallow MLP [512])"
    return textwrap.shorten(first, room, placeholder=" ...")


def _comment(path: Path) -> str:
    """The leading comment block of a config file (without its ``@package`` line)."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if "@package" not in line:
            lines.append(line.lstrip("# "))
    return " ".join(lines)


def _rows(entries: dict[str, str]) -> list[str]:
    pad = max(map(len, entries), default=0) + 2
    return [f"  {name:<{pad}}{_summary(text, WIDTH - pad - 2)}".rstrip()
            for name, text in entries.items()]


def tasks() -> dict[str, str]:
    """Task name → its module docstring."""
    return {p.stem: ast.get_docstring(ast.parse(p.read_text())) or ""
            for p in sorted(TASK_DIR.glob("*.py")) if p.stem != "__init__"}


def experiments() -> dict[str, str]:
    """Experiment name → the leading comment of its config."""
    return {p.stem: _comment(p) for p in sorted((Path(CONFIG_DIR) / "experiment").glob("*.yaml"))}


def groups() -> dict[str, list[str]]:
    """User-facing config group → its options."""
    conf = Path(CONFIG_DIR)
    return {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in sorted(conf.iterdir())
            if d.is_dir() and d.name not in INTERNAL_GROUPS and any(d.glob("*.yaml"))}


def help_text() -> str:
    choices = {g: opts for g, opts in groups().items() if len(opts) > 1}
    sections = ", ".join(g for g in groups() if g not in choices)
    pad = max(map(len, choices)) + 2
    return "\n".join([
        "maxent-lightning: train Maximum-Entropy subnetwork modules (MaxEnt loss + iterative",
        "magnitude pruning) and compose them (weight sum, logit averaging).",
        "",
        "Usage: maxent-lightning [task=NAME] [experiment=NAME] [GROUP=OPTION ...] [key=value ...]",
        "       [-m] [--cfg job]        (or: python -m maxent_lightning ...)",
        "",
        "Tasks (task=NAME; default train):",
        *_rows(tasks()),
        "",
        "Experiments (experiment=NAME or +experiment=NAME; -m runs its sweep):",
        *_rows(experiments()),
        "",
        "Config groups (GROUP=OPTION):",
        *[f"  {g:<{pad}}{', '.join(opts)}" for g, opts in choices.items()],
        *textwrap.wrap(f"Settings (key=value): seed, rewarded, classes, cardinality, pair, "
                       f"permutation, checkpoints, and the sections {sections} (see --cfg job)",
                       WIDTH, initial_indent="  ", subsequent_indent="    "),
        "",
        "Examples:",
        "  maxent-lightning trainer.max_epochs=4 imp.rounds=1      one module on MNIST-5k",
        "  maxent-lightning +experiment=pairwise_digits -m seed=0 model=mlp_shallow loss=maxent",
        "      imp=protocol cardinality=1                          a small sweep: 10 jobs",
        "  maxent-lightning +experiment=pairwise_mnist5k -m seed=0,1 plan_only=true",
        "      the paper's pairwise sweep: prints its plan (1,080 jobs), runs nothing; GPUs and",
        "      clusters: docs/scaling.md",
        "  maxent-lightning debug=fdr                              one batch of each step",
        "",
        "The composed config: --cfg job; Hydra's own options: --hydra-help",
    ])


OmegaConf.register_new_resolver("maxent_help", help_text, replace=True)
