"""Detection distillation: KD losses (features, class scores) and the fine-tune loop that uses them."""

from .finetune import FINETUNE_DEFAULTS, finetune
from .losses import Distiller, KDConfig, feature_kd, foreground_masks, sigmoid_kd, softmax_kd

__all__ = ["KDConfig", "Distiller", "feature_kd", "sigmoid_kd", "softmax_kd", "foreground_masks", "finetune",
           "FINETUNE_DEFAULTS"]
