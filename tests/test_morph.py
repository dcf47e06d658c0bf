from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from torch import nn

from jdnas_sdk import ArchError, build_detector, describe, detector_cost, load_detector, save_detector, standard_arch
from jdnas_sdk.arch import BACKBONES
from jdnas_sdk.data import CocoDetection
from jdnas_sdk.detectors import thaw
from jdnas_sdk.morph import (
    AddBlock,
    MoveBoundary,
    RemoveBlock,
    SetBlockWidth,
    SetStageWidth,
    apply_action,
    available_actions,
    morph,
    sample_arch,
)

from .conftest import assert_loss_falls, tiny_spec

FAMILIES = ["fasterrcnn", "maskrcnn", "keypointrcnn", "retinanet", "fcos"]
# every family on resnet18, every backbone on some family
CASES = [(f, "resnet18") for f in FAMILIES] + [(FAMILIES[i % 5], b) for i, b in enumerate(BACKBONES) if b != "resnet18"]


def _randomised(family: str, backbone: str, seed: int = 0, **kw: object) -> nn.Module:
    """A tiny detector whose norms hold non-trivial statistics, in eval mode."""
    torch.manual_seed(seed)
    model = build_detector(tiny_spec(family, backbone=backbone, **kw))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


IMAGE = [torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(7))]


def _features(model: nn.Module) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model.backbone(model.transform(IMAGE)[0].tensors)


def _assert_same_function(student: nn.Module, parent: nn.Module, tol: float = 1e-5) -> None:
    """FPN outputs equal up to ``tol`` relative to their scale (float sums reorder when widened)."""
    a, b = _features(student), _features(parent)
    for key in b:
        scale = b[key].abs().max().clamp(min=1.0)
        assert ((a[key] - b[key]).abs().max() / scale).item() < tol, key


