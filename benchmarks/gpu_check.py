"""GPU check: the headline command (``+experiment=pairwise_cifar10 -m seed=0``: one seed, 120
jobs, 180 ResNet18/VGG11 modules) on random CIFAR-10-format images over every visible GPU, then
the benchmark's family vs sequential comparison on the same data and model.

Prints, per device, the training passes and modules it ran and its wall time (from the sweep's
``train: pass i/n ... on <device>: ... k module(s)`` lines, timed as they come; a sweep that
trains in its launching process alone is one row), the sweep's jobs and wall time, each GPU's
peak memory and busy seconds (``nvidia-smi``, sampled every second), and family vs sequential
samples/s and peak memory (``bench.py``). Writes ``reports/gpu_check.json``.

    python benchmarks/gpu_check.py                      # make gpu-check: every visible GPU
    python benchmarks/gpu_check.py --images 20000 --override trainer.max_epochs=5
    python benchmarks/gpu_check.py --device cpu --images 100 --modules 2 --epochs 1 \\
        --override model=resnet18 model.width=4 imp=none cardinality=1 pair=0 trainer.max_epochs=1
"""

import argparse
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (its CIFAR files and family vs sequential paths)

HEADLINE = ["+experiment=pairwise_cifar10", "-m", "seed=0"]
PASS = re.compile(r"\bpass \d+/\d+\b(?P<what>.*?) on (?P<device>cuda:\d+|cpu(?:/\d+)?): .*?"
                  r"(?P<modules>\d+) module\(s\)")
PLAN = re.compile(r"plan: \d+ distinct module\(s\) .* (?P<modules>\d+) to train in "
                  r"(?P<passes>\d+) pass\(es\)")


