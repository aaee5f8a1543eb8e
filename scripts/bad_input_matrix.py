"""Run every bad input of issue 5 through the real CLI and print a markdown table
(input, message, exit code, traceback, files unchanged).

    python scripts/bad_input_matrix.py [--work DIR] [--jobs 3]

Setup (in-process, tiny): modules on the embedded digits/mnist5k, a finished merge job, a
truncated and a foreign checkpoint, malformed HAR/Yeast/IDX/CIFAR files, a read-only directory
(for root a read-only tmpfs, unmounted at the end) and stores holding symlink loops. Each case
then runs
``python -m maxent_lightning ...`` in its own process; every file written by the setup must be
byte-identical afterwards.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

TINY = ["data=digits", "trainer.max_epochs=2", "imp.round_epochs=1", "model.hidden=[32]",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "logger=none"]


@dataclass
class Case:
    name: str  # what is wrong, as the issue words it
    args: list[str]  # overrides after TINY; "{key}" is filled from the setup's paths
    needle: str  # text the one error line must contain
    tiny: bool = True
    gpu_absent: bool = False  # only where torch sees no GPU (not exercised elsewhere)


MERGE = "task=merge"
CASES = [
    Case("unknown config group option", ["data=nope"], "Could not find 'data/nope'"),
    Case("unknown experiment", ["+experiment=nope"], "Could not find 'experiment/nope'"),
    Case("rewarded class out of range (train)", ["rewarded=[12]"], "outside data set"),
    Case("rewarded class out of range (eval)",
         ["task=eval", "checkpoints=[{A}]", "eval.rewarded=[10]"], "outside data set"),
    Case("empty rewarded set", ["rewarded=[]"], "empty"),
    Case("duplicate rewarded class", ["rewarded=[1,1]"], "repeats"),
    Case("overlapping class sets in a pair", [MERGE, "checkpoints=[{A},{G}]"], "overlap"),
    Case("imp.sparsity = 1", ["imp.sparsity=1.0"], "imp.sparsity"),
    Case("imp.sparsity < 0 (single task)", ["task=single", "imp.sparsity=-0.5"],
         "imp.sparsity"),
    Case("imp.rounds < 0", ["imp.rounds=-1"], "imp.rounds"),
    Case("temperature = 0", ["loss.temperature=0"], "loss.temperature"),
    Case("temperature < 0 (pairwise task)", ["task=pairwise", "loss.temperature=-1"],
         "loss.temperature"),
    Case("cardinality too large", ["task=pairwise", "cardinality=6"], "cardinality=6"),
    Case("merge: different θ0 (seed)", [MERGE, "checkpoints=[{A},{C}]"], "different θ0"),
    Case("merge: different architecture", [MERGE, "checkpoints=[{A},{D}]"], "different"),
    Case("merge: different class count", [MERGE, "checkpoints=[{A},{F}]"],
         "different class count"),
    Case("merge: different data", [MERGE, "checkpoints=[{A},{E}]"], "different"),
    Case("truncated checkpoint", [MERGE, "checkpoints=[{A},{T}]"], "unreadable"),
    Case("checkpoint that is not a module", [MERGE, "checkpoints=[{A},{N}]"],
         "not a maxent_lightning module"),
    Case("logit weights: wrong count", [MERGE, "checkpoints=[{A},{B}]",
                                        "merge.logit_weights=[1.0]"], "logit weights"),
    Case("logit weights: negative", [MERGE, "checkpoints=[{A},{B}]",
                                     "merge.logit_weights=[1.0,-0.5]"], "non-negative"),
    Case("data missing offline", ["data=mnist", "data.download=false", "data.root={nowhere}"],
         "not found"),
    Case("malformed IDX (MNIST)", ["data=mnist", "data.download=false", "data.root={bad_idx}"],
         "malformed mnist"),
    Case("malformed CIFAR", ["data=cifar10", "data.download=false", "data.root={bad_cifar}"],
         "malformed cifar10"),
    Case("malformed HAR", ["data=har", "data.download=false", "data.root={bad_har}"],
         "malformed har"),
    Case("malformed Yeast", ["data=yeast", "data.download=false", "data.root={bad_yeast}"],
         "malformed yeast"),
    Case("output dir holds a finished run of another config (train)",
         ["rewarded=[2]", "hydra.run.dir={A_dir}"], "different config"),
    Case("output dir holds a finished job of another config (merge)",
         [MERGE, "checkpoints=[{A},{B}]", "merge.kind=weight", "hydra.run.dir={merge_dir}"],
         "different config"),
    Case("module missing, store.train_missing=false",
         ["task=pairwise", "store.train_missing=false", "paths.store_dir={empty_store}"],
         "not in the store"),
    Case("store dir holding another module's files",
         ["task=pairwise", "store.train_missing=false", "paths.store_dir={tampered_store}"],
         "records module"),
    Case("rewarded not a list", ["rewarded=3"], "must be a list"),
    Case("seed < 0", ["seed=-1"], "seed=-1"),
    Case("seed not a number", ["seed=abc"], "seed=abc must be an integer"),
    Case("max_epochs not a number", ["trainer.max_epochs=abc"], "trainer.max_epochs=abc"),
    Case("max_epochs = 0", ["trainer.max_epochs=0"], "trainer.max_epochs=0 must be >= 1"),
    Case("sparsity not a number", ["imp.sparsity=abc"], "imp.sparsity=abc"),
    Case("cardinality not a number", ["task=pairwise", "cardinality=abc"], "cardinality=abc"),
    Case("pair not an integer", ["task=pairwise", "pair=1.5"], "pair=1.5 must be an integer"),
    Case("n_pairs = 0", ["task=pairwise", "n_pairs=0"], "n_pairs=0 must be >= 1"),
    Case("batch size 0", ["data.batch_size=0"], "data.batch_size=0"),
    Case("batch size < 0", ["data.batch_size=-1"], "data.batch_size=-1"),
    Case("val fraction 0", ["data.val_fraction=0"], "data.val_fraction=0"),
    Case("val fraction 1", ["data.val_fraction=1.0"], "data.val_fraction=1.0"),
    Case("logit weights all zero", [MERGE, "checkpoints=[{A},{B}]",
                                    "merge.logit_weights=[0,0]"], "all zero"),
    Case("diverging optimizer (SGD, lr 1e30)", ["rewarded=[3]", "imp=none",
                                                "optimizer._target_=torch.optim.SGD",
                                                "optimizer.lr=1e30"], "diverged"),
    Case("store root is a file", ["task=pairwise", "paths.store_dir={a_file}"],
         "cannot write"),
    Case("run dir is a file", ["hydra.run.dir={a_file}"], "cannot use"),
    # Crafted files (consistent digests and fingerprints, as an attacker writes them): nothing
    # in them may run; the marker file they aim at must not appear.
    Case("module file naming code in a nested _target_",
         ["task=eval", "checkpoints=[{X_nested}]"], "names no code to run"),
    Case("module file naming code as its backbone", ["task=eval", "checkpoints=[{X_top}]"],
         "not a maxent_lightning backbone"),
    Case("module file holding a pickled object", ["task=eval", "checkpoints=[{X_pickle}]"],
         "unreadable"),
    Case("module file with an edited field (temperature)",
         ["task=eval", "checkpoints=[{X_edited}]"], "digest mismatch"),
    Case("CIFAR batch that imports code",
         ["data=cifar10", "data.download=false", "data.root={evil_cifar}"], "refusing to load"),
    Case("CIFAR meta with 11 class names",
         ["data=cifar10", "data.download=false", "data.root={cifar_11_names}"],
         "lists 11 class names"),
    Case("rewarded class without training samples",
         ["data=cifar10", "data.download=false", "data.root={cifar_no_3}", "rewarded=[3]"],
         "has no training samples of class 3"),
    Case("sweep dir below a file", ["-m", "seed=0", "hydra.sweep.dir={a_file}/sweep"],
         "cannot use"),
    Case("learning rate NaN", ["optimizer.lr=nan"], "optimizer.lr=nan must be a finite"),
    Case("learning rate inf", ["optimizer.lr=inf"], "optimizer.lr=inf must be a finite"),
    Case("learning rate < 0", ["optimizer.lr=-1"], "optimizer.lr=-1 must be > 0"),
    Case("learning rate 0", ["optimizer.lr=0"], "optimizer.lr=0 must be > 0"),
    Case("dropout 1", ["model.dropout=1.0"], "model.dropout=1.0 must be in [0.0, 1.0)"),
    Case("dropout < 0", ["model.dropout=-0.5"], "model.dropout=-0.5 must be in"),
    Case("dropout not a number", ["model.dropout=abc"], "model.dropout=abc must be a finite"),
    Case("temperature inf", ["loss.temperature=inf"], "loss.temperature=inf must be a finite"),
    Case("temperature NaN", ["loss.temperature=nan"], "loss.temperature=nan must be a finite"),
    Case("split seed not a number", ["data.split_seed=abc"],
         "data.split_seed=abc must be an integer"),
    Case("split seed < 0", ["data.split_seed=-1"], "data.split_seed=-1 must be in"),
    Case("family chunk size < 0", ["task=pairwise", "family.chunk_size=-1"],
         "family.chunk_size=-1 must be >= 1"),
    Case("family chunk size 0", ["task=pairwise", "family.chunk_size=0"],
         "family.chunk_size=0 must be >= 1"),
    Case("family chunk size not a number", ["task=pairwise", "family.chunk_size=abc"],
         "family.chunk_size=abc must be an integer"),
    Case("family sparse_below < 0", ["task=pairwise", "family.sparse_below=-0.5"],
         "family.sparse_below=-0.5 must be >= 0.0"),
    Case("family.enabled not a bool", ["task=pairwise", "family.enabled=abc"],
         "family.enabled=abc must be true or false"),
    Case("family.explicit_mlp not a bool", ["family.explicit_mlp=sometimes"],
         "family.explicit_mlp=sometimes must be true or false"),
    Case("imp.rounds absurd (1e6)", ["imp.rounds=1000000"], "imp.rounds=1000000 is more than"),
    Case("logit weights: inf", [MERGE, "checkpoints=[{A},{B}]", "merge.logit_weights=[inf,1]"],
         "must be finite"),
    Case("logit weights: NaN", [MERGE, "checkpoints=[{A},{B}]", "merge.logit_weights=[nan,1]"],
         "must be finite"),
    Case("logit weights: inf (pairwise, before training)",
         ["task=pairwise", "merge.logit_weights=[inf,1]"], "must be finite"),
    Case("accelerator gpu without a GPU", ["trainer.accelerator=gpu"], "has no GPU",
         gpu_absent=True),
    Case("accelerator unknown", ["trainer.accelerator=garbage"],
         "trainer.accelerator=garbage is not an accelerator"),
    Case("precision unknown", ["trainer.precision=garbage"],
         "trainer.precision=garbage is not a precision"),
    Case("devices nonsense", ["trainer.devices=abc"], "trainer.devices=abc is not valid"),
    Case("devices 0", ["trainer.devices=0"], "trainer.devices=0 is not valid"),
    Case("existing run dir read-only", ["hydra.run.dir={read_only}"], "read-only"),
    Case("existing sweep dir read-only", ["-m", "seed=0", "hydra.sweep.dir={read_only}"],
         "read-only"),
    Case("store data folder a symlink loop", ["task=pairwise", "paths.store_dir={loop_store}"],
         "digits is a symlink loop"),
    Case("store module folder a symlink loop",
         ["task=pairwise", "paths.store_dir={loop_module_store}"], "is a symlink loop"),
    Case("run dir below a symlink loop", ["hydra.run.dir={loop_store}/digits/run"],
         "digits is a symlink loop"),
    Case("permutation neither ordered nor an index", ["task=complete", "permutation=sorted"],
         "permutation=sorted must be ordered"),
    Case("permutation=ordered where no class order is followed",
         ["task=pairwise", "permutation=ordered"], "task=pairwise follows no class order"),
    Case("model=custom naming no class", ["model=custom", "data=digits", "logger=none"],
         "model=custom needs your backbone class", tiny=False),
]


def cli(args, cwd, timeout=600):
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "maxent_lightning", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def cli_in_process(args) -> tuple[int, str]:
    """``python -m maxent_lightning *args`` in this process (same entry point, no start-up
    cost): (exit code, stderr)."""
    import contextlib
    import io

    from hydra.core.global_hydra import GlobalHydra

    from maxent_lightning import cli as entry

    err, argv, code = io.StringIO(), sys.argv, 0
    sys.argv = ["maxent_lightning", *args]
    GlobalHydra.instance().clear()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            entry.entry()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
    return code, err.getvalue()


def compose(overrides):
    from maxent_lightning.config import compose_config

    return compose_config(overrides)


MARKER = "marker"  # what a crafted file would create under the work directory if it ran


class _WritesMarker:
    """Pickles as a call that creates the marker file (a crafted payload)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "a crafted file ran code"))


