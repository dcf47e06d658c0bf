"""``thaw``: a detector's copy with live BatchNorm, rebuilt from its description.

It needs both :func:`~jdnas_sdk.detectors.inspect.describe` and
:func:`~jdnas_sdk.detectors.build.build_detector`, so it lives beside them rather than in either
(``inspect`` imports ``build``; nothing imports back).
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from .build import build_detector
from .inspect import describe

__all__ = ["thaw"]


def thaw(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with trainable ``BatchNorm2d`` where it has ``FrozenBatchNorm2d``.

    Pretrained torchvision detectors freeze their norms; fine-tuning a student needs them live.
    The copy computes the same function in eval mode; ``model`` is left as it is.
    """
    spec, arch = describe(model)
    thawed = build_detector(replace(spec, frozen_bn=False, trainable_layers=5), arch)
    state = model.state_dict()
    missing = thawed.load_state_dict(state, strict=False).missing_keys
    if any(not key.endswith("num_batches_tracked") for key in missing):
        raise AssertionError(f"thaw lost weights: {missing[:3]}")
    thawed.train(model.training)
    return thawed
