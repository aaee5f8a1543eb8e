"""The ``results.csv`` schema of composition jobs: written by ``jobs.Job``, read by
``multirun_analysis``. One row per evaluated model or composition; empty where not applicable.

``model`` is the model config name (mlp_shallow, lenet, ...), else the class name; ``imp`` whether
IMP pruned the modules; ``class_set`` the rewarded classes joined by "-" (a merge: their union);
``permutation`` the class order of a complete merge (``ordered`` or a random permutation's
index); ``step`` the number of modules merged; ``loss_value`` KL(ỹ ‖ softmax(z/T)) with MaxEnt
targets on ``class_set``; ``barrier_pct`` the relative loss barrier along a mode-connectivity
path; ``width`` the backbone's ``model.width`` (ResNet18, VGG11; empty for others).
"""

KEYS = [
    "task", "experiment", "data", "model", "loss", "imp", "sparsity", "temperature", "seed",
    "cardinality", "pair", "permutation", "step", "class_set", "merge", "t", "split", "width",
]
METRICS = ["rewarded_acc", "nonrewarded_entropy", "acc", "loss_value", "barrier_pct"]
COLUMNS = KEYS + METRICS
# ``permutation`` of a complete merge in increasing class order 0, 1, 2, ... (config and column).
ORDERED = "ordered"
# Columns added after the first schema: files written before lack them (read as empty).
ADDED = ["width"]
NUMERIC = ["sparsity", "temperature", "seed", "cardinality", "pair", "step", "t", "width"]
TEXT = ["task", "experiment", "data", "model", "loss", "permutation", "class_set", "merge",
        "split"]
