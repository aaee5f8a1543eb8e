"""The fast launcher's jobs on several processes: this one and ``n - 1`` spawned workers, ``n``
the training pool's count (``pool.pool_devices``: one per visible GPU, ``sweep.workers``, on
CPU two sharing the cores), at most one per ``JOBS_PER_WORKER`` jobs (a worker's start-up,
a few seconds of imports, must pay). This process composes every job's config
(``launcher.SweepComposer``), runs jobs itself and hands the others out, ``AHEAD`` per worker
so none waits; a worker runs Hydra's ``run_job`` on the config it gets, with the sweep's
callbacks, and sends back its ``JobReturn``. Jobs keep their numbers, directories, devices
(``devices.assign_device``) and logs; the returns come back in job order. A worker that dies
fails the job it ran (one line) and its queued jobs run elsewhere; an interrupt stops every
worker (a rerun skips the finished jobs)."""

import importlib
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence

from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals

from .compat import job_context
from .launcher import jobs_line
from .process import end_processes, quiet_libraries

log = logging.getLogger(__name__)
JOBS_PER_WORKER = 10  # fewer jobs per worker than this: fewer workers
AHEAD = 2  # jobs queued per worker (the one it runs and the next)
POLL_S = 0.5


def job_processes(devices: int, jobs: int) -> int:
    """Processes that run ``jobs`` jobs (this one included) with ``devices`` pool workers."""
    return max(1, min(devices, jobs // JOBS_PER_WORKER))


def task_reference(task: Callable) -> tuple[str, str] | None:
    """(module, name) under which a spawned worker finds ``task`` (a function decorated by
    ``hydra.main`` is found through its ``__wrapped__``), or None when it cannot."""
    module, name = getattr(task, "__module__", None), getattr(task, "__qualname__", "")
    if not module or "." in name or "<" in name:
        return None
    try:
        return (module, name) if _resolve((module, name)) is task else None
    except (ImportError, AttributeError):
        return None


def _resolve(ref: tuple[str, str]) -> Callable:
    found = getattr(importlib.import_module(ref[0]), ref[1])
    return getattr(found, "__wrapped__", found)


class JobPool:
    """Runs numbered job configs here and on ``processes - 1`` spawned workers."""

    def __init__(self, processes: int, threads: int, task: tuple[str, str]):
        ctx = multiprocessing.get_context("spawn")  # fork would copy torch's threads and locks
        self.results = ctx.Queue()
        self.inboxes = [ctx.Queue() for _ in range(processes - 1)]
        self.procs = [ctx.Process(target=_worker, args=(k, task, threads, inbox, self.results),
                                  daemon=True, name=f"maxent-jobs-{k + 1}")
                      for k, inbox in enumerate(self.inboxes)]
        self.held: list[deque] = [deque() for _ in self.inboxes]  # (idx, config) sent, not done
        self.started: dict[int, int] = {}  # worker -> job it runs

    def run(self, jobs: Sequence[tuple[int, Sequence[str]]],
            compose: Callable[[int, Sequence[str]], object],
            run_here: Callable[[object], JobReturn]) -> list[JobReturn]:
        """Each job ``(idx, overrides)`` composed by ``compose`` and run by ``run_here`` or a
        worker; their returns in the order of ``jobs``."""
        pending, returns, t0 = deque(jobs), {}, time.monotonic()
        total = len(pending)

        def done(idx: int, ret: JobReturn) -> None:
            returns[idx] = ret
            log.info(jobs_line(len(returns), total, time.monotonic() - t0))

        finished = False
        whole_lines()
        try:
            for p in self.procs:
                p.start()
            while len(returns) < total:
                self._refill(pending, compose)
                self._collect(done, pending, block=not pending)
                if pending:
                    idx, overrides = pending.popleft()
                    done(idx, run_here(compose(idx, overrides)))
            finished = True
        finally:
            self.stop(finished)
            any_lines()
        return [returns[idx] for idx, _ in jobs]

    def _refill(self, pending: deque, compose) -> None:
        for k, inbox in enumerate(self.inboxes):
            while self.procs[k].is_alive() and pending and len(self.held[k]) < AHEAD:
                idx, overrides = pending.popleft()
                self.held[k].append((idx, overrides))
                inbox.put((idx, compose(idx, overrides)))

    def _collect(self, done, pending: deque, block: bool) -> None:
        """The workers' messages so far (waiting for one when ``block``); a dead worker's
        running job fails and its queued ones go back to ``pending``."""
        while True:
            try:
                msg = self.results.get(timeout=POLL_S) if block else self.results.get_nowait()
            except queue.Empty:
                self._check_alive(done, pending)
                return
            kind, k, idx, ret = msg
            if kind == "start":
                self.started[k] = idx
                continue
            self.started.pop(k, None)
            self.held[k].popleft()  # a worker runs its jobs in the order it got them
            done(idx, ret)
            block = False

    def _check_alive(self, done, pending: deque) -> None:
        for k, p in enumerate(self.procs):
            if p.is_alive() or not self.held[k]:
                continue
            running = self.started.pop(k, None)
            for idx, overrides in reversed(self.held[k]):
                if idx == running:
                    why = f"its job worker stopped (exit code {p.exitcode})"
                    log.error(f"job {idx} failed: {why}")
                    done(idx, failed_return(overrides, why))
                else:
                    pending.appendleft((idx, overrides))
            self.held[k].clear()

    def stop(self, finished: bool) -> None:
        """Idle workers end; after an error or interrupt, running ones are stopped."""
        for inbox, p in zip(self.inboxes, self.procs, strict=True):
            inbox.cancel_join_thread()  # configs a dead worker never read do not hold us here
            if p.pid is not None and p.is_alive():
                inbox.put(None)
        self.results.cancel_join_thread()
        end_processes(self.procs, at_once=not finished)


class WholeLines:
    """A text stream that passes on whole lines only, each in one write: the lines of
    processes writing to one output never mix (``print`` writes a line's text and its end
    apart)."""

    def __init__(self, stream):
        self.stream, self.pending = stream, ""

    def write(self, text: str) -> int:
        lines, end, self.pending = (self.pending + text).rpartition("\n")
        if end:
            self.stream.write(lines + end)
            self.stream.flush()
        return len(text)

    def close_lines(self):
        """The stream itself, given what is left of a line."""
        if self.pending:
            self.stream.write(self.pending)
        return self.stream

    def __getattr__(self, name):  # flush, isatty, fileno, encoding: the stream's
        return getattr(self.stream, name)


def whole_lines() -> None:
    """This process's stdout and stderr pass on whole lines (``WholeLines``)."""
    sys.stdout, sys.stderr = WholeLines(sys.stdout), WholeLines(sys.stderr)


def any_lines() -> None:
    """Undoes ``whole_lines``."""
    for name in ("stdout", "stderr"):
        if isinstance(stream := getattr(sys, name), WholeLines):
            setattr(sys, name, stream.close_lines())


def failed_return(overrides: Sequence[str], why: str) -> JobReturn:
    return JobReturn(overrides=list(overrides), status=JobStatus.FAILED,
                     _return_value=RuntimeError(why))


def portable(ret: JobReturn) -> JobReturn:
    """``ret`` as it can travel between processes (a return value that does not pickle is
    replaced by its text)."""
    try:
        pickle.dumps(ret._return_value)
    except Exception:  # any value: the job's own return or its error
        value = ret._return_value
        ret._return_value = (RuntimeError(f"{type(value).__name__}: {value}")
                             if isinstance(value, BaseException) else repr(value))
    return ret


def _stopped(signum, frame) -> None:
    """A job worker stopped by the launcher: at once and quietly (its job stays unfinished;
    the launcher reports the interrupt)."""
    os._exit(128 + signum)


def _worker(k: int, task: tuple[str, str], threads: int, inbox, results) -> None:
    """A spawned job worker: runs the jobs of its inbox until it gets None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the parent stops us
    signal.signal(signal.SIGTERM, _stopped)  # (and the task keeps no handler of its own)
    whole_lines()
    import torch

    quiet_libraries()
    torch.set_num_threads(threads)
    setup_globals()
    function, context = _resolve(task), None
    while (item := inbox.get()) is not None:
        idx, config = item
        if context is None:  # the sweep's callbacks (hydra.callbacks), as the parent has them
            context = job_context(config)
        results.put(("start", k, idx, None))
        ret = run_job(hydra_context=context, task_function=function, config=config,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        results.put(("end", k, idx, portable(ret)))
