"""The ``train_pass`` task: one training pass of a planned sweep (``sweep_training=passes``):
pass ``train_pass.index`` of the plan file ``train_pass.plan`` that the sweep planner wrote, i.e.
one family of store modules trained together. A cluster launcher (submitit) runs the passes
as its jobs (job k on GPU ``k % n`` of a node's n GPUs, or the one GPU its launcher gives it);
rerunning the sweep's command afterwards finds every module stored."""

from omegaconf import DictConfig, OmegaConf

from ..builders import named_model
from ..devices import setup_device
from ..errors import UserError
from ..files import config_digest, read_json
from ..jobs import job_num
from ..modulestore import ModuleStore
from ..recipe import Recipe


def run(cfg: DictConfig) -> dict:
    opts = cfg.get("train_pass")
    if opts is None or opts.get("plan") is None or opts.get("index") is None:
        raise UserError("task=train_pass needs +train_pass.plan=PLAN.json +train_pass.index=N "
                        "(the sweep planner sets them with sweep_training=passes)")
    plan = read_json(opts.plan)  # its configs are instantiated: only the sweep's own file
    if opts.get("digest") is None or config_digest(plan) != str(opts.digest):
        raise UserError(f"the plan file {opts.plan} is not the one this sweep wrote (its digest "
                        "differs from +train_pass.digest); rerun the sweep's command with "
                        "sweep_training=passes to plan it again")
    passes = plan.get("passes", [])
    if not 0 <= int(opts.index) < len(passes):
        print(f"train_pass: the plan {opts.plan} has {len(passes)} pass(es); nothing to train")
        return {"trained": 0}
    record = passes[int(opts.index)]
    job_cfg = OmegaConf.create(record["config"])
    recipe = Recipe.of(job_cfg)
    # pass k of a node with n GPUs trains on GPU k % n; a launcher that gives each job its
    # own GPU (submitit's gpus_per_task: one visible) leaves it there
    devices = setup_device(job_cfg, job_num(cfg))
    where = f" on GPU {devices[0]}" if isinstance(devices, list) else ""
    with named_model(record.get("model")):  # the sweep's model name, not this job's
        paths = ModuleStore(recipe.store_root).get_many(recipe, record["rewarded"])
    print(f"train_pass {opts.index}: {len(paths)} module(s) of seed {job_cfg.seed} stored in "
          f"{job_cfg.store.root}{where}")
    return {"trained": len(paths)}
