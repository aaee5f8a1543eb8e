"""Modules as circuits: anatomy and overlap of their masks, necessity, sufficiency, unlearning
by subtraction and editing by addition. Functions over module records and a test set; each
analysis returns tidy rows (dicts) that the ``circuits`` task writes to ``results.csv``.

Definitions (weight masks only: biases, even when pruned, are not part of the anatomy):
- a *unit* is an output row of a Linear layer or an output channel of a Conv layer; a Linear
  layer after a Conv reads a channel when it reads any of that channel's positions;
- *inputs read* by layer l: its input units with a surviving weight into a unit that lies on a
  surviving path to the output (for the first layer of an MLP: the pixels/features the circuit
  reads). Networks whose layers do not chain (skip connections) fall back to "any surviving
  weight in the layer";
- *units used*: units with surviving in-weights and, except in the output layer, surviving
  out-weights.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import lightning as L
import torch
from torch import nn

from . import masks as M
from .builders import net_from_record
from .circuit_figures import NecessityTarget, necessity_png, overlap_png  # noqa: F401 (task)
from .composition import State, check_composable, sum_states
from .evaluate import Evaluation, run_evaluation
from .modulefile import ModuleRecord
from .plots import plt

ALL_LAYERS = "all"
UNITS = "/units"


# ---------------------------------------------------------------- anatomy and overlap


def weight_masks(masks: M.Masks) -> M.Masks:
    """The masks of Linear/Conv weights (dim ≥ 2), in model order."""
    return {n: m.bool().cpu() for n, m in masks.items() if m.dim() >= 2}


def unit_connectivity(masks: M.Masks) -> list[torch.Tensor] | None:
    """Per weight layer a bool [out units, in units] matrix; None when the layers do not chain."""
    conns: list[torch.Tensor] = []
    for m in weight_masks(masks).values():
        c = m.flatten(2).any(-1) if m.dim() > 2 else m
        if conns and c.shape[1] != conns[-1].shape[0]:
            prev = conns[-1].shape[0]
            if c.shape[1] % prev:
                return None
            c = c.view(c.shape[0], prev, -1).any(-1)  # Linear after Conv+Flatten: per channel
        conns.append(c)
    return conns


def _reads_and_uses(masks: M.Masks) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer: bool vector of inputs read (on a path to the output) and of units used."""
    conns = unit_connectivity(masks)
    if conns is None:  # no chain: local definitions
        conns = [m.flatten(2).any(-1) if m.dim() > 2 else m for m in weight_masks(masks).values()]
        return [c.any(0) for c in conns], [c.any(1) for c in conns]
    reads = [torch.empty(0)] * len(conns)
    live = torch.ones(conns[-1].shape[0], dtype=torch.bool)
    for layer in reversed(range(len(conns))):
        reads[layer] = (conns[layer] & live[:, None]).any(0)
        live = reads[layer]
    uses = [c.any(1) for c in conns]
    for layer in range(len(conns) - 1):
        uses[layer] = uses[layer] & conns[layer + 1].any(0)
    return reads, uses


def anatomy(masks: M.Masks) -> list[dict]:
    """One row per weight layer: surviving weights, inputs read, units used."""
    rows = []
    reads, uses = _reads_and_uses(masks)
    for (name, m), read, used in zip(weight_masks(masks).items(), reads, uses, strict=True):
        rows.append({
            "layer": name, "size": int(m.sum()), "numel": m.numel(),
            "density": float(m.float().mean()), "inputs": read.numel(),
            "inputs_read": int(read.sum()), "units": used.numel(), "units_used": int(used.sum()),
        })
    return rows


