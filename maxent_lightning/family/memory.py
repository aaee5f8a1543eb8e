"""Where the family trains and how many members fit: per pass and per evaluation group."""

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..builders import trace_calls

EVAL_BATCH = 1000  # MaxEntDataModule's default eval_batch_size (for memory planning)


def pick_device(accelerator: str, devices=None) -> torch.device:
    """The family's device: a GPU where the accelerator takes one (the first of a
    ``trainer.devices`` list, e.g. [2]; else the current one), else the CPU."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if isinstance(devices, str) and "," in devices:  # Lightning's "2,3"
            devices = [d for d in devices.split(",") if d.strip()]
        if isinstance(devices, Sequence) and not isinstance(devices, str) and len(devices):
            return torch.device("cuda", int(devices[0]))
        return torch.device("cuda")
    return torch.device("cpu")


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 4 << 30


def _activations_per_sample(net: nn.Module, input_shape) -> int:
    """Numel of all leaf-module outputs for one sample (what a forward keeps for backward)."""
    leaves = [m for m in net.modules() if not list(m.children())]
    return sum(out.numel() for _, _, out in trace_calls(net, input_shape, leaves))


def plan_sizes(net, input_shape, batch_size: int, device, chunk_size=None, fraction=0.5):
    """(members per chunk, members per evaluation group) that fit in ``fraction`` of free memory:
    per member params + grad + optimizer state + best copy + masks, plus activations."""
    n = sum(p.numel() for p in net.parameters())
    acts = _activations_per_sample(net, input_shape)
    budget = fraction * _free_bytes(device)
    train = 4 * (8 * n + 3 * batch_size * acts)
    chunk = int(chunk_size) if chunk_size else max(1, int(budget // train))
    group = max(1, int(budget / 2 // (4 * 2 * EVAL_BATCH * acts)))
    return chunk, group

