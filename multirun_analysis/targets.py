"""The paper's tables and figures as reproduction targets: for each, the sweeps that produce it
(experiments of ``conf/experiment/`` narrowed per scale) and what the analysis writes.

    python -m multirun_analysis.targets TARGET [--scale smoke|mnist5k|full] [OVERRIDES...]
    python -m multirun_analysis.targets --list

(``make TARGET SCALE=...`` runs it.) Scales: ``full`` — the paper's grids on the real data sets
(5 seeds); ``mnist5k`` — the same grids with the embedded MNIST-5k standing in for MNIST (and for
Fashion-MNIST and HAR in their figures, labelled so), for targets where MNIST can stand in;
``smoke`` — the whole pipeline in about a minute or two on 2 CPU cores: one seed, a few classes or
pairs, few epochs, the embedded data or, for CIFAR targets, small CIFAR-format files written for
the purpose (the plumbing, not the numbers). Sweeps go to ``multirun[/<scale>]/<target>/<exp>``
(finished jobs are skipped, modules come from the shared store), the analysis to
``reports[/<scale>]/<target>/``.
"""

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SCALES = ("smoke", "mnist5k", "full")
PROTOCOLS = ("authors", "paper")  # conf/protocol/
DEFAULT = "authors"
SEEDS = "seed=0,1,2,3,4"
# Every smoke sweep: one seed, few epochs (each IMP round gets at least one).
SMOKE = ("seed=0", "trainer.max_epochs=2")
# The smoke CIFAR files (data.cifar_files): 5 training batches of this many, and test images.
SMOKE_CIFAR = (40, 100)
CIFAR_SMOKE = ("model.width=4", "data.download=false")


@dataclass(frozen=True)
class Sweep:
    experiment: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    doc: str
    outputs: tuple[str, ...]  # analysis artifacts (multirun_analysis --table)
    full: tuple[Sweep, ...]
    mnist5k: tuple[Sweep, ...] | None  # None: MNIST cannot stand in (CIFAR)
    smoke: tuple[Sweep, ...]

    def sweeps(self, scale: str) -> tuple[Sweep, ...] | None:
        return getattr(self, scale)


def each(experiments: str, overrides: str = "") -> tuple[Sweep, ...]:
    """``each("exp1 exp2", "k=v k=v")``: a sweep of each experiment with the same overrides."""
    return tuple(Sweep(e, tuple(overrides.split())) for e in experiments.split())


def on_four(task: str) -> str:
    """The experiments of ``task`` on the paper's four data sets (MNIST, FMNIST, HAR, Yeast)."""
    return " ".join(f"{task}_{name}" for name in ("mnist", "fashion_mnist", "har", "yeast"))


ME = "loss=maxent imp=protocol"
PAIRS16 = "n_pairs=16 pair=range(16)"
LENET_SMOKE = "model.channels=[8] model.hidden=[32,16]"


def single(doc: str, full_exp: str, model: str, imp: str) -> Target:
    """Figures 9-14: confusion matrices of single-class modules."""
    over = f"model={model} imp={imp}"
    small = f"{over} classes=[0,1,2]" + (f" {LENET_SMOKE}" if model == "lenet" else "")
    return Target(doc, ("confusion",), each(full_exp, over), each("single_mnist5k", over),
                  each("single_mnist5k", small))


def pairwise(doc: str, full_exp: str, model: str, grid: str, outputs=("confusion",)) -> Target:
    """Figures 2, 15-18: confusion matrices of pairwise merges."""
    over = f"model={model} {ME} {grid}"
    small = f"model={model} {ME} cardinality=1 pair=0,1" + (
        f" {LENET_SMOKE}" if model == "lenet" else "")
    return Target(doc, outputs, each(full_exp, over), each("pairwise_mnist5k", over),
                  each("pairwise_mnist5k", small))


def incremental(doc: str, task: str, full_exp: str, model: str, outputs) -> Target:
    """Figures 19-21, 23, 24: merges in increasing class order (confusions or barriers)."""
    over = f"model={model} imp=protocol permutation=ordered"
    small = f"{over}" + (f" {LENET_SMOKE}" if model == "lenet" else "") + (
        " path.points=3" if task == "mode_connectivity" else "")
    return Target(doc, outputs, each(f"{task}_{full_exp}", over),
                  each(f"{task}_mnist5k", over), each(f"{task}_mnist5k", small))


