"""The least-squares refit beside a removed tower conv: exact removals left alone, inexact ones
brought closer to the parent, nothing done where it does not apply, and the search's jobs use it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

import jdnas_sdk
from jdnas_sdk import Heads
from jdnas_sdk.detectors import read_detector_file
from jdnas_sdk.morph import refit_towers
from jdnas_sdk.morph.heads import SetHead, apply_head, morph_heads

from .conftest import tiny_spec

IMAGES = [torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(i)) for i in range(4)]


def _retina(seed: int = 0) -> torch.nn.Module:
    """A tiny RetinaNet whose tower convs are far from the identity (weights N(0, 0.1): torchvision's
    0.01 makes every tower conv nearly zero, and so the closest to the identity one at random)."""
    torch.manual_seed(seed)
    model = jdnas_sdk.build(tiny_spec("retinanet", fpn_channels=32)).eval()
    with torch.no_grad():
        for tower in _towers(model):
            for block in tower:
                block[0].weight.normal_(0, 0.1)
                block[0].bias.normal_(0, 0.1)
    return model


def _towers(model: torch.nn.Module):
    return (model.head.classification_head.conv, model.head.regression_head.conv)


def _head_error(parent: torch.nn.Module, student: torch.nn.Module) -> float:
    """The student's dense-head outputs against the parent's on IMAGES, relative to the parent's spread."""
    with torch.no_grad():
        outs = []
        for model in (parent, student.eval()):
            batch, _ = model.transform(list(IMAGES))
            features = list(model.backbone(batch.tensors).values())
            outs.append(torch.cat([v.flatten() for v in model.head(features).values()]))
    return float((outs[0] - outs[1]).pow(2).mean() / outs[0].var())


def _near_identity(model: torch.nn.Module, index: int, noise: float) -> None:
    """Make conv ``index`` of each tower the identity plus noise: the one a depth cut removes, inexactly."""
    with torch.no_grad():
        for tower in _towers(model):
            conv = tower[index][0]
            torch.nn.init.dirac_(conv.weight)
            conv.weight.add_(noise * torch.randn_like(conv.weight))
            conv.bias.normal_(0, noise)


def test_an_exactly_removable_conv_is_left_as_the_removal_made_it() -> None:
    parent = _retina()
    _near_identity(parent, 2, noise=0.0)
    student = morph_heads(parent, apply_head(Heads.of(jdnas_sdk.describe(parent)[0]), SetHead("convs", 3)))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    assert refit_towers(student, parent, IMAGES) == []  # nothing lowers an error of zero
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert _head_error(parent, student) < 1e-10


@pytest.mark.parametrize(("removed", "depth"), [(1, 3), (3, 3), (1, 2)])
def test_a_refit_brings_a_cut_tower_closer_to_its_parent(removed: int, depth: int) -> None:
    """Removed: a middle conv (the one after it is refit), the last one (the one before it gives the
    parent's last output), or two (a run of removed convs, one refit)."""
    parent = _retina()
    _near_identity(parent, removed, noise=0.05)
    if depth == 2:
        _near_identity(parent, removed + 1, noise=0.05)
    student = morph_heads(parent, replace(Heads.of(jdnas_sdk.describe(parent)[0]), convs=depth))
    kept = [m for m in _towers(student)[0].modules() if isinstance(m, torch.nn.Conv2d)]
    gone = {i for i in range(4) if not any(torch.equal(c.weight, _towers(parent)[0][i][0].weight) for c in kept)}
    assert gone == {removed, removed + 1} if depth == 2 else {removed}  # the near-identity convs went
    dropped = _head_error(parent, student)
    refits = refit_towers(student, parent, IMAGES)
    assert len(refits) == 2  # one per tower
    assert all(r.error_after < r.error_before for r in refits)
    assert {r.conv.split(".")[1] for r in refits} == {"classification_head", "regression_head"}
    assert _head_error(parent, student) < 0.5 * dropped


def test_nothing_is_refit_where_no_conv_was_removed_or_the_maps_differ_in_size() -> None:
    parent = _retina()
    heads = Heads.of(jdnas_sdk.describe(parent)[0])
    narrower = morph_heads(parent, replace(heads, width=16))
    assert refit_towers(narrower, parent, IMAGES) == []
    smaller = morph_heads(parent, apply_head(replace(heads, convs=3), SetHead("size", 64)))
    assert refit_towers(smaller, parent, IMAGES) == []
    rcnn = jdnas_sdk.build(tiny_spec("fasterrcnn"))
    assert refit_towers(rcnn, rcnn, IMAGES) == []  # no towers at all


def test_a_search_job_that_removes_a_tower_conv_refits_it_and_records_the_refit(
    train_set: object, val_set: object, tmp_path: Path
) -> None:
    from jdnas_sdk.distill import KDConfig
    from jdnas_sdk.search.executor import CandidateJob, run_candidate
    from jdnas_sdk.train import TrainConfig

    parent = _retina()
    _near_identity(parent, 1, noise=0.05)
    parent_file = jdnas_sdk.save_detector(parent, tmp_path / "parent.pt")
    outcomes = {}
    for images in (0, 4):
        job = CandidateJob(
            index=images,
            parent_file=str(parent_file),
            out_file=str(tmp_path / f"cand{images}.pt"),
            steps=0,
            train=TrainConfig(),
            kd=KDConfig(),
            actions=(SetHead("convs", 3),),
            refit_images=images,
        )
        assert ("refit_images" in job.key()) == bool(images)  # keys made before refits stay valid
        outcomes[images] = run_candidate(job, train_set, val_set)
        assert outcomes[images].error is None
    meta = {n: read_detector_file(tmp_path / f"cand{n}.pt")["metadata"] for n in (0, 4)}
    assert "refit" not in meta[0] and "classification_head" in meta[4]["refit"]
    refit = jdnas_sdk.load_detector(tmp_path / "cand4.pt")
    plain = jdnas_sdk.load_detector(tmp_path / "cand0.pt")
    assert _head_error(parent, refit) < _head_error(parent, plain)


