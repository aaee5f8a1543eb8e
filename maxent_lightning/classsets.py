"""The class sets a composition job takes: its name in results (``class_set``), the sampled
pairs of disjoint sets (pairwise, single, mode connectivity) and the class permutations of a
complete merge. Deterministic in their arguments only, so every seed, loss and model of an
experiment sees the same sets."""

from collections.abc import Sequence
from itertools import combinations
from math import comb

import numpy as np
from omegaconf import DictConfig

from .errors import UserError
from .phases import permutation_value
from .results import ORDERED


def class_set(classes: Sequence[int]) -> str:
    return "-".join(str(int(c)) for c in sorted(classes))


def sample_pairs(num_classes: int, cardinality: int, n_pairs: int, seed: int = 0):
    """``n_pairs`` distinct pairs (R1, R2) of disjoint sorted class sets of size
    ``cardinality``; deterministic in (seed, num_classes, cardinality) only, so every seed,
    loss and model sees the same pairs. Fewer when fewer distinct pairs exist."""
    c, k = int(num_classes), int(cardinality)
    if k < 1 or 2 * k > c:
        raise UserError(
            f"cardinality={k} needs 2*{k} <= {c} classes for two disjoint class sets; "
            f"choose cardinality in 1..{c // 2}"
        )
    rng = np.random.default_rng([int(seed), c, k])
    total = comb(c, k) * comb(c - k, k) // 2
    if total <= 20000:  # enumerate every unordered pair, then draw without replacement
        pairs = [(a, b) for a in combinations(range(c), k)
                 for b in combinations([x for x in range(c) if x not in a], k) if a < b]
        return [(list(pairs[i][0]), list(pairs[i][1]))
                for i in rng.permutation(len(pairs))[:n_pairs]]
    seen, out = set(), []
    while len(out) < n_pairs:
        p = rng.permutation(c)
        a, b = sorted(tuple(sorted(int(x) for x in s)) for s in (p[:k], p[k:2 * k]))
        if (a, b) not in seen:
            seen.add((a, b))
            out.append((list(a), list(b)))
    return out


def pick_pair(cfg: DictConfig, num_classes: int):
    """Pair ``cfg.pair`` of cardinality ``cfg.cardinality``; None if only fewer exist."""
    pairs = sample_pairs(num_classes, cfg.cardinality, cfg.n_pairs, cfg.pair_seed)
    if not 0 <= int(cfg.pair) < int(cfg.n_pairs):
        raise UserError(f"pair={cfg.pair} must be in 0..{cfg.n_pairs - 1} (n_pairs={cfg.n_pairs})")
    return pairs[int(cfg.pair)] if int(cfg.pair) < len(pairs) else None


def class_permutation(num_classes: int, index) -> list[int]:
    """The class order of ``permutation=index``: 0, 1, 2, ... for ``ordered``, else random
    permutation ``index`` (seeded by the index only)."""
    value = permutation_value(index)
    if value == ORDERED:  # the paper's Figures 5, 19-21, 23, 24 and the authors' README
        return list(range(int(num_classes)))
    return [int(c) for c in np.random.default_rng(value).permutation(int(num_classes))]