def cifar(doc: str, outputs, experiments: str, smoke: str, full: str = "") -> Target:
    """CIFAR targets: no MNIST stand-in; smoke on small CIFAR-format files."""
    return Target(doc, outputs, each(experiments, full), None,
                  each(experiments, f"{smoke} {' '.join(CIFAR_SMOKE)}"))


TARGETS: dict[str, Target] = {
    "table1": Target(
        "Table 1: single-class modules, ME loss with and without IMP", ("table1", "paper"),
        each(on_four("single")),
        each("single_mnist5k", "model=mlp_shallow"),
        each("single_mnist5k", "model=mlp_shallow imp=protocol,none classes=[0,1,2]")),
    "table2": Target(
        "Table 2: pairwise weight-sum merges with IMP, XE/QME/ME, |R| = 1, 2, 5",
        ("table2", "paper", "confusion"),
        each(on_four("pairwise"), "imp=protocol"),
        each("pairwise_mnist5k", "model=mlp_shallow"),
        each("pairwise_mnist5k", "model=mlp_shallow imp=protocol cardinality=1 pair=0,1")),
    "table4": Target(
        "Table 4: pairwise merges with and without IMP", ("table4", "paper"),
        each(on_four("pairwise")),
        each("pairwise_mnist5k", "model=mlp_shallow"),
        each("pairwise_mnist5k", "model=mlp_shallow cardinality=1 pair=0,1")),
    "fig2": pairwise("Figure 2: confusion matrices of pairwise merges, shallow MLP, MNIST",
                     "pairwise_mnist", "mlp_shallow", "cardinality=1,2,5 pair=0"),
    "fig3": Target(
        "Figure 3: IMP vs no IMP on pairwise merges (ME), MNIST and Fashion-MNIST", ("fig3",),
        each("pairwise_mnist pairwise_fashion_mnist", "loss=maxent"),
        each("pairwise_mnist5k", "loss=maxent"),
        each("pairwise_mnist5k", "model=mlp_shallow loss=maxent cardinality=1,2 pair=0")),
    "fig4": Target(
        "Figure 4: complete merges, rewarded accuracy at each step over 10 random orders",
        ("fig4", "confusion"), each(on_four("complete"),
                                    "permutation=range(10)"),
        each("complete_mnist5k", "permutation=range(10)"),
        each("complete_mnist5k", "model=mlp_shallow permutation=0")),
    "fig5": Target(
        "Figure 5: loss barrier along γ(t) at each complete-merge step, Fashion-MNIST, "
        "shallow MLP, classes in increasing order", ("fig5",),
        each("mode_connectivity_fashion_mnist", "model=mlp_shallow"),
        each("mode_connectivity_mnist5k", "model=mlp_shallow"),
        each("mode_connectivity_mnist5k", "model=mlp_shallow path.points=5")),
    "fig6": Target(
        "Figure 6: temperature T in {1, 3, 5, 7}", ("fig6",), each("temperature_mnist"),
        each("temperature_mnist5k"),
        each("temperature_mnist5k", "loss.temperature=1,5 permutation=0")),
    "fig7": Target(
        "Figure 7: pruning ratio P in {0.9, 0.99, 0.999} (MLP)", ("fig7",),
        each("pruning_mnist"), each("pruning_mnist5k"),
        each("pruning_mnist5k", "imp.sparsity=0.9,0.99 permutation=0")),
    "fig8": Target(
        "Figure 8: pruning ratio of the CNN, pairwise merges |R| = 2, 5", ("fig8",),
        each("pruning_cnn_mnist pruning_cnn_fashion_mnist"),
        each("pruning_cnn_mnist", "data=mnist5k experiment_name=pruning_cnn_mnist5k"),
        each("pruning_cnn_mnist", "data=mnist5k experiment_name=pruning_cnn_mnist5k "
                                  f"imp.sparsity=0.6,0.9 cardinality=2 pair=0 {LENET_SMOKE}")),
    "fig9": single("Figure 9: single modules without pruning, shallow MLP, MNIST",
                   "single_mnist", "mlp_shallow", "none"),
    "fig10": single("Figure 10: single modules without pruning, deep MLP, HAR",
                    "single_har", "mlp_deep", "none"),
    "fig11": single("Figure 11: single modules without pruning, CNN, Fashion-MNIST",
                    "single_fashion_mnist", "lenet", "none"),
    "fig12": single("Figure 12: single modules with IMP, shallow MLP, MNIST",
                    "single_mnist", "mlp_shallow", "protocol"),
    "fig13": single("Figure 13: single modules with IMP, deep MLP, HAR",
                    "single_har", "mlp_deep", "protocol"),
    "fig14": single("Figure 14: single modules with IMP, CNN, Fashion-MNIST",
                    "single_fashion_mnist", "lenet", "protocol"),
    "fig15": pairwise("Figure 15: 16 pairwise merges, shallow MLP, MNIST", "pairwise_mnist",
                      "mlp_shallow", f"cardinality=1 {PAIRS16}"),
    "fig16": pairwise("Figure 16: 10 pairwise merges, deep MLP, HAR", "pairwise_har",
                      "mlp_deep", "cardinality=1 pair=range(10)"),
    "fig17": pairwise("Figure 17: 16 pairwise merges, CNN, Fashion-MNIST",
                      "pairwise_fashion_mnist", "lenet", f"cardinality=1 {PAIRS16}"),
    "fig18": pairwise("Figure 18: pairwise merges of |R| = 1, 2, 5, CNN, Fashion-MNIST",
                      "pairwise_fashion_mnist", "lenet", "cardinality=1,2,5 pair=0"),
    "fig19": incremental("Figure 19: incremental merges in increasing order, shallow MLP, "
                         "MNIST", "complete", "mnist", "mlp_shallow", ("confusion",)),
    "fig20": incremental("Figure 20: incremental merges in increasing order, deep MLP, HAR",
                         "complete", "har", "mlp_deep", ("confusion",)),
    "fig21": incremental("Figure 21: incremental merges in increasing order, CNN, "
                         "Fashion-MNIST", "complete", "fashion_mnist", "lenet", ("confusion",)),
    "fig22": Target(
        "Figure 22: loss barriers of pairwise merges of |R| = 1, 2, 5, CNN, Fashion-MNIST",
        ("fig5",),
        each("mode_connectivity_fashion_mnist", "model=lenet imp=protocol path.between=pair "
                                                "permutation=0 cardinality=1,2,5 pair=0"),
        each("mode_connectivity_mnist5k", "model=lenet imp=protocol path.between=pair "
                                          "permutation=0 cardinality=1,2,5 pair=0"),
        each("mode_connectivity_mnist5k", "model=lenet imp=protocol path.between=pair "
                                          f"permutation=0 cardinality=1 pair=0 path.points=3 "
                                          f"{LENET_SMOKE}")),
    "fig23": incremental("Figure 23: loss barriers of incremental merges in increasing order, "
                         "deep MLP, HAR", "mode_connectivity", "har", "mlp_deep", ("fig5",)),
    "fig24": incremental("Figure 24: loss barriers of incremental merges in increasing order, "
                         "CNN, Fashion-MNIST", "mode_connectivity", "fashion_mnist", "lenet",
                         ("fig5",)),
    "cifar10": cifar("ICLR: CIFAR-10 pairwise merges, logit average vs weight sum, ResNet18 "
                     "and VGG11", ("cifar10", "confusion"), "pairwise_cifar10",
                     "imp=protocol cardinality=1 pair=0"),
    "cifar100": cifar("ICLR: CIFAR-100, complete merges of up to 100 modules", ("cifar100",),
                      "complete_cifar100", "model=resnet18 permutation=0 data.val_fraction=0.5"),
    "cifar10_complete": cifar("ICLR: CIFAR-10 complete merges (ResNet18, VGG11)",
                              ("fig4", "cifar100"), "complete_cifar10",
                              "imp=protocol permutation=ordered"),
    "cifar10_barriers": cifar("ICLR: CIFAR-10 mode connectivity, pairwise and incremental",
                              ("fig5",), "mode_connectivity_pairwise_cifar10 "
                              "mode_connectivity_cifar10",
                              "model=resnet18 imp=protocol cardinality=1 pair=0 path.points=3"),
    "cifar10_losses": cifar("ICLR: XE and QME vs ME on CIFAR-10 pairwise merges",
                            ("table2",), "pairwise_losses_cifar10", "cardinality=1 pair=0"),
    "width": cifar("ICLR: width helps weight-space composability (model.width)", ("width",),
                   "width_cifar10", "model.width=4,8 cardinality=1 pair=0"),
}