def crafted(source, target: Path, edit) -> Path:
    """A copy of the module file ``source`` with ``edit(payload)`` applied and its digest
    recomputed, as a forger would (the store writes only modules it can rebuild)."""
    import torch

    from maxent_lightning.files import save_torch
    from maxent_lightning.modulefile import record_digest

    payload = torch.load(source, weights_only=True)
    edit(payload)
    payload["digest"] = record_digest(payload)
    return save_torch(target, payload)


def _crafted_modules(work: Path, genuine: str) -> dict:
    """Module files a loader must refuse without running anything: a nested ``_target_`` in
    the recorded model config, code as the backbone, a pickled object, an edited field."""
    import copy

    import torch

    from maxent_lightning.files import config_digest

    marker = str(work / MARKER)
    call = {"_target_": "pathlib.Path.write_text", "self": marker, "data": "pwned"}
    out = {}
    for key, edit in (("X_nested", lambda m: m.__setitem__("hidden", call)),
                      ("X_top", lambda m: (m.clear(), m.update(call)))):
        def hostile(p, edit=edit):
            edit(p["spec"]["model"])
            p["hyper_parameters"]["net"] = copy.deepcopy(p["spec"]["model"])
            p["fingerprint"] = config_digest(p["spec"])  # consistent: only the content is hostile
        out[key] = str(crafted(genuine, work / "crafted" / key / "module.pt", hostile))
    payload = torch.load(genuine, weights_only=True)
    payload["metrics"]["note"] = _WritesMarker(work / MARKER)
    out["X_pickle"] = str(work / "crafted" / "pickle.pt")
    torch.save(payload, out["X_pickle"])
    payload = torch.load(genuine, weights_only=True)
    payload["temperature"] = 1.0  # its digest left as it was
    out["X_edited"] = str(work / "crafted" / "edited.pt")
    torch.save(payload, out["X_edited"])
    return out


