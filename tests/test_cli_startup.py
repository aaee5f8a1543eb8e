"""The CLI answers --help, shell completion and --cfg without importing torch or Lightning
(which take seconds): they are imported when a task runs."""

import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "lightning")
# Runs the CLI as ``python -m maxent_lightning ARGS`` would, then reports the heavy modules
# that were imported (whatever the CLI's exit).
PROBE = """
import runpy, sys
sys.argv = ["maxent_lightning", *sys.argv[1:]]
try:
    runpy.run_module("maxent_lightning", run_name="__main__")
finally:
    print("IMPORTED", [m for m in HEAVY if m in sys.modules], file=sys.stderr)
""".replace("HEAVY", repr(HEAVY))


def probe(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def test_importing_the_cli_imports_neither_torch_nor_lightning():
    code = f"import sys, maxent_lightning.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]"


@pytest.mark.parametrize("args, env, shows", [
    (["--help"], {}, "Tasks (task=NAME"),
    (["--cfg", "job", "task=pairwise"], {}, "task: pairwise"),
    (["-sc", "query=bash"], {"COMP_LINE": "maxent-lightning data=mni"}, "data=mnist5k"),
    (["-sc", "query=bash"], {"COMP_LINE": "maxent-lightning task=pa"}, "task=pairwise"),
])
def test_help_completion_and_cfg_answer_without_torch(args, env, shows):
    res = probe(*args, **env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert shows in res.stdout
    assert "IMPORTED []" in res.stderr, res.stderr[-2000:]