def test_the_refit_follows_the_depth_step_whatever_else_the_candidate_changes(
    train_set: object, val_set: object, tmp_path: Path
) -> None:
    """Depth cut beside an input-size change (the maps differ from the parent's) and a narrower tower
    (the kept convs are no longer the parent's): the refit runs between the depth step's two detectors."""
    from jdnas_sdk import Student
    from jdnas_sdk.distill import KDConfig
    from jdnas_sdk.morph import morph, morph_to
    from jdnas_sdk.search.executor import CandidateJob, run_candidate
    from jdnas_sdk.train import TrainConfig

    parent = _retina()
    _near_identity(parent, 1, noise=0.05)
    parent_file = jdnas_sdk.save_detector(parent, tmp_path / "parent.pt")
    moves = {
        "size": (SetHead("size", 64), SetHead("convs", 3)),
        "width": (SetHead("convs", 3), SetHead("width", 16)),
    }
    for name, actions in moves.items():
        for images in (0, 4):
            job = CandidateJob(
                index=images,
                parent_file=str(parent_file),
                out_file=str(tmp_path / f"{name}{images}.pt"),
                steps=0,
                train=TrainConfig(),
                kd=KDConfig(),
                actions=actions,
                refit_images=images,
            )
            assert run_candidate(job, train_set, val_set).error is None
        assert "regression_head" in read_detector_file(tmp_path / f"{name}4.pt")["metadata"]["refit"]
    # the width step after the depth step is not refit (measured no better after fine-tuning)
    assert "cls_logits" not in read_detector_file(tmp_path / "width4.pt")["metadata"]["refit"]
    # at 64 px the parent itself is the reference: the refit student is the closer to it
    reference = morph(parent, SetHead("size", 64))
    refit, plain = (jdnas_sdk.load_detector(tmp_path / f"size{n}.pt") for n in (4, 0))
    assert _head_error(reference, refit) < _head_error(reference, plain)
    # the pipeline's morph_to takes the depth as its own step when a hook asks for steps
    seen: list[object] = []
    target = Student.parse(str(Student.of(*jdnas_sdk.describe(jdnas_sdk.load_detector(tmp_path / "width4.pt")))))
    got = morph_to(parent, target, after_step=lambda before, after, action: seen.append(action))
    assert seen == [SetHead("convs", 3), SetHead("width", 16)] and Student.of(*jdnas_sdk.describe(got)) == target


def test_narrowed_towers_have_their_consumers_refit_on_the_channels_they_kept() -> None:
    from jdnas_sdk.morph.heads import head_maps
    from jdnas_sdk.morph.refit import refit_narrowed

    parent = _retina()
    narrow = replace(Heads.of(jdnas_sdk.describe(parent)[0]), width=16)
    student = morph_heads(parent, narrow)
    dropped = _head_error(parent, student)
    refits = refit_narrowed(student, parent, IMAGES, head_maps(parent, narrow))
    # per side the three tower convs after the first read narrowed channels (the predictors too,
    # refit where that lowers their error: a near-constant output of the init's prior may not be)
    convs = {r.conv for r in refits if ".conv." in r.conv}
    sides = ("classification_head", "regression_head")
    assert convs == {f"head.{side}.conv.{i}.0" for side in sides for i in (1, 2, 3)}
    assert all(r.error_after < r.error_before for r in refits)
    assert _head_error(parent, student) < 0.5 * dropped
    # widened towers (new channels) and depth changes are not its case
    wide = replace(Heads.of(jdnas_sdk.describe(parent)[0]), width=48)
    assert refit_narrowed(morph_heads(parent, wide), parent, IMAGES, head_maps(parent, wide)) == []
    deeper = replace(Heads.of(jdnas_sdk.describe(parent)[0]), convs=3)
    assert refit_narrowed(morph_heads(parent, deeper), parent, IMAGES, head_maps(parent, deeper)) == []


def test_the_depth_refit_hook_refits_a_morph_to_student_only_where_a_tower_lost_convs(train_set: object) -> None:
    """``depth_refit_hook`` (the search's, and the latency benchmark's students'): ``morph_to`` a
    student with fewer tower convs refits them and brings its heads closer to the parent; a student
    with only a narrower tower is left as the morphism made it."""
    from jdnas_sdk import Student
    from jdnas_sdk.morph import morph_to
    from jdnas_sdk.morph.refit import depth_refit_hook

    parent = _retina()
    _near_identity(parent, 1, noise=0.05)
    base = Student.of(*jdnas_sdk.describe(parent))
    shallower = Student(base.arch, replace(base.heads, convs=3))
    refits: list = []
    refit = morph_to(parent, shallower, after_step=depth_refit_hook(train_set, 4, refits))
    assert {r.conv.split(".")[1] for r in refits} == {"classification_head", "regression_head"}
    assert all(r.error_after < r.error_before for r in refits)
    assert _head_error(parent, refit) < _head_error(parent, morph_to(parent, shallower))
    narrower: list = []
    morph_to(
        parent, Student(base.arch, replace(base.heads, width=16)), after_step=depth_refit_hook(train_set, 4, narrower)
    )
    assert narrower == []
