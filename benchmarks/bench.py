"""Benchmark: K MaxEnt modules trained three ways on identical work, in one process.

1. a plain PyTorch loop written here (the floor): same net, θ0, steps, Adam, masking, IMP, and
   the same outputs: validation loss every epoch (and the other validation metrics where a fit
   computes them: with a logger), test metrics, a checkpoint and a confusion figure per module;
2. the framework's sequential path (``training.train_module``, Lightning), one module at a time;
3. the family path (``family.train_family``): all K at once; on CPU also once more with dense
   products only (``family.sparse_below=0``, the row "dense family") to show what the sparse
   products of the pruned phases add.
Early stopping is off (``callbacks=none``) so every path runs every epoch. Then the pairwise smoke
job (real CLI: 2 modules at the authors' E, weight sum and logit merge, evaluation) is timed,
and the sweep section: the cold 20-job pairwise multirun (|R| = 1, 2 x 10 pairs, one seed),
planned (families) vs ``family.enabled=false``, printing ``sweep speedup: X.XX``, then the same
sweep with a warm store (per-job cost), and the cost of an extra warm job: (5-job - 1-job warm
sweep) / 4, for jobs that evaluate and for a rerun of finished ones.
With ``--average-modules N`` it also times a logit average of N modules over
``--average-images`` test images. Prints a table (wall and CPU seconds, samples/s, peak GPU memory)
and ``speedup: X.XX`` (family vs sequential); writes ``reports/bench.json``.

    python benchmarks/bench.py [--modules 10] [--epochs 5] [--device cpu|cuda] [--model lenet]
    python benchmarks/bench.py --model resnet18 --override model.width=8 --modules 4 --epochs 1
    python benchmarks/bench.py --device cuda --model vgg11 --average-modules 100
    python benchmarks/bench.py --device cuda --model resnet18 --cifar-images 10000 --skip plain
"""

import argparse
import contextlib
import copy
import itertools
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from maxent_lightning import masks as M
from maxent_lightning.builders import build_datamodule, init_theta0, net_from_record
from maxent_lightning.config import compose_config
from maxent_lightning.data.cifar_files import write_cifar
from maxent_lightning.evaluate import Evaluation, lean_trainer, run_evaluation
from maxent_lightning.family import train_family
from maxent_lightning.loss import kl_to_target
from maxent_lightning.metrics import evaluation_metrics
from maxent_lightning.modulefile import ModuleRecord
from maxent_lightning.phases import tracks_val_metrics
from maxent_lightning.plots import confusion_png
from maxent_lightning.process import quiet_libraries
from maxent_lightning.targets import make_targets
from maxent_lightning.training import train_module

ROOT = Path(__file__).resolve().parents[1]


