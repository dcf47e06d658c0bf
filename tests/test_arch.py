from __future__ import annotations

import pytest

from jdnas_sdk import ArchError, DetectorSpec
from jdnas_sdk.arch import BACKBONES, FAMILIES


def test_spec_round_trips_through_dict() -> None:
    spec = DetectorSpec(
        family="retinanet",
        backbone="resnet34",
        num_classes=5,
        min_size=256,
        max_size=320,
        anchor_sizes=(16, 32, 64, 128, 256),
        category_ids=(3, 7, 9, 11),
        class_names=("a", "b", "c", "d"),
    )
    assert DetectorSpec.from_dict(spec.to_dict()) == spec
    assert spec.returned_layers == (2, 3, 4) and spec.num_levels == 5
    assert spec.category_id(2) == 7


def test_default_returned_layers_follow_torchvision() -> None:
    assert DetectorSpec(family="fasterrcnn", backbone="resnet18", num_classes=3).returned_layers == (1, 2, 3, 4)
    assert DetectorSpec(family="fcos", backbone="resnet18", num_classes=3).returned_layers == (2, 3, 4)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"family": "ssd"}, "unknown detector family"),
        ({"backbone": "mobilenet_v3"}, "unknown backbone"),
        ({"num_classes": 1}, "num_classes must be >= 2"),
        ({"min_size": 400, "max_size": 300}, "min_size <= max_size"),
        ({"returned_layers": (3, 2)}, "returned_layers"),
        ({"anchor_sizes": (16, 32)}, "one positive size per pyramid level"),
        ({"category_ids": (1,)}, "category_ids needs"),
        ({"score_thresh": 2.0}, "score_thresh"),
        ({"num_classes": "9"}, "num_classes must be an integer"),
        ({"family": "fcos", "fpn_channels": 48}, "multiple of 32"),
        ({"min_size": 10**6, "max_size": 10**6}, "max_size <= 16384"),  # a damaged file: not a 12 TB allocation
        ({"num_classes": 6, "class_names": 5}, "class_names must be a list of strings, got 5"),
        ({"num_classes": 4, "class_names": "abc"}, "class_names must be a list of strings"),
    ],
)
def test_invalid_specs_name_the_problem(changes: dict[str, object], message: str) -> None:
    values: dict[str, object] = dict(family="fasterrcnn", backbone="resnet18", num_classes=4)
    values.update(changes)
    with pytest.raises(ArchError, match=message):
        DetectorSpec(**values)  # type: ignore[arg-type]


def test_fcos_rejects_anchor_sizes() -> None:
    with pytest.raises(ArchError, match="fcos"):
        DetectorSpec(family="fcos", backbone="resnet18", num_classes=3, anchor_sizes=(8, 16, 32, 64, 128))


def test_from_dict_rejects_unknown_and_missing_fields() -> None:
    with pytest.raises(ArchError, match="unknown detector spec fields"):
        DetectorSpec.from_dict({"family": "fcos", "backbone": "resnet18", "num_classes": 3, "bogus": 1})
    with pytest.raises(ArchError, match="lacks required"):
        DetectorSpec.from_dict({"family": "fcos"})
    with pytest.raises(ArchError, match="mapping"):
        DetectorSpec.from_dict(["fcos"])


def test_supported_names() -> None:
    assert set(FAMILIES) == {"fasterrcnn", "maskrcnn", "keypointrcnn", "retinanet", "fcos"}
    assert "resnext101_32x8d" in BACKBONES and "wide_resnet50_2" in BACKBONES
