"""What "the same module" means across training paths (Lightning alone, a family of any size, a
dense twin from IMP round 0, a resumed run): the same fingerprint, masks, stop epochs and
recorded fields, float32 weights and buffers equal up to the order of float sums (which differs
between paths, and between CPUs: AVX2 and AVX-512 kernels sum in other orders), and test
scores equal within that."""

import pytest
import torch

from maxent_lightning.files import read_json
from maxent_lightning.modulefile import load_module

SAME = {"atol": 1e-4, "rtol": 1e-4}


def assert_same_module(dir_a, dir_b, ignore=("wall_s",)):
    """The modules in two directories are one module; returns both metrics.json."""
    a, b = load_module(dir_a / "module.pt"), load_module(dir_b / "module.pt")
    assert a.fingerprint == b.fingerprint and a.theta0_id == b.theta0_id
    assert list(a.state_dict) == list(b.state_dict) and list(a.masks) == list(b.masks)
    for k in a.masks:
        assert torch.equal(a.masks[k], b.masks[k]), k
        assert (b.state_dict[k][~b.masks[k]] == 0).all(), f"pruned entries of {k} not zero"
    for k in a.state_dict:
        assert b.state_dict[k].is_contiguous()
        torch.testing.assert_close(b.state_dict[k], a.state_dict[k], **SAME)
    ma, mb = read_json(dir_a / "metrics.json"), read_json(dir_b / "metrics.json")
    assert set(ma) == set(mb)
    for k, v in ma.items():
        if k.startswith("test/"):
            assert mb[k] == pytest.approx(v, rel=1e-4, abs=1e-5), k
        elif k not in ignore:
            assert mb[k] == v, k
    return ma, mb
