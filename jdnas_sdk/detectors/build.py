"""Build torchvision detectors from a :class:`DetectorSpec`, with no weight downloads.

The modules and parameter names are torchvision's own (``backbone.body.layer1.0.conv1.weight``,
``backbone.fpn.inner_blocks.0.0.weight``, ``rpn.head...``), so a state dict from a torchvision
``*_resnet50_fpn`` detector loads into the model built from its spec and vice versa.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.misc import FrozenBatchNorm2d

from .._args import as_spec
from ..arch import Arch, DetectorSpec, standard_arch
from ..families import family_of
from ..student import Student, as_student
from .resnet import resnet_body

__all__ = ["build_detector", "resnet_fpn_backbone", "anchor_generator", "level_strides", "SPEC_ATTR", "ARCH_ATTR"]

#: Attributes under which a built detector carries its spec and arch (plain values, not modules).
SPEC_ATTR = "jdnas_spec"
ARCH_ATTR = "jdnas_arch"


def _norm_layer(spec: DetectorSpec) -> Callable[..., nn.Module]:
    return FrozenBatchNorm2d if spec.frozen_bn else nn.BatchNorm2d


def resnet_fpn_backbone(spec: DetectorSpec, arch: Arch | None = None) -> BackboneWithFPN:
    """ResNet body of ``arch`` + FPN, as torchvision's ``_resnet_fpn_extractor`` makes them.

    ``arch`` defaults to the standard shape of ``spec.backbone``.
    """
    arch = arch or standard_arch(spec.backbone)
    body = resnet_body(arch, _norm_layer(spec))
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][: spec.trainable_layers]
    if spec.trainable_layers == 5:
        trainable.append("bn1")
    for name, parameter in body.named_parameters():
        if not any(name.startswith(layer) for layer in trainable):
            parameter.requires_grad_(False)
    channels = spec.fpn_channels
    extra = family_of(spec).fpn_extra_block(channels)
    return_layers = {f"layer{k}": str(v) for v, k in enumerate(spec.returned_layers)}
    in_channels = [arch.widths[k - 1] for k in spec.returned_layers]
    return BackboneWithFPN(body, return_layers, in_channels, channels, extra_blocks=extra)


def level_strides(spec: DetectorSpec) -> list[int]:
    """The stride of every pyramid level the heads see (returned layers, then the extra levels)."""
    strides = [2 ** (k + 1) for k in spec.returned_layers]
    while len(strides) < spec.num_levels:
        strides.append(strides[-1] * 2)
    return strides


def anchor_generator(spec: DetectorSpec) -> AnchorGenerator:
    """The anchor generator torchvision uses for the family, with the spec's base sizes."""
    return family_of(spec).anchor_generator(spec, level_strides(spec))


def build_detector(spec: DetectorSpec, arch: Arch | Student | str | None = None) -> nn.Module:
    """A randomly initialised torchvision detector for ``spec`` with an ``arch`` backbone (train mode, CPU).

    ``arch`` is the backbone's :class:`Arch`, or a whole student (a :class:`Student` or its code,
    ``ARCH@HEADS``, whose head settings replace the spec's; a backbone-only code keeps them), and
    defaults to the standard shape of ``spec.backbone``. Spec and arch travel with the model
    (``model.jdnas_spec``, ``model.jdnas_arch``) so that saving needs nothing else.
    """
    spec, arch = as_student(as_spec(spec), arch, standard_arch(spec.backbone))
    model = family_of(spec).build(spec, resnet_fpn_backbone(spec, arch), anchor_generator(spec))
    setattr(model, SPEC_ATTR, spec)
    setattr(model, ARCH_ATTR, arch)
    return model
