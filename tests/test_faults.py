"""Nothing may lose or poison a result: debug settings, signals, divergence, two runs on one
directory, corrupt round files, hand-edited metrics."""

import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from maxent_lightning import files as atomic_files
from maxent_lightning import moduledir
from maxent_lightning.errors import UserError
from maxent_lightning.evaluate import Evaluation, run_evaluation
from maxent_lightning.family import train_family
from maxent_lightning.files import CorruptFile, save_torch
from maxent_lightning.modulefile import load_module, record_digest
from maxent_lightning.modulerun import Diverged
from maxent_lightning.modulestore import ModuleStore
from maxent_lightning.training import train_module

TINY = ["data=digits", "trainer.max_epochs=2", "imp.round_epochs=1", "model.hidden=[32]",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "logger=none"]


def test_debug_settings_never_share_a_module_with_a_real_run(make_cfg, tmp_path):
    real = make_cfg("imp.round_epochs=1")
    store = ModuleStore(tmp_path / "store")
    for debug in ("+trainer.fast_dev_run=true", "+trainer.limit_train_batches=1",
                  "+trainer.overfit_batches=1", "+trainer.max_steps=3",
                  "trainer.precision=bf16-mixed"):
        assert store.dir_for(make_cfg("imp.round_epochs=1", debug), [3]) != \
            store.dir_for(real, [3]), debug
    store.get(make_cfg("imp.round_epochs=1", "+trainer.limit_train_batches=1"), [3])
    assert not store.is_done(real, [3])  # the one-batch module is not the real one
    neutral = make_cfg("imp.round_epochs=1", "trainer.log_every_n_steps=1",
                       "trainer.enable_model_summary=true")
    assert store.dir_for(neutral, [3]) == store.dir_for(real, [3])


def test_a_second_run_on_a_claimed_directory_is_refused(tmp_path):
    with moduledir.claimed(tmp_path / "run"):
        with pytest.raises(UserError, match="in use by another run") as err:
            with moduledir.claimed(tmp_path / "run"):
                pass
        assert "\n" not in str(err.value) and f"(pid {os.getpid()} on " in str(err.value)
    with moduledir.claimed(tmp_path / "run"):  # free again once the first run ends
        pass


def test_corrupt_round_file_is_discarded_and_trained_again(make_cfg, tmp_path, caplog):
    cfg = make_cfg("imp.round_epochs=1", "model.dropout=0")
    full = train_module(cfg, tmp_path / "full", [2])
    part = tmp_path / "part"
    train_module(cfg, part, [2])
    for name in ("module.pt", "metrics.json"):
        (part / name).unlink()
    saved = torch.load(part / "imp" / "round_1.pt", weights_only=True)
    name = next(iter(saved["masks"]))
    saved["masks"][name].view(-1)[0] ^= True  # one flipped entry, digest kept
    save_torch(part / "imp" / "round_1.pt", saved)
    with caplog.at_level(logging.WARNING):
        resumed = train_module(cfg, part, [2])
    assert "digest mismatch" in caplog.text
    a, b = (load_module(d / "module.pt") for d in (tmp_path / "full", part))
    assert all(torch.equal(a.masks[k], b.masks[k]) for k in a.masks)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert resumed["stop_epochs"] == full["stop_epochs"]


def test_hand_edited_metrics_are_retrained_with_a_warning(make_cfg, tmp_path, caplog):
    cfg = make_cfg("imp.round_epochs=1", "imp.rounds=1")
    store = ModuleStore(tmp_path / "store")
    path = store.get(cfg, [5])
    done = path.parent / "metrics.json"
    metrics = json.loads(done.read_text())
    del metrics["test/acc"]
    done.write_text(json.dumps(metrics))
    with caplog.at_level(logging.WARNING):
        store.get(cfg, [5])
    assert "lacks test/acc" in caplog.text and "test/acc" in json.loads(done.read_text())


def test_nothing_diverged_is_stored_or_scored(make_cfg, tmp_path):
    cfg = make_cfg("imp=none", "optimizer._target_=torch.optim.SGD", "optimizer.lr=1e30")
    with pytest.raises(Diverged, match="diverged"):
        train_module(cfg, tmp_path / "seq", [3], quiet=True)
    with pytest.raises(Diverged, match=r"2 of 2 modules diverged"):
        train_family(cfg, [([3], tmp_path / "a"), ([4], tmp_path / "b")])
    for d in ("seq", "a", "b"):
        assert not (tmp_path / d / "module.pt").exists() and not (tmp_path / d /
                                                                   "metrics.json").exists()
    x, y = torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    evaluation = Evaluation()
    evaluation.add("nan", evaluation.net(NaNNet()), [0])
    scores = run_evaluation(evaluation, {"test": (x, y)}, 10, 5.0)["nan"]
    assert all(math.isnan(scores[k]) for k in ("rewarded_acc", "acc", "loss"))


class NaNNet(torch.nn.Module):
    def forward(self, v):
        return torch.full((len(v), 10), math.nan)


def test_a_module_with_non_finite_weights_is_refused(make_cfg, tmp_path):
    train_module(make_cfg("imp=none"), tmp_path / "m", [1])
    payload = torch.load(tmp_path / "m" / "module.pt", weights_only=True)
    first = next(iter(payload["state_dict"]))
    payload["state_dict"][first].view(-1)[0] = math.nan
    payload["digest"] = record_digest(payload)  # a consistent digest: only NaN is bad
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(CorruptFile, match="not finite"):
        load_module(tmp_path / "nan.pt")


