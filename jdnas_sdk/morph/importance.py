"""How much a channel matters: small callables that score the channels a set of layers writes.

A channel space (a block's mid channels, a stage's residual stream) is written by one or more
(conv, norm) pairs. An importance maps those writers to one score per channel; narrowing keeps the
highest scores. Replace it with any callable of the same shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["Writer", "Importance", "l1_norm", "bn_scale", "IMPORTANCES"]

#: A layer pair that produces a channel space: the convolution and the norm after it.
Writer = tuple[nn.Conv2d, nn.Module]
Importance = Callable[[Sequence[Writer]], torch.Tensor]


@torch.no_grad()
def l1_norm(writers: Sequence[Writer]) -> torch.Tensor:
    """Sum over writers of each output filter's L1 norm (Li et al., 'Pruning Filters')."""
    return sum(conv.weight.detach().abs().flatten(1).sum(1) for conv, _ in writers)  # type: ignore[return-value]


@torch.no_grad()
def bn_scale(writers: Sequence[Writer]) -> torch.Tensor:
    """Sum over writers of ``|gamma| + |beta|`` of the norm (network slimming).

    A channel scores exactly zero only when every writer's norm outputs zero for it, so removing
    it leaves the network's function unchanged.
    """
    return sum(norm.weight.detach().abs() + norm.bias.detach().abs() for _, norm in writers)  # type: ignore[return-value]


IMPORTANCES: dict[str, Importance] = {"l1": l1_norm, "bn": bn_scale}
