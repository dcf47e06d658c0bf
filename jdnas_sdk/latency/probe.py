"""The conditions a whole detector is timed under: a realistic image and a full detection load.

A detector's post-processing costs more the more candidates pass its score threshold. Random
weights can make a detector return no boxes at all (RetinaNet's prior keeps every score near
0.01, below the 0.05 threshold), which would time NMS on nothing. Every end-to-end measurement
therefore runs at *full load*: the score threshold is 0, so NMS sees every candidate the heads
keep and the detector returns its ``detections_per_img``; a trained detector on a sparse image
runs at most this.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..data import synthetic_image

__all__ = ["full_load", "probe_image", "count_detections"]


def full_load(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` whose score threshold is 0 (see the module docstring)."""
    loaded = copy.deepcopy(model).eval()
    heads = getattr(loaded, "roi_heads", None)
    if heads is not None:
        heads.score_thresh = 0.0
    elif hasattr(loaded, "score_thresh"):
        loaded.score_thresh = 0.0
    return loaded


def probe_image(height: int, width: int, *, seed: int = 0) -> Tensor:
    """A synthetic scene as the ``3 x H x W`` float tensor a torchvision detector takes."""
    return torch.from_numpy(synthetic_image(height, width, seed=seed)).permute(2, 0, 1).contiguous()


def count_detections(model: nn.Module, image: Tensor) -> int:
    """How many boxes ``model`` returns on ``image``."""
    with torch.no_grad():
        return int(model.eval()([image])[0]["boxes"].shape[0])