def input_fan_out(masks: M.Masks) -> torch.Tensor | None:
    """Per input feature, its surviving first-layer weights into units on a path to the output
    (None when the first weight layer is not Linear: a convolution reads every pixel)."""
    wm = list(weight_masks(masks).values())
    if not wm or wm[0].dim() != 2:
        return None
    if len(wm) == 1 or unit_connectivity(masks) is None:
        return wm[0].sum(0)
    live = _reads_and_uses(masks)[0][1]  # units of the first layer on a path to the output
    return (wm[0] & live[:, None]).sum(0)


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a ∧ b| / |a ∨ b| of two bool masks; NaN when both are empty."""
    a, b = a.bool(), b.bool()
    union = int((a | b).sum())
    return float("nan") if union == 0 else int((a & b).sum()) / union


def layer_masks(masks: M.Masks) -> dict[str, torch.Tensor]:
    """Flat masks to compare modules by: each weight layer, all weights together, and the
    units used in each hidden layer (``<layer>/units``)."""
    wm = weight_masks(masks)
    out = {n: m.flatten() for n, m in wm.items()}
    out[ALL_LAYERS] = torch.cat(list(out.values()))
    uses = _reads_and_uses(masks)[1]
    for name, used in list(zip(wm, uses, strict=True))[:-1]:
        out[name + UNITS] = used
    return out


def overlap_matrices(mask_sets: Sequence[M.Masks]) -> dict[str, torch.Tensor]:
    """Per layer the n × n Jaccard matrix between the modules' masks."""
    flat = [layer_masks(m) for m in mask_sets]
    n = len(flat)
    out = {}
    for layer in flat[0]:
        mat = torch.empty(n, n, dtype=torch.float64)
        for i in range(n):
            for j in range(i, n):
                mat[i, j] = mat[j, i] = jaccard(flat[i][layer], flat[j][layer])
        out[layer] = mat
    return out


# ---------------------------------------------------------------- states


def subtract_state(merged: State, state: State) -> State:
    """merged − θ over floating tensors (integer buffers are kept)."""
    return {k: v - state[k] if v.is_floating_point() else v.clone() for k, v in merged.items()}


def restrict_state(state: State, masks: M.Masks) -> State:
    """Zero the masked tensors outside ``masks``; unmasked tensors (e.g. biases) are kept."""
    return {k: v * masks[k].to(v.dtype) if k in masks else v.clone() for k, v in state.items()}


def max_abs_diff(a: State, b: State) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point())


# ---------------------------------------------------------------- evaluation


