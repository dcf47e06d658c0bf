"""SearchSpace: the finite width grid the profiler enumerates and the search moves on."""

from __future__ import annotations

import re
from functools import reduce

import pytest
import torch

from jdnas_sdk import Arch, ArchError, build, describe, standard_arch
from jdnas_sdk.morph import actions_to, apply_action, morph_to
from jdnas_sdk.space import SearchSpace

from .conftest import tiny_spec


def test_grids_hold_the_base_and_snap_to_the_multiple() -> None:
    space = SearchSpace(standard_arch("resnet18"))
    assert space.stage_widths(1) == (16, 24, 32, 40, 48, 56, 64, 80, 96)
    assert space.stage_widths(4)[-1] == 768 and 512 in space.stage_widths(4)
    assert space.depth_range(1) == (1, 3) and space.tied_stem
    resnext = SearchSpace(standard_arch("resnext50_32x4d"))
    assert all(m % 32 == 0 for s in range(1, 5) for m in resnext.mid_widths(s))
    assert resnext.stem_widths() == (64,) and not resnext.tied_stem


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", "resnext50_32x4d"])
def test_samples_are_in_the_space_and_reproducible(backbone: str) -> None:
    space = SearchSpace(standard_arch(backbone))
    archs = [space.sample(seed) for seed in range(30)]
    assert all(a in space for a in archs) and standard_arch(backbone) in space
    assert archs == [space.sample(seed) for seed in range(30)] and len(set(archs)) == 30
    if space.tied_stem:
        assert all(a.stem == a.stages[0].width for a in archs)


@pytest.mark.parametrize(
    "code, problem",
    [
        ("basic:64|64:64x2|128:128x2|256:256x2|520:512x2", "stage 4 width 520 is not on the grid"),
        ("basic:64|64:64x2|128:128x9|256:256x2|512:512x2", "stage 2 has 9 blocks, outside 1..3"),
        ("basic:64|64:64x2|128:136x2|256:256x2|512:512x2", r"stage 2 mid widths \[136\]"),
        ("basic:32|64:64x2|128:128x2|256:256x2|512:512x2", "stem"),
        ("bottleneck:64|64:64x2|128:128x2|256:256x2|512:512x2", "block bottleneck"),
    ],
)
def test_why_not_names_what_puts_an_arch_outside(code: str, problem: str) -> None:
    space = SearchSpace(standard_arch("resnet18"))
    arch = Arch.parse(code)
    assert arch not in space
    assert re.search(problem, space.why_not(arch) or ""), space.why_not(arch)


def test_bad_space_parameters_are_refused() -> None:
    with pytest.raises(ArchError, match="width_ratios"):
        SearchSpace(standard_arch("resnet18"), width_ratios=())
    with pytest.raises(ArchError, match="depth ratios"):
        SearchSpace(standard_arch("resnet18"), depth=(1.2, 2.0))


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", "resnext50_32x4d"])
def test_actions_to_reach_any_arch_of_the_space(backbone: str) -> None:
    space = SearchSpace(standard_arch(backbone))
    for seed in range(20):
        target = space.sample(seed)
        assert reduce(apply_action, actions_to(space.base, target), space.base) == target


def test_morph_to_gives_a_student_of_the_arch_with_inherited_weights() -> None:
    spec = tiny_spec()
    base = Arch.parse("basic:16|16:16x2|32:32x2|64:64x2|128:128x2")
    parent = build(spec, base).eval()
    target = Arch.parse("basic:24|24:8x1|32:16x3|48:64x1|128:64x2")
    student = morph_to(parent, target)
    assert describe(student)[1] == target
    same = morph_to(parent, base).eval()
    image = torch.rand(3, 96, 96)
    with torch.no_grad():
        assert torch.equal(same.backbone(image[None])["0"], parent.backbone(image[None])["0"])
    with pytest.raises(ArchError, match="untied stem"):
        actions_to(standard_arch("resnet50"), Arch.parse("bottleneck:32|256:64x3|512:128x4|1024:256x6|2048:512x3"))
