"""Distillation losses: zero for identical inputs, positive otherwise; gradients reach the student only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from jdnas_sdk import Arch, TrainingError, build
from jdnas_sdk.data import CocoDetection, collate
from jdnas_sdk.distill import (
    Distiller,
    KDConfig,
    box_kd,
    feature_kd,
    finetune,
    foreground_masks,
    positive_labels,
    sigmoid_kd,
    softmax_kd,
)
from jdnas_sdk.train import TrainConfig

from .conftest import tiny_spec

STUDENT = Arch.parse("basic:16|16:16x1|32:32x1|64:64x1|128:128x1")
TEACHER = Arch.parse("basic:24|24:24x2|48:48x2|96:96x1|160:160x1")


def test_losses_are_zero_for_identical_inputs_and_positive_otherwise() -> None:
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, 8, 6, 6, generator=gen), torch.randn(2, 8, 3, 3, generator=gen)]
    assert feature_kd(feats, feats).item() == 0
    other = [f + 0.1 * torch.randn(f.shape, generator=gen) for f in feats]
    assert feature_kd(other, feats).item() > 0
    masks = [torch.zeros(2, 6, 6), torch.zeros(2, 3, 3)]
    masks[0][:, :2, :2] = 1
    assert feature_kd(other, feats, masks=masks, foreground=4.0).item() != pytest.approx(
        feature_kd(other, feats).item()
    )
    logits = torch.randn(5, 40, 9, generator=gen)
    assert sigmoid_kd(logits, logits, 2.0).abs().item() < 1e-6
    assert sigmoid_kd(logits + 1.0, logits, 2.0).item() > 0
    rows = torch.randn(7, 9, generator=gen)
    assert softmax_kd(rows, rows, 2.0).abs().item() < 1e-6
    assert softmax_kd(rows.flip(-1), rows, 2.0).item() > 0
    with pytest.raises(TrainingError, match="temperature"):
        KDConfig(temperature=0)


def test_foreground_masks_cover_the_boxes_at_each_level() -> None:
    masks = foreground_masks([{"boxes": torch.tensor([[0.0, 0.0, 32.0, 16.0]])}], [(8, 8), (4, 4)], (64, 64))
    assert masks[0][0, :2, :4].sum() == 8 and masks[0].sum() == 8 and masks[1].sum() == 2


def _batch(data: CocoDetection) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    return collate([data[0], data[1]])


@pytest.mark.parametrize("family", ["fasterrcnn", "retinanet", "fcos"])
def test_kd_gradients_reach_the_student_and_never_the_teacher(family: str, train_set: CocoDetection) -> None:
    torch.manual_seed(0)
    student = build(tiny_spec(family), STUDENT).train()
    teacher = build(tiny_spec(family, fpn_channels=96 if family == "fcos" else 32), TEACHER)
    distiller = Distiller(student, teacher, KDConfig(foreground=1.0, positives_only=False, box_weight=1.0))
    assert len(distiller.adapters) == 1  # one 1x1 adapter (identity-initialised) into the teacher's width
    images, targets = _batch(train_set)
    losses = student(images, targets)
    kd = distiller(student, images, targets, losses)
    assert set(kd) == {"kd_feature", "kd_head", "kd_box"} and kd["kd_feature"].item() > 0 and kd["kd_head"].item() > 0
    assert kd["kd_box"].item() > 0, kd  # FCOS too: its positives are its own centre-sampled points
    kd["kd_box"].backward(retain_graph=True)  # the box term alone reaches the box regression layer
    head = student.roi_heads.box_predictor.bbox_pred if family == "fasterrcnn" else student.head.regression_head
    assert sum(p.grad.abs().sum() for p in head.parameters() if p.grad is not None) > 0
    student.zero_grad()
    sum(kd.values()).backward()
    assert student.backbone.body.conv1.weight.grad.abs().sum() > 0
    assert distiller.adapters[0].weight.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    distiller.detach()


@pytest.mark.parametrize("family", ["fasterrcnn", "retinanet"])
def test_a_teacher_identical_to_the_student_gives_zero_kd(family: str, train_set: CocoDetection) -> None:
    spec = tiny_spec(family, frozen_bn=True)  # frozen norms: train and eval compute the same features
    student = build(spec, STUDENT).train()
    teacher = build(spec, STUDENT)
    teacher.load_state_dict(student.state_dict())
    distiller = Distiller(student, teacher, KDConfig(box_weight=1.0))
    images, targets = _batch(train_set)
    kd = distiller(student, images, targets, student(images, targets))
    assert kd["kd_feature"].item() == 0 and abs(kd["kd_head"].item()) < 1e-5 and kd["kd_box"].item() == 0
    regression = teacher.roi_heads.box_predictor.bbox_pred if family == "fasterrcnn" else teacher.head.regression_head
    with torch.no_grad():
        [p for p in regression.parameters()][-1].add_(0.5)  # the output bias: every row's deltas move
    kd = distiller(student, images, targets, student(images, targets))
    assert kd["kd_box"].item() > 0.1  # there were positive rows: the zero above was no empty mean


def test_rcnn_box_kd_reads_the_deltas_of_each_positive_rows_own_class(train_set: CocoDetection) -> None:
    """A teacher that differs from the student only in the box deltas of classes no ground-truth box
    has gives zero localisation KD; moving the deltas of every class the boxes have by 0.5 gives
    each positive row the smooth L1 of 0.5 on its four deltas."""
    spec = tiny_spec(frozen_bn=True)
    torch.manual_seed(0)
    student = build(spec, STUDENT).train()
    images, targets = _batch(train_set)
    present = sorted({int(c) for t in targets for c in t["labels"]})
    absent = [c for c in range(spec.num_classes) if c not in present]
    assert present and absent
    for moved, expected in ((absent, 0.0), (present, 4 * (0.5 - 0.5 / 9))):
        teacher = build(spec, STUDENT)
        teacher.load_state_dict(student.state_dict())
        with torch.no_grad():
            for c in moved:
                teacher.roi_heads.box_predictor.bbox_pred.bias[4 * c : 4 * c + 4] += 0.5
        distiller = Distiller(student, teacher, KDConfig(feature_weight=0, head_weight=0, box_weight=1.0))
        kd = distiller(student, images, targets, student(images, targets))["kd_box"].item()
        assert kd == pytest.approx(expected, rel=1e-4, abs=1e-7), (moved, kd)
        distiller.detach()


def test_box_kd_and_positive_labels() -> None:
    deltas = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    assert box_kd(deltas, deltas).item() == 0
    assert box_kd(deltas, torch.zeros(2, 4)).item() == pytest.approx((1 - 0.5 / 9) / 2)  # smooth L1, beta 1/9
    boxes = [torch.tensor([[0.0, 0, 10, 10], [40, 40, 60, 60]]), torch.tensor([[0.0, 0, 5, 5]])]
    targets = [
        {"boxes": torch.tensor([[0.0, 0, 10, 10], [40, 40, 61, 61]]), "labels": torch.tensor([3, 7])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    assert positive_labels(boxes, targets).tolist() == [3, 7, 0]


def test_a_mismatched_teacher_is_refused(train_set: CocoDetection) -> None:
    with pytest.raises(TrainingError, match="num_classes"):
        Distiller(build(tiny_spec(), STUDENT), build(tiny_spec(num_classes=5), STUDENT))


def test_finetune_with_a_teacher_resumes_exactly_adapters_included(train_set: CocoDetection, tmp_path: Path) -> None:
    spec, teacher_spec = tiny_spec("retinanet"), tiny_spec("retinanet", fpn_channels=32)
    teacher = build(teacher_spec, TEACHER)
    config = TrainConfig(
        batch_size=2, optimizer="adamw", lr=1e-3, checkpoint_every=2, warmup_steps=0, schedule="constant"
    )
    kd = KDConfig(ramp=0)  # the "killed" run below is a shorter one: a ramp (like a cosine) depends on the length
    torch.manual_seed(0)
    whole = build(spec, STUDENT)
    start = {k: v.clone() for k, v in whole.state_dict().items()}
    torch.manual_seed(1)  # the adapter's initialisation
    finetune(whole, data=train_set, steps=4, teacher=teacher, kd=kd, config=config, progress=False)
    resumed = build(spec, STUDENT)
    resumed.load_state_dict(start)
    ckpt = tmp_path / "ft.ckpt"
    torch.manual_seed(1)
    finetune(resumed, data=train_set, steps=2, teacher=teacher, kd=kd, config=config, checkpoint=ckpt, progress=False)
    assert "aux" in torch.load(ckpt, weights_only=True)
    again = build(spec, STUDENT)
    again.load_state_dict(start)
    torch.manual_seed(2)  # whatever the adapter starts as, the checkpoint's replaces it
    result = finetune(
        again, data=train_set, steps=4, teacher=teacher, kd=kd, config=config, checkpoint=ckpt, progress=False
    )
    assert result.resumed_from == 2
    for key, value in whole.state_dict().items():
        assert torch.allclose(value, again.state_dict()[key], atol=1e-5), key
    assert not any(h for h in again.backbone._forward_hooks.values())  # hooks removed afterwards


def test_normalized_feature_kd_is_zero_for_identical_features_and_ignores_channel_affine_shifts() -> None:
    from jdnas_sdk.distill import normalized_feature_kd

    gen = torch.Generator().manual_seed(4)
    feats = [torch.randn(2, 6, 5, 5, generator=gen), torch.randn(2, 6, 3, 3, generator=gen)]
    assert normalized_feature_kd(feats, feats).item() == 0
    scale, shift = torch.rand(1, 6, 1, 1, generator=gen) * 5 + 0.1, torch.randn(1, 6, 1, 1, generator=gen) * 3
    assert normalized_feature_kd([f * scale + shift for f in feats], feats).item() < 1e-6
    other = [torch.randn(f.shape, generator=gen) for f in feats]
    assert normalized_feature_kd(other, feats).item() > 0.5  # unrelated features: about 1


def test_identity_adapter_starts_as_the_identity() -> None:
    from jdnas_sdk.distill import identity_adapter

    x = torch.randn(1, 8, 4, 4)
    assert torch.equal(identity_adapter(8, 8)(x), x)
    wider = identity_adapter(8, 12)(x)
    assert torch.equal(wider[:, :8], x) and not wider[:, 8:].any()


def test_positive_rows_are_the_boxes_overlapping_ground_truth() -> None:
    from jdnas_sdk.distill import positive_rows

    boxes = [torch.tensor([[0.0, 0, 10, 10], [0, 0, 9, 10], [50, 50, 60, 60]]), torch.tensor([[0.0, 0, 10, 10]])]
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10]])}, {"boxes": torch.zeros(0, 4)}]
    assert positive_rows(boxes, targets, 0.5).tolist() == [True, True, False, False]


def test_fcos_positives_are_the_points_fcos_itself_assigns_to_boxes(train_set: CocoDetection) -> None:
    """The centre rule against torchvision's own FCOS assignment (read from the ``matched_idxs``
    its loss receives) on real images, where the IoU rule misses most of them."""
    from jdnas_sdk.distill import centre_positives, positive_rows

    torch.manual_seed(0)
    model = build(tiny_spec("fcos"), STUDENT).train()
    seen: dict[str, object] = {}
    original = model.head.compute_loss

    def recording(targets, head_outputs, anchors, matched_idxs):  # type: ignore[no-untyped-def]
        seen.update(targets=targets, anchors=anchors, matched=matched_idxs)
        return original(targets, head_outputs, anchors, matched_idxs)

    model.head.compute_loss = recording
    features: dict[str, torch.Tensor] = {}
    model.backbone.register_forward_hook(lambda _m, _i, out: features.update(out))
    model(*_batch(train_set))
    levels = [x.shape[-2] * x.shape[-1] for x in features.values()]
    ours = centre_positives(seen["anchors"], seen["targets"], levels=levels, radius=model.center_sampling_radius)
    theirs = torch.cat([m >= 0 for m in seen["matched"]])
    assert theirs.sum() > 0 and torch.equal(ours, theirs)
    assert positive_rows(seen["anchors"], seen["targets"], 0.5).sum() < theirs.sum()  # why FCOS has its own rule
    with pytest.raises(ValueError, match="levels"):
        centre_positives(seen["anchors"], seen["targets"])
    with pytest.raises(ValueError, match="not several anchors per position"):
        centre_positives(seen["anchors"], seen["targets"], levels=[*levels, 1])
    # the Distiller asks the family's rule: its positives on this step are torchvision's own
    teacher = build(tiny_spec("fcos"), STUDENT)
    distiller = Distiller(model, teacher, KDConfig(box_weight=1.0))
    images, targets = _batch(train_set)
    model(images, targets)
    assert torch.equal(
        distiller._positives(distiller._step_taps(), seen["targets"]), torch.cat([m >= 0 for m in seen["matched"]])
    )
    distiller.detach()


def test_every_family_names_a_positive_rule_and_a_score_loss_that_exist() -> None:
    from jdnas_sdk.distill import POSITIVE_RULES
    from jdnas_sdk.distill.losses import _SCORE_KD
    from jdnas_sdk.families import REGISTRY

    for name, family in REGISTRY.items():
        assert family.kd_positives in POSITIVE_RULES and family.kd_scores in _SCORE_KD, name


@pytest.mark.parametrize("family", ["fasterrcnn", "retinanet", "fcos"])
def test_positive_only_score_kd_ignores_background(family: str, train_set: CocoDetection) -> None:
    """Images without objects: every proposal/anchor is background, so positive-only score KD is
    zero however the teacher differs; distilling every row, it is not. Box KD is zero either way."""
    spec = tiny_spec(family, frozen_bn=True)
    torch.manual_seed(0)
    student, teacher = build(spec, STUDENT).train(), build(spec, STUDENT)  # two different random detectors
    predictor = (
        teacher.roi_heads.box_predictor.cls_score
        if family == "fasterrcnn"
        else teacher.head.classification_head.cls_logits
    )
    with torch.no_grad():
        predictor.bias.add_(torch.linspace(-2, 2, predictor.bias.numel()))  # class scores far from the student's
    images, _ = _batch(train_set)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)} for _ in images]
    regression = teacher.roi_heads.box_predictor.bbox_pred if family == "fasterrcnn" else teacher.head.regression_head
    with torch.no_grad():
        [p for p in regression.parameters()][-1].add_(0.5)  # every row's box deltas far from the student's
    for positives_only, zero in ((True, True), (False, False)):
        config = KDConfig(positives_only=positives_only, feature_weight=0, box_weight=1.0)
        distiller = Distiller(student, teacher, config)
        kd = distiller(student, images, empty, student(images, empty))
        assert (kd["kd_head"].item() == 0) if zero else (kd["kd_head"].item() > 1e-3), (positives_only, kd)
        assert kd["kd_box"].item() == 0  # box deltas: positive rows only, always (a background row's are untrained)
        distiller.detach()


def test_kd_weight_ramps_in_over_the_first_part_of_training(train_set: CocoDetection) -> None:
    spec = tiny_spec(frozen_bn=True)
    torch.manual_seed(0)
    student, teacher = build(spec, STUDENT).train(), build(spec, STUDENT)
    distiller = Distiller(student, teacher, KDConfig(ramp=0.5), steps=8)
    factors = []
    for _ in range(6):
        factors.append(distiller.ramp_factor())
        distiller.calls += 1
    assert factors == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert Distiller(student, teacher, KDConfig(ramp=0.5)).ramp_factor() == 1.0  # no length given: no ramp
