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


def test_the_result_counts_a_student_at_its_own_resize_not_the_image_fed() -> None:
    """compress feeds base and student the base's image; a student with a smaller ``min_size``
    resizes it down first, so its MACs are those of the smaller map (were the fed image's: 4x)."""
    from dataclasses import replace
    from types import SimpleNamespace

    from jdnas_sdk.compress import _metrics
    from jdnas_sdk.student import Heads, Student

    spec = tiny_spec("retinanet", min_size=128, max_size=128)
    arch = standard_arch("resnet18")
    small = Student(arch, replace(Heads.of(spec), min_size=64, max_size=64)).spec(spec)
    row = SimpleNamespace(ap=0.5, ap50=0.6, ap75=0.4, latency_ms=1.0)
    fed = (128, 128)
    assert _metrics(row, arch, small, fed)["macs"] == detector_cost(small, arch, input_size=(64, 64)).total_macs
    assert _metrics(row, arch, spec, fed)["macs"] == detector_cost(spec, arch, input_size=(128, 128)).total_macs
    assert 3.5 < detector_cost(spec, arch, input_size=(128, 128)).total_macs / _metrics(row, arch, small, fed)["macs"]
