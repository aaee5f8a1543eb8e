"""Fault matrix: signals, two runs on one directory, corrupt files, a full disk, read-only
paths, a store lock held by a stopped process and the temporaries of a killed writer, each
through the real CLI on the embedded digits; prints a table and exits 1 when a case
misbehaves (cases this machine cannot stage are listed as not exercised, with the reason).

    python scripts/fault_matrix.py [--work DIR]

Expected of every case: a non-zero exit with one `error:` line and no traceback (or exit 0 where
the fault is repaired, e.g. a corrupt file retrained with a warning), nothing finished lost, and
a rerun of the same command finishing with the module an uninterrupted run gives.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data=digits", "trainer.max_epochs=40", "imp.round_epochs=1", "model.hidden=[32]",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "logger=none",
        "rewarded=[5]"]


def start(args, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "maxent_lightning", *args], cwd=cwd,
                            env={**os.environ, "WANDB_MODE": "offline"}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run(args, cwd) -> tuple[int, str]:
    proc = start(args, cwd)
    _, err = proc.communicate(timeout=900)
    return proc.returncode, err


def one_line(err: str) -> str | None:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    return lines[0] if len(lines) == 1 and "Traceback" not in err else None


def same_module(a: Path, b: Path) -> bool:
    from maxent_lightning.modulefile import load_module

    x, y = load_module(a / "module.pt"), load_module(b / "module.pt")
    return all(torch.equal(x.state_dict[k], y.state_dict[k]) for k in x.state_dict) and \
        x.metrics["stop_epochs"] == y.metrics["stop_epochs"]


def when(root: Path, pattern: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    """Wait until a file matching ``pattern`` exists under ``root``."""
    deadline = time.monotonic() + timeout
    while not list(root.glob(pattern)):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"never reached {root}/{pattern}")
        time.sleep(0.02)


def own_store(out: Path) -> list[str]:
    """A run directory and a store of its own (a shared store would hand it the module)."""
    return [f"hydra.run.dir={out}", f"paths.store_dir={out}_store"]


def signal_case(work: Path, ref: Path, sig) -> tuple[bool, str]:
    out = work / f"signal_{sig.name}"
    args = [*TINY, *own_store(out)]
    proc = start(args, work)
    when(Path(f"{out}_store"), "digits/*/imp/round_0.pt", proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    line = one_line(err)
    rc, err2 = run(args, work)
    ok = proc.returncode == 128 + sig and line and "rerun" in line and rc == 0 and \
        same_module(ref, out)
    return bool(ok), f"rc {proc.returncode}: {line}; rerun rc {rc}, module equal to reference"


def sweep_signal_case(work: Path) -> tuple[bool, str]:
    sweep, store = work / "sweep", work / "sweep_store"
    args = ["-m", *TINY, "task=pairwise", "pair=0,1", f"hydra.sweep.dir={sweep}",
            f"paths.store_dir={store}"]
    proc = start(args, work)
    when(store, "digits/*/imp/round_0.pt", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    line = one_line(err)
    rc, err2 = run(args, work)
    done = [(sweep / str(j) / "metrics.json").exists() for j in (0, 1)]
    ok = proc.returncode == 143 and line and "did not run" in line and rc == 0 and all(done)
    return bool(ok), f"rc {proc.returncode}: {line}; rerun rc {rc}, jobs done {done}"


def two_runs_case(work: Path) -> tuple[bool, str]:
    out = work / "shared_run"
    procs = [start([*TINY, f"hydra.run.dir={out}", f"rewarded=[{r}]"], work) for r in (1, 2)]
    results = [(p.wait(timeout=900), p.communicate()[1]) for p in procs]
    refused = [one_line(err) for rc, err in results if rc == 2]
    ok = sorted(rc for rc, _ in results) == [0, 2] and refused and "in use" in refused[0]
    return bool(ok), f"exit codes {[rc for rc, _ in results]}: {refused[0] if refused else ''}"


def corrupt_round_case(work: Path, ref: Path) -> tuple[bool, str]:
    out = work / "corrupt_round"
    shutil.copytree(f"{ref}_store", f"{out}_store")  # the reference's module, interrupted ...
    (module,) = Path(f"{out}_store").glob("digits/*")
    for name in ("module.pt", "metrics.json"):
        (module / name).unlink()
    saved = torch.load(module / "imp" / "round_1.pt", weights_only=True)
    next(iter(saved["masks"].values())).view(-1)[0] ^= True  # ... and its last round corrupt
    torch.save(saved, module / "imp" / "round_1.pt")
    proc = start([*TINY, *own_store(out)], work)
    log, err = proc.communicate(timeout=900)
    rc, warned = proc.returncode, "digest mismatch" in log + err
    ok = rc == 0 and warned and same_module(ref, out)
    return bool(ok), f"rc {rc}, warned: {warned}, module equal to reference"


HOLD = """
import sys
from maxent_lightning import moduledir
with moduledir.locked(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


def lock_wait_case(work: Path) -> tuple[bool, str]:
    """A pairwise job needs a module whose store lock a stopped process (Ctrl-Z) holds: it
    must say who holds it, and train once the holder goes on and releases it."""
    from maxent_lightning.classsets import pick_pair
    from maxent_lightning.config import compose_config
    from maxent_lightning.modulestore import ModuleStore

    store = work / "lock_store"
    args = [*TINY, "task=pairwise", "trainer.max_epochs=2", f"paths.store_dir={store}"]
    cfg = compose_config(args)
    module = ModuleStore(store).dir_for(cfg, pick_pair(cfg, 10)[0])
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(module)], cwd=work, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    log = work / "lock_wait.err"
    try:
        holder.stdout.readline()
        holder.send_signal(signal.SIGSTOP)
        with open(log, "w") as err:
            job = subprocess.Popen([sys.executable, "-m", "maxent_lightning", *args,
                                    f"hydra.run.dir={work}/lock_wait_job"], cwd=work, text=True,
                                   stdout=subprocess.DEVNULL, stderr=err)
            deadline = time.monotonic() + 600
            while "waiting for" not in log.read_text() and job.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.1)
            line = next((ln for ln in log.read_text().splitlines() if "waiting for" in ln), "")
            waited = job.poll() is None
            holder.send_signal(signal.SIGCONT)
            holder.stdin.close()
            rc = job.wait(timeout=900)
    finally:
        holder.send_signal(signal.SIGCONT)
        holder.kill()
    ok = waited and f"pid {holder.pid} on" in line and "stopped" in line and rc == 0
    return ok, f"{line.split(': ', 1)[-1]}; after the holder released it: rc {rc}"


