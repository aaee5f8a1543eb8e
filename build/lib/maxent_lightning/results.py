"""The ``results.csv`` schema of composition jobs: written by ``jobs.Job``, read by
``multirun_analysis``. One row per evaluated model or composition; empty where not applicable.

``model`` is the model config name (mlp_shallow, lenet, ...), else the class name; ``imp`` whether
IMP pruned the modules; ``class_set`` the rewarded classes joined by "-" (a merge: their union);
``step`` the number of modules merged; ``loss_value`` KL(ỹ ‖ softmax(z/T)) with MaxEnt targets on
``class_set``; ``barrier_pct`` the relative loss barrier along a mode-connectivity path.
"""

KEYS = [
    "task", "experiment", "data", "model", "loss", "imp", "sparsity", "temperature", "seed",
    "cardinality", "pair", "permutation", "step", "class_set", "merge", "t", "split",
]
METRICS = ["rewarded_acc", "nonrewarded_entropy", "acc", "loss_value", "barrier_pct"]
COLUMNS = KEYS + METRICS
NUMERIC = ["sparsity", "temperature", "seed", "cardinality", "pair", "permutation", "step", "t"]
TEXT = ["task", "experiment", "data", "model", "loss", "class_set", "merge", "split"]
