"""The detector-level student: codes, build/describe/file round trips, cost, head morphism, estimates."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

import jdnas_sdk
from jdnas_sdk import DetectorSpec, Heads, SearchSpace, Student, standard_arch
from jdnas_sdk.cost import detector_cost
from jdnas_sdk.errors import ArchError
from jdnas_sdk.morph.heads import SetHead, apply_head, morph_heads

R18 = "basic:64|64:64x2|128:128x2|256:256x2|512:512x2"
SMALL = "basic:16|16:16x1|32:32x1|64:64x1|128:128x1"


def _spec(family: str, **kw: object) -> DetectorSpec:
    settings: dict = dict(min_size=96, max_size=96, fpn_channels=64, representation_size=64)
    return DetectorSpec(family=family, backbone="resnet18", num_classes=4, **{**settings, **kw})


def test_student_codes_round_trip_and_old_codes_still_parse() -> None:
    for code in (
        f"{R18}@fpn64,in256x320,p300,b256",
        f"{R18}@fpn32,in128x128,p600/300,b64,m128",
        f"{SMALL}@fpn32,in96x96,c2,w48",
    ):
        assert str(Student.parse(code)) == code
    assert Heads.parse("fpn32,in96x96,c2,w48,k1000") == Heads.parse("fpn32,in96x96,c2,w48")  # 1000: the default
    old = Student.parse(R18)
    assert old.heads is None and str(old) == R18
    for bad in (f"{R18}@fpn64", f"{R18}@fpn64,in96x96,q3", f"{R18}@fpn0,in96x96"):
        with pytest.raises(ArchError):
            Student.parse(bad)
    with pytest.raises(ArchError, match=r"convs=2 \(the code's 'c2'\) does not apply .*remove it .*fpnN, inMINxMAX"):
        Heads.parse("fpn64,in96x96,c2,w32").apply(_spec("fasterrcnn"))
    with pytest.raises(ArchError, match=r"\['mask'\] are needed for maskrcnn; add them to the student code \(mN\)"):
        Heads.parse("fpn64,in96x96,p100,b64").apply(_spec("maskrcnn"))
    for twice in ("fpn64,fpn32,in96x96", "fpn64,in96x96,b128,b256", "fpn64,in96x96,in128x128"):
        with pytest.raises(ArchError, match="given twice"):  # not the last one silently
            Heads.parse(twice)
    with pytest.raises(ArchError, match="bad part"):
        Heads.parse("fpn64,in96x96,b\u0661\u0662\u0668")  # Arabic-Indic digits are not 128
    for huge in ("fpn999999,in96x96", "fpn64,in96x96,b60000", "fpn64,in96x96,c99,w48", "fpn64,in99999x99999"):
        with pytest.raises(ArchError, match="above the most a detector may have .*typo"):  # not torch out of memory
            Heads.parse(huge)
    with pytest.raises(ArchError, match="fpn_channels=999999 is above the most"):
        _spec("fasterrcnn", fpn_channels=999_999)
    legal = _spec("fasterrcnn", max_size=10_000, rpn_pre_nms_top_n_test=200_000)  # what a spec holds, a file holds
    assert Heads.of(legal).max_size == 10_000 and Heads.of(legal).pre == 200_000


@pytest.mark.parametrize(
    "family,heads",
    [
        ("fasterrcnn", "fpn32,in64x96,p50,b32"),
        ("maskrcnn", "fpn32,in96x96,p100,b32,m16"),
        ("retinanet", "fpn32,in64x64,c1,w16"),
        ("fcos", "fpn32,in96x96,c2,w64,k100"),
    ],
)
def test_build_describe_file_and_cost_of_a_student(family: str, heads: str, tmp_path) -> None:
    code = f"{SMALL}@{heads}"
    model = jdnas_sdk.build(_spec(family), code)
    spec, arch = jdnas_sdk.describe(model)
    assert str(Student.of(spec, arch)) == code
    path = jdnas_sdk.save_detector(model, tmp_path / "s.pt")
    loaded = jdnas_sdk.load_detector(path)
    assert str(Student.of(*jdnas_sdk.describe(loaded))) == code
    assert torch.load(path, weights_only=True)["student"] == code
    assert detector_cost(spec, arch).total_params == sum(p.numel() for p in model.parameters())


def test_space_holds_students_and_its_smallest_is_cheapest_by_cost() -> None:
    spec = _spec("fasterrcnn", rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000)
    space = SearchSpace(standard_arch("resnet18"), spec=spec)
    rng = random.Random(0)
    students = [space.sample_student(rng) for _ in range(20)]
    assert all(s in space for s in students)
    floor = space.smallest()
    assert floor in space and str(floor).endswith("@fpn32,in64x64,p50,b16")  # 96 px * 0.5 snaps to 64
    macs = lambda s: detector_cost(s.spec(spec), s.arch, input_size=(96, 96)).total_macs  # noqa: E731
    assert all(macs(floor) <= macs(s) for s in students)
    assert Student(floor.arch, replace(floor.heads, box=24)) not in space


@pytest.mark.parametrize("family", ["fasterrcnn", "retinanet"])
def test_a_base_off_the_grid_multiples_is_inside_its_own_space(family: str) -> None:
    spec = replace(_spec(family), min_size=112, max_size=144, fpn_channels=36)  # off the 32 px / 8 multiples
    space = SearchSpace(standard_arch("resnet18"), spec=spec)
    values = space.head_values()
    assert spec.min_size in values["size"] and spec.fpn_channels in values["fpn"]
    base = Student(standard_arch("resnet18"), Heads.of(spec))
    assert space.why_not_student(base) is None
    assert space.make_heads(space.heads_of(base.heads)) == base.heads  # 144 px kept, not snapped


def _logits(model: torch.nn.Module, image: torch.Tensor) -> list[torch.Tensor]:
    """The raw head outputs of a detector on ``image`` (class scores of the box head / dense heads)."""
    model.eval()
    with torch.no_grad():
        images, _ = model.transform([image])
        features = model.backbone(images.tensors)
        if hasattr(model, "rpn"):
            objectness, deltas = model.rpn.head(list(features.values()))
            boxes = torch.tensor([[4.0, 4.0, 60.0, 70.0], [10.0, 20.0, 90.0, 50.0]])
            pooled = model.roi_heads.box_roi_pool(features, [boxes], images.image_sizes)
            return [*objectness, *model.roi_heads.box_predictor(model.roi_heads.box_head(pooled))]
        out = model.head(list(features.values()))
        return list(out.values())


def _same(a: list[torch.Tensor], b: list[torch.Tensor], atol: float = 1e-5) -> bool:
    return all(torch.allclose(x, y, atol=atol, rtol=1e-4) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("family", ["fasterrcnn", "retinanet"])
def test_widening_every_head_keeps_the_function(family: str) -> None:
    torch.manual_seed(0)
    model = jdnas_sdk.build(_spec(family))
    heads = Heads.of(jdnas_sdk.describe(model)[0])
    wide = replace(heads, fpn=96, box=heads.box and 96, width=heads.width and 80, convs=heads.convs and 6)
    student = morph_heads(model, wide)
    image = torch.rand(3, 96, 96)
    assert _same(_logits(model, image), _logits(student, image))


def test_zero_importance_channels_and_identity_convs_are_removed_exactly() -> None:
    torch.manual_seed(1)
    model = jdnas_sdk.build(_spec("fasterrcnn"))
    with torch.no_grad():  # box-head channels 32.. of both linears write exactly zero
        for fc in (model.roi_heads.box_head.fc6, model.roi_heads.box_head.fc7):
            fc.weight[32:] = 0
            fc.bias[32:] = 0
    heads = Heads.of(jdnas_sdk.describe(model)[0])
    image = torch.rand(3, 96, 96)
    for importance in ("bn", "l1"):
        student = morph_heads(model, replace(heads, box=32), importance=importance)
        assert _same(_logits(model, image), _logits(student, image))
    retina = jdnas_sdk.build(_spec("retinanet"))
    with torch.no_grad():  # the third conv of each tower is the identity: removable exactly
        for side in (retina.head.classification_head, retina.head.regression_head):
            torch.nn.init.dirac_(side.conv[2][0].weight)
            side.conv[2][0].bias.zero_()
    three = morph_heads(retina, apply_head(Heads.of(jdnas_sdk.describe(retina)[0]), SetHead("convs", 3)))
    assert _same(_logits(retina, image), _logits(three, image))


def test_narrowing_by_importance_changes_outputs_within_a_stated_bound() -> None:
    """Bound: cutting box-head channels whose weights are at most eps = 1e-3 of the rest moves the
    class logits by at most 10 * eps of their magnitude (the dropped channels' contribution is
    linear in eps), and the importance picks exactly those channels to drop."""
    torch.manual_seed(2)
    model = jdnas_sdk.build(_spec("fasterrcnn"))
    with torch.no_grad():
        for fc in (model.roi_heads.box_head.fc6, model.roi_heads.box_head.fc7):
            fc.weight[::2] *= 1e-3
            fc.bias[::2] *= 1e-3
    heads = Heads.of(jdnas_sdk.describe(model)[0])
    student = morph_heads(model, replace(heads, box=32))
    image = torch.rand(3, 96, 96)
    before, after = _logits(model, image)[-2], _logits(student, image)[-2]
    assert (before - after).abs().max() <= 10 * 1e-3 * before.abs().max()
    assert torch.equal(student.roi_heads.box_head.fc7.bias, model.roi_heads.box_head.fc7.bias[1::2])


def test_proposals_and_input_size_keep_every_weight() -> None:
    model = jdnas_sdk.build(_spec("fasterrcnn"))
    heads = Heads.of(jdnas_sdk.describe(model)[0])
    student = morph_heads(model, apply_head(apply_head(heads, SetHead("proposals", 50)), SetHead("size", 64)))
    assert student.rpn._post_nms_top_n["testing"] == 50 and student.transform.min_size == (64,)
    a, b = model.state_dict(), student.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_one_stage_topk_keeps_every_weight_and_keys_its_own_fixed_entry() -> None:
    """``topk`` (one-stage boxes kept per level before NMS) is weight-free like proposals; its fixed
    entry differs from the default's only where it is not 1000, so tables profiled before it keep theirs."""
    from jdnas_sdk.latency.lower import fixed_key
    from jdnas_sdk.latency.reach import fixed_specs
    from jdnas_sdk.search.free import free_students
    from jdnas_sdk.search.moves import propose

    model = jdnas_sdk.build(_spec("retinanet"))
    spec = jdnas_sdk.describe(model)[0]
    student = morph_heads(model, apply_head(Heads.of(spec), SetHead("topk", 300)))
    assert student.topk_candidates == 300 and jdnas_sdk.describe(student)[0].topk_candidates == 300
    a, b = model.state_dict(), student.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert fixed_key(spec, (96, 96))["pre"] == 0  # the key tables held before the knob
    assert fixed_key(replace(spec, topk_candidates=300), (96, 96))["pre"] == 300
    arch = standard_arch("resnet18")
    assert SearchSpace(arch, spec=spec).head_values()["topk"] == (1000,)  # off by default
    space = SearchSpace(arch, spec=spec, heads={"topk": (100, 300, 1000, 2000)})
    assert space.head_values()["topk"] == (100, 300, 1000)  # at most the base's
    assert "topk" not in SearchSpace(arch, spec=_spec("fasterrcnn"), heads={"topk": (300,)}).head_values()
    base_keys = {fixed_key(s, (96, 96)) for s in fixed_specs(spec, SearchSpace(arch, spec=spec))}
    keys = {fixed_key(s, (96, 96)) for s in fixed_specs(spec, space)}
    assert base_keys < keys and {k["pre"] for k in keys} == {0, 100, 300}
    # the search's moves: with only topk cheaper, every proposal within the bound cuts topk
    fewer = lambda s: 1.0 if s.heads.value("topk") < 1000 else 2.0  # noqa: E731
    _, proposed, _, _ = propose(Student.of(spec, arch), space, fewer, 1.5, random.Random(0), max_actions=1)
    assert proposed.heads.topk in (100, 300)
    moved = {str(s.heads) for _, s in free_students(Student.of(spec, arch), space)}
    assert {f"fpn64,in96x96,c4,w64,k{k}" for k in (100, 300)} <= moved
    assert Student.of(spec, arch) in space and all(s in space for _, s in free_students(Student.of(spec, arch), space))


