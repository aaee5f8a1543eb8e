"""Which accelerator device a job runs on: in a sweep with several GPUs visible, job k takes
GPU ``k % n`` for its store training and its evaluation (one device: a job never spreads)."""

import torch
from omegaconf import DictConfig, OmegaConf

GPU_ACCELERATORS = ("auto", "gpu", "cuda")


def assign_device(num: int, device_count: int, accelerator: str) -> int | None:
    """CUDA device of job ``num`` when several are visible: ``num % device_count``."""
    if str(accelerator) not in GPU_ACCELERATORS or device_count < 2:
        return None
    return int(num) % int(device_count)


def setup_device(cfg: DictConfig, num: int):
    """Pin job ``num`` (its store training and its evaluation) to one device; the ``devices``
    of its evaluation Trainer (one device: a job never spreads its evaluation)."""
    accelerator, count = str(cfg.trainer.get("accelerator", "auto")), torch.cuda.device_count()
    index = assign_device(num, count, accelerator)
    if index is not None:
        cfg.trainer.devices = [index]
    devices = cfg.trainer.get("devices", 1)
    return list(devices) if OmegaConf.is_list(devices) or isinstance(devices, list) else 1
