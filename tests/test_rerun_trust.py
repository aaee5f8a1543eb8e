"""--experimental-rerun reads a pickle: only a config record is let through to Hydra."""

import os
import pickle
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from maxent_lightning.errors import UserError
from maxent_lightning.rerun import read_record, verified_rerun


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):  # what a crafted file does when it is unpickled
        return (os.mkdir, (str(self.target),))


def test_a_crafted_rerun_file_is_refused_before_anything_runs(tmp_path):
    bad = tmp_path / "config.pickle"
    bad.write_bytes(pickle.dumps(_Payload(tmp_path / "pwned")))
    with pytest.raises(UserError, match="posix.mkdir"):
        read_record(bad.read_bytes())
    res = subprocess.run([sys.executable, "-m", "maxent_lightning", "--experimental-rerun",
                          str(bad)], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.startswith("error: the rerun file names 'posix.mkdir'")
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "pwned").exists()


def test_a_config_record_passes_and_hydra_reads_a_private_copy(tmp_path):
    record = OmegaConf.create({"task": "train", "hydra": {"job": {"name": "x"}}})
    good = tmp_path / "config.pickle"
    good.write_bytes(pickle.dumps(record, protocol=4))
    assert read_record(good.read_bytes()) == record
    argv = ["prog", "--experimental-rerun", str(good)]
    copy = verified_rerun(argv)
    try:
        assert argv[2] == copy != str(good)
        assert open(copy, "rb").read() == good.read_bytes()
    finally:
        os.unlink(copy)
    assert verified_rerun(["prog", "seed=1"]) is None


def test_not_a_record_is_one_line(tmp_path):
    with pytest.raises(UserError, match="not a readable config record"):
        read_record(b"not a pickle")
    with pytest.raises(UserError, match="holds no job config"):
        read_record(pickle.dumps({"task": "train"}))
    with pytest.raises(UserError, match="cannot read the rerun file"):
        verified_rerun(["prog", "--experimental-rerun", str(tmp_path / "missing.pickle")])
