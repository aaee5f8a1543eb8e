"""What makes two runs the same: every fingerprint, from one table of config keys.

module  in the module id: ``module_spec`` (its digest, ``spec_fingerprint``, names the module in
        the store). Beside the keys: the identity ``VERSION`` and the digest of the loaded data.
        "model": recorded inside the spec's ``model`` (the model's softmax temperature).
        The first phase key (``first_phase_key``: IMP round 0, or a whole dense training) is the
        module id without ``imp`` and ``max_epochs``: phases of equal key train alike epoch by
        epoch, so the shorter one is the start of the longer one.
job     in a composition job's id (``job_fingerprint``), with the data's digest, or the given
        checkpoints' digests in place of their paths.
group   in the group key (``group_key``, ``first_group_key``): the modules the planner trains
        in one family pass share it; the module id without the rewarded set, plus these.
family  the family trainer reproduces it (a trainer key marked no sends the config to
        Lightning, one module at a time); "-": not a setting of a fit.

A key in no row: ``*`` (top level) or ``data.*`` / ``trainer.*`` (any other key there).
"""

from pathlib import Path
from typing import NamedTuple

from omegaconf import DictConfig, OmegaConf

from .builders import data_source, plain
from .files import config_digest
from .modulefile import read_module

# Bump when a change alters what a spec trains: every module gets a new fingerprint.
# 3: the first phase's dropout stream is keyed without its epochs (``first_phase_key``).
VERSION = 3
# trainer.precision values of a float32 module (absent from its spec, as before the key existed).
FULL_PRECISION = ("32", "32-true")


# The key table: the module docstring's second half (kept out of the docstring itself so that
# ``python -OO``, which drops docstrings, still has it).
KEY_TABLE = """
key                           module  job    group  family  what it is
----------------------------  ------  -----  -----  ------  ----------------------------------
data                          yes     yes    yes    yes     the data set; its keys: data.*
data.name                     yes     yes    yes    yes     which data set
data.normalize                yes     yes    yes    yes     input normalization
data.batch_size               yes     yes    yes    yes     batch size
data.val_fraction             yes     yes    yes    yes     train/validation split
data.split_seed               yes     yes    yes    yes     seed of that split
data.root                     no      no     no     -       where the files are (digest counts)
data.download                 no      no     no     -       whether missing files are fetched
data._target_                 no      no     no     -       the DataModule class
data.rewarded                 no      no     no     -       = rewarded
data.targets                  no      no     no     -       = loss.targets
data.shuffle_seed             no      no     no     -       = seed
data.*                        yes     yes    yes    yes     a setting of your own data loader
model                         yes     yes    yes    yes     the backbone (nn.Dropout only)
temperature                   model   model  yes    yes     the model's softmax temperature
loss                          yes     yes    yes    yes     targets and temperature of the loss
imp                           yes     yes    yes    yes     pruning rounds, sparsity, scope
optimizer                     yes     yes    yes    yes     the optimizer (elementwise only)
trainer                       yes     yes    yes    yes     the Lightning Trainer; trainer.*
trainer._target_              no      yes    no     yes     the Trainer class
trainer.max_epochs            yes     yes    yes    yes     E (the spec's max_epochs)
trainer.precision             yes     yes    yes    yes     absent from the spec when 32-bit
trainer.accelerator           no      no     yes    yes     the device kind
trainer.devices               no      no     yes    yes     which devices
trainer.num_nodes             no      yes    no     no      hosts
trainer.strategy              no      yes    no     no      distributed strategy
trainer.num_sanity_val_steps  no      yes    no     yes     validation before the fit
trainer.enable_checkpointing  no      yes    no     yes     Lightning's own checkpoints
trainer.enable_model_summary  no      yes    no     yes     summary printout
trainer.enable_progress_bar   no      no     no     yes     progress bar
trainer.log_every_n_steps     no      yes    no     yes     logging interval
trainer.default_root_dir      no      yes    no     yes     Lightning's output folder
trainer.deterministic         no      yes    no     yes     deterministic kernels
trainer.benchmark             no      yes    no     yes     cuDNN autotuning
trainer.logger                no      yes    no     no      Lightning loggers
trainer.callbacks             no      yes    no     no      Lightning callbacks
trainer.profiler              no      yes    no     no      profiler (debug=profiler)
trainer.detect_anomaly        yes     yes    yes    no      autograd anomaly checks (debug)
trainer.fast_dev_run          yes     yes    yes    no      debug=fdr
trainer.limit_train_batches   yes     yes    yes    no      debug=limit
trainer.limit_val_batches     yes     yes    yes    no      debug=limit
trainer.limit_test_batches    yes     yes    yes    no      debug=limit
trainer.overfit_batches       yes     yes    yes    no      debug=overfit
trainer.*                     yes     yes    yes    no      any other Trainer argument
callbacks                     yes     yes    yes    yes     checkpoint criterion, early stopping
rewarded                      yes     yes    no     yes     the rewarded class set R
seed                          yes     yes    yes    yes     θ0, phase seeds, batch order
protocol                      no      yes    no     -       read through the keys it sets
task                          no      yes    no     -       the task a job runs
experiment_name               no      yes    no     -       output folder, W&B group
recipes                       no      yes    no     -       an experiment's per-model recipe
classes                       no      yes    no     -       single: the classes
cardinality                   no      yes    no     -       |R| of a job's modules
pair                          no      yes    no     -       pairwise: which pair
n_pairs                       no      yes    no     -       pairwise: pairs drawn
pair_seed                     no      yes    no     -       pairwise: seed of the draw
permutation                   no      yes    no     -       complete: merge order
checkpoints                   no      yes    no     -       merge/eval: the files' digests
merge                         no      yes    no     -       merge settings
path                          no      yes    no     -       mode-connectivity path
eval                          no      yes    no     -       eval settings
circuits                      no      yes    no     -       circuit analyses
flush_denormals               no      yes    no     -       CPU denormals as zero
store                         no      no     no     -       the module store; store.root
store.root                    no      no     yes    -       where a group's modules live
family                        no      no     yes    -       family trainer settings
paths                         no      no     no     -       output, store and data folders
runtime                       no      no     no     -       Hydra's facts of the job (cli.py)
logger                        no      no     no     -       loggers
tags                          no      no     no     -       W&B tags
figures                       no      no     no     -       PNG figures or not
plan_only                     no      no     no     -       print a sweep's plan only
sweep_training                no      no     no     -       where a sweep trains
sweep                         no      no     no     -       the sweep's training pool
sweep.workers                 no      no     no     -       its worker processes
*                             no      yes    no     -       any other top-level key
"""
if __doc__:
    __doc__ += KEY_TABLE