# ------------------------------------------------------------------ signals, through the CLI
def _start(args, cwd) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.Popen([sys.executable, "-m", "maxent_lightning", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _signal_when(proc, path: Path, sig, pattern: str = "") -> tuple[int, str]:
    """Send ``sig`` once ``path`` exists (with ``pattern``: once ``path`` holds a match)."""
    deadline = time.monotonic() + 300
    while not (list(path.glob(pattern)) if pattern else path.exists()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_a_signal_ends_a_training_run_non_zero_and_it_resumes(tmp_path, sig):
    args = [*TINY, "trainer.max_epochs=40", "imp.round_epochs=1", "rewarded=[5]",
            f"hydra.run.dir={tmp_path}/run"]  # its module trains in the store: ./store
    rc, err = _signal_when(_start(args, tmp_path), tmp_path / "store", sig,
                           "digits/*/imp/round_0.pt")
    assert rc == 128 + sig, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "interrupted by" in lines[0] and "rerun" in lines[0], err[-2000:]
    assert "Traceback" not in err and not (tmp_path / "run" / "metrics.json").exists()
    (round0,) = (tmp_path / "store").glob("digits/*/imp/round_0.pt")
    kept = round0.stat().st_mtime_ns
    again = _start(args, tmp_path)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    assert round0.stat().st_mtime_ns == kept  # resumed after the finished round
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["rewarded"] == [5]


def test_a_signal_in_a_sweep_says_which_jobs_did_not_run(tmp_path):
    args = ["-m", *TINY, "task=pairwise", "pair=0,1", "trainer.max_epochs=40",
            f"hydra.sweep.dir={tmp_path}/sweep", f"paths.store_dir={tmp_path}/store"]
    proc = _start(args, tmp_path)
    store = tmp_path / "store" / "digits"
    deadline = time.monotonic() + 300
    while not list(store.glob("*/imp/round_0.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # the family path
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert "job 0" in err and "did not run" in err
    assert not (tmp_path / "sweep" / "0" / "metrics.json").exists()


# ------------------------------------------------------------------ lock waits
HOLDER = """
import sys
from maxent_lightning import files as atomic_files, moduledir
with moduledir.locked(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes stdin
"""


def test_a_lock_waiter_names_the_holder_and_goes_on_once_it_is_free(tmp_path, monkeypatch,
                                                                    capsys):
    monkeypatch.setattr(moduledir, "LOCK_REPORT_S", 0.3)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == "held\n"
        holder.send_signal(signal.SIGSTOP)  # Ctrl-Z
        os.waitpid(holder.pid, os.WUNTRACED)  # until it is stopped
        acquired, record = threading.Event(), []

        def wait():
            with moduledir.locked(tmp_path):
                record.append((tmp_path / ".lock").read_text())
                acquired.set()

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        err, deadline = "", time.monotonic() + 120
        while err.count("waiting for") < 2:  # the first line, then one per LOCK_REPORT_S
            assert time.monotonic() < deadline, err
            time.sleep(0.05)
            err += capsys.readouterr().err
        assert not acquired.is_set()
        lines = [ln for ln in err.splitlines() if "waiting for" in ln]
        assert lines[0].startswith(f"waiting for {tmp_path}: locked by pid {holder.pid} on ")
        assert lines[1].startswith("still waiting") and all("stopped" in ln for ln in lines)
        holder.send_signal(signal.SIGCONT)
        holder.stdin.close()  # the holder releases its lock
        assert acquired.wait(timeout=120)
        waiter.join(timeout=120)
    finally:
        holder.send_signal(signal.SIGCONT)
        holder.kill()
        holder.wait()
    assert json.loads(record[0])["pid"] == os.getpid()  # the new holder recorded itself
    assert (tmp_path / ".lock").read_text() == ""  # and cleared the record on release


def test_lock_holder_reads_a_missing_or_partial_record(tmp_path):
    (tmp_path / ".lock").write_text('{"pid": 12')
    assert moduledir.lock_holder(tmp_path / ".lock") == "another process (not recorded yet)"
    assert moduledir.lock_holder(tmp_path / "none") == "another process (not recorded yet)"


# ------------------------------------------------------------------ stale temporaries
def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_temporaries_of_dead_writers_are_removed_by_the_next_write(tmp_path):
    seen = []

    def peek(fh):  # the temporary as _atomic names it while it writes
        seen.extend(p.name for p in tmp_path.iterdir() if p.name.startswith(".a.json."))
        fh.write(b"{}")

    atomic_files._atomic(tmp_path / "a.json", peek)
    host = socket.gethostname()
    assert len(seen) == 1 and seen[0].startswith(f".a.json.{os.getpid()}@{host}.")
    suffix = seen[0].rsplit(".", 1)[1]
    day = atomic_files.STALE_TEMPORARY_S
    files = {  # name: (age in seconds, removed?)
        f".module.pt.{_dead_pid()}@{host}.{suffix}": (0, True),  # killed writer
        f".module.pt.{os.getpid()}@{host}.{suffix}": (0, False),  # a live writer (us)
        f".module.pt.{os.getpid()}@other-host.{suffix}": (0, False),  # cannot ask that host
        f".module.pt.{_dead_pid()}@other-host.{suffix}": (2 * day, True),  # very old
        f".metrics.json.{suffix}": (0, False),  # unnamed (older versions): only when very old
        f".round_0.pt.{suffix}": (2 * day, True),
        ".lock": (2 * day, False),  # not a temporary
        f".notes.{suffix}x": (2 * day, False),
    }
    for name, (age, _) in files.items():
        (tmp_path / name).write_bytes(b"partial")
        os.utime(tmp_path / name, (time.time() - age, time.time() - age))
    atomic_files.write_json(tmp_path / "metrics.json", {"a": 1})
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"a.json", "metrics.json"} | {n for n, (_, gone) in files.items() if not gone}