def test_the_estimator_times_whole_students_as_its_breakdown_does() -> None:
    from jdnas_sdk.latency import Estimator, load_table

    spec = _spec("fasterrcnn")
    space = SearchSpace(standard_arch("resnet18"), spec=spec)
    estimator = Estimator(load_table("v100-trt"), spec, (96, 96), save=False)
    base = standard_arch("resnet18")
    assert estimator.total_ms(Student.of(spec, base)) == pytest.approx(estimator.total_ms(base), rel=1e-12)
    rng = random.Random(3)
    for student in [space.sample_student(rng) for _ in range(5)] + [space.smallest()]:
        fresh = Estimator(load_table("v100-trt"), spec, (96, 96), save=False)
        assert estimator.total_ms(student) == pytest.approx(fresh.estimate(student).total_ms, rel=1e-9)
    fewer = Student(base, replace(Heads.of(spec), proposals=50, pre=50))
    assert estimator.estimate(fewer).by_stage["heads"] < estimator.estimate(base).by_stage["heads"]


@pytest.mark.parametrize("family", ["fasterrcnn", "retinanet"])
def test_the_profiler_reaches_every_kernel_and_fixed_entry_of_sampled_students(family: str) -> None:
    from jdnas_sdk.latency.lower import fixed_key, lower
    from jdnas_sdk.latency.reach import fixed_specs, reachable_ops

    spec = _spec(family)
    space = SearchSpace(standard_arch("resnet18"), width_ratios=(0.5, 1.0), spec=spec)
    reach = set(reachable_ops(spec, space, (96, 96)))
    fixed = {fixed_key(s, (96, 96)) for s in fixed_specs(spec, space)}
    rng = random.Random(4)
    for student in [space.sample_student(rng) for _ in range(40)] + [space.smallest()]:
        lowered = lower(student.spec(spec), student.arch, (96, 96))
        assert {k for _, ops in lowered.stages for k, _ in ops} <= reach
        assert lowered.fixed in fixed