class Row(NamedTuple):
    module: str
    job: str
    group: str
    family: str


def table(doc: str) -> dict[str, Row]:
    """The rows of the key table ``doc`` (``KEY_TABLE``): key -> Row."""
    lines = doc.split("\n---", 1)[1].split("\n")[1:]
    rows = {}
    for line in filter(None, lines):
        key, *flags = line.split()[:5]
        if len(flags) < 4 or not set(flags) <= {"yes", "no", "model", "-"}:
            raise ValueError(f"identity table: bad row {line!r}")
        rows[key] = Row(*flags)
    return rows


ROWS = table(KEY_TABLE)
# The config groups whose keys have rows of their own (``row``: a key without one, ``GROUP.*``).
SCOPES = ("data", "trainer")
# The top-level keys of the module id, in the order of its spec.
MODULE_KEYS = tuple(k for k, r in ROWS.items() if "." not in k and r.module == "yes")
# Trainer keys the family trainer reproduces (the rest: trained by Lightning, one by one).
FAMILY_TRAINER_KEYS = frozenset(k.split(".", 1)[1] for k, r in ROWS.items()
                                if k.startswith("trainer.") and r.family == "yes")
# Keys recorded inside the spec's model (builders.MODEL_META_KEYS strips them to build a net).
IN_MODEL = tuple(k for k, r in ROWS.items() if r.module == "model")
# Keys of the module id that are not in its group key (the rewarded set).
UNGROUPED = tuple(k for k, r in ROWS.items() if r.module != "no" and r.group == "no")
# The group-only keys (group yes, module no): where the modules live, how and on what device.
PLACEMENT = tuple(k for k, r in ROWS.items() if r.group == "yes" and r.module == "no")


def row(key: str) -> Row:
    """The row of config key ``key`` (``trainer.devices``, ``seed``), else of its wildcard
    (``trainer.*``, ``*``), else its parent's."""
    if key in ROWS or "." not in key:
        return ROWS.get(key, ROWS["*"])
    parent = key.rsplit(".", 1)[0]
    return ROWS.get(f"{parent}.*") or row(parent)


def kept(scope: str, settings: dict, column: str) -> dict:
    """``settings`` (the plain ``cfg[scope]``) without the keys whose ``column`` is not yes."""
    return {k: v for k, v in settings.items() if getattr(row(f"{scope}.{k}"), column) == "yes"}


