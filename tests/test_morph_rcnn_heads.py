"""R-CNN head morphism keeps the function where it must: narrowing the mask head onto channels that
write exactly zero (whatever the importance, including through the transposed conv5_mask), and a
Keypoint R-CNN's FPN widened (Net2Net) or narrowed onto zeroed channels, for the keypoint logits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest
import torch
from torch import nn

import jdnas_sdk
from jdnas_sdk import Heads
from jdnas_sdk.morph.heads import morph_heads
from jdnas_sdk.morph.importance import IMPORTANCES, Writer

from .conftest import tiny_spec

#: A small ResNet-18-like body, so that the detectors build and run in well under a second.
ARCH = "basic:16|16:16x1|32:32x1|64:64x1|128:128x1"
IMAGE = torch.rand(3, 80, 100, generator=torch.Generator().manual_seed(1))
#: Fixed RoIs (in the 80x100 image), so the heads' outputs do not depend on the RPN's proposals.
ROIS = [torch.tensor([[4.0, 4.0, 60.0, 70.0], [10.0, 20.0, 90.0, 50.0]])]


def _l2_norm(writers: Sequence[Writer]) -> torch.Tensor:
    """A user's own importance: each output filter's L2 norm, read from ``conv.weight`` dim 0."""
    return sum(conv.weight.detach().flatten(1).norm(dim=1) for conv, _ in writers)  # type: ignore[return-value]


def _build(family: str, **kw: object) -> tuple[nn.Module, Heads]:
    """A tiny detector of ``family`` on an 80x100 input, in eval mode, from a fixed seed, and its
    head settings (which the tests change one at a time)."""
    torch.manual_seed(0)
    spec = tiny_spec(family, num_classes=3, min_size=80, max_size=100, **kw)
    return jdnas_sdk.build(spec, ARCH).eval(), Heads.of(spec)


@torch.no_grad()
def _roi_outputs(model: nn.Module, head: str) -> torch.Tensor:
    """The ``head`` (``mask`` or ``keypoint``) predictor's logits on :data:`ROIS` of :data:`IMAGE`."""
    images, _ = model.transform([IMAGE])
    features = model.backbone(images.tensors)
    rh = model.roi_heads
    pooled = getattr(rh, f"{head}_roi_pool")(features, ROIS, images.image_sizes)
    return getattr(rh, f"{head}_predictor")(getattr(rh, f"{head}_head")(pooled))


@pytest.mark.parametrize(
    "importance",
    [*sorted(IMPORTANCES), _l2_norm],
    ids=[*sorted(IMPORTANCES), "custom-l2"],
)
def test_mask_head_narrowing_onto_zero_channels_is_exact(importance: str | Callable) -> None:
    """Every mask-head layer (the four convs and the transposed conv5_mask) writes exactly zero on
    its odd channels; halving the width must drop exactly those, under any importance. conv5_mask's
    weight is laid out (in, out, k, k), so an importance reading dim 0 must see it transposed."""
    model, heads = _build("maskrcnn", fpn_channels=16, mask_head_width=16)
    rh = model.roi_heads
    with torch.no_grad():
        for conv in (m for m in rh.mask_head.modules() if isinstance(m, nn.Conv2d)):
            conv.weight[1::2] = 0
            conv.bias[1::2] = 0
        rh.mask_predictor.conv5_mask.weight[:, 1::2] = 0
        rh.mask_predictor.conv5_mask.bias[1::2] = 0
    parent = _roi_outputs(model, "mask")
    student = morph_heads(model, replace(heads, mask=8), importance=importance).eval()
    assert student.roi_heads.mask_predictor.conv5_mask.out_channels == 8
    torch.testing.assert_close(_roi_outputs(student, "mask"), parent, atol=1e-5, rtol=0)


def test_keypoint_head_follows_a_widened_fpn_exactly() -> None:
    """Widening the FPN repeats output channels and halves their consumers' weights (Net2Net): the
    keypoint head's first conv, which reads the pooled FPN output, must be remapped like the others."""
    model, heads = _build("keypointrcnn", fpn_channels=16, num_keypoints=5)
    parent = _roi_outputs(model, "keypoint")
    student = morph_heads(model, replace(heads, fpn=24)).eval()
    assert student.roi_heads.keypoint_head[0].in_channels == 24
    torch.testing.assert_close(_roi_outputs(student, "keypoint"), parent, atol=1e-5, rtol=0)


@pytest.mark.parametrize("importance", sorted(IMPORTANCES))
def test_keypoint_head_follows_an_fpn_narrowed_onto_zero_channels_exactly(importance: str) -> None:
    """The FPN's even channels (laterals and outputs) write exactly zero; halving the FPN drops
    them, and the keypoint head's first conv must keep its weights for the channels that remain."""
    model, heads = _build("keypointrcnn", fpn_channels=16, num_keypoints=5)
    fpn = model.backbone.fpn
    with torch.no_grad():
        for conv in [b[0] for b in fpn.inner_blocks] + [b[0] for b in fpn.layer_blocks]:
            conv.weight[0::2] = 0
            conv.bias[0::2] = 0
    parent = _roi_outputs(model, "keypoint")
    student = morph_heads(model, replace(heads, fpn=8), importance=importance).eval()
    assert student.roi_heads.keypoint_head[0].in_channels == 8
    torch.testing.assert_close(_roi_outputs(student, "keypoint"), parent, atol=1e-5, rtol=0)
