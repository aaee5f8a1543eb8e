"""The family's steps of MLP members in pruned phases, written out: forward, loss gradient and
backward by hand.

In a phase with sparse products (sparse.py: CPU, few alive weights) the products are cheap and
what every step does besides them dominated: vmap's dispatch, the autograd graph, and
transposes between the sparse product's (member, unit, sample) layout and the net's. For the MLP
backbone (Flatten -> [Linear, ReLU, Dropout]* -> Linear) the step is therefore computed here in
that layout throughout, units first: (K, units, batch), with batched products for the dense
layers and the sparse ones' CSR products, and no vmap or autograd. Dense phases keep vmap, whose
product layouts suit dense weights better. The arithmetic is the net's forward and the gradient
autograd takes of the batch-mean KL loss, up to the order of float sums
(tests/test_family_mlp.py; tests/test_family.py holds the modules equal).
"""

from dataclasses import dataclass

import torch
from torch import nn

from ..dropout import StreamDropout
from ..loss import MaxEntLoss, batch_means, kl_and_gradient
from ..models.mlp import MLP


@dataclass(frozen=True)
class Layer:
    """One Linear of the net: its parameter names, whether a ReLU follows it (a hidden layer),
    and the index of the dropout layer after it among the family's dropout layers."""

    weight: str
    bias: str | None
    hidden: bool
    dropout: int | None


def mlp_layers(net: nn.Module, drops) -> list[Layer] | None:
    """The Linear layers of an MLP backbone in call order (``drops``: the family's dropout
    layers, stream_dropouts); None for any other net."""
    if type(net) is not MLP:
        return None
    order = {id(m): i for i, (m, _) in enumerate(drops)}
    children = list(net.features.named_children())
    if not children or type(children[0][1]) is not nn.Flatten or len(children) % 3 != 1:
        return None
    layers = []
    for i in range(1, len(children), 3):
        (name, linear), (_, relu), (_, drop) = children[i:i + 3]
        if (not isinstance(linear, nn.Linear) or type(relu) is not nn.ReLU
                or type(drop) not in (StreamDropout, nn.Identity)):
            return None
        prefix = f"features.{name}"
        layers.append(Layer(f"{prefix}.weight", f"{prefix}.bias" if linear.bias is not None
                            else None, True, order.get(id(drop))))
    if not isinstance(net.classifier, nn.Linear):
        return None
    bias = "classifier.bias" if net.classifier.bias is not None else None
    return [*layers, Layer("classifier.weight", bias, False, None)]


