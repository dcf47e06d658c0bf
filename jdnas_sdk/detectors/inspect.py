"""Read a :class:`DetectorSpec` off a torchvision detector, or say clearly why it cannot be read.

A model built by :func:`build_detector` carries its spec; any other torchvision detector is
inspected, and the result is checked by rebuilding it and comparing every parameter and buffer
name and shape, so a spec is only returned when it rebuilds the same model.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, KeypointRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops.misc import FrozenBatchNorm2d

from ..arch import BACKBONES, FAMILIES, DetectorSpec
from ..errors import ArchError, UnsupportedModelError
from .build import SPEC_ATTR, build_detector

__all__ = ["spec_of"]

# (block, blocks per stage, groups, width_per_group) of each supported torchvision ResNet.
_RESNETS: dict[str, tuple[type[nn.Module], tuple[int, ...], int, int]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), 1, 64),
    "resnet34": (BasicBlock, (3, 4, 6, 3), 1, 64),
    "resnet50": (Bottleneck, (3, 4, 6, 3), 1, 64),
    "resnet101": (Bottleneck, (3, 4, 23, 3), 1, 64),
    "resnet152": (Bottleneck, (3, 8, 36, 3), 1, 64),
    "resnext50_32x4d": (Bottleneck, (3, 4, 6, 3), 32, 4),
    "resnext101_32x8d": (Bottleneck, (3, 4, 23, 3), 32, 8),
    "wide_resnet50_2": (Bottleneck, (3, 4, 6, 3), 1, 128),
    "wide_resnet101_2": (Bottleneck, (3, 4, 23, 3), 1, 128),
}
assert tuple(_RESNETS) == BACKBONES

_CLASSES: tuple[tuple[type[nn.Module], str], ...] = (
    (KeypointRCNN, "keypointrcnn"),  # subclasses of FasterRCNN first
    (MaskRCNN, "maskrcnn"),
    (FasterRCNN, "fasterrcnn"),
    (RetinaNet, "retinanet"),
    (FCOS, "fcos"),
)

_SUPPORTED = (
    f"supported: torchvision {', '.join(FAMILIES.values())} over a ResNet-FPN backbone "
    f"({', '.join(BACKBONES)})"
)


def _unsupported(what: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"{what}; {_SUPPORTED}")


def _family(model: nn.Module) -> str:
    for cls, name in _CLASSES:
        if isinstance(model, cls):
            return name
    raise _unsupported(f"model class {type(model).__module__}.{type(model).__qualname__} is not a supported detector")


def _backbone_name(body: nn.Module) -> str:
    layers = [getattr(body, f"layer{i}", None) for i in range(1, 5)]
    present = [layer for layer in layers if isinstance(layer, nn.Sequential)]
    if not present or not hasattr(body, "conv1"):
        raise _unsupported(f"backbone body {type(body).__qualname__} is not a torchvision ResNet")
    first = present[0][0]
    block = type(first)
    if block not in (BasicBlock, Bottleneck):
        raise _unsupported(f"backbone block {block.__module__}.{block.__qualname__} is not a torchvision ResNet block")
    depths = tuple(len(layer) for layer in present)
    groups = first.conv2.groups
    width = first.conv1.out_channels * 64 // (64 * groups) if block is Bottleneck else 64
    for name, (b, d, g, w) in _RESNETS.items():
        if b is block and d[: len(depths)] == depths and g == groups and w == width:
            return name
    raise _unsupported(
        f"ResNet body with {block.__name__} blocks, stage depths {depths}, groups {groups}, width {width} "
        "matches no standard torchvision ResNet (custom architectures come with the morphism API)"
    )


def _anchor_base(model: nn.Module, family: str) -> tuple[int, ...] | None:
    generator = model.rpn.anchor_generator if family in ("fasterrcnn", "maskrcnn", "keypointrcnn") else model.anchor_generator
    if family == "fcos":
        return None
    return tuple(int(level[0]) for level in generator.sizes)


def _postprocess(model: nn.Module, family: str) -> dict[str, float | int]:
    if family in ("fasterrcnn", "maskrcnn", "keypointrcnn"):
        heads = model.roi_heads
        return dict(score_thresh=heads.score_thresh, nms_thresh=heads.nms_thresh,
                    detections_per_img=heads.detections_per_img)
    return dict(score_thresh=model.score_thresh, nms_thresh=model.nms_thresh,
                detections_per_img=model.detections_per_img)


def _num_classes(model: nn.Module, family: str) -> int:
    if family in ("fasterrcnn", "maskrcnn", "keypointrcnn"):
        predictor = model.roi_heads.box_predictor
        if not hasattr(predictor, "cls_score"):
            raise _unsupported(f"box predictor {type(predictor).__qualname__} is not torchvision's FastRCNNPredictor")
        return int(predictor.cls_score.out_features)
    return int(model.head.classification_head.num_classes)


def spec_of(model: nn.Module) -> DetectorSpec:
    """The spec that rebuilds ``model``; raises :class:`UnsupportedModelError` when none does."""
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"expected a torch.nn.Module detector, got {type(model).__name__}; {_SUPPORTED}")
    carried = getattr(model, SPEC_ATTR, None)
    if isinstance(carried, DetectorSpec):
        return carried
    family = _family(model)
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, BackboneWithFPN):
        raise _unsupported(f"{type(model).__name__}.backbone is {type(backbone).__qualname__}, not a BackboneWithFPN")
    body = backbone.body
    name = _backbone_name(body)
    returned = tuple(sorted(int(layer[len("layer"):]) for layer in body.return_layers))
    trainable = _trainable_layers(body)
    uses_frozen = any(isinstance(m, FrozenBatchNorm2d) for m in body.modules())
    try:
        spec = DetectorSpec(
            family=family,
            backbone=name,
            num_classes=_num_classes(model, family),
            min_size=int(max(model.transform.min_size)),
            max_size=int(model.transform.max_size),
            fpn_channels=int(backbone.out_channels),
            returned_layers=returned,
            trainable_layers=trainable,
            frozen_bn=uses_frozen,
            anchor_sizes=_anchor_base(model, family),
            representation_size=_representation_size(model, family),
            num_keypoints=_num_keypoints(model, family),
            **_postprocess(model, family),
        )
    except ArchError as exc:
        raise _unsupported(f"{type(model).__name__} has settings outside the supported space ({exc})") from exc
    _check_rebuild(model, spec)
    return spec


def _trainable_layers(body: nn.Module) -> int:
    order = ["conv1", "layer1", "layer2", "layer3", "layer4"]
    trainable = {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad}
    count = 0
    for layer in reversed(order):
        if layer not in trainable and any(n.startswith(layer + ".") for n, _ in body.named_parameters()):
            break
        count += 1
    return count


def _representation_size(model: nn.Module, family: str) -> int:
    if family not in ("fasterrcnn", "maskrcnn", "keypointrcnn"):
        return 1024
    fc6 = getattr(model.roi_heads.box_head, "fc6", None)
    if not isinstance(fc6, nn.Linear):
        raise _unsupported(f"box head {type(model.roi_heads.box_head).__qualname__} is not torchvision's TwoMLPHead (v2 detectors are not supported yet)")
    return int(fc6.out_features)


def _num_keypoints(model: nn.Module, family: str) -> int:
    if family != "keypointrcnn":
        return 17
    return int(model.roi_heads.keypoint_predictor.kps_score_lowres.out_channels)


def _generator(model: nn.Module) -> nn.Module:
    return model.rpn.anchor_generator if hasattr(model, "rpn") else model.anchor_generator


def _check_rebuild(model: nn.Module, spec: DetectorSpec) -> None:
    rebuilt_model = build_detector(spec)
    ours, theirs = _generator(rebuilt_model), _generator(model)
    if (tuple(map(tuple, ours.sizes)), tuple(map(tuple, ours.aspect_ratios))) != (
        tuple(map(tuple, theirs.sizes)), tuple(map(tuple, theirs.aspect_ratios))
    ):
        raise _unsupported(
            f"anchor generator (sizes {theirs.sizes}, aspect ratios {theirs.aspect_ratios}) is not "
            f"the family's standard layout (sizes {ours.sizes}, aspect ratios {ours.aspect_ratios})"
        )
    rebuilt = rebuilt_model.state_dict()
    found = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wanted = {k: tuple(v.shape) for k, v in rebuilt.items()}
    if found == wanted:
        return
    extra = sorted(set(found) - set(wanted))[:3]
    missing = sorted(set(wanted) - set(found))[:3]
    shapes = [k for k in set(found) & set(wanted) if found[k] != wanted[k]][:3]
    raise _unsupported(
        f"{type(model).__name__} differs from the standard {spec.family}/{spec.backbone} layout "
        f"(unexpected {extra}, missing {missing}, other shapes {shapes})"
    )
