"""kill -9 a pairwise multirun partway, rerun the same command, and check that nothing was lost.

    python scripts/kill_resume.py [--launcher fast|basic|joblib] [--work DIR]

On the embedded digits with tiny epochs: an uninterrupted sweep (reference) and the same sweep
killed (SIGKILL to the whole process group, joblib workers included) once a module has finished
its first IMP round (the sweep trains its modules before its jobs), then rerun with the very same
command. Checks: jobs and modules finished before the kill and finished IMP rounds are not
redone, the rest is, and results.csv of every job, the analysis tables and every module
checkpoint equal the reference's. Prints 'identical' and exits 0 when all holds.
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["+experiment=pairwise_digits", "seed=0", "model=mlp_shallow", "loss=maxent",
         "imp=global", "cardinality=1", "pair=0,1,2,3", "trainer.max_epochs=2",
         "imp.round_epochs=1", "model.hidden=[32]", "trainer.accelerator=cpu",
         "trainer.enable_progress_bar=false", "logger=none"]
LAUNCHERS = {"fast": [], "basic": ["hydra/sweeper=basic", "hydra/launcher=basic"],
             "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]}


def command(work: Path, launcher: str) -> list[str]:
    return [sys.executable, "-m", "maxent_lightning", "-m", *SWEEP, *LAUNCHERS[launcher],
            f"paths.log_dir={work}/outputs", f"paths.store_dir={work}/store",
            f"hydra.sweep.dir={work}/sweep"]


def start(work: Path, launcher: str) -> subprocess.Popen:
    work.mkdir(parents=True, exist_ok=True)
    log = open(work / "sweep.log", "a")  # the child writes it
    return subprocess.Popen(command(work, launcher), cwd=ROOT, stdout=log, stderr=log,
                            start_new_session=True, env={**os.environ, "WANDB_MODE": "offline"})


def files(work: Path) -> dict[Path, tuple[int, int]]:
    """(mtime_ns, inode) of every artifact under ``work`` that a rerun must trust: finished
    jobs, finished modules (module.pt counts once its metrics.json, written last, exists: a
    kill between the two leaves an unfinished module, rightly trained again) and IMP rounds."""
    finished = [p.parent / "module.pt" for p in work.glob("store/*/*/metrics.json")]
    return {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in [*finished, *(
        p for pattern in ("sweep/*/metrics.json", "sweep/*/results.csv",
                          "store/*/*/metrics.json", "store/*/*/imp/round_*.pt")
        for p in work.glob(pattern))]}


def partway(work: Path) -> bool:
    """Some module has a finished IMP round but no checkpoint yet (the planner trains the
    sweep's modules before its jobs), or else a job has finished."""
    jobs_done = list(work.glob("sweep/*/metrics.json"))
    in_progress = [d for d in work.glob("store/*/*") if (d / "imp" / "round_0.pt").exists()
                   and not (d / "module.pt").exists()]
    return bool(jobs_done or in_progress)


def kill_partway(work: Path, launcher: str, timeout: float = 1800) -> dict:
    proc = start(work, launcher)
    deadline = time.monotonic() + timeout
    while not partway(work):
        if proc.poll() is not None:
            raise SystemExit(f"FAIL: the sweep ended (rc {proc.returncode}) before the kill; "
                             f"see {work}/sweep.log")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise SystemExit("FAIL: no partway state reached in time")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # let killed joblib workers go
    return files(work)


def run(work: Path, launcher: str) -> str:
    proc = start(work, launcher)
    if proc.wait() != 0:
        raise SystemExit(f"FAIL: sweep in {work} exited {proc.returncode}; see {work}/sweep.log")
    return (work / "sweep.log").read_text()


def compare(ref: Path, work: Path) -> list[str]:
    import torch

    from maxent_lightning.modulefile import load_module

    problems = []
    jobs = sorted(p.parent.name for p in ref.glob("sweep/*/metrics.json"))
    if jobs != sorted(p.parent.name for p in work.glob("sweep/*/metrics.json")):
        problems.append("finished jobs differ")
    for job in jobs:
        a, b = (d / "sweep" / job / "results.csv" for d in (ref, work))
        if a.read_bytes() != b.read_bytes():
            problems.append(f"results.csv of job {job} differs")
    mods = sorted(p.relative_to(ref) for p in ref.glob("store/*/*/module.pt"))
    if mods != sorted(p.relative_to(work) for p in work.glob("store/*/*/module.pt")):
        problems.append("the store holds other modules")
    for rel in mods:
        a, b = load_module(ref / rel), load_module(work / rel)
        if not all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict):
            problems.append(f"weights of {rel} differ")
    for d in (ref, work):
        subprocess.run([sys.executable, "-m", "multirun_analysis", str(d / "sweep"), "--out",
                        str(d / "report"), "--table", "table2"], check=True, cwd=ROOT,
                       capture_output=True)
    for table in sorted(p.name for p in (ref / "report").glob("table2*")):
        if (ref / "report" / table).read_bytes() != (work / "report" / table).read_bytes():
            problems.append(f"analysis table {table} differs")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launcher", choices=sorted(LAUNCHERS), default="fast")
    parser.add_argument("--work", type=Path, default=None)
    opts = parser.parse_args()
    work = (opts.work or Path(tempfile.mkdtemp(prefix="kill_resume_"))).resolve()
    ref, killed = work / "reference", work / "killed"
    print(f"reference sweep ({opts.launcher}) in {ref}", flush=True)
    run(ref, opts.launcher)
    print(f"sweep killed partway in {killed}", flush=True)
    before = kill_partway(killed, opts.launcher)
    done_jobs = sorted(p.parent.name for p in before if p.match("sweep/*/metrics.json"))
    rounds = [p for p in before if p.match("imp/round_*.pt")]
    print(f"  at the kill: jobs done {done_jobs}, "
          f"{sum(p.name == 'module.pt' for p in before)} modules done, {len(rounds)} IMP rounds")
    log = run(killed, opts.launcher)
    after = files(killed)
    problems = [f"{p.relative_to(killed)} was rewritten" for p in before if after[p] != before[p]]
    skipped = log.count("skip: pairwise job already done")
    if skipped != len(done_jobs):
        problems.append(f"{skipped} jobs skipped on rerun, {len(done_jobs)} were done")
    problems += compare(ref, killed)
    for line in problems:
        print(f"FAIL: {line}")
    if problems:
        return 1
    print(f"identical: {len(done_jobs)} finished jobs and {len(rounds)} finished IMP rounds "
          "skipped, the rest redone; results.csv, table2 and checkpoints equal the reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