def cifar_files(root: Path, images: int) -> Path:
    """``images`` 32x32x3 training images (and a fifth as many test images) in the real
    CIFAR-10 pickle format under ``root``: the loader is the real one, and speed does not
    depend on the pixels (for machines without the data set)."""
    write_cifar(root, "cifar10", images // 5, max(images // 5, 10), learnable=True)
    return root


def config(args, tmp: Path):
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    data = [f"data={args.data}"]
    if args.cifar_images:
        data = ["data=cifar10", f"paths.data_dir={cifar_files(tmp / 'data', args.cifar_images)}",
                "data.download=false"]
    overrides = [
        *data, f"model={args.model}", "imp=global", f"imp.rounds={args.rounds}",
        f"trainer.max_epochs={args.epochs}", f"trainer.accelerator={accelerator}",
        "trainer.enable_progress_bar=false", "callbacks=none", "logger=none",
        f"paths.store_dir={tmp}/store", f"paths.log_dir={tmp}/outputs", *args.override,
    ]
    return compose_config(overrides)


def rewarded_sets(k: int, num_classes: int) -> list[list[int]]:
    """The first ``k`` distinct class sets: all singletons, then pairs, then triples..."""
    sets = []
    for size in range(1, num_classes + 1):
        for combo in itertools.combinations(range(num_classes), size):
            if len(sets) == k:
                return sets
            sets.append(list(combo))
    return sets


def plain_loop(cfg, sets, device, out: Path) -> None:
    """The floor: one module after the other, a bare loop with the same work as a fit."""
    dm = build_datamodule(cfg, sets[0])
    c, temp = dm.num_classes, float(cfg.loss.temperature)
    x, _, y = (t.to(device) for t in dm.train)
    xv, yv = dm.val[0].to(device), dm.val[2]  # evaluate() takes labels on the CPU
    xt, _, yt = dm.test
    rounds, bs = int(cfg.imp.rounds), int(cfg.data.batch_size)
    rate = M.per_round_rate(float(cfg.imp.sparsity), rounds)
    for rewarded in sets:
        net, theta0, _ = init_theta0(cfg.model, dm.input_shape, c, cfg.seed)
        net.to(device)
        table = make_targets(torch.arange(c), rewarded, c)
        table_dev = table.to(device)
        metrics = evaluation_metrics(rewarded, c) if tracks_val_metrics(cfg) else None
        masks = M.full_masks(net, M.prunable_names(net))
        for r in range(rounds + 1):
            M.rewind(net, theta0, masks)
            params = dict(net.named_parameters())
            factors = [(params[n], m.to(device, torch.float32)) for n, m in masks.items()]
            opt = torch.optim.Adam(net.parameters(), lr=float(cfg.optimizer.lr))
            gen = torch.Generator().manual_seed(int(cfg.seed) * 1000 + r)
            best, best_state = float("inf"), None
            for _ in range(int(cfg.trainer.max_epochs)):
                net.train()
                for idx in torch.randperm(len(y), generator=gen).split(bs):
                    idx = idx.to(device)
                    loss = kl_to_target(net(x[idx]) / temp, table_dev[y[idx]]).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    for p, f in factors:
                        p.grad.mul_(f)
                    opt.step()
                    with torch.no_grad():
                        for p, f in factors:
                            p.mul_(f)
                net.eval()
                with torch.no_grad():  # as the module's validation step
                    scaled = net(xv).cpu() / temp
                    val = float(kl_to_target(scaled, table[yv]).mean())
                    if metrics is not None:
                        metrics.update(scaled, yv)
                        metrics.compute()
                        metrics.reset()
                if val < best:
                    best, best_state = val, copy.deepcopy(net.state_dict())
            net.load_state_dict(best_state)
            if r < rounds:
                masks = M.prune_global(params, masks, rate)
        evaluation = Evaluation()
        evaluation.add("module", evaluation.net(net.cpu().eval()), rewarded)
        res = run_evaluation(evaluation, {"test": (xt, yt)}, c, temp, lean_trainer("cpu"))["module"]
        name = "-".join(map(str, rewarded))
        torch.save({"state_dict": net.state_dict(), "masks": masks, "metrics": res},
                   out / f"plain_{name}.pt")
        confusion_png(out / f"plain_{name}.png", res["confusion"], dm.splits.classes)


class EpochTimes(logging.Handler):
    """The family's epoch records (``epoch_s``, ``epoch_cpu_s``, ``round``, ``alive``: the
    share of prunable entries alive), collected per IMP round."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.rounds: dict[int, dict] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "epoch_s"):
            entry = self.rounds.setdefault(record.round, {"alive": record.alive, "wall": [],
                                                          "cpu": []})
            entry["wall"].append(record.epoch_s)
            entry["cpu"].append(record.epoch_cpu_s)

    def __enter__(self):
        logger = logging.getLogger("maxent_lightning.family")
        self.level = logger.level
        logger.setLevel(logging.INFO)
        logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        logger = logging.getLogger("maxent_lightning.family")
        logger.removeHandler(self)
        logger.setLevel(self.level)

    def summary(self) -> list[dict]:
        """Per phase: alive share, median epoch (training and validation) in wall and CPU
        seconds, and each over the dense phase's, beside the target (issue 22: at most the
        alive share + 0.2). On a shared machine the CPU ratio is the steadier one."""
        med = {r: (statistics.median(e["wall"]), statistics.median(e["cpu"]))
               for r, e in self.rounds.items()}
        dense = med.get(0)
        return [{"round": r, "alive": round(e["alive"], 4), "epochs": len(e["wall"]),
                 "median_epoch_s": round(med[r][0], 3), "median_epoch_cpu_s": round(med[r][1], 3),
                 "ratio_to_dense": round(med[r][0] / dense[0], 3) if dense else None,
                 "cpu_ratio_to_dense": round(med[r][1] / dense[1], 3) if dense else None,
                 "target": round(e["alive"] + 0.2, 3)} for r, e in sorted(self.rounds.items())]


def sgemm_rate(size: int = 2048, runs: int = 5) -> float:
    """This machine's float32 matrix-product rate (GFLOP/s) on torch's threads: what the
    floor of a training run (its multiply-adds over this rate) is measured against."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(runs):
        a @ b
    return runs * 2 * size**3 / (time.perf_counter() - start) / 1e9


def timed(fn, *args) -> tuple[float, float, float]:
    """(wall s, CPU s of this process, peak GPU MiB or nan): CPU time tells contention from
    other jobs apart."""
    os.sync()  # earlier runs' file writes are flushed before, not during, this one
    gpu = torch.cuda.is_available()
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    if gpu:
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**20 if gpu else float("nan")
    return time.perf_counter() - start, time.process_time() - cpu, peak


