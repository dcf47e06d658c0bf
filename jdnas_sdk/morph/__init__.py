"""Student morphism: actions on an :class:`~jdnas_sdk.arch.Arch`, channel importance, weight inheritance."""

from .actions import (
    Action,
    AddBlock,
    MoveBoundary,
    RemoveBlock,
    SetBlockWidth,
    SetStageWidth,
    apply_action,
    available_actions,
    snap,
)
from .apply import morph, morph_step
from .importance import IMPORTANCES, Importance, bn_scale, l1_norm
from .sample import sample_arch

__all__ = [
    "Action", "AddBlock", "RemoveBlock", "MoveBoundary", "SetBlockWidth", "SetStageWidth",
    "apply_action", "available_actions", "snap", "morph", "morph_step",
    "Importance", "IMPORTANCES", "bn_scale", "l1_norm", "sample_arch",
]
