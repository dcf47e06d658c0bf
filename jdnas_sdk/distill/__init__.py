"""Detection distillation: KD losses (features, class scores, box deltas) and the fine-tune loop that uses them."""

from .finetune import FINETUNE_DEFAULTS, finetune
from .losses import (
    Distiller,
    KDConfig,
    box_kd,
    channel_normalize,
    feature_kd,
    foreground_masks,
    identity_adapter,
    normalized_feature_kd,
    positive_labels,
    positive_rows,
    sigmoid_kd,
    softmax_kd,
)

__all__ = [
    "KDConfig",
    "Distiller",
    "feature_kd",
    "sigmoid_kd",
    "softmax_kd",
    "foreground_masks",
    "finetune",
    "normalized_feature_kd",
    "channel_normalize",
    "positive_rows",
    "positive_labels",
    "box_kd",
    "identity_adapter",
    "FINETUNE_DEFAULTS",
]
