from __future__ import annotations

import pytest

from jdnas_sdk import build_detector, detector_cost, standard_arch

from .conftest import tiny_spec


@pytest.mark.parametrize("family", ["fasterrcnn", "maskrcnn", "keypointrcnn", "retinanet", "fcos"])
@pytest.mark.parametrize("backbone", ["resnet34", "resnext50_32x4d"])
def test_params_equal_the_built_model(family: str, backbone: str) -> None:
    spec = tiny_spec(family, backbone=backbone)
    model = build_detector(spec)
    cost = detector_cost(spec, standard_arch(backbone))
    assert cost.total_params == sum(p.numel() for p in model.parameters())
    assert cost.params["backbone"] == sum(p.numel() for p in model.backbone.body.parameters())


def test_macs_match_published_resnet_figures() -> None:
    # torchvision's model cards: ResNet-18 1.81 GFLOPs, ResNet-50 4.09, ResNeXt-50 32x4d 4.23 (MACs, 224 px)
    spec = tiny_spec("retinanet")
    for backbone, gmacs in (("resnet18", 1.81), ("resnet50", 4.09), ("resnext50_32x4d", 4.23)):
        macs = detector_cost(spec, standard_arch(backbone), input_size=(224, 224)).macs["backbone"]
        assert macs / 1e9 == pytest.approx(gmacs, abs=0.01)


def test_macs_grow_with_input_size() -> None:
    spec = tiny_spec("fasterrcnn")
    small = detector_cost(spec, standard_arch("resnet18"), input_size=(128, 128)).total_macs
    large = detector_cost(spec, standard_arch("resnet18"), input_size=(256, 256)).total_macs
    assert 2 < large / small < 4.5