def _cifar_folder(root: Path, labels, names=10, batch=None) -> str:
    """CIFAR-10 python batches under ``root``: ``labels`` in every training batch and the test
    batch, ``names`` class names; ``batch``: the bytes of data_batch_1 instead."""
    import pickle

    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    data = {b"data": np.zeros((len(labels), 3072), dtype=np.uint8), b"labels": list(labels)}
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / f).write_bytes(pickle.dumps(data, protocol=2))
    if batch is not None:
        (folder / "data_batch_1").write_bytes(batch)
    meta = {b"label_names": [f"class{i}".encode() for i in range(names)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return str(root)


def _cifar_cases(work: Path) -> dict:
    """CIFAR folders: a batch that would run code, 11 class names, no image of class 3."""
    import pickle

    every = [i % 10 for i in range(40)]
    return {"evil_cifar": _cifar_folder(work / "evil_cifar", every,
                                        batch=pickle.dumps(_WritesMarker(work / MARKER))),
            "cifar_11_names": _cifar_folder(work / "cifar_11_names", every, names=11),
            "cifar_no_3": _cifar_folder(work / "cifar_no_3", [c for c in every if c != 3])}


def _write_bad_data(work: Path) -> dict:
    idx = work / "bad_idx" / "MNIST" / "raw"
    idx.mkdir(parents=True)
    for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte"):
        (idx / f).write_bytes(b"\x00\x00\x08\x03 this is not an IDX file")
    cifar = work / "bad_cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (cifar / f).write_bytes(b"this is not a pickle")
    har = work / "bad_har" / "UCI HAR Dataset"
    for split in ("train", "test"):
        (har / split).mkdir(parents=True)
        (har / split / f"X_{split}.txt").write_text("1.0 2.0 3.0\n")
        (har / split / f"y_{split}.txt").write_text("1\n")
    (work / "bad_yeast").mkdir()
    (work / "bad_yeast" / "yeast.data").write_text("ADT1_YEAST 0.58 0.61 0.47 CYT\n")
    return {k: str(work / k) for k in ("bad_idx", "bad_cifar", "bad_har", "bad_yeast")}


MODULES = {"A": ([0], []), "B": ([1], []), "G": ([0, 1], []), "C": ([1], ["seed=1"]),
           "D": ([1], ["model.hidden=[16]"]), "E": ([1], ["data=mnist5k"])}


def prepare(work: Path, modules=tuple(MODULES), real_merge: bool = True, cheap=()) -> dict:
    """Modules and files the cases refer to, by key (see CASES). ``modules``: which of
    MODULES to train (A and B always); ``real_merge``: run a merge job for the finished-job
    case (else only its done marker, metrics.json of another fingerprint, is written);
    ``cheap``: extra overrides for training the modules."""
    from maxent_lightning.classsets import pick_pair
    from maxent_lightning.files import write_json
    from maxent_lightning.identity import module_spec, spec_fingerprint
    from maxent_lightning.modulestore import ModuleStore
    from maxent_lightning.training import train_module

    paths = {"nowhere": str(work / "nowhere"), "empty_store": str(work / "empty_store")}
    for key in dict.fromkeys(["A", "B", *modules]):
        rewarded, extra = MODULES[key]
        out = work / "modules" / key
        train_module(compose([*TINY, *cheap, *extra]), out, rewarded, quiet=True)
        paths[key], paths[f"{key}_dir"] = str(out / "module.pt"), str(out)
    def nine_classes(p):  # a module of another class count (no embedded 9-class data set)
        p["num_classes"] = p["hyper_parameters"]["num_classes"] = 9

    paths["F"] = str(crafted(paths["B"], work / "modules" / "F" / "module.pt", nine_classes))
    if "C" not in paths:  # not trained: B as if of another seed (θ0)
        paths["C"] = str(crafted(paths["B"], work / "modules" / "C" / "module.pt",
                                 lambda p: p.update(theta0_id="0" * 16, seed=1)))
    blob = Path(paths["B"]).read_bytes()
    paths["T"] = str(work / "truncated.pt")
    Path(paths["T"]).write_bytes(blob[: len(blob) // 2])
    paths["N"] = str(work / "modules" / "B" / "imp" / "round_0.pt")
    # A finished merge job (fingerprint of merge.kind=both); a rerun with another config fails.
    merge_dir = work / "merge_job"
    if real_merge:
        res = cli([*TINY, MERGE, f"checkpoints=[{paths['A']},{paths['B']}]",
                   f"hydra.run.dir={merge_dir}"], cwd=work)
        if res.returncode != 0:
            raise RuntimeError(f"setup merge failed: {res.stderr[-2000:]}")
    else:
        write_json(merge_dir / "metrics.json", {"fingerprint": "another-config", "task": "merge"})
    paths["merge_dir"] = str(merge_dir)
    # A store whose directory of the pairwise job's first module holds module B's files.
    cfg = compose([*TINY, "task=pairwise"])
    first = pick_pair(cfg, 10)[0]
    target = ModuleStore(work / "tampered_store").dir_for(cfg, first)
    assert target.name == spec_fingerprint(module_spec(cfg, first))
    shutil.copytree(paths["B_dir"], target)
    paths["tampered_store"] = str(work / "tampered_store")
    paths.update(_write_bad_data(work))
    paths.update(_crafted_modules(work, paths["B"]))
    paths.update(_cifar_cases(work))
    paths["a_file"] = str(work / "a_file")
    Path(paths["a_file"]).write_text("not a directory\n")
    paths["read_only"] = str(read_only_dir(work / "read_only"))
    paths.update(_symlink_loops(work, target))
    return paths


def _symlink_loops(work: Path, module_dir: Path) -> dict:
    """A store whose data folder is a symlink to itself, and one where the pairwise job's
    first module folder (``module_dir``'s name) is."""
    (work / "loop_store").mkdir()
    (work / "loop_store" / "digits").symlink_to("digits")
    loop = work / "loop_module_store" / "digits" / module_dir.name
    loop.parent.mkdir(parents=True)
    loop.symlink_to(module_dir.name)
    return {k: str(work / k) for k in ("loop_store", "loop_module_store")}


def read_only_dir(where: Path) -> Path:
    """An existing directory that this process cannot write in: chmod 555, or for root (who
    ignores permission bits) a read-only tmpfs mounted on it (``release`` undoes either)."""
    where.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(where)],
                       capture_output=True)
    else:
        where.chmod(0o555)
    return where


def release(paths: dict) -> None:
    """Undo ``read_only_dir`` (so that the work folder can be deleted)."""
    where = Path(paths["read_only"])
    if os.path.ismount(where):
        subprocess.run(["umount", str(where)], capture_output=True)
    where.chmod(0o755)


def snapshot(root: Path) -> dict:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and "runs" not in p.parts
            and "outputs" not in p.parts}


def key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def case_args(case: Case, paths: dict, work: Path, index: int) -> list[str]:
    args = [a.format(**paths) for a in case.args]
    base = [*(TINY if case.tiny else []), f"paths.log_dir={work}/outputs",
            f"paths.store_dir={work}/store", f"hydra.run.dir={work}/runs/{index}"]
    given = {key(a) for a in args}
    return [*(b for b in base if key(b) not in given), *args]


def outcome(case: Case, args: list[str], rc: int, stderr: str) -> dict:
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    return {"case": case, "args": args, "rc": rc, "errors": errors, "stderr": stderr,
            "traceback": "Traceback" in stderr,
            "ok": rc != 0 and len(errors) == 1 and case.needle in errors[0]
            and "Traceback" not in stderr}


def run_case(case: Case, paths: dict, work: Path, index: int) -> dict:
    args = case_args(case, paths, work, index)
    res = cli(args, cwd=work)
    return outcome(case, [a.format(**paths) for a in case.args], res.returncode, res.stderr)


def exercised(cases) -> list[Case]:
    """The cases this machine can stage (those for a machine without a GPU need one)."""
    import torch

    return [c for c in cases if not (c.gpu_absent and torch.cuda.is_available())]


def run_all(work: Path, jobs: int = 3, cases=CASES, paths=None) -> list[dict]:
    own = paths is None
    paths = paths or prepare(work)
    try:
        before = snapshot(work)
        with ThreadPoolExecutor(jobs) as pool:
            results = list(pool.map(lambda ic: run_case(ic[1], paths, work, ic[0]),
                                    enumerate(exercised(cases))))
        after = snapshot(work)
    finally:
        if own:
            release(paths)
    changed = sorted(str(p) for p in before if after.get(p) != before[p])
    if (work / MARKER).exists():  # a crafted file ran code
        changed.append(str(work / MARKER))
    for r in results:
        r["unchanged"] = not changed
    return results


def short(arg: str, work: Path) -> str:
    return arg.replace(str(work) + "/", "").replace("modules/", "").replace("/module.pt", "")


def table(results: list[dict], work: Path) -> str:
    lines = ["| input | overrides | message | exit code | traceback | files unchanged |",
             "|---|---|---|---|---|---|"]
    for r in results:
        msg = r["errors"][0] if r["errors"] else (r["stderr"].strip().splitlines() or [""])[-1]
        msg = short(msg, work).replace("|", "\\|")
        args = " ".join(short(a, work) for a in r["args"])
        lines.append(f"| {r['case'].name} | `{args}` | {msg} | {r['rc']} | "
                     f"{'yes' if r['traceback'] else 'no'} | {'yes' if r['unchanged'] else 'NO'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--jobs", type=int, default=3)
    opts = parser.parse_args()
    work = opts.work or Path(tempfile.mkdtemp(prefix="bad_input_"))
    work.mkdir(parents=True, exist_ok=True)
    results = run_all(work.resolve(), opts.jobs)
    print(table(results, work.resolve()))
    failed = [r["case"].name for r in results if not (r["ok"] and r["unchanged"])]
    skipped = [c.name for c in CASES if c not in exercised(CASES)]
    print(f"\n{len(results) - len(failed)}/{len(results)} cases as expected"
          + (f"; NOT: {', '.join(failed)}" if failed else "")
          + (f"; not exercised (this machine has a GPU): {', '.join(skipped)}" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