@dataclass
class TestSet:
    """Test tensors and the classes whose modules are analysed (a subset of all classes);
    ``trainer``: the Trainer factory of its evaluations (default a lean CPU-or-auto one)."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    temperature: float
    classes: list[int]
    trainer: Callable[[], L.Trainer] | None = None

    def score(self, evaluation: Evaluation) -> dict[str, dict]:
        """Every candidate of ``evaluation`` in one ``Trainer.test``: its scores, its accuracy per
        class (``per_class``) and mean entropy per class (``class_entropy``)."""
        out = run_evaluation(evaluation, {"test": (self.x, self.y)}, self.num_classes,
                             self.temperature, self.trainer() if self.trainer else None)
        for v in out.values():
            conf = v.pop("confusion").double()
            v["per_class"] = (conf.diag() / conf.sum(1).clamp_min(1)).tolist()
        return out

    def others(self, c: int) -> list[int]:
        return [k for k in self.classes if k != c]


def _versus(per_class: list[float], ref: list[float], classes: Sequence[int]) -> dict:
    """Mean accuracy over ``classes`` and the mean / max drop against ``ref``."""
    drops = [ref[k] - per_class[k] for k in classes]
    return {"other_acc": sum(per_class[k] for k in classes) / len(classes),
            "other_drop": sum(drops) / len(drops), "other_drop_max": max(drops)}


def _without(ts: TestSet, s: dict, c: int, ref: list[float]) -> dict:
    """Scores ``s`` (on the other classes) of a composition that should have lost class ``c``."""
    entropy = s["class_entropy"][c]
    return {"class": c, "class_acc": s["per_class"][c], "class_entropy": entropy,
            "entropy_ratio": entropy / math.log(ts.num_classes),
            "rewarded_acc": s["rewarded_acc"], "nonrewarded_entropy": s["nonrewarded_entropy"],
            **_versus(s["per_class"], ref, ts.others(c))}


@dataclass
class Compositions:
    """The modules of one seed (one per class of ``ts.classes``) and their complete merges."""

    records: list[ModuleRecord]
    ts: TestSet

    def __post_init__(self):
        check_composable(self.records)
        self.states = [r.state_dict for r in self.records]
        self.merged = sum_states(self.states)
        self.modules = [net_from_record(r) for r in self.records]
        self.full = self.score({"weight": (self.weight(self.merged), self.ts.classes),
                                "logit": (self.logit(), self.ts.classes)})

    def weight(self, state: State) -> nn.Module:
        return net_from_record(self.records[0], state)

    def logit(self, without: int | None = None) -> list[tuple[int, float]]:
        """The logit average of the modules (but module ``without``): terms over the modules."""
        keep = [i for i in range(len(self.records)) if i != without]
        return [(i, 1.0 / len(keep)) for i in keep]

    def score(self, models: dict) -> dict:
        """{key: scores} of ``{key: (a net, or logit terms over the modules, rewarded)}``, all
        in one pass (each module's net runs once per batch)."""
        evaluation = Evaluation()
        for net in self.modules:
            evaluation.net(net)
        for key, (model, rewarded) in models.items():
            ref = evaluation.net(model) if isinstance(model, nn.Module) else model
            evaluation.add(repr(key), ref, rewarded)
        out = self.ts.score(evaluation)
        return {key: out[repr(key)] for key in models}

    def others_sum(self, i: int) -> State:
        """Σ_{j≠i} θ_j built from scratch (the merge retrained without module i)."""
        return sum_states([s for k, s in enumerate(self.states) if k != i])


def full_rows(comp: Compositions) -> list[dict]:
    """The complete merges: per class accuracy, and the pooled metrics."""
    rows = []
    for merge, s in comp.full.items():
        for c in comp.ts.classes:
            rows.append({"analysis": "full", "merge": merge, "class": c,
                         "class_acc": s["per_class"][c], "rewarded_acc": s["rewarded_acc"],
                         "nonrewarded_entropy": s["nonrewarded_entropy"]})
    return rows


def necessity_rows(comp: Compositions, target: NecessityTarget) -> list[dict]:
    """Remove module i from the complete merge: subtract θ_i, or drop its logits (each row
    records the target it is judged against)."""
    ts = comp.ts
    models = {}
    for i, c in enumerate(ts.classes):
        models[("weight", c)] = (comp.weight(subtract_state(comp.merged, comp.states[i])),
                                 ts.others(c))
        models[("logit", c)] = (comp.logit(without=i), ts.others(c))
    scored = comp.score(models)
    rows = []
    for (merge, c), s in scored.items():
        ref = comp.full[merge]["per_class"]
        rows.append({"analysis": "necessity", "merge": merge, "variant": "removed",
                     "full_class_acc": ref[c], **_without(ts, s, c, ref),
                     "target_class_acc": target.class_acc,
                     "target_other_drop": target.other_drop})
    return rows


def sufficiency_rows(comp: Compositions) -> list[dict]:
    """Module i alone, and the weight merge restricted to the weights inside module i's mask."""
    ts = comp.ts
    models = {}
    for i, c in enumerate(ts.classes):
        restricted = comp.weight(restrict_state(comp.merged, comp.records[i].masks))
        models[("alone", c)] = ([(i, 1.0)], [c])
        models[("restricted", c)] = (restricted, [c])
    rows = []
    for (variant, c), s in comp.score(models).items():
        rows.append({"analysis": "sufficiency", "merge": "none" if variant == "alone" else
                     "weight", "variant": variant, "class": c, "class_acc": s["per_class"][c],
                     "rewarded_acc": s["rewarded_acc"],
                     "nonrewarded_entropy": s["nonrewarded_entropy"],
                     "full_class_acc": comp.full["weight"]["per_class"][c]})
    return rows


def unlearning_rows(comp: Compositions) -> list[dict]:
    """merged − θ_i against the merge of the other modules built from scratch (which never
    had module i): class i should fall to that level, with near-uniform outputs on it."""
    ts = comp.ts
    ref = comp.full["weight"]["per_class"]
    models, diffs = {}, {}
    for i, c in enumerate(ts.classes):
        subtracted = subtract_state(comp.merged, comp.states[i])
        retrained = comp.others_sum(i)
        diffs[c] = max_abs_diff(subtracted, retrained)
        for variant, state in (("subtracted", subtracted), ("retrained", retrained)):
            models[(variant, c)] = (comp.weight(state), ts.others(c))
    rows = []
    for (variant, c), s in comp.score(models).items():
        rows.append({"analysis": "unlearning", "merge": "weight", "variant": variant,
                     "param_diff": diffs[c], "full_class_acc": ref[c],
                     **_without(ts, s, c, ref)})
    return rows


def editing_rows(comp: Compositions, edit_classes: Sequence[int]) -> list[dict]:
    """Add the module of a left-out class (trained on its own from the same θ0) to the merge of
    the others; the new class and the old classes before and after, with no retraining."""
    ts = comp.ts
    models = {}
    for c in edit_classes:
        i = ts.classes.index(c)
        before = comp.others_sum(i)
        models[("weight", "before", c)] = (comp.weight(before), ts.others(c))
        models[("weight", "after", c)] = (comp.weight(sum_states([before, comp.states[i]])),
                                          ts.classes)
        models[("logit", "before", c)] = (comp.logit(without=i), ts.others(c))
        models[("logit", "after", c)] = (comp.logit(), ts.classes)
    scored = comp.score(models)
    rows = []
    for c in edit_classes:
        old = ts.others(c)
        for merge in ("weight", "logit"):
            b, a = scored[(merge, "before", c)], scored[(merge, "after", c)]
            rows.append({
                "analysis": "editing", "merge": merge, "variant": "added", "class": c,
                "class_acc_before": b["per_class"][c], "class_acc": a["per_class"][c],
                "other_acc_before": sum(b["per_class"][k] for k in old) / len(old),
                "rewarded_acc": a["rewarded_acc"],
                **_versus(a["per_class"], b["per_class"], old),
            })
    return rows


def anatomy_rows(records: Sequence[ModuleRecord], classes: Sequence[int]) -> list[dict]:
    return [{"analysis": "anatomy", "merge": "none", "class": c, **row}
            for rec, c in zip(records, classes, strict=True) for row in anatomy(rec.masks)]


def overlap_rows(matrices: dict[str, torch.Tensor], classes: Sequence[int]) -> list[dict]:
    return [{"analysis": "overlap", "merge": "none", "layer": layer, "class": a,
             "other_class": b, "jaccard": float(mat[i, j])}
            for layer, mat in matrices.items()
            for i, a in enumerate(classes) for j, b in enumerate(classes)]


# ---------------------------------------------------------------- figures


def inputs_png(path, fan_outs: Sequence[torch.Tensor], input_shape, labels, title: str = ""):
    """Per module, the number of live first-layer weights leaving each input pixel."""

    n = len(fan_outs)
    cols = min(n, 5)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows), squeeze=False)
    hw = tuple(input_shape[-2:])
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            img = fan_outs[k].float().view(-1, *hw).sum(0)
            ax.imshow(img.numpy(), cmap="magma")
            ax.set_title(f"{labels[k]}: {int((img > 0).sum())} px", fontsize=8)
    fig.suptitle(title or "input pixels read by each module's circuit")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