def logit_average_time(cfg, modules: int, images: int, device) -> dict:
    """Wall time of a logit average of ``modules`` modules (θ0 weights: the cost does not
    depend on them) over ``images`` test images: one Trainer.test, all modules on the device."""
    dm = build_datamodule(cfg, [0])
    _, theta0, theta0_id = init_theta0(cfg.model, dm.input_shape, dm.num_classes, cfg.seed)
    spec = {"model": OmegaConf.to_container(cfg.model, resolve=True)}
    records = [ModuleRecord(theta0, {}, theta0_id, [k % dm.num_classes], dm.num_classes,
                            tuple(dm.input_shape), 1.0, 0, spec, f"m{k}")
               for k in range(modules)]
    x = dm.test[0].repeat((images + len(dm.test[0]) - 1) // len(dm.test[0]),
                          *[1] * (dm.test[0].dim() - 1))[:images]
    evaluation = Evaluation()
    ids = [evaluation.net(net_from_record(r)) for r in records]
    evaluation.add("logit", [(i, 1.0 / modules) for i in ids], list(range(dm.num_classes)))
    trainer = lean_trainer("gpu" if device.type == "cuda" else "cpu")
    data = {"test": (x, torch.zeros(len(x), dtype=torch.long))}  # labels: cost only
    wall, cpu, peak = timed(lambda: run_evaluation(evaluation, data, dm.num_classes, 1.0, trainer))
    return {"modules": modules, "images": images, "wall_s": round(wall, 2),
            "peak_gpu_mib": round(peak, 1)}


def pairwise_smoke(tmp: Path, device: str) -> dict:
    """Wall time of the real pairwise job (2 modules, authors' E, merges, eval) as a new process."""
    cmd = [sys.executable, "-m", "maxent_lightning", "+experiment=pairwise_mnist5k", "seed=0",
           "logger=none", "trainer.enable_progress_bar=false",
           f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
           f"paths.store_dir={tmp}/smoke_store", f"paths.log_dir={tmp}/smoke_out",
           f"hydra.run.dir={tmp}/smoke_out/run"]
    os.sync()
    start, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall, end = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = end.ru_utime + end.ru_stime - cpu.ru_utime - cpu.ru_stime
    tail = [ln for ln in proc.stdout.splitlines() if ln.startswith("pairwise")]
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu_s, 2), "rc": proc.returncode,
            "command": " ".join(cmd[1:]), "output": tail}


