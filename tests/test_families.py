"""Detector families: one home each, asked by every stage; the lowering they describe heads with."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

from jdnas_sdk import ArchError, UnsupportedModelError, build_detector, detector_cost, standard_arch
from jdnas_sdk.families import REGISTRY, family_of, get_family
from jdnas_sdk.latency import OpKey
from jdnas_sdk.lowering import levels, lower_ops, walk

from .conftest import tiny_spec

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["fasterrcnn", "maskrcnn", "keypointrcnn", "retinanet", "fcos"]


def test_registry_holds_the_five_families_and_names_them_on_a_miss() -> None:
    assert list(REGISTRY) == NAMES
    with pytest.raises(ArchError, match="unknown detector family 'ssd'; supported: fasterrcnn, maskrcnn"):
        get_family("ssd")


@pytest.mark.parametrize("name", NAMES)
def test_family_of_a_built_model_is_its_own(name: str) -> None:
    spec = tiny_spec(name)
    model = build_detector(spec)
    family = family_of(model)
    assert family is get_family(name) is family_of(spec) and isinstance(model, family.model_class)
    assert family.is_two_stage == hasattr(model, "roi_heads")
    assert spec.num_levels == len(spec.returned_layers) + family.extra_levels
    with torch.no_grad():
        features = model.eval().backbone(torch.zeros(1, 3, 96, 96))
    assert len(features) == spec.num_levels
    assert [tuple(f.shape[-2:]) for f in features.values()] == list(levels(spec, 96, 96))


def test_a_model_of_no_family_is_refused() -> None:
    with pytest.raises(UnsupportedModelError, match="supported: torchvision FasterRCNN"):
        family_of(nn.Linear(2, 2))


@pytest.mark.parametrize("name", NAMES)
def test_head_ops_own_exactly_the_head_parameters_and_time_only_table_kernels(name: str) -> None:
    spec = tiny_spec(name)
    model = build_detector(spec)
    heads = dict(lower_ops(spec, standard_arch("resnet18"), 96, 96))["heads"]
    owned = sum(op.params for op in heads)
    head_modules = [model.rpn, model.roi_heads] if hasattr(model, "roi_heads") else [model.head]
    assert owned == sum(p.numel() for m in head_modules for p in m.parameters())
    for op in heads:
        if op.timed:
            assert str(OpKey.parse(str(OpKey(op.kind, op.values)))) == str(OpKey(op.kind, op.values))
    untimed = [op for op in heads if not op.timed]
    assert bool(untimed) == bool(get_family(name).target_fields)  # only the mask and keypoint heads run in fixed


def test_walk_visits_every_block_once_with_the_resnet_strides() -> None:
    arch = standard_arch("resnet50")
    blocks = walk(arch, 224, 224)
    assert len(blocks) == 16 and [i for i, b in enumerate(blocks) if b[5] == 2] == [3, 7, 13]  # stages 2-4 start
    assert [b[4] for b in blocks] == [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
    assert blocks[0][6:] == (56, 56) and blocks[-1][6:] == (7, 7) and blocks[3][6:] == (56, 56)


def test_flops_are_two_per_mac() -> None:
    cost = detector_cost(tiny_spec("retinanet"), standard_arch("resnet18"), input_size=(96, 96))
    assert cost.total_flops == 2 * cost.total_macs and cost.flops["heads"] == 2 * cost.macs["heads"]


def test_family_checks_name_the_fix() -> None:
    with pytest.raises(ArchError, match="anchor_sizes does not apply to fcos"):
        tiny_spec("fcos", anchor_sizes=(8, 16, 32, 64, 128))
    # settings of heads a family lacks fall back to their defaults: equal detectors, equal specs
    assert tiny_spec("retinanet", representation_size=77).representation_size == 1024


def test_no_module_outside_the_family_homes_tests_a_family_name() -> None:
    """Every stage asks the family object; only jdnas_sdk/families (and the CLI, for now) may compare names."""
    offenders = []
    for path in (ROOT / "jdnas_sdk").rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("jdnas_sdk/families/") or rel.startswith("jdnas_sdk/cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(
                (isinstance(n, ast.Attribute) and n.attr == "family") or (isinstance(n, ast.Name) and n.id == "family")
                for n in [node.left, *node.comparators]
            ):
                offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, offenders