class StackedMLP:
    """The K members of a Stack (stack.py) as one MLP computed by hand. Dense weights are read
    as the net's (K, out, in) views of their leaves, pruned ones as the (values, Pattern) of
    their alive entries."""

    def __init__(self, layers: list[Layer], loss: MaxEntLoss):
        self.layers, self.loss = layers, loss

    def forward(self, stack, x: torch.Tensor, per_member: bool, keep=()):
        """Logits (K, B, C) of a batch ``x`` ((B, ...) shared, or (K, B, ...) one per member)
        and what the backward reads: each layer's input (K, in, B) (shared: an expanded view)
        and each hidden layer's output and dropout keep-mask.
        ``keep``: the dropout keep-masks (K, B, units) per dropout layer (none: eval)."""
        dense, sparse, k = stack.params(), stack.sparse(), len(stack)
        batch = x.shape[1] if per_member else x.shape[0]
        if per_member:
            a = x.reshape(k, batch, -1).transpose(1, 2)
        else:
            a = x.reshape(batch, -1).t().expand(k, -1, -1)
        inputs, outs, keeps = [], [], []
        for layer in self.layers:
            inputs.append(a)
            bias = dense[layer.bias].unsqueeze(-1) if layer.bias else None  # (K, out, 1)
            if layer.weight in sparse:  # the bias is the product's addend: one pass less
                values, pattern = sparse[layer.weight]
                matrix, cols = pattern.matrix(values, not _shared(a)), _columns(a)
                y = (matrix @ cols if bias is None else torch.addmm(
                    bias.reshape(-1, 1).expand(-1, cols.shape[-1]), matrix, cols))
                y = y.view(k, pattern.shape[1], -1)
            else:
                w = dense[layer.weight]
                y = (torch.bmm(w, a) if bias is None else
                     torch.baddbmm(bias.expand(-1, -1, a.shape[-1]), w, a))
            if layer.hidden:
                y.clamp_min_(0)
                mask = None
                if keep and layer.dropout is not None:
                    mask = keep[layer.dropout].transpose(1, 2).contiguous()
                    y.mul_(mask)
                outs.append(y)  # > 0 exactly where the ReLU and the dropout pass gradients
                keeps.append(mask)
            a = y
        return a.transpose(1, 2), (inputs, outs, keeps)

    @torch.no_grad()
    def logits(self, stack, x: torch.Tensor, per_member: bool = False) -> torch.Tensor:
        return self.forward(stack, x, per_member)[0]

    @torch.no_grad()
    def step(self, stack, x, targets, per_member: bool, keep=(), weight=None) -> torch.Tensor:
        """Each member's batch-mean KL(ỹ ‖ softmax(z/T)) (K,), its gradient written to the
        stack's leaves (``.grad``), as ``losses.sum().backward()`` would. ``targets``: (K, B, C);
        ``weight`` (K, B): each sample's share of its member's mean (None: the plain mean)."""
        logits, (inputs, outs, keeps) = self.forward(stack, x, per_member, keep)
        kl, g = kl_and_gradient(self.loss.scale(logits), targets)
        losses = batch_means(kl, weight)
        share = 1.0 / kl.shape[-1] if weight is None else weight.unsqueeze(-1)
        g = (g * share / self.loss.temperature).transpose(1, 2).contiguous()  # (K, C, B)
        dense, sparse = stack.params(), stack.sparse()
        grads, hidden = {}, len(outs)
        for i in range(len(self.layers) - 1, -1, -1):
            layer, a = self.layers[i], inputs[i]
            if layer.hidden:
                hidden -= 1
                if keeps[hidden] is not None:  # g is this step's own tensor
                    g.mul_(keeps[hidden])
                # the ReLU's backward (and the dropout's: its output is 0 where it dropped)
                g = torch.ops.aten.threshold_backward(g, outs[hidden], 0)
            if layer.bias:
                grads[layer.bias] = g.sum(-1)
            if layer.weight in sparse:
                values, pattern = sparse[layer.weight]
                grads[layer.weight] = pattern.values_grad(g.reshape(-1, g.shape[-1]),
                                                          _columns(a).t(), not _shared(a))
                if i:
                    g = (pattern.transposed(values) @ g.reshape(-1, g.shape[-1])).view(
                        a.shape)
            else:
                w = dense[layer.weight]
                order = stack.orders[layer.weight]  # the leaf's dimensions, the net's order
                grads[layer.weight] = (torch.bmm(a, g.transpose(1, 2)) if order == [0, 2, 1]
                                       else torch.bmm(g, a.transpose(1, 2)).permute(order))
                if i:
                    g = torch.bmm(w.transpose(1, 2), g)
        for name, leaf in stack.leaves.items():
            leaf.grad = grads[name].contiguous()
        return losses


def _shared(a: torch.Tensor) -> bool:
    """Whether a layer input (K, in, B) is one input expanded over the members."""
    return a.stride(0) == 0


def _columns(a: torch.Tensor) -> torch.Tensor:
    """The right-hand side of a sparse product with the input ``a`` (K, in, B): (in, B) for a
    shared input, else (K * in, B); contiguous."""
    return (a[0] if _shared(a) else a.reshape(-1, a.shape[-1])).contiguous()