def sweep_run(tmp: Path, name: str, store: str, args: list[str]) -> dict:
    """One multirun through the CLI (a new process): wall time and its jobs' own wall times."""
    sweep_dir = tmp / "sweeps" / name
    cmd = [sys.executable, "-m", "maxent_lightning", "-m", *args, f"paths.store_dir={store}",
           f"hydra.sweep.dir={sweep_dir}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
    jobs = [json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")]
    plan_lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("plan:")]
    return {"wall_s": round(wall, 2), "rc": proc.returncode, "jobs": len(jobs),
            "job_wall_s": round(sum(j["wall_s"] for j in jobs) / max(len(jobs), 1), 3),
            "plan": plan_lines, "command": " ".join(cmd[3:])}


def sweep_section(tmp: Path, pairs: int, extra: list[str], skip=()) -> dict:
    """The cold pairwise sweep (|R| = 1, 2 x ``pairs`` pairs, one seed) planned (families)
    vs ``family.enabled=false`` (one by one), each with an empty store; then the planned sweep
    again into a new sweep directory with its store warm (per-job cost); then the cost of an
    extra warm job (``extra_job_cost``; ``--skip extra`` leaves it out)."""
    common = ["+experiment=pairwise_mnist5k", "seed=0", "model=mlp_shallow", "loss=maxent",
              "imp=global", "logger=none", "trainer.enable_progress_bar=false", *extra]
    args = [*common, "cardinality=1,2", f"pair=range({pairs})"]
    planned = sweep_run(tmp, "planned", f"{tmp}/sweep_store", args)
    reference = sweep_run(tmp, "reference", f"{tmp}/sweep_store_ref",
                          [*args, "family.enabled=false"])
    warm = sweep_run(tmp, "warm", f"{tmp}/sweep_store", args)
    return {"planned": planned, "family_disabled": reference, "warm": warm,
            "speedup": round(reference["wall_s"] / planned["wall_s"], 2),
            "warm_per_job_s": round(warm["wall_s"] / max(warm["jobs"], 1), 3),
            "extra_job": None if "extra" in skip else extra_job_cost(
                tmp, f"{tmp}/sweep_store", [*common, "cardinality=1"], warm=pairs >= 5)}


def extra_job_cost(tmp: Path, store: str, args: list[str], warm: bool = True) -> dict:
    """The cost of an extra warm job (issue 22): (5-job warm sweep - 1-job warm sweep) / 4,
    each sweep once with jobs that evaluate (new sweep directories, modules stored), then rerun
    (every job finished: the sweeper reports it, launches nothing). Not ``warm``: the store
    is warmed first."""
    if not warm:
        sweep_run(tmp, "extra_warmup", store, [*args, "pair=range(5)"])
    cost = {}
    for kind in ("evaluate", "rerun"):
        five, one = (sweep_run(tmp, f"extra{n}", store, [*args, f"pair=range({n})"])
                     for n in (5, 1))
        cost[kind] = {"five_s": five["wall_s"], "one_s": one["wall_s"],
                      "per_extra_job_s": round((five["wall_s"] - one["wall_s"]) / 4, 3)}
    return cost


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modules", type=int, default=10)
    p.add_argument("--epochs", type=int, default=5, help="epochs per IMP phase (fixed)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--data", default="mnist5k")
    p.add_argument("--model", default="mlp_shallow")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--skip", nargs="*", default=[],
                   choices=("plain", "sequential", "dense", "smoke", "sweep", "extra"))
    p.add_argument("--repeat", type=int, default=1, help="runs per path (min is reported)")
    p.add_argument("--out", default=str(ROOT / "reports" / "bench.json"))
    p.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides")
    p.add_argument("--average-modules", type=int, default=0,
                   help="also time a logit average of this many modules (e.g. 100)")
    p.add_argument("--average-images", type=int, default=10000)
    p.add_argument("--sweep-pairs", type=int, default=10,
                   help="pairs per |R| of the sweep section (10: the issue's 20-job sweep)")
    p.add_argument("--sweep-override", nargs="*", default=[],
                   help="extra Hydra overrides of the sweep section's multiruns")
    p.add_argument("--cifar-images", type=int, default=0,
                   help="train on this many random 32x32x3 images in CIFAR-10 format instead "
                        "of --data (e.g. 10000; for machines without CIFAR)")
    args = p.parse_args(argv)
    data_name = f"{args.cifar_images} random CIFAR-10-format images" if args.cifar_images \
        else args.data
    quiet_libraries()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="maxent_bench_") as tmp_name:
        tmp = Path(tmp_name)
        cfg = config(args, tmp)
        dm = build_datamodule(cfg, [0])
        sets = rewarded_sets(args.modules, dm.num_classes)
        phases = int(cfg.imp.rounds) + 1
        samples = len(sets) * phases * int(cfg.trainer.max_epochs) * len(dm.train[2])
        paths = {
            "plain loop": lambda rep: plain_loop(cfg, sets, device, tmp),
            "sequential": lambda rep: [train_module(cfg, tmp / f"seq{rep}" / f"m{i}", r, quiet=True)
                                       for i, r in enumerate(sets)],
            "family": lambda rep: train_family(
                cfg, [(r, tmp / f"family{rep}" / f"m{i}") for i, r in enumerate(sets)]),
        }
        if device.type == "cpu":
            dense = cfg.copy()
            dense.family.sparse_below = 0
            paths["dense family"] = lambda rep: train_family(
                dense, [(r, tmp / f"dense{rep}" / f"m{i}") for i, r in enumerate(sets)])
        names = [n for n in paths if n.split()[0] not in args.skip]
        runs = {n: [] for n in names}
        epochs = {n: EpochTimes() for n in names if "family" in n}
        for rep in range(args.repeat):  # ABC CBA ...: slow drift of other load hits all alike
            for name in names if rep % 2 == 0 else names[::-1]:
                with epochs.get(name) or contextlib.nullcontext():
                    runs[name].append(timed(paths[name], rep))
        times = {n: min(r) for n, r in runs.items()}
        smoke = None if "smoke" in args.skip else pairwise_smoke(tmp, args.device)
        sweep = (None if "sweep" in args.skip
                 else sweep_section(tmp, args.sweep_pairs, args.sweep_override, args.skip))
        average = (logit_average_time(cfg, args.average_modules, args.average_images, device)
                   if args.average_modules else None)
    rows = {k: {"wall_s": round(t, 2), "cpu_s": round(c, 2), "samples_per_s": round(samples / t, 1),
                "peak_gpu_mib": round(g, 1), "all_wall_s": [round(w, 2) for w, *_ in runs[k]]}
            for k, (t, c, g) in times.items()}
    nan = (float("nan"),) * 3
    speedup = times.get("sequential", nan)[0] / times["family"][0]
    seq_vs_plain = times.get("sequential", nan)[0] / times.get("plain loop", nan)[0]
    dense_speedup = times.get("sequential", nan)[0] / times.get("dense family", nan)[0]
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "device": str(device),
                    "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None},
        "work": {"modules": len(sets), "data": data_name, "model": args.model,
                 "phases": phases, "epochs_per_phase": int(cfg.trainer.max_epochs),
                 "repeats": args.repeat,
                 "train_samples": len(dm.train[2]), "samples_total": samples},
        "paths": rows, "speedup_family_vs_sequential": round(speedup, 2),
        "speedup_dense_family_vs_sequential": round(dense_speedup, 2),
        "sequential_over_plain": round(seq_vs_plain, 2), "pairwise_smoke": smoke,
        "logit_average": average, "sweep": sweep,
        "family_phase_epochs": {n: e.summary() for n, e in epochs.items()},
        "sgemm_gflops": round(sgemm_rate(), 1) if device.type == "cpu" else None,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{len(sets)} modules x {phases} phases x {cfg.trainer.max_epochs} epochs on "
          f"{data_name} ({args.model}, {device}): {samples} training samples per path")
    print(f"{'path':<12} {'wall s':>9} {'CPU s':>9} {'samples/s':>11} {'GPU MiB':>9}")
    for name, row in rows.items():
        print(f"{name:<12} {row['wall_s']:>9.2f} {row['cpu_s']:>9.2f} "
              f"{row['samples_per_s']:>11.1f} {row['peak_gpu_mib']:>9.1f}")
    print(f"sequential / plain loop: {seq_vs_plain:.2f}")
    if report["sgemm_gflops"]:
        print(f"sgemm on {torch.get_num_threads()} torch thread(s): {report['sgemm_gflops']:.1f} "
              "GFLOP/s (a 2048 x 2048 float32 product)")
    for name, per_phase in report["family_phase_epochs"].items():
        print(f"{name}: median epoch per phase (training + validation), wall (CPU) seconds, and "
              "its ratio to the dense phase's; target on CPU: ratio <= alive + 0.2")
        for row in per_phase:
            print(f"  round {row['round']}: {row['alive']:7.2%} alive, {row['epochs']:3d} epochs, "
                  f"{row['median_epoch_s']:7.3f} s ({row['median_epoch_cpu_s']:.3f} s), "
                  f"ratio {row['ratio_to_dense']:.3f} ({row['cpu_ratio_to_dense']:.3f}), "
                  f"target <= {row['target']:.3f}")
    if "dense family" in times:
        print(f"dense family (no sparse products): {dense_speedup:.2f}x sequential")
    print("targets on the 2-core CPU: family >= 3x sequential, sequential <= 1.3x plain loop, "
          "pairwise smoke <= 45 s")
    if smoke:
        print(f"pairwise smoke job (CLI, 2 modules, merges, eval): {smoke['wall_s']:.1f} s wall, "
              f"{smoke['cpu_s']:.1f} s CPU (rc {smoke['rc']})")
    if average:
        print(f"logit average of {average['modules']} modules on {average['images']} images: "
              f"{average['wall_s']:.2f} s wall, peak GPU {average['peak_gpu_mib']:.1f} MiB")
    if sweep:
        p_, r_, w_ = sweep["planned"], sweep["family_disabled"], sweep["warm"]
        print(f"sweep ({p_['jobs']} pairwise jobs, cold store): planned {p_['wall_s']:.1f} s, "
              f"family.enabled=false {r_['wall_s']:.1f} s (rc {p_['rc']}, {r_['rc']})")
        print(f"sweep, warm store: {w_['wall_s']:.1f} s wall for {w_['jobs']} jobs = "
              f"{sweep['warm_per_job_s']:.3f} s per job (start-up included); "
              f"{w_['job_wall_s']:.3f} s per job inside the jobs")
        for kind, c in (sweep["extra_job"] or {}).items():
            print(f"sweep, an extra warm job ({kind}): ({c['five_s']:.1f} s for 5 jobs - "
                  f"{c['one_s']:.1f} s for 1) / 4 = {c['per_extra_job_s']:.3f} s "
                  "(target <= 0.3 s; one run each: repeat on a busy machine)")
        print(f"sweep speedup: {sweep['speedup']:.2f} (target >= 3 on the 2-core CPU; "
              "warm per job <= 0.3 s)")
    print(f"wrote {args.out}")
    print(f"speedup: {speedup:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
