"""Read the (:class:`DetectorSpec`, :class:`Arch`) of a torchvision detector, or say why not.

A model built by :func:`build_detector` carries both; any other torchvision detector is read
module by module, and the result is checked by rebuilding it and comparing every parameter and
buffer name and shape and every leaf module's settings (strides, groups, norms, RoI pooling,
transform), so a description is only returned when it rebuilds the same model.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops.misc import FrozenBatchNorm2d

from ..arch import BACKBONES, FAMILIES, Arch, DetectorSpec, standard_arch
from ..errors import ArchError, UnsupportedModelError
from ..families import Family, family_of
from .build import ARCH_ATTR, SPEC_ATTR, build_detector
from .resnet import read_arch

__all__ = ["describe", "spec_of", "nearest_backbone"]

_SUPPORTED = (
    f"supported: torchvision {', '.join(FAMILIES.values())} over a ResNet-FPN backbone ({', '.join(BACKBONES)})"
)


def _unsupported(what: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"{what}; {_SUPPORTED}")


def _family(model: nn.Module) -> Family:
    try:
        return family_of(model)
    except UnsupportedModelError:
        raise _unsupported(
            f"model class {type(model).__module__}.{type(model).__qualname__} is not a supported detector"
        ) from None


def _read_body(body: nn.Module) -> Arch:
    layers = [getattr(body, f"layer{i}", None) for i in range(1, 5)]
    if not all(isinstance(layer, nn.Sequential) and len(layer) for layer in layers) or not hasattr(body, "conv1"):
        raise _unsupported(f"backbone body {type(body).__qualname__} is not a four-stage torchvision ResNet")
    kinds = {type(block) for layer in layers for block in layer}
    if not kinds <= {BasicBlock, Bottleneck} or len(kinds) != 1:
        names = sorted(f"{k.__module__}.{k.__qualname__}" for k in kinds)
        raise _unsupported(f"backbone blocks {names} are not all torchvision BasicBlock or all Bottleneck")
    try:
        return read_arch(body)
    except (ArchError, AttributeError) as exc:
        raise _unsupported(f"backbone body does not fit the ResNet search space ({exc})") from exc


def nearest_backbone(arch: Arch) -> str:
    """The torchvision backbone whose standard arch is ``arch``, else the closest one.

    Closest: same block type and groups first, then the smallest difference in depth, stage widths
    and mean mid widths (in units of 64 channels).
    """

    def distance(name: str) -> tuple[int, float]:
        ref = standard_arch(name)
        gap = abs(sum(ref.depths) - sum(arch.depths))
        for a, b in zip(ref.stages, arch.stages):
            gap += abs(a.width - b.width) / 64 + abs(sum(a.mids) / a.depth - sum(b.mids) / b.depth) / 64
        return (0 if (ref.block, ref.groups) == (arch.block, arch.groups) else 1, gap)

    return min(BACKBONES, key=distance)


def spec_of(model: nn.Module) -> DetectorSpec:
    """The :class:`DetectorSpec` of ``model`` (see :func:`describe`)."""
    return describe(model)[0]


def describe(model: nn.Module) -> tuple[DetectorSpec, Arch]:
    """The (spec, arch) that rebuild ``model``; raises :class:`UnsupportedModelError` when none does.

    A model built by this SDK carries both; any other torchvision detector is read module by module
    and accepted only if :func:`build_detector` rebuilds it with the same modules and shapes.
    """
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"expected a torch.nn.Module detector, got {type(model).__name__}; {_SUPPORTED}")
    carried = getattr(model, SPEC_ATTR, None), getattr(model, ARCH_ATTR, None)
    if isinstance(carried[0], DetectorSpec) and isinstance(carried[1], Arch):
        return carried[0], carried[1]
    family = _family(model)
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, BackboneWithFPN):
        raise _unsupported(f"{type(model).__name__}.backbone is {type(backbone).__qualname__}, not a BackboneWithFPN")
    body = backbone.body
    arch = _read_body(body)
    name = nearest_backbone(arch)
    returned = tuple(sorted(int(layer[len("layer") :]) for layer in body.return_layers))
    trainable = _trainable_layers(body)
    uses_frozen = any(isinstance(m, FrozenBatchNorm2d) for m in body.modules())
    try:
        heads = family.read(model)
    except ValueError as exc:
        raise _unsupported(str(exc)) from exc
    try:
        spec = DetectorSpec(
            family=family.name,
            backbone=name,
            min_size=int(max(model.transform.min_size)),
            max_size=int(model.transform.max_size),
            fpn_channels=int(backbone.out_channels),
            returned_layers=returned,
            trainable_layers=trainable,
            frozen_bn=uses_frozen,
            **heads,
        )
    except ArchError as exc:
        raise _unsupported(f"{type(model).__name__} has settings outside the supported space ({exc})") from exc
    _check_rebuild(model, spec, arch, family)
    return spec, arch


def _trainable_layers(body: nn.Module) -> int:
    order = ["conv1", "layer1", "layer2", "layer3", "layer4"]
    trainable = {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad}
    count = 0
    for layer in reversed(order):
        if layer not in trainable and any(n.startswith(layer + ".") for n, _ in body.named_parameters()):
            break
        count += 1
    return count


def _leaves(model: nn.Module) -> dict[str, str]:
    """Each leaf module's repr on one line (a transform's repr spans lines; an error names it in one)."""
    return {name: " ".join(repr(m).split()) for name, m in model.named_modules() if not list(m.children())}


def _check_rebuild(model: nn.Module, spec: DetectorSpec, arch: Arch, family: Family) -> None:
    rebuilt_model = build_detector(spec, arch)
    ours, theirs = family.anchors_of(rebuilt_model), family.anchors_of(model)
    if (tuple(map(tuple, ours.sizes)), tuple(map(tuple, ours.aspect_ratios))) != (
        tuple(map(tuple, theirs.sizes)),
        tuple(map(tuple, theirs.aspect_ratios)),
    ):
        raise _unsupported(
            f"anchor generator (sizes {theirs.sizes}, aspect ratios {theirs.aspect_ratios}) is not "
            f"the family's standard layout (sizes {ours.sizes}, aspect ratios {ours.aspect_ratios})"
        )
    rebuilt = rebuilt_model.state_dict()
    found = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wanted = {k: tuple(v.shape) for k, v in rebuilt.items()}
    if found == wanted:
        theirs_leaves, ours_leaves = _leaves(model), _leaves(rebuilt_model)
        differ = [k for k in ours_leaves if theirs_leaves.get(k) != ours_leaves[k]]
        if not differ and theirs_leaves.keys() == ours_leaves.keys():
            return
        first = differ[0] if differ else sorted(set(theirs_leaves) ^ set(ours_leaves))[0]
        raise _unsupported(
            f"{type(model).__name__} module {first!r} is {theirs_leaves.get(first, 'absent')}, where the "
            f"supported layout has {ours_leaves.get(first, 'nothing')}"
        )
    extra = sorted(set(found) - set(wanted))[:3]
    missing = sorted(set(wanted) - set(found))[:3]
    shapes = [k for k in set(found) & set(wanted) if found[k] != wanted[k]][:3]
    raise _unsupported(
        f"{type(model).__name__} differs from the standard {spec.family}/{spec.backbone} layout "
        f"(unexpected {extra}, missing {missing}, other shapes {shapes})"
    )