@pytest.mark.parametrize(("family", "backbone"), CASES)
def test_add_and_widen_preserve_the_function(family: str, backbone: str) -> None:
    parent = _randomised(family, backbone)
    before = {k: v.clone() for k, v in parent.state_dict().items()}
    arch = describe(parent)[1]
    s2 = arch.stages[1]
    actions = [
        AddBlock(2, s2.depth - 1),
        SetStageWidth(3, arch.stages[2].width * 3 // 2),
        SetBlockWidth(2, 0, s2.mids[0] * 2),
        SetStageWidth(1, arch.stages[0].width + 16),
    ]
    student = morph(parent, actions).eval()
    _assert_same_function(student, parent)
    s_arch = describe(student)[1]
    assert s_arch.depths[1] == s2.depth + 1 and s_arch.stages[1].mids[0] == s2.mids[0] * 2
    assert s_arch.widths[2] == arch.stages[2].width * 3 // 2
    for key, value in parent.state_dict().items():  # the parent is untouched
        assert torch.equal(value, before[key]), key
    if family in ("retinanet", "fasterrcnn"):  # whole detector, post-processing included
        for m in (parent, student):
            (m.roi_heads if hasattr(m, "roi_heads") else m).score_thresh = 0.0
        with torch.no_grad():
            added = morph(parent, [AddBlock(3, 0)]).eval()
            for m in (added,):
                (m.roi_heads if hasattr(m, "roi_heads") else m).score_thresh = 0.0
            ours, theirs = added(IMAGE)[0], parent(IMAGE)[0]
        assert theirs["boxes"].numel() and torch.allclose(ours["boxes"], theirs["boxes"], atol=1e-4)
        assert torch.allclose(ours["scores"], theirs["scores"], atol=1e-5)


def _zero(norm: nn.Module, channels: list[int]) -> None:
    with torch.no_grad():
        norm.weight[channels] = 0
        norm.bias[channels] = 0


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", "resnext50_32x4d"])
def test_pruning_zero_importance_channels_keeps_the_function(backbone: str) -> None:
    parent = _randomised("retinanet", backbone)
    body = parent.backbone.body
    arch = describe(parent)[1]
    # a block's mid channels: zero k channels in every mid space (same in-group slots for ResNeXt)
    block = body.layer2[1]
    groups, mid = arch.groups, arch.stages[1].mids[1]
    per = mid // groups
    slots = [0, per - 1] if per > 2 else [0]
    chans = [g * per + s for g in range(groups) for s in slots]
    _zero(block.bn1, chans)
    if hasattr(block, "bn3"):
        _zero(block.bn2, chans)
    # a stage's stream: zero 8 channels in every writer of stage 3 (blocks' last norms, projection)
    width = arch.stages[2].width
    stream = list(range(width - 8, width))
    for b in body.layer3:
        _zero(b.bn3 if hasattr(b, "bn3") else b.bn2, stream)
    _zero(body.layer3[0].downsample[1], stream)
    student = morph(parent, [SetBlockWidth(2, 1, mid - len(chans)), SetStageWidth(3, width - 8)], multiple=1).eval()
    assert describe(student)[1].stages[2].width == width - 8
    _assert_same_function(student, parent)


@pytest.mark.parametrize(
    ("family", "backbone"), [("fasterrcnn", "resnet18"), ("fcos", "resnet50"), ("maskrcnn", "resnext50_32x4d")]
)
def test_other_actions_give_consistent_shapes_and_predicted_params(family: str, backbone: str) -> None:
    parent = _randomised(family, backbone)
    spec, arch = describe(parent)
    actions = [
        SetStageWidth(4, arch.stages[3].width // 2),
        SetBlockWidth(3, 0, arch.stages[2].mids[0] // 2),
        RemoveBlock(3, 1),
        MoveBoundary(2, earlier=True),
        MoveBoundary(3, earlier=False),
        SetStageWidth(1, arch.stages[0].width // 2),
    ]
    student = morph(parent, actions, importance="l1")
    s_spec, s_arch = describe(student)
    expected = arch
    for action in actions:
        expected = apply_action(expected, action)
    assert s_arch == expected and s_spec == spec
    params = sum(p.numel() for p in student.parameters())
    assert params == detector_cost(s_spec, s_arch).total_params
    assert params < sum(p.numel() for p in parent.parameters())
    student.train()
    with torch.no_grad():
        out = student.eval()(IMAGE)
    assert out[0]["boxes"].shape[1] == 4


def test_every_listed_action_applies_and_morphs() -> None:
    parent = _randomised("retinanet", "resnet34")
    arch = describe(parent)[1]
    actions = available_actions(arch)
    kinds = {type(a).__name__ for a in actions}
    assert kinds == {"AddBlock", "RemoveBlock", "MoveBoundary", "SetBlockWidth", "SetStageWidth"}
    assert all(w % 8 == 0 for a in actions if isinstance(a, SetStageWidth) for w in [a.width])
    rng = random.Random(0)
    for action in rng.sample(actions, 6):
        student = morph(parent, [action])
        assert describe(student)[1] == apply_action(arch, action)


def test_resnext_mid_widths_snap_to_groups() -> None:
    arch = standard_arch("resnext50_32x4d")
    mids = [a.mid for a in available_actions(arch) if isinstance(a, SetBlockWidth)]
    assert mids and all(m % 32 == 0 for m in mids)


def test_invalid_actions_are_refused() -> None:
    arch = standard_arch("resnet18")
    with pytest.raises(ArchError, match="block 0 does the striding"):
        apply_action(arch, RemoveBlock(2, 0))
    with pytest.raises(ArchError, match="stage must be 1..4"):
        apply_action(arch, AddBlock(5, 0))
    with pytest.raises(ArchError, match="MoveBoundary stage"):
        apply_action(arch, MoveBoundary(4, earlier=True))
    one = apply_action(arch, RemoveBlock(2, 1))
    with pytest.raises(ArchError, match="has one block"):
        apply_action(one, MoveBoundary(1, earlier=False))
    with pytest.raises(ArchError, match="importance"):
        morph(build_detector(tiny_spec()), [AddBlock(1, 0)], importance="magic")


def test_morphed_student_fine_tunes_and_round_trips_through_a_file(train_set: CocoDetection, tmp_path: Path) -> None:
    torch.manual_seed(0)
    parent = build_detector(tiny_spec("fasterrcnn"))
    student = morph(parent, [SetStageWidth(4, 256), RemoveBlock(3, 1), AddBlock(2, 0)])
    assert_loss_falls(student, train_set)
    path = tmp_path / "student.pt"
    save_detector(student, path)
    loaded = load_detector(path)
    assert describe(loaded) == describe(student)
    student.eval()
    for m in (student, loaded):
        m.roi_heads.score_thresh = 0.0
    with torch.no_grad():
        a, b = student(IMAGE)[0], loaded(IMAGE)[0]
    assert torch.equal(a["boxes"], b["boxes"])


def test_frozen_norms_morph_and_thaw_for_fine_tuning() -> None:
    parent = build_detector(tiny_spec("retinanet", frozen_bn=True, trainable_layers=3)).eval()
    student = morph(parent, [AddBlock(2, 0), SetStageWidth(2, 192)]).eval()
    _assert_same_function(student, parent)
    thawed = thaw(student).eval()
    assert describe(thawed)[0].frozen_bn is False and all(p.requires_grad for p in thawed.backbone.body.parameters())
    _assert_same_function(thawed, parent)


def test_sampling_is_reproducible_and_stays_in_range() -> None:
    base = standard_arch("resnet50")
    a, b, c = (sample_arch(base, seed=s) for s in (3, 3, 4))
    assert a == b and a != c
    for seed in range(20):
        arch = sample_arch(base, seed=seed, depth=(0.5, 1.5), width=(0.5, 1.5))
        for ref, st in zip(base.stages, arch.stages):
            assert round(ref.depth * 0.5) <= st.depth <= round(ref.depth * 1.5) or st.depth == 1
            assert ref.width * 0.5 - 8 <= st.width <= ref.width * 1.5 + 8 and st.width % 8 == 0
            assert all(m % 8 == 0 for m in st.mids)
    spec = tiny_spec("retinanet", backbone="resnet50")
    model = build_detector(spec, sample_arch(base, seed=1))
    assert sum(p.numel() for p in model.parameters()) == detector_cost(spec, sample_arch(base, seed=1)).total_params
    with pytest.raises(ArchError, match="depth range"):
        sample_arch(base, depth=(1.5, 0.5))