@pytest.mark.parametrize("family", ["fasterrcnn", "retinanet"])
def test_a_sampled_student_moves_into_every_fixed_setting_keeping_its_timed_heads(family: str) -> None:
    from jdnas_sdk.latency.lower import fixed_key
    from jdnas_sdk.latency.reach import fixed_specs, in_fixed_setting, in_setting, spread_timed

    spec = _spec(family)
    space = SearchSpace(standard_arch("resnet18"), width_ratios=(0.5, 1.0), spec=spec)
    timed = ("box",) if family == "fasterrcnn" else ("convs", "width")
    rng = random.Random(5)
    students = [space.sample_student(rng) for _ in range(30)]
    # the sample holds timed heads other than the base's, so keeping them is not the base's by accident
    assert any(getattr(s.heads, f) != getattr(Heads.of(spec), f) for s in students for f in timed)
    for variant in fixed_specs(spec, space):
        for student in students:
            moved = in_setting(student, variant)
            assert moved.arch == student.arch and space.why_not_student(moved) is None
            assert fixed_key(moved.spec(spec), (96, 96)) == fixed_key(variant, (96, 96))
            assert in_fixed_setting(moved.spec(spec), variant)
            assert all(getattr(moved.heads, f) == getattr(student.heads, f) for f in timed)
    spread = spread_timed(students[: len(space.head_values()[timed[0]])], space)
    for f in timed:  # as many students as the grid has values: each value once
        assert sorted(getattr(s.heads, f) for s in spread[: len(space.head_values()[f])]) == sorted(
            space.head_values()[f]
        )
    for before, after in zip(students, spread):  # only the timed heads move: the same fixed entry
        assert after.arch == before.arch and space.why_not_student(after) is None
        assert fixed_key(after.spec(spec), (96, 96)) == fixed_key(before.spec(spec), (96, 96))
    backbone_only = in_setting(Student(students[0].arch), spec)
    assert backbone_only.heads == Heads.of(spec)
    # other anchors or thresholds change post-processing: not the entry's detector, whatever its key
    assert not in_fixed_setting(replace(spec, nms_thresh=0.6), spec)