def _folder(top: str, scale: str, protocol: str | None) -> Path:
    """``top[/<scale>][/<protocol>]``: another protocol than the default (authors) gets its
    own folders (a job directory holds one config)."""
    scale_part = [] if scale == "full" else [scale]
    return Path(top, *scale_part, *([protocol] if protocol not in (None, DEFAULT) else []))


def runs_dir(scale: str, protocol: str | None = None) -> Path:
    return _folder("multirun", scale, protocol)


def reports_dir(scale: str, protocol: str | None = None) -> Path:
    return _folder("reports", scale, protocol)


def is_cifar(target: Target) -> bool:
    return target.mnist5k is None


def commands(name: str, scale: str, extra=(), protocol: str | None = None) -> list[list[str]]:
    """The sweep commands and the analysis command of target ``name`` at ``scale`` under
    ``protocol`` (None: the config's default)."""
    target = TARGETS[name]
    chosen = target.sweeps(scale)
    if chosen is None:
        raise ValueError(f"{name} has no {scale} scale (MNIST cannot stand in for CIFAR); use "
                         "SCALE=smoke or SCALE=full")
    common = SMOKE if scale == "smoke" else (SEEDS,)
    if scale == "smoke" and is_cifar(target):
        common = (*SMOKE, f"data.root={smoke_data(scale)}")
    if protocol is not None:
        common = (f"protocol={protocol}", *common)
    runs = runs_dir(scale, protocol)
    out = []
    for sweep in chosen:
        folder = runs / name / sweep.experiment
        out.append([sys.executable, "-m", "maxent_lightning", f"+experiment={sweep.experiment}",
                    "-m", *common, *sweep.overrides, *extra, f"hydra.sweep.dir={folder}"])
    if any(o.replace(" ", "") == "plan_only=true" for o in extra):
        return out  # plans only: nothing to analyze
    dirs = [str(runs / name / s.experiment) for s in chosen]
    out.append([sys.executable, "-m", "multirun_analysis", *dirs, "--out",
                str(reports_dir(scale, protocol) / name), "--table", *target.outputs])
    return out


