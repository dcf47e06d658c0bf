"""Build torchvision detectors from a :class:`DetectorSpec`, with no weight downloads.

The modules and parameter names are torchvision's own (``backbone.body.layer1.0.conv1.weight``,
``backbone.fpn.inner_blocks.0.0.weight``, ``rpn.head...``), so a state dict from a torchvision
``*_resnet50_fpn`` detector loads into the model built from its spec and vice versa.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, KeypointRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from ..arch import Arch, DetectorSpec, standard_arch
from .resnet import resnet_body

__all__ = ["build_detector", "thaw", "resnet_fpn_backbone", "anchor_generator", "RCNN_FAMILIES", "SPEC_ATTR", "ARCH_ATTR"]

#: Families whose heads pool regions of interest (and whose extra FPN level is a max-pool).
RCNN_FAMILIES: frozenset[str] = frozenset({"fasterrcnn", "maskrcnn", "keypointrcnn"})

#: Attributes under which a built detector carries its spec and arch (plain values, not modules).
SPEC_ATTR = "jdnas_spec"
ARCH_ATTR = "jdnas_arch"


def thaw(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with trainable ``BatchNorm2d`` where it has ``FrozenBatchNorm2d``.

    Pretrained torchvision detectors freeze their norms; fine-tuning a student needs them live.
    The copy computes the same function in eval mode; ``model`` is left as it is.
    """
    from .inspect import describe  # inspect imports this module

    spec, arch = describe(model)
    thawed = build_detector(replace(spec, frozen_bn=False, trainable_layers=5), arch)
    state = model.state_dict()
    missing = thawed.load_state_dict(state, strict=False).missing_keys
    if any(not key.endswith("num_batches_tracked") for key in missing):
        raise AssertionError(f"thaw lost weights: {missing[:3]}")
    thawed.train(model.training)
    return thawed


def _norm_layer(spec: DetectorSpec) -> Callable[..., nn.Module]:
    return FrozenBatchNorm2d if spec.frozen_bn else nn.BatchNorm2d


def resnet_fpn_backbone(spec: DetectorSpec, arch: Arch | None = None) -> BackboneWithFPN:
    """ResNet body of ``arch`` + FPN, as torchvision's ``_resnet_fpn_extractor`` makes them.

    ``arch`` defaults to the standard shape of ``spec.backbone``.
    """
    arch = arch or standard_arch(spec.backbone)
    body = resnet_body(arch, _norm_layer(spec))
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][: spec.trainable_layers]
    if spec.trainable_layers == 5:
        trainable.append("bn1")
    for name, parameter in body.named_parameters():
        if not any(name.startswith(layer) for layer in trainable):
            parameter.requires_grad_(False)
    channels = spec.fpn_channels
    extra = LastLevelMaxPool() if spec.family in RCNN_FAMILIES else LastLevelP6P7(channels, channels)
    return_layers = {f"layer{k}": str(v) for v, k in enumerate(spec.returned_layers)}
    in_channels = [arch.widths[k - 1] for k in spec.returned_layers]
    return BackboneWithFPN(body, return_layers, in_channels, channels, extra_blocks=extra)


def _level_strides(spec: DetectorSpec) -> list[int]:
    strides = [2 ** (k + 1) for k in spec.returned_layers]
    while len(strides) < spec.num_levels:
        strides.append(strides[-1] * 2)
    return strides


def anchor_generator(spec: DetectorSpec) -> AnchorGenerator:
    """The anchor generator torchvision uses for the family, with the spec's base sizes."""
    if spec.family == "fcos":
        return AnchorGenerator(tuple((s,) for s in _level_strides(spec)), ((1.0,),) * spec.num_levels)
    base = spec.anchor_sizes or tuple(32 * 2**k for k in range(spec.num_levels))
    if spec.family == "retinanet":
        sizes = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in base)
    else:
        sizes = tuple((x,) for x in base)
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))


def _postprocess_kwargs(spec: DetectorSpec) -> dict[str, float | int]:
    prefix = "box_" if spec.family in RCNN_FAMILIES else ""
    out: dict[str, float | int] = {}
    for name in ("score_thresh", "nms_thresh", "detections_per_img"):
        value = getattr(spec, name)
        if value is not None:
            out[prefix + name] = value
    return out


def build_detector(spec: DetectorSpec, arch: Arch | None = None) -> nn.Module:
    """A randomly initialised torchvision detector for ``spec`` with an ``arch`` backbone (train mode, CPU).

    ``arch`` defaults to the standard shape of ``spec.backbone``. Spec and arch travel with the
    model (``model.jdnas_spec``, ``model.jdnas_arch``) so that saving needs nothing else.
    """
    arch = arch or standard_arch(spec.backbone)
    backbone = resnet_fpn_backbone(spec, arch)
    common = dict(min_size=spec.min_size, max_size=spec.max_size, **_postprocess_kwargs(spec))
    anchors = anchor_generator(spec)
    model: nn.Module
    if spec.family in RCNN_FAMILIES:
        names = [str(i) for i in range(len(spec.returned_layers))]
        resolution = 7
        box_head = TwoMLPHead(spec.fpn_channels * resolution**2, spec.representation_size)
        rcnn = dict(
            rpn_anchor_generator=anchors,
            box_roi_pool=MultiScaleRoIAlign(names, output_size=resolution, sampling_ratio=2),
            box_head=box_head,
            box_predictor=FastRCNNPredictor(spec.representation_size, spec.num_classes),
            **common,
        )
        if spec.family == "fasterrcnn":
            model = FasterRCNN(backbone, num_classes=None, **rcnn)
        elif spec.family == "maskrcnn":
            pool = MultiScaleRoIAlign(names, output_size=14, sampling_ratio=2)
            predictor = MaskRCNNPredictor(256, 256, spec.num_classes)
            model = MaskRCNN(backbone, num_classes=None, mask_roi_pool=pool, mask_predictor=predictor, **rcnn)
        else:
            pool = MultiScaleRoIAlign(names, output_size=14, sampling_ratio=2)
            model = KeypointRCNN(
                backbone, num_classes=None, keypoint_roi_pool=pool, num_keypoints=spec.num_keypoints, **rcnn
            )
    elif spec.family == "retinanet":
        model = RetinaNet(backbone, spec.num_classes, anchor_generator=anchors, **common)
    else:
        model = FCOS(backbone, spec.num_classes, anchor_generator=anchors, **common)
    setattr(model, SPEC_ATTR, spec)
    setattr(model, ARCH_ATTR, arch)
    return model

