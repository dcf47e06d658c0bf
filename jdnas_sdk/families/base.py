"""What every detector family answers: the :class:`Family` base class and the spec it reads.

A family is the one home of everything that differs between torchvision's detector families:
its defaults (FPN levels, post-processing), how its heads are built and read back off a model,
the extra FPN level it adds, the ops its heads run (plain :mod:`jdnas_sdk.layers` descriptions
that cost sums and the latency stage times), and the modules distillation taps. Every other
module asks the family object; none tests a family's name.

Families sit before :mod:`jdnas_sdk.arch` in the stage order (``DetectorSpec`` asks them for
its defaults and checks), so they read a spec through :class:`SpecLike` and never import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock

from ..layers import Op

__all__ = [
    "Family",
    "SpecLike",
    "KDTap",
    "dense_postprocess",
    "dense_kd_logits",
    "dense_kd_deltas",
    "base_anchor_sizes",
    "set_towers",
    "read_towers",
    "tower_check",
    "MAX_TOWER",
]

#: Most convolutions per one-stage head tower a spec may ask for (torchvision builds 4).
MAX_TOWER = 8


class SpecLike(Protocol):
    """The :class:`~jdnas_sdk.arch.DetectorSpec` fields a family reads (read-only, as the frozen spec's)."""

    @property
    def family(self) -> str: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def min_size(self) -> int: ...

    @property
    def max_size(self) -> int: ...

    @property
    def fpn_channels(self) -> int: ...

    @property
    def returned_layers(self) -> tuple[int, ...]: ...

    @property
    def anchor_sizes(self) -> tuple[int, ...] | None: ...

    @property
    def representation_size(self) -> int: ...

    @property
    def num_keypoints(self) -> int: ...

    @property
    def rpn_pre_nms_top_n_test(self) -> int: ...

    @property
    def rpn_post_nms_top_n_test(self) -> int: ...

    @property
    def mask_head_width(self) -> int: ...

    @property
    def head_convs(self) -> int: ...

    @property
    def head_width(self) -> int: ...

    @property
    def score_thresh(self) -> float | None: ...

    @property
    def nms_thresh(self) -> float | None: ...

    @property
    def detections_per_img(self) -> int | None: ...

    @property
    def num_levels(self) -> int: ...


#: A module distillation hooks and what it records: ``"output"`` (a forward hook) or
#: ``"inputs"`` (a forward pre-hook).
KDTap = tuple[nn.Module, str]


class Family:
    """One torchvision detector family. Subclasses set the class attributes and implement the methods.

    ``name`` is the spec's ``family`` value; ``model_class`` the torchvision class it builds
    (:func:`jdnas_sdk.families.family_of` tests instances against it, subclasses first);
    ``returned_layers`` the backbone stages its FPN reads by default; ``extra_levels`` the levels
    its FPN adds on top; ``postprocess`` its default (score threshold, NMS threshold, detections
    per image); ``is_two_stage`` whether it pools regions of interest (an RPN and RoI heads);
    ``takes_anchor_sizes`` whether ``anchor_sizes`` applies; ``fpn_multiple`` what the FPN width
    must be a multiple of; ``head_settings`` the spec fields only this family reads (others are
    reset to their defaults so that equal detectors have equal specs); ``target_fields`` the
    annotations training needs beyond boxes and labels; ``kd_scores`` how its class scores are
    distilled (``softmax`` over classes per RoI, or ``sigmoid`` per anchor and class);
    ``kd_positives`` which of its rows count as positive for distillation, by the rule it trains
    with (``iou`` with a ground-truth box, or FCOS's ``centre`` sampling: :mod:`jdnas_sdk.distill.positives`).
    """

    name: str = ""
    model_class: type[nn.Module] = nn.Module
    returned_layers: tuple[int, ...] = (2, 3, 4)
    extra_levels: int = 2
    postprocess: tuple[float, float, int] = (0.05, 0.5, 100)
    is_two_stage: bool = False
    takes_anchor_sizes: bool = True
    fpn_multiple: int = 1
    head_settings: tuple[str, ...] = ()
    target_fields: tuple[str, ...] = ()
    kd_scores: str = "sigmoid"
    kd_positives: str = "iou"

    def __repr__(self) -> str:
        return f"<family {self.name}>"

    def check(self, spec: SpecLike) -> str | None:
        """Why ``spec`` does not fit this family (a message naming the fix), or ``None``."""
        if spec.fpn_channels % self.fpn_multiple:
            return (
                f"{self.name} heads use GroupNorm({self.fpn_multiple}, C): fpn_channels must be a multiple "
                f"of {self.fpn_multiple}, got {spec.fpn_channels}"
            )
        if spec.anchor_sizes is not None and not self.takes_anchor_sizes:
            return f"anchor_sizes does not apply to {self.name} (its anchors are the level strides); leave it None"
        return None

    # -- build and read back ------------------------------------------------------------------
    def fpn_extra_block(self, channels: int) -> ExtraFPNBlock:
        """The module torchvision puts on top of the FPN for the extra levels."""
        raise NotImplementedError

    def anchor_generator(self, spec: SpecLike, strides: Sequence[int]) -> AnchorGenerator:
        """The family's anchors for a spec whose pyramid levels have ``strides``."""
        raise NotImplementedError

    def build(self, spec: SpecLike, backbone: nn.Module, anchors: AnchorGenerator) -> nn.Module:
        """The torchvision detector with these heads on ``backbone`` (a ``BackboneWithFPN``)."""
        raise NotImplementedError

    def read(self, model: nn.Module) -> dict[str, Any]:
        """The spec fields this family's heads determine, read off ``model``: ``num_classes``,
        ``anchor_sizes``, the post-processing settings and the family's ``head_settings``.
        Raises ``ValueError`` naming the module that is not the family's standard one."""
        raise NotImplementedError

    def anchors_of(self, model: nn.Module) -> AnchorGenerator:
        """The model's anchor generator."""
        return model.anchor_generator

    def full_load(self, model: nn.Module) -> None:
        """Set ``model``'s thresholds so it does the most post-processing work it can (every
        candidate kept up to its caps): the load end-to-end latency is measured under."""
        model.score_thresh = 0.0

    # -- lowering -----------------------------------------------------------------------------
    def fixed_settings(self, spec: SpecLike) -> tuple[int, int, int]:
        """The head settings the latency table's ``fixed`` entry depends on besides the input
        size: (proposals per level before the RPN's NMS, or a one-stage detector's boxes per level
        before NMS where not torchvision's 1000; proposals after it; width of the heads that run
        inside the fixed entry); 0 where the family has none."""
        return 0, 0, 0

    def fpn_extra_ops(self, channels: int, top: tuple[int, int], extra: Sequence[tuple[int, int]]) -> tuple[Op, ...]:
        """The ops of :meth:`fpn_extra_block` on the top returned level (``top`` = its h, w),
        making the ``extra`` levels' maps."""
        raise NotImplementedError

    def head_ops(self, spec: SpecLike, levels: Sequence[tuple[int, int]], *, rois: int | None = None) -> tuple[Op, ...]:
        """The ops of the heads on pyramid levels of sizes ``levels``, with ``rois`` proposals per
        image for RoI heads (``None``: as many as the family keeps at test time); shared weights
        are owned by their first launch only."""
        raise NotImplementedError

    # -- distillation -------------------------------------------------------------------------
    def kd_taps(self, student: nn.Module) -> dict[str, KDTap]:
        """Modules distillation hooks on the student, beyond the transform and the backbone:
        ``logits`` (the class scores) and whatever :meth:`kd_logits`, :meth:`kd_deltas` and
        :meth:`kd_boxes` need besides (one-stage: ``deltas``, the regression head, and ``anchors``)."""
        raise NotImplementedError

    def kd_logits(self, taps: dict[str, Any], teacher: nn.Module, features: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(student, teacher) class logits on the same positions, from the student's recorded
        ``taps`` and the teacher (run here without gradients) on its FPN ``features``."""
        raise NotImplementedError

    def kd_deltas(self, taps: dict[str, Any], teacher: nn.Module, features: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(student, teacher) box regression outputs on the rows of :meth:`kd_logits` (same order):
        four deltas per row for a one-stage head, four per class for an R-CNN box head."""
        raise NotImplementedError

    def kd_boxes(self, taps: dict[str, Any]) -> list[Tensor]:
        """Per image, the boxes (proposals or anchors) the class logits of :meth:`kd_logits` belong
        to, in the logits' row order: what tells positive rows from background. One-stage
        families read the anchors their ``kd_taps`` record."""
        return list(taps["anchors"])


def dense_postprocess(model: nn.Module) -> dict[str, Any]:
    """Post-processing settings of a one-stage torchvision detector (RetinaNet, FCOS)."""
    return dict(
        score_thresh=model.score_thresh, nms_thresh=model.nms_thresh, detections_per_img=model.detections_per_img
    )


def dense_kd_logits(taps: dict[str, Any], teacher: nn.Module, features: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(student, teacher) outputs of a one-stage detector's classification head."""
    with torch.no_grad():
        teacher_logits = teacher.head.classification_head(list(features.values()))
    return taps["logits"], teacher_logits


def dense_kd_deltas(taps: dict[str, Any], teacher: nn.Module, features: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(student, teacher) outputs of a one-stage detector's regression head (FCOS's box deltas,
    without its centerness)."""
    with torch.no_grad():
        teacher_deltas = teacher.head.regression_head(list(features.values()))
    first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731  FCOS: (deltas, centerness)
    return first(taps["deltas"]), first(teacher_deltas)


def base_anchor_sizes(spec: SpecLike) -> tuple[int, ...]:
    """One base anchor size per pyramid level: the spec's, or torchvision's 32, 64, ..."""
    return spec.anchor_sizes or tuple(32 * 2**k for k in range(spec.num_levels))


def tower_check(spec: SpecLike, name: str, multiple: int) -> str | None:
    """Why a one-stage family's ``head_convs`` / ``head_width`` are wrong (``None`` when fine)."""
    width = spec.head_width or spec.fpn_channels
    if not 1 <= spec.head_convs <= MAX_TOWER:
        return f"{name} head_convs (convs per head tower) must be in 1..{MAX_TOWER}, got {spec.head_convs}"
    if width % multiple:
        return f"{name} head_width must be a multiple of {multiple} (GroupNorm groups), got {width}"
    return None


def _tower_conv(cin: int, width: int, gn: bool) -> list[nn.Module]:
    conv = nn.Conv2d(cin, width, kernel_size=3, stride=1, padding=1)
    torch.nn.init.normal_(conv.weight, std=0.01)
    torch.nn.init.constant_(conv.bias, 0)
    if gn:  # FCOS: Conv2d, GroupNorm(32), ReLU laid out flat in the tower
        return [conv, nn.GroupNorm(32, width), nn.ReLU()]
    return [nn.Sequential(conv, nn.ReLU(inplace=True))]  # RetinaNet: Conv2dNormActivation without a norm


def set_towers(head: nn.Module, in_channels: int, convs: int, width: int, *, gn: bool) -> None:
    """Rebuild both towers of a one-stage ``head`` (``classification_head``, ``regression_head``)
    with ``convs`` convolutions of ``width`` channels, and their output convs to read ``width``
    channels (initialised as torchvision does; the output biases, constants, are kept). Leaves a
    head that already has that shape untouched, so a default student's random draws equal
    torchvision's."""
    if read_towers(head) == (convs, width):
        return
    for sub in (head.classification_head, head.regression_head):
        layers: list[nn.Module] = []
        for i in range(convs):
            layers += _tower_conv(in_channels if i == 0 else width, width, gn)
        sub.conv = nn.Sequential(*layers)
        for name in ("cls_logits", "bbox_reg", "bbox_ctrness"):
            old = getattr(sub, name, None)
            if isinstance(old, nn.Conv2d):
                new = nn.Conv2d(width, old.out_channels, kernel_size=3, stride=1, padding=1)
                torch.nn.init.normal_(new.weight, std=0.01)
                with torch.no_grad():
                    new.bias.copy_(old.bias)
                setattr(sub, name, new)


def read_towers(head: nn.Module) -> tuple[int, int]:
    """(convolutions per tower, their width) of a one-stage head (the classification tower's)."""
    convs = [m for m in head.classification_head.conv.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("a one-stage head tower without convolutions is not supported")
    return len(convs), int(convs[0].out_channels)