WRITER = """
import os, signal, sys
from maxent_lightning import files
def write(fh):
    fh.write(b"half a file")
    fh.flush()
    os.kill(os.getpid(), getattr(signal, sys.argv[2]))
files._atomic(sys.argv[1], write)
"""


def stale_temporaries_case(work: Path) -> tuple[bool, str]:
    """A writer SIGKILLed while writing into a run directory, and a live one (stopped while
    writing): the next run there removes the dead writer's temporary, never the live one's."""
    out = work / "stale_run"
    out.mkdir()
    live = subprocess.Popen([sys.executable, "-c", WRITER, str(out / "live.txt"), "SIGSTOP"],
                            cwd=work)
    try:
        os.waitpid(live.pid, os.WUNTRACED)  # stopped in the middle of its write
        dead = subprocess.run([sys.executable, "-c", WRITER, str(out / "dead.txt"), "SIGKILL"],
                              cwd=work)
        left = sorted(p.name for p in out.glob(".*.txt.*"))
        rc, err = run([*TINY, "imp=none", f"hydra.run.dir={out}"], work)
        after = sorted(p.name for p in out.glob(".*.txt.*"))
    finally:
        live.send_signal(signal.SIGCONT)
    finished = live.wait(timeout=300) == 0 and (out / "live.txt").exists()  # it went on
    ok = dead.returncode == -9 and len(left) == 2 and rc == 0 and finished and \
        after == [n for n in left if n.startswith(".live.txt.")]
    return ok, (f"temporaries before the run: {left}; rc {rc}; after: {after}; the live "
                f"writer then finished its file: {finished}")


def on_tmpfs(options: str):
    """Decorate a case ``case(work, where)`` to run with a small tmpfs mounted at a fresh
    ``where`` (unmounted after); (None, why) where this machine cannot mount one."""

    def wrap(case):
        def run_case(work: Path) -> tuple[bool | None, str]:
            where = work / case.__name__
            where.mkdir(parents=True, exist_ok=True)
            res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                                 capture_output=True, text=True)
            if res.returncode != 0:
                why = res.stderr.strip() or f"mount rc {res.returncode}"
                return None, f"not exercised: cannot mount a tmpfs ({options}) here ({why})"
            try:
                return case(work, where)
            finally:
                subprocess.run(["umount", str(where)], capture_output=True)

        return run_case

    return wrap


@on_tmpfs("size=16k")
def full_disk_case(work: Path, disk: Path) -> tuple[bool, str]:
    rc, err = run([*TINY, "imp=none", f"hydra.run.dir={disk}/run",
                   f"paths.store_dir={disk}/store"], work)
    line = one_line(err)
    leftovers = [p.name for p in disk.rglob(".*") if p.is_file()
                 and p.name not in (".run.lock", ".lock")]
    ok = rc == 2 and line and "No space" in line and not leftovers
    return bool(ok), f"rc {rc}: {line}; temporary files left: {leftovers}"


@on_tmpfs("size=1m,ro")
def read_only_case(work: Path, store: Path) -> tuple[bool, str]:
    rc, err = run([*TINY, "task=pairwise", f"paths.store_dir={store}",
                   f"hydra.run.dir={work}/read_only_job"], work)
    line = one_line(err)
    return bool(rc == 2 and line and "cannot write" in line), f"rc {rc}: {line}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None)
    work = (parser.parse_args().work or Path(tempfile.mkdtemp(prefix="faults_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ref = work / "reference"
    rc, err = run([*TINY, *own_store(ref)], work)
    if rc != 0:
        raise SystemExit(f"reference run failed: {err[-2000:]}")
    cases = {
        "SIGTERM while training": lambda: signal_case(work, ref, signal.SIGTERM),
        "SIGINT while training": lambda: signal_case(work, ref, signal.SIGINT),
        "SIGTERM in a sweep": lambda: sweep_signal_case(work),
        "two runs on one run directory": lambda: two_runs_case(work),
        "corrupt IMP round file": lambda: corrupt_round_case(work, ref),
        "full disk (16 KiB tmpfs)": lambda: full_disk_case(work),
        "read-only store": lambda: read_only_case(work),
        "lock held by a stopped process": lambda: lock_wait_case(work),
        "temporaries of a killed and a live writer": lambda: stale_temporaries_case(work),
    }
    print("| fault | as expected | what happened |\n|---|---|---|")
    failed = []
    for name, case in cases.items():
        ok, what = case()
        print(f"| {name} | {'n/a' if ok is None else 'yes' if ok else 'NO'} | "
              f"{what.replace(str(work) + '/', '')} |", flush=True)
        if ok is False:
            failed.append(name)
    print(f"\n{len(cases) - len(failed)}/{len(cases)} as expected or not exercised"
          + (f"; NOT: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
