"""Host CPU settings, all in this one module and none applied on import: torch's CUDA check
without NVML (``fast_cuda_check``, at the start of every task and training), and what a training
holds while it runs (both trainers): denormal floats read and written as zero, and (the family's
large gradients) heap memory that is reused."""

import ctypes
import functools
import os
from contextlib import contextmanager

import torch

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc mallopt parameters (malloc.h)


@functools.cache
def _has_nvml() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def fast_cuda_check() -> None:
    """Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 on import; where NVML is absent (CPU-only
    machines) torch then retries loading it on every cuda.is_available(), i.e. every Adam step
    (~0.2 ms). Without NVML torch falls back to the runtime check anyway: drop the variable.
    Called once Lightning is imported: where a task starts (the CLI, also in launcher workers)
    and where a training starts (``denormals_flushed``, both trainers)."""
    if not _has_nvml():
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)


def _openmp_team():
    """libgomp's ``GOMP_parallel`` of the OpenMP runtime torch computes with, or None (other
    runtimes, other platforms)."""
    bundled = os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp.so.1")
    for name in (bundled, None):  # a wheel's own copy, else whatever the process loaded
        if name is not None and not os.path.exists(name):
            continue
        try:
            return ctypes.CDLL(name).GOMP_parallel
        except (OSError, AttributeError):
            continue
    return None


def _on_every_thread(fn) -> None:
    """Run ``fn`` on this thread and on each thread of torch's OpenMP team (an x86 thread's
    float modes are its own: a team started earlier keeps those it began with)."""
    fn()
    team = _openmp_team()
    if team is None or torch.get_num_threads() < 2:
        return
    callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _: fn())
    team(callback, None, torch.get_num_threads(), 0)


@contextmanager
def denormals_flushed(enabled: bool):
    """While a module trains, CPU float arithmetic reads and writes denormal numbers (magnitude
    below 1.2e-38) as zero (``flush_denormals``; off again afterwards). Late epochs produce them
    (Adam's decaying moments of weights whose gradient has vanished, saturated softmax
    gradients), and each one sends the CPU down a slow path: dense MLP epochs ran 2-4x slower.
    Such values cannot move a float32 weight: a 45-module MNIST-5k family trained bitwise equal
    with and without. GPUs are unaffected. Also the start of a training's process settings
    (``fast_cuda_check``)."""
    fast_cuda_check()
    if not (enabled and torch.set_flush_denormal(True)):  # False: the CPU cannot flush
        yield
        return
    _on_every_thread(lambda: torch.set_flush_denormal(True))
    try:
        yield
    finally:
        _on_every_thread(lambda: torch.set_flush_denormal(False))


@contextmanager
def reused_host_memory():
    """glibc serves allocations of 32 MiB and more (a family's stacked gradients) with fresh
    mmap pages, so each step pays a page fault per 4 KiB of every gradient (on the 2-core CPU
    about a fifth of a dense family step). While a family trains, every allocation comes from
    the heap and freed memory stays there for the next step; glibc's defaults afterwards."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc: nothing to tune
        yield
        return
    mallopt(M_MMAP_MAX, 0)
    mallopt(M_TRIM_THRESHOLD, 1 << 30)
    try:
        yield
    finally:
        mallopt(M_MMAP_MAX, 65536)
        mallopt(M_TRIM_THRESHOLD, 128 * 1024)
