"""Train a family of modules of one seed in one vectorized pass.

Every module of a seed shares θ0 and the training data; only its targets (rewarded set), masks,
optimizer state and early stopping differ (a cross-entropy module reads only its own classes'
samples: a stream per member, ``streams.py``). The K parameter sets are stacked into leaf tensors of
shape (K, ...) and every batch goes through all of them at once (``torch.func.vmap`` over
``functional_call``). The optimizer is elementwise, so one instance over the stacked tensors is
K independent ones. A member that stops early is dropped from the stack (its optimizer state
sliced out), so it is never touched again. Dropout masks come from each member's own stream
(``dropout.py``), the one the sequential trainer draws too, so a module is the same whichever
members train beside it. The rest is the phase plan (``phases.py``) that the sequential trainer
executes too: same θ0, batch order per phase, gradient/weight masking, Lightning's EarlyStopping
rule, best-validation restore, IMP pruning, and the same artifacts in each member's directory
(``modulerun.py``): equal to a module trained alone up to the order of float sums (float32).
On CPU, a large Linear weight with few alive entries (the pruned IMP phases) is
trained as the 1-D leaf of its alive entries and multiplied sparsely (``family.sparse_below``,
sparse.py); an MLP's steps in such phases are written out by hand (``family.explicit_mlp``,
mlp.py).

The rooms: ``eligibility`` (which configs the family trains), ``memory`` (the device and how
many members fit), ``chunks`` (a seed's modules in passes: locks, resume, twins), ``member`` (one
module's state), ``trainer`` (``FamilyTrainer``: one pass through the phases, test, artifacts),
``stack`` (the stacked parameters and their optimizer), ``streams`` (the members' batches),
``sparse`` (sparse products of pruned Linear weights), ``mlp`` (an MLP's written-out steps in
the phases with sparse products). Others use only the names below.
"""

from .chunks import passes, train_family
from .eligibility import reduced_precision, unsupported_reason
from .memory import pick_device, plan_sizes

__all__ = ["passes", "pick_device", "plan_sizes", "reduced_precision", "train_family",
           "unsupported_reason"]
