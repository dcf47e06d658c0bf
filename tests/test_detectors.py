from __future__ import annotations

import pytest
import torch
import torchvision.models.detection as tvd
from torch import nn

from jdnas_sdk import BACKBONES, UnsupportedModelError, build_detector, describe, spec_of
from jdnas_sdk.detectors.build import resnet_fpn_backbone

from .conftest import tiny_spec

TORCHVISION_R50 = {
    "fasterrcnn": (tvd.fasterrcnn_resnet50_fpn, 91),
    "maskrcnn": (tvd.maskrcnn_resnet50_fpn, 91),
    "keypointrcnn": (tvd.keypointrcnn_resnet50_fpn, 2),
    "retinanet": (tvd.retinanet_resnet50_fpn, 91),
    "fcos": (tvd.fcos_resnet50_fpn, 91),
}


@pytest.mark.parametrize("family", sorted(TORCHVISION_R50))
def test_torchvision_detector_round_trips_through_its_spec(family: str) -> None:
    """spec_of(torchvision model) -> build -> load weights gives the same outputs."""
    builder, classes = TORCHVISION_R50[family]
    torch.manual_seed(0)
    reference = builder(weights=None, weights_backbone=None, num_classes=classes, min_size=64, max_size=64).eval()
    spec = spec_of(reference)
    assert (spec.family, spec.backbone, spec.num_classes, spec.trainable_layers) == (family, "resnet50", classes, 5)
    rebuilt = build_detector(spec)
    rebuilt.load_state_dict(reference.state_dict())
    rebuilt.eval()
    # random heads give no boxes above the threshold; lower it so there is something to compare
    for model in (reference, rebuilt):
        target = model.roi_heads if hasattr(model, "roi_heads") else model
        target.score_thresh = 0.0
    image = [torch.rand(3, 64, 72, generator=torch.Generator().manual_seed(1))]
    with torch.no_grad():
        ours, theirs = rebuilt(image)[0], reference(image)[0]
    assert ours.keys() == theirs.keys() and ours["boxes"].shape[0] > 0
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_builds_and_is_recognised(backbone: str) -> None:
    spec = tiny_spec("retinanet", backbone=backbone)
    body = resnet_fpn_backbone(spec)
    assert body.out_channels == spec.fpn_channels
    model = build_detector(spec)
    del model.jdnas_spec  # force inspection rather than the carried spec
    assert spec_of(model) == spec


@pytest.mark.parametrize("family", ["fasterrcnn", "maskrcnn", "keypointrcnn", "retinanet", "fcos"])
def test_tiny_detectors_run_in_train_and_eval_mode(family: str) -> None:
    model = build_detector(tiny_spec(family, num_classes=3))
    target = {"boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0]]), "labels": torch.tensor([1])}
    if family == "maskrcnn":
        target["masks"] = torch.zeros(1, 96, 96, dtype=torch.uint8)
        target["masks"][0, 12:60, 10:50] = 1
    if family == "keypointrcnn":
        target["keypoints"] = torch.tensor([[[20.0, 30.0, 1.0]] * 17])
    losses = model([torch.rand(3, 96, 96)], [target])
    assert all(torch.isfinite(v) for v in losses.values()) and losses
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 96, 96)])
    assert {"boxes", "labels", "scores"} <= set(out[0])


def test_trainable_layers_freeze_the_stem() -> None:
    model = build_detector(tiny_spec(trainable_layers=2))
    frozen = {n for n, p in model.backbone.body.named_parameters() if not p.requires_grad}
    assert any(n.startswith("layer2") for n in frozen) and not any(n.startswith("layer4") for n in frozen)
    assert spec_of(model).trainable_layers == 2


class Custom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: tvd.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None), "SSD"),
        (lambda: tvd.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None), "torchvision ResNet"),
        (lambda: tvd.fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None), "TwoMLPHead"),
        (lambda: Custom(), "Custom"),
        (  # another normalisation: the transform's repr spans lines; the refusal stays one line
            lambda: tvd.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, image_mean=[0.5] * 3),
            r"module 'transform' is GeneralizedRCNNTransform\( Normalize\(mean=\[0.5, 0.5, 0.5\]",
        ),
        (lambda: "not a model", "torch.nn.Module"),
    ],
)
def test_models_outside_the_space_are_refused_clearly(make, needle: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnsupportedModelError, match=needle) as info:
        spec_of(make())
    assert "supported:" in str(info.value) and "\n" not in str(info.value)


def test_custom_anchor_layout_is_refused() -> None:
    model = tvd.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3)
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    model.anchor_generator = AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((1.0,),) * 5)
    with pytest.raises(UnsupportedModelError):
        spec_of(model)


@pytest.mark.parametrize(("index", "backbone"), list(enumerate(BACKBONES)))
def test_user_built_torchvision_detectors_round_trip(index: int, backbone: str) -> None:
    """Detectors assembled with torchvision's own helpers, any backbone, frozen or not."""
    from torchvision.models import resnet as tv_resnet
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    from torchvision.ops.misc import FrozenBatchNorm2d

    frozen = index % 2 == 1
    torch.manual_seed(index)
    body = getattr(tv_resnet, backbone)(weights=None, norm_layer=FrozenBatchNorm2d if frozen else nn.BatchNorm2d)
    family = ["fasterrcnn", "retinanet", "fcos", "maskrcnn", "keypointrcnn"][index % 5]
    if family in ("retinanet", "fcos"):
        fpn = _resnet_fpn_extractor(
            body, 2 if frozen else 5, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256)
        )
        cls = tvd.RetinaNet if family == "retinanet" else tvd.FCOS
        reference = cls(fpn, num_classes=4, min_size=64, max_size=64)
    else:
        fpn = _resnet_fpn_extractor(body, 2 if frozen else 5)
        cls = {"fasterrcnn": tvd.FasterRCNN, "maskrcnn": tvd.MaskRCNN, "keypointrcnn": tvd.KeypointRCNN}[family]
        reference = cls(fpn, num_classes=4 if family != "keypointrcnn" else 2, min_size=64, max_size=64)
    reference.eval()
    spec, arch = describe(reference)
    assert (spec.family, spec.backbone, spec.frozen_bn, spec.trainable_layers) == (
        family,
        backbone,
        frozen,
        2 if frozen else 5,
    )
    rebuilt = build_detector(spec, arch)
    rebuilt.load_state_dict(reference.state_dict())
    rebuilt.eval()
    frozen_params = {n for n, p in rebuilt.named_parameters() if not p.requires_grad}
    assert frozen_params == {n for n, p in reference.named_parameters() if not p.requires_grad}
    image = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(2))]
    with torch.no_grad():
        a = rebuilt.backbone(rebuilt.transform(image)[0].tensors)
        b = reference.backbone(reference.transform(image)[0].tensors)
        assert all(torch.equal(a[k], b[k]) for k in b)
        assert rebuilt(image)[0]["scores"].shape == reference(image)[0]["scores"].shape


def test_custom_backbone_is_refused() -> None:
    class Tiny(nn.Module):
        out_channels = 8

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    model = tvd.FasterRCNN(Tiny(), num_classes=3)
    with pytest.raises(UnsupportedModelError, match="not a BackboneWithFPN"):
        describe(model)