def smoke_data(scale: str) -> Path:
    return runs_dir(scale) / "data"


def write_smoke_data(scale: str) -> None:
    """The small CIFAR-10 and CIFAR-100 files of the smoke scale, once (written by
    ``maxent_lightning.data.cifar_files``, a command of the training package)."""
    root = smoke_data(scale)
    per_batch, test = SMOKE_CIFAR
    writes = {"cifar-10-batches-py": ["cifar10", "--per-batch", per_batch, "--test", test],
              "cifar-100-python": ["cifar100", "--per-batch", 200, "--test", 100,
                                   "--val-fraction", 0.5]}
    for folder, (which, *args) in writes.items():
        if not (root / folder).is_dir():
            subprocess.run([sys.executable, "-m", "maxent_lightning.data.cifar_files", str(root),
                            "--which", which, *map(str, args)], check=True,
                           stdout=subprocess.DEVNULL)


def listing() -> str:
    lines = []
    for name, t in TARGETS.items():
        scales = "smoke, full" if is_cifar(t) else "smoke, mnist5k, full"
        lines.append(f"{name:17s} {t.doc} [{scales}]")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m multirun_analysis.targets",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", choices=sorted(TARGETS), metavar="TARGET")
    parser.add_argument("--scale", default="full", choices=SCALES)
    parser.add_argument("--protocol", choices=PROTOCOLS,
                        help="authors (default: the released code behind the published numbers) "
                             "or paper (its text); a non-default one runs into its own folders")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every sweep")
    args = parser.parse_intermixed_args(argv)  # overrides after the options too
    if args.list or args.target is None:
        print(listing())
        return 0
    try:
        steps = commands(args.target, args.scale, args.overrides, args.protocol)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.scale == "smoke" and is_cifar(TARGETS[args.target]) and not args.dry_run:
        write_smoke_data(args.scale)
    for step in steps:
        print(f"== {args.target}: {' '.join(step[2:])}", flush=True)
        if not args.dry_run and (code := subprocess.run(step).returncode) != 0:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
