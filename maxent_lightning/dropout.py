"""Dropout drawn from a module's own random stream, the same in both trainers.

A module's dropout masks are a function of its identity only: in each phase they come from one
CPU generator seeded by the module's key and the phase's round (``stream_seed``), every training
step draws a full batch (``data.batch_size`` rows) of keep-masks for each dropout layer in call
order and uses the first B rows (B: the step's batch size). So a module trained alone (Lightning,
``StreamDropout`` drawing in its forward), in a family of any size (the family draws every
member's rows at once and sets them as ``StreamDropout.mask``), resumed after a kill, or on
another device draws the same masks. Generators live on the CPU: only the drawn bits move to
the device.
"""

import math
import sys

import torch
from torch import nn

from .builders import trace_calls


def stream_seed(key: str, round_: int) -> int:
    """The seed of a module's dropout stream in one IMP round (``key``: a hex digest)."""
    return (int(key, 16) * 1009 + round_) % (1 << 63)


def generator(key: str, round_: int) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(key, round_))


def keep_mask(gens: list[torch.Generator], shape, p: float, device, scale: float = 1.0,
              dtype=None) -> torch.Tensor:
    """(len(gens), *shape) Bernoulli(1 - p) keep-mask on ``device``, its entries 0 or ``scale``
    (in ``dtype``, default: torch's), row k from the CPU generator ``gens[k]``.

    When 1 - p is a multiple of 2^-b (b <= 8; p = 0.5: b = 1), each b-bit field of a random
    32-bit word, lowest bits first, is an exact Bernoulli draw (field < (1 - p) 2^b): b/32 of
    the generator calls of one uniform per entry (the bulk of a step's dropout cost). Where the
    fields split bytes evenly, each byte's entries are read from a 256-row table at once.
    Otherwise one uniform per entry."""
    n, q, k = math.prod(shape), 1.0 - p, len(gens)
    dtype = dtype or torch.get_default_dtype()
    bits = next((b for b in range(1, 9) if (q * 2**b).is_integer()), None)
    if bits is None:
        u = torch.empty((k, n))
        for row, g in zip(u, gens, strict=True):
            row.uniform_(generator=g)
        return _scaled((u < q).to(device), scale, dtype).view(k, *shape)
    fields, threshold = 32 // bits, round(q * 2**bits)
    words = torch.empty((k, -(-n // fields)), dtype=torch.int64)
    for row, g in zip(words, gens, strict=True):
        row.random_(0, 1 << 32, generator=g)
    words = words.to(device)
    if 8 % bits == 0 and sys.byteorder == "little":  # bytes 0-3 of each word, via the table
        shifts = torch.arange(0, 8, bits, device=device)
        byte = torch.arange(256, device=device)
        table = _scaled((byte[:, None] >> shifts) & ((1 << bits) - 1) < threshold, scale, dtype)
        low = words.view(torch.uint8).view(k, -1, 8)[..., :4].reshape(-1).long()
        keep = table.index_select(0, low).view(k, -1)
    else:
        shifts = torch.arange(0, fields * bits, bits, device=device)
        values = (words.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
        keep = _scaled(values.reshape(k, -1) < threshold, scale, dtype)
    return keep[:, :n].reshape(k, *shape)


def _scaled(keep: torch.Tensor, scale: float, dtype) -> torch.Tensor:
    """0/1 keep flags as 0 or ``scale``: scaled in torch's default dtype, then cast."""
    out = keep.to(torch.get_default_dtype())
    return (out.mul_(scale) if scale != 1.0 else out).to(dtype)


class Stream:
    """One module's dropout randomness in one phase, shared by its dropout layers."""

    def __init__(self, key: str, round_: int, rows: int):
        self.generator, self.rows = generator(key, round_), int(rows)


class StreamDropout(nn.Module):
    """nn.Dropout whose keep-mask (scaled by 1/(1-p)) is ``mask`` when one is set (the family
    sets every member's for its vmapped call), else, while training with a ``stream``, drawn
    from the stream for a full batch of ``stream.rows`` rows; otherwise the identity."""

    def __init__(self, p: float):
        super().__init__()
        self.p, self.mask, self.stream = p, None, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mask is not None:
            return x * self.mask
        if not self.training or self.stream is None:
            return x
        rows = max(self.stream.rows, len(x))
        keep = keep_mask([self.stream.generator], (rows, *x.shape[1:]), self.p, x.device,
                         1.0 / (1.0 - self.p), x.dtype)
        return x * keep[0, :len(x)]


def stream_dropouts(net: nn.Module, input_shape) -> list[tuple[StreamDropout, tuple]]:
    """Replace each nn.Dropout of ``net`` in place (p > 0: StreamDropout, else Identity); the
    (layer, per-sample output shape) of every StreamDropout in call order."""
    for parent in list(net.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, StreamDropout(child.p) if child.p > 0 else nn.Identity())
    layers = [m for m in net.modules() if isinstance(m, StreamDropout)]
    return [(m, tuple(out.shape[1:])) for m, _, out in trace_calls(net, input_shape, layers)]


def begin_stream(layers, key: str, round_: int, rows: int) -> None:
    """Give the dropout ``layers`` of one module the stream of its phase ``round_``."""
    stream = Stream(key, round_, rows)
    for layer, _ in layers:
        layer.stream = stream
