"""Detection distillation: KD losses (features, class scores, box deltas), the positive rows they
are restricted to (each family's own assignment rule), and the fine-tune loop that uses them."""

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
    sigmoid_kd,
    softmax_kd,
)
from .positives import POSITIVE_RULES, centre_positives, positive_labels, positive_rows

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
    "centre_positives",
    "POSITIVE_RULES",
    "box_kd",
    "identity_adapter",
    "FINETUNE_DEFAULTS",
]