class GpuSampler(threading.Thread):
    """Each GPU's peak memory (MiB) and busy seconds (utilization above 0), from nvidia-smi."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop, self.gpus = threading.Event(), {}

    def run(self) -> None:
        query = ["nvidia-smi", "--query-gpu=index,memory.used,utilization.gpu",
                 "--format=csv,noheader,nounits"]
        while not self.stop.wait(1.0):
            try:
                out = subprocess.run(query, capture_output=True, text=True, timeout=10).stdout
            except (OSError, subprocess.SubprocessError):
                return
            for line in out.strip().splitlines():
                index, used, util = (v.strip() for v in line.split(","))
                gpu = self.gpus.setdefault(f"cuda:{index}", {"peak_mib": 0.0, "busy_s": 0})
                gpu["peak_mib"] = max(gpu["peak_mib"], float(used))
                gpu["busy_s"] += int(util not in ("0", "[N/A]"))


def per_device(lines: list[tuple[float, str]], start: float) -> tuple[dict, dict]:
    """({device: passes, modules, wall_s}, the plan's training) from the sweep's timed lines;
    without pass lines, one row: the launching process trained the plan before any job."""
    devices, planned, trained_by = {}, {"modules": 0, "passes": 0}, None
    for t, line in lines:
        plan = PLAN.search(line)
        if plan:
            planned = {k: int(v) for k, v in plan.groupdict().items()}
        found = PASS.search(line)
        if found and "fail" not in found["what"]:
            row = devices.setdefault(found["device"], {"passes": 0, "modules": 0})
            row["passes"] += 1
            row["modules"] += int(found["modules"])
            row["wall_s"] = round(t - start, 1)
        if trained_by is None and ("Launching" in line or "launching" in line):
            trained_by = t
    if not devices and planned["passes"]:
        end = trained_by if trained_by is not None else lines[-1][0] if lines else start
        devices["launching process"] = {**planned, "wall_s": round(end - start, 1)}
    return devices, planned


def headline_sweep(tmp: Path, data: Path, device: str, overrides: list[str]) -> dict:
    """The headline command on the random CIFAR-10 files, its output lines timed as they come."""
    cmd = [sys.executable, "-m", "maxent_lightning", *HEADLINE, f"paths.data_dir={data}",
           "data.download=false", "logger=none", "trainer.enable_progress_bar=false",
           f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
           f"paths.store_dir={tmp}/store", f"hydra.sweep.dir={tmp}/sweep", *overrides]
    sampler = GpuSampler() if device == "cuda" and shutil.which("nvidia-smi") else None
    if sampler:
        sampler.start()
    start, lines = time.perf_counter(), []
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as proc:
        for line in proc.stdout:
            lines.append((time.perf_counter(), line.rstrip("\n")))
    wall = time.perf_counter() - start
    if sampler:
        sampler.stop.set()
        sampler.join()
    devices, planned = per_device(lines, start)
    if proc.returncode != 0:
        print("\n".join(line for _, line in lines[-30:]), file=sys.stderr)
    return {"command": " ".join(cmd[3:]), "rc": proc.returncode, "wall_s": round(wall, 1),
            "jobs": len(list((tmp / "sweep").glob("*/metrics.json"))),
            "modules_stored": len(list((tmp / "store").rglob("module.pt"))),
            "planned": planned, "devices": devices, "gpus": sampler.gpus if sampler else {}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--images", type=int, default=5000,
                   help="random CIFAR-10-format training images (a fifth as many test images)")
    p.add_argument("--override", nargs="*", default=[],
                   help="extra Hydra overrides of the headline sweep (e.g. model=resnet18)")
    p.add_argument("--model", default="resnet18", help="model of family vs sequential")
    p.add_argument("--modules", type=int, default=10, help="modules of family vs sequential")
    p.add_argument("--epochs", type=int, default=2, help="epochs per phase, family vs sequential")
    p.add_argument("--bench-override", nargs="*", default=[],
                   help="extra Hydra overrides of family vs sequential (e.g. model.width=8)")
    p.add_argument("--out", default=str(ROOT / "reports" / "gpu_check.json"))
    args = p.parse_args(argv)
    import torch  # (after --help)

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA GPU is visible; run on a GPU machine or pass --device cpu",
              file=sys.stderr)
        return 2
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if args.device == "cuda" else []
    with tempfile.TemporaryDirectory(prefix="maxent_gpu_check_") as name:
        tmp = Path(name)
        data = bench.cifar_files(tmp / "data", args.images)
        sweep = headline_sweep(tmp, data, args.device, args.override)
        report = tmp / "bench.json"
        bench.main(["--device", args.device, "--model", args.model, "--modules",
                    str(args.modules), "--epochs", str(args.epochs), "--rounds", "1",
                    "--cifar-images", str(args.images), "--skip", "plain", "dense", "smoke",
                    "sweep", "--out", str(report), "--override", *args.bench_override])
        paths = json.loads(report.read_text())
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"device": args.device, "gpus": gpus, "images": args.images, "sweep": sweep,
              "family_vs_sequential": paths, "peak_rss_mib": round(peak_rss, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    print(f"\nGPU check on {args.device} ({', '.join(gpus) or 'no GPU'}), {args.images} random "
          f"CIFAR-10-format images")
    print(f"headline sweep: {sweep['jobs']} job(s) finished, {sweep['modules_stored']} module(s) "
          f"stored, {sweep['wall_s']:.1f} s wall (rc {sweep['rc']}); planned "
          f"{sweep['planned']['modules']} module(s) in {sweep['planned']['passes']} pass(es)")
    print(f"{'device':<18} {'passes':>7} {'modules':>8} {'wall s':>8} {'peak MiB':>9} "
          f"{'busy s':>7}")
    for dev in sorted(set(sweep["devices"]) | set(sweep["gpus"])):
        row, gpu = sweep["devices"].get(dev, {}), sweep["gpus"].get(dev, {})
        print(f"{dev:<18} {row.get('passes', 0):>7} {row.get('modules', 0):>8} "
              f"{row.get('wall_s', float('nan')):>8.1f} {gpu.get('peak_mib', float('nan')):>9.0f} "
              f"{gpu.get('busy_s', float('nan')):>7.0f}")
    for which in ("sequential", "family"):
        row = paths["paths"].get(which, {})
        print(f"{which}: {row.get('samples_per_s', float('nan')):.1f} samples/s, peak GPU "
              f"{row.get('peak_gpu_mib', float('nan')):.1f} MiB")
    print(f"family vs sequential: {paths['speedup_family_vs_sequential']:.2f}x; peak memory of "
          f"this process {peak_rss:.0f} MiB")
    print(f"wrote {args.out}")
    return 0 if sweep["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
