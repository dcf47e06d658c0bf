"""The R-CNN families: Faster R-CNN, and its Mask and Keypoint variants (two-stage, RoI heads).

An RPN proposes regions on every pyramid level (a max-pooled extra level on top); the box head
(torchvision's ``TwoMLPHead`` and ``FastRCNNPredictor``) classifies ``rois`` pooled proposals per
image. Mask R-CNN adds a mask head and Keypoint R-CNN a keypoint head; both run on the detections,
so the lowering marks their ops untimed (the latency table's ``fixed`` entry holds them) while
cost counts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN, KeypointRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool

from ..layers import Op, conv, deconv, linear, maxpool
from .base import Family, KDTap, SpecLike, base_anchor_sizes

__all__ = ["FasterRCNNFamily", "MaskRCNNFamily", "KeypointRCNNFamily", "PROPOSALS", "ROI_SIZE"]

#: Proposals the box head sees per image at test time (torchvision's ``rpn_post_nms_top_n_test``).
PROPOSALS = 1000
#: Side of the RoI-pooled map the box head reads (and of the mask/keypoint heads' pooled maps).
ROI_SIZE, MASK_ROI_SIZE = 7, 14
#: Anchors per position: one size, three aspect ratios.
_ANCHORS = 3


class FasterRCNNFamily(Family):
    """torchvision's ``FasterRCNN``: RPN + ``TwoMLPHead`` box head of width ``representation_size``,
    keeping ``rpn_pre_nms_top_n_test`` proposals per level before the RPN's NMS and
    ``rpn_post_nms_top_n_test`` after it at test time (the box head's rows)."""

    name = "fasterrcnn"
    model_class = FasterRCNN
    returned_layers = (1, 2, 3, 4)
    extra_levels = 1
    postprocess = (0.05, 0.5, 100)
    is_two_stage = True
    head_settings = ("representation_size", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test")
    kd_scores = "softmax"

    def fpn_extra_block(self, channels: int) -> ExtraFPNBlock:
        return LastLevelMaxPool()

    def anchor_generator(self, spec: SpecLike, strides: Sequence[int]) -> AnchorGenerator:
        sizes = tuple((x,) for x in base_anchor_sizes(spec))
        return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))

    def build(self, spec: SpecLike, backbone: nn.Module, anchors: AnchorGenerator) -> nn.Module:
        return self.model_class(backbone, num_classes=None, **self._kwargs(spec, anchors))

    def _kwargs(self, spec: SpecLike, anchors: AnchorGenerator) -> dict[str, Any]:
        """The constructor arguments every R-CNN shares (RPN anchors, box head, post-processing)."""
        return dict(
            min_size=spec.min_size,
            max_size=spec.max_size,
            box_score_thresh=spec.score_thresh,
            box_nms_thresh=spec.nms_thresh,
            box_detections_per_img=spec.detections_per_img,
            rpn_anchor_generator=anchors,
            rpn_pre_nms_top_n_test=spec.rpn_pre_nms_top_n_test,
            rpn_post_nms_top_n_test=spec.rpn_post_nms_top_n_test,
            box_roi_pool=MultiScaleRoIAlign(self._names(spec), output_size=ROI_SIZE, sampling_ratio=2),
            box_head=TwoMLPHead(spec.fpn_channels * ROI_SIZE**2, spec.representation_size),
            box_predictor=FastRCNNPredictor(spec.representation_size, spec.num_classes),
        )

    @staticmethod
    def _names(spec: SpecLike) -> list[str]:
        return [str(i) for i in range(len(spec.returned_layers))]

    def read(self, model: nn.Module) -> dict[str, Any]:
        heads = model.roi_heads
        predictor = heads.box_predictor
        if not hasattr(predictor, "cls_score"):
            raise ValueError(f"box predictor {type(predictor).__qualname__} is not torchvision's FastRCNNPredictor")
        fc6 = getattr(heads.box_head, "fc6", None)
        if not isinstance(fc6, nn.Linear):
            raise ValueError(
                f"box head {type(heads.box_head).__qualname__} is not torchvision's TwoMLPHead "
                "(v2 detectors are not supported yet)"
            )
        return dict(
            num_classes=int(predictor.cls_score.out_features),
            anchor_sizes=tuple(int(level[0]) for level in self.anchors_of(model).sizes),
            representation_size=int(fc6.out_features),
            score_thresh=heads.score_thresh,
            rpn_pre_nms_top_n_test=int(model.rpn._pre_nms_top_n["testing"]),
            rpn_post_nms_top_n_test=int(model.rpn._post_nms_top_n["testing"]),
            nms_thresh=heads.nms_thresh,
            detections_per_img=heads.detections_per_img,
        )

    def anchors_of(self, model: nn.Module) -> AnchorGenerator:
        return model.rpn.anchor_generator

    def full_load(self, model: nn.Module) -> None:
        model.roi_heads.score_thresh = 0.0
        model.rpn.nms_thresh = 1.0
        model.rpn.score_thresh = 0.0

    def fpn_extra_ops(self, channels: int, top: tuple[int, int], extra: Sequence[tuple[int, int]]) -> tuple[Op, ...]:
        return (maxpool(channels, 1, 2, 0, *top),)

    def fixed_settings(self, spec: SpecLike) -> tuple[int, int, int]:
        return spec.rpn_pre_nms_top_n_test, spec.rpn_post_nms_top_n_test, 0

    def head_ops(self, spec: SpecLike, levels: Sequence[tuple[int, int]], *, rois: int | None = None) -> tuple[Op, ...]:
        """RPN convs on every level (weights shared), then the box head's linears on ``rois`` rows."""
        c, k, r = spec.fpn_channels, spec.num_classes, spec.representation_size
        rois = spec.rpn_post_nms_top_n_test if rois is None else rois
        ops = []
        for i, (h, w) in enumerate(levels):
            owns = i == 0
            ops += [
                conv(c, c, 3, 1, h, w, norm="none", owns=owns),
                conv(c, _ANCHORS, 1, 1, h, w, norm="none", act="none", owns=owns),
                conv(c, 4 * _ANCHORS, 1, 1, h, w, norm="none", act="none", owns=owns),
            ]
        ops += [
            linear(rois, c * ROI_SIZE**2, r, "relu"),
            linear(rois, r, r, "relu"),
            linear(rois, r, k, "none"),
            linear(rois, r, 4 * k, "none"),
        ]
        return tuple(ops) + self.roi_head_ops(spec, rois)

    def roi_head_ops(self, spec: SpecLike, rois: int) -> tuple[Op, ...]:
        """Ops of the heads that run on the detections (untimed: in the latency table's fixed entry)."""
        return ()

    def kd_taps(self, student: nn.Module) -> dict[str, KDTap]:
        heads = student.roi_heads
        return {"rois": (heads.box_roi_pool, "inputs"), "logits": (heads.box_predictor, "output")}

    def kd_logits(self, taps: dict[str, Any], teacher: nn.Module, features: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Class logits of the student's sampled proposals, and the teacher's on the same proposals."""
        return taps["logits"][0], self._teacher_box_outputs(taps, teacher, features)[0]

    def kd_deltas(self, taps: dict[str, Any], teacher: nn.Module, features: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Per-class box deltas of the student's sampled proposals, and the teacher's on them."""
        return taps["logits"][1], self._teacher_box_outputs(taps, teacher, features)[1]

    @staticmethod
    def _teacher_box_outputs(
        taps: dict[str, Any], teacher: nn.Module, features: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """The teacher's box head on the student's sampled proposals: (class logits, deltas),
        computed once per training step (kept in ``taps`` for the other KD term)."""
        if "teacher_box" not in taps:
            _features, proposals, image_shapes = taps["rois"]
            with torch.no_grad():
                heads = teacher.roi_heads
                pooled = heads.box_roi_pool(features, proposals, image_shapes)
                taps["teacher_box"] = heads.box_predictor(heads.box_head(pooled))
        return taps["teacher_box"]

    def kd_boxes(self, taps: dict[str, Any]) -> list[Tensor]:
        """The sampled proposals the box head scored, per image."""
        return list(taps["rois"][1])


class MaskRCNNFamily(FasterRCNNFamily):
    """torchvision's ``MaskRCNN``: Faster R-CNN plus a 4-conv mask head (``mask_head_width`` wide,
    torchvision's 256 by default) on 14 px RoIs."""

    name = "maskrcnn"
    model_class = MaskRCNN
    head_settings = FasterRCNNFamily.head_settings + ("mask_head_width",)
    target_fields = ("masks",)

    def build(self, spec: SpecLike, backbone: nn.Module, anchors: AnchorGenerator) -> nn.Module:
        kwargs = self._kwargs(spec, anchors)  # the box head first: the order modules draw their random weights
        pool = MultiScaleRoIAlign(self._names(spec), output_size=MASK_ROI_SIZE, sampling_ratio=2)
        width = spec.mask_head_width
        head = MaskRCNNHeads(spec.fpn_channels, [width] * 4, 1)
        predictor = MaskRCNNPredictor(width, width, spec.num_classes)
        return MaskRCNN(
            backbone, num_classes=None, mask_roi_pool=pool, mask_head=head, mask_predictor=predictor, **kwargs
        )

    def read(self, model: nn.Module) -> dict[str, Any]:
        convs = [m for m in model.roi_heads.mask_head.modules() if isinstance(m, nn.Conv2d)]
        if len(convs) != 4 or len({m.out_channels for m in convs}) != 1:
            raise ValueError("mask head is not torchvision's 4-conv MaskRCNNHeads of one width")
        return {**super().read(model), "mask_head_width": int(convs[0].out_channels)}

    def fixed_settings(self, spec: SpecLike) -> tuple[int, int, int]:
        return spec.rpn_pre_nms_top_n_test, spec.rpn_post_nms_top_n_test, spec.mask_head_width

    def roi_head_ops(self, spec: SpecLike, rois: int) -> tuple[Op, ...]:
        s, cin, m, ops = MASK_ROI_SIZE, spec.fpn_channels, spec.mask_head_width, []
        for _ in range(4):
            ops.append(conv(cin, m, 3, 1, s, s, n=rois, norm="none", timed=False))
            cin = m
        ops.append(deconv(m, m, 2, s, s, n=rois))
        ops.append(conv(m, spec.num_classes, 1, 1, 2 * s, 2 * s, n=rois, norm="none", act="none", timed=False))
        return tuple(ops)


class KeypointRCNNFamily(FasterRCNNFamily):
    """torchvision's ``KeypointRCNN``: Faster R-CNN plus an 8-conv keypoint head (512 wide)."""

    name = "keypointrcnn"
    model_class = KeypointRCNN
    head_settings = FasterRCNNFamily.head_settings + ("num_keypoints",)
    target_fields = ("keypoints",)

    def build(self, spec: SpecLike, backbone: nn.Module, anchors: AnchorGenerator) -> nn.Module:
        kwargs = self._kwargs(spec, anchors)
        pool = MultiScaleRoIAlign(self._names(spec), output_size=MASK_ROI_SIZE, sampling_ratio=2)
        return KeypointRCNN(
            backbone, num_classes=None, keypoint_roi_pool=pool, num_keypoints=spec.num_keypoints, **kwargs
        )

    def read(self, model: nn.Module) -> dict[str, Any]:
        return {
            **super().read(model),
            "num_keypoints": int(model.roi_heads.keypoint_predictor.kps_score_lowres.out_channels),
        }

    def roi_head_ops(self, spec: SpecLike, rois: int) -> tuple[Op, ...]:
        s, cin, ops = MASK_ROI_SIZE, spec.fpn_channels, []
        for _ in range(8):
            ops.append(conv(cin, 512, 3, 1, s, s, n=rois, norm="none", timed=False))
            cin = 512
        ops.append(deconv(512, spec.num_keypoints, 4, s, s, n=rois))
        return tuple(ops)
