"""Tasks dispatched by ``cfg.task``: a module of this package (``task=pairwise``) or, for a task
of your own, any importable module named by its import path (``task: mypkg.mytask`` in a task
config, docs/extending.md). A task module has ``run(cfg)`` and, where its jobs take modules
from the store, ``needs(cfg, num_classes)`` (the rewarded sets, for the sweep planner)."""


def module_name(task: str) -> str:
    """The import path of the module that runs ``task``."""
    return str(task) if "." in str(task) else f"{__name__}.{task}"
