"""ResNet bodies of any :class:`Arch`, with torchvision's module types and parameter names.

Blocks are torchvision's own ``BasicBlock`` / ``Bottleneck`` classes (so their ``forward`` is
torchvision's) with their convolutions sized from the arch: a block's mid width and the stage's
residual width can be anything, and a standard arch gives exactly torchvision's layout.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1, conv3x3

from ..arch import Arch, Stage

__all__ = ["make_block", "resnet_body", "read_arch"]

NormLayer = Callable[[int], nn.Module]


def make_block(arch: Arch, inplanes: int, mid: int, out: int, stride: int, norm_layer: NormLayer) -> nn.Module:
    """One residual block ``inplanes -> out`` with inner width ``mid``; projects the shortcut when needed."""
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(conv1x1(inplanes, out, stride), norm_layer(out))
    if arch.block == "basic":
        block: nn.Module = BasicBlock(inplanes, mid, stride, downsample, norm_layer=norm_layer)
        block.conv2, block.bn2 = conv3x3(mid, out), norm_layer(out)
    else:
        block = Bottleneck(inplanes, mid // arch.groups, stride, downsample, groups=arch.groups, norm_layer=norm_layer)
        block.conv3, block.bn3 = conv1x1(mid, out), norm_layer(out)
    return block


def _init(module: nn.Module) -> None:
    # torchvision's ResNet initialisation, so a custom arch trains like a standard one
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


class ResNetBody(nn.Module):
    """Stem + four stages, named as torchvision's ``ResNet`` (``conv1``, ``bn1``, ``layer1``...)."""

    def __init__(self, arch: Arch, norm_layer: NormLayer) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, arch.stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(arch.stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = arch.stem
        for index, stage in enumerate(arch.stages, start=1):
            blocks = []
            for j, mid in enumerate(stage.mids):
                stride = 2 if j == 0 and index > 1 else 1
                blocks.append(make_block(arch, inplanes, mid, stage.width, stride, norm_layer))
                inplanes = stage.width
            setattr(self, f"layer{index}", nn.Sequential(*blocks))
        _init(self)


def resnet_body(arch: Arch, norm_layer: NormLayer) -> nn.Module:
    """A randomly initialised ResNet body of ``arch``."""
    return ResNetBody(arch, norm_layer)


def read_arch(body: nn.Module) -> Arch:
    """The :class:`Arch` of a torchvision-style ResNet body (all four stages must be present)."""
    layers = [getattr(body, f"layer{i}", None) for i in range(1, 5)]
    first = layers[0][0]
    block = "basic" if isinstance(first, BasicBlock) else "bottleneck"
    groups = 1 if block == "basic" else first.conv2.groups
    stages = []
    for layer in layers:
        mids = tuple(b.conv1.out_channels for b in layer)
        width = layer[0].conv2.out_channels if block == "basic" else layer[0].conv3.out_channels
        stages.append(Stage(width=width, mids=mids))
    return Arch(block=block, stem=body.conv1.out_channels, stages=tuple(stages), groups=groups)
