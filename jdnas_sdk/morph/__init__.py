"""Student morphism: actions on an :class:`~jdnas_sdk.arch.Arch`, channel importance, weight inheritance."""

from .actions import (
    Action,
    AddBlock,
    MoveBoundary,
    RemoveBlock,
    SetBlockWidth,
    SetStageWidth,
    actions_to,
    apply_action,
    available_actions,
    snap,
)
from .apply import inherited, morph, morph_step, morph_to
from .heads import HEAD_KNOBS, SetHead, apply_head, morph_heads
from .importance import IMPORTANCES, Importance, bn_scale, l1_norm
from .refit import Refit, refit_towers
from .sample import sample_arch

__all__ = [
    "Action",
    "AddBlock",
    "RemoveBlock",
    "MoveBoundary",
    "SetBlockWidth",
    "SetStageWidth",
    "apply_action",
    "available_actions",
    "snap",
    "actions_to",
    "morph",
    "morph_step",
    "morph_to",
    "inherited",
    "Importance",
    "IMPORTANCES",
    "bn_scale",
    "l1_norm",
    "sample_arch",
    "Refit",
    "refit_towers",
    "SetHead",
    "HEAD_KNOBS",
    "apply_head",
    "morph_heads",
]
