"""The conditions a whole detector is timed under: a realistic image and a full detection load.

A detector's post-processing costs more the more candidates survive its thresholds, and how
many survive depends on the weights and the image: random weights can make a detector return no
boxes at all (RetinaNet's prior keeps every score near 0.01, below the 0.05 threshold), and a
pruned student's RPN keeps more proposals than its trained parent. Every end-to-end measurement
therefore runs at *full load*: score thresholds are 0 and the R-CNN's RPN keeps every proposal
up to its cap (NMS threshold 1), so the box head always sees ``post_nms_top_n`` proposals, NMS
sees every candidate the heads keep, and the detector returns its ``detections_per_img``. This
is the most work the detector can do on an image bar one term: how many candidates the final NMS
keeps, and how costly its overlap tests are, still follow the weights (a trained RetinaNet's
untrained morphs with 1-conv towers ran 24% over their estimate). A threshold of 1 there does
not make that term weight-free in ONNX Runtime (tried for one-stage detectors: residuals 3-4x
larger and as spread; README, stop 28), so the final NMS keeps the model's threshold, and an
estimate of a given detector follows that term through its NMS load (:mod:`.nms_load`), counted
on the probe's own forward pass (:attr:`Probe.nms_tests`) and carried in the timing's ``info``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import Tensor, nn

from ..data import synthetic_image
from ..families import family_of
from .nms_replay import nms_comparisons, recorded_nms

__all__ = ["TIMED_LOAD", "Probe", "full_load", "probe_image", "count_detections", "probe"]

TIMED_LOAD = "nms_load"
"""The ``info`` key of a whole-detector timing that holds its NMS load (:attr:`Probe.nms_tests`)."""


def full_load(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` at full detection load (see the module docstring)."""
    loaded = copy.deepcopy(model).eval()
    family_of(loaded).full_load(loaded)
    return loaded


def probe_image(height: int, width: int, *, seed: int = 0) -> Tensor:
    """A synthetic scene as the ``3 x H x W`` float tensor a torchvision detector takes."""
    return torch.from_numpy(synthetic_image(height, width, seed=seed)).permute(2, 0, 1).contiguous()


def count_detections(model: nn.Module, image: Tensor) -> int:
    """How many boxes ``model`` returns on ``image``."""
    with torch.no_grad():
        return int(model.eval()([image])[0]["boxes"].shape[0])


@dataclass(frozen=True)
class Probe:
    """What every backend times a whole detector on, and what that detector did on it."""

    model: nn.Module
    """The full-load, eval-mode copy of the detector."""
    image: Tensor
    """The probe image (``3 x H x W``)."""
    detections: int
    """How many boxes ``model`` returned on ``image``."""
    calls: list[tuple[Any, ...]] = field(repr=False)
    """The arguments of every ``batched_nms`` call of that forward pass."""

    @cached_property
    def nms_tests(self) -> int | None:
        """The IoU tests those NMS calls made (:func:`~.nms_replay.nms_comparisons`), counted on first
        use; ``None`` where no NMS was seen (a detector that does not call torchvision's ``batched_nms``)."""
        return sum(nms_comparisons(*call) for call in self.calls) if self.calls else None

    def info(self, *, load: bool = True) -> dict[str, int]:
        """What a timing of ``model`` on ``image`` records beside its milliseconds: its detections and,
        with ``load`` and where known, its NMS load (:data:`TIMED_LOAD`; counting it replays every NMS
        on the CPU, so a backend whose table fits no cost per test, :data:`~.nms_load.BACKENDS`, skips it)."""
        tests = self.nms_tests if load else None
        return {"detections": self.detections, **({TIMED_LOAD: tests} if tests is not None else {})}


def probe(model: nn.Module, image_size: tuple[int, int], *, seed: int = 0) -> Probe:
    """The full-load copy of ``model``, the probe image, and what the copy does on it (one forward pass)."""
    loaded = full_load(model)
    image = probe_image(*image_size, seed=seed)
    device = next(loaded.parameters()).device
    with recorded_nms() as calls:
        detections = count_detections(loaded, image.to(device))
    return Probe(loaded, image, detections, calls)