# ---------------------------------------------------------------- a module
def data_identity(cfg) -> dict:
    """The data settings of ``cfg`` (a recipe or a job config) that decide what a module sees,
    plus the digest of the loaded tensors (a moved copy is the same data; another folder, a
    partial copy or an edited file is not)."""
    return {**kept("data", plain(cfg.data), "module"), "digest": data_source(cfg.data).digest}


def model_identity(cfg) -> dict:
    """The ``model`` of a module's spec: the backbone config with the model's softmax
    temperature (``cfg.temperature``, set by conf/model/*.yaml beside ``model`` so that
    ``instantiate(cfg.model)`` builds the net), as recorded since the first identity."""
    model = plain(cfg.model)
    for key in IN_MODEL:
        if (value := getattr(cfg, key, None)) is not None:
            model[key] = plain(value)
    return model


def module_spec(cfg, rewarded=None) -> dict:
    """What identifies a trained module of ``cfg`` (a ``Recipe``, or a job config: the same
    names): every path that trains a spec (Lightning alone, a family of any size, a dense twin
    from IMP round 0, a resumed run) gives the same module, up to the order of float sums. Its
    digest is the module's fingerprint."""
    trainer = kept("trainer", plain(cfg.trainer), "module")
    if str(trainer.get("precision", "32-true")) in FULL_PRECISION:
        trainer.pop("precision", None)
    parts = {"data": data_identity, "model": model_identity,
             "rewarded": lambda c: sorted(rewarded if rewarded is not None else c.rewarded)}
    spec = {"identity": VERSION}
    for key in MODULE_KEYS:
        if key == "trainer":  # E here; the other fit settings (precision, limit_*_batches) last
            spec["max_epochs"] = trainer.pop("max_epochs")
        else:
            spec[key] = parts[key](cfg) if key in parts else plain(getattr(cfg, key))
    return {**spec, **({"trainer": trainer} if trainer else {})}


def spec_fingerprint(spec: dict) -> str:
    return config_digest(spec)


def first_phase_key(cfg, rewarded) -> str:
    """What decides a module's first phase (IMP round 0, or the whole of a dense training),
    epoch by epoch: its spec without the IMP settings and the epochs. Phases of equal key (same
    θ0, seeds, batch order and, keyed by this, dropout stream) train alike: an IMP round 0 of
    E0 epochs is the start of the dense training of equal key (E epochs), and the other way
    round, so one training yields both (the family's dense twins)."""
    spec = module_spec(cfg, rewarded)
    del spec["imp"], spec["max_epochs"]
    return config_digest(spec)


# ---------------------------------------------------------------- a group of modules
def placement(cfg: DictConfig) -> dict:
    """The values of the ``PLACEMENT`` keys of ``cfg``: the ``trainer.*`` ones as "device"."""
    device = [k for k in PLACEMENT if k.startswith("trainer.")]
    out = {"device": [str(OmegaConf.select(cfg, k)) for k in device]}
    for key in (k for k in PLACEMENT if k not in device):
        node = OmegaConf.select(cfg, key)
        value = OmegaConf.to_container(node) if OmegaConf.is_config(node) else str(node)
        out[key.split(".")[0]] = value
    return out


def group_key(cfg: DictConfig, spec: dict) -> str:
    """Everything but the rewarded set that decides how a module trains (and where it lives)."""
    rest = {k: v for k, v in spec.items() if k not in UNGROUPED}
    return config_digest({"spec": rest, **placement(cfg)})


def first_group_key(cfg: DictConfig) -> str:
    """``group_key`` of the first phase (``first_phase_key`` without the rewarded set)."""
    return config_digest({"first": first_phase_key(cfg, []), **placement(cfg)})


# ---------------------------------------------------------------- a composition job
def checkpoint_paths(cfg: DictConfig) -> list[Path]:
    """The module files given as ``checkpoints=[...]`` (merge, eval)."""
    given = cfg.get("checkpoints") or []
    return [Path(p) for p in ([given] if isinstance(given, str) else given)]


def job_fingerprint(cfg: DictConfig) -> str:
    """Digest of the resolved config minus what does not change the results, with what the
    results are computed from: the digest of the loaded data, or the whole-record digests of the
    given checkpoints (their contents, not their paths; their data is in their specs)."""
    def value(node):
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node

    spec = {k: value(cfg[k]) for k in cfg if row(k).job == "yes"}
    spec["model"] = model_identity(cfg)  # the model's temperature inside, as in module specs
    for key in SCOPES:
        spec[key] = kept(key, spec.get(key) or {}, "job")
    paths = checkpoint_paths(cfg)
    if paths:
        spec["checkpoints"] = [read_module(p).digest for p in paths]
    else:
        spec["data"]["digest"] = data_source(cfg.data).digest
    return config_digest(spec)
