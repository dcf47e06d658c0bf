"""OpKey: one canonical text per kernel; lowering matches the layers the real detector runs."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

from jdnas_sdk import Arch, LatencyTableError, build, standard_arch
from jdnas_sdk.latency import OpKey, lower, op_bytes, op_macs, reachable_ops
from jdnas_sdk.latency.lower import detector_input
from jdnas_sdk.space import SearchSpace

from .conftest import tiny_spec

CONV = "conv(n=1,cin=64,cout=64,k=3,s=1,g=1,h=64,w=64,norm=bn,act=relu,add=1)"


def test_key_text_round_trips_and_is_canonical() -> None:
    key = OpKey.parse(CONV)
    assert str(key) == CONV and key["cin"] == 64 and key["act"] == "relu"
    assert OpKey.make("conv", **key.as_dict()) == key
    assert hash(OpKey.parse(CONV)) == hash(key)
    assert op_macs(key) == 64 * 64 * 64 * 64 * 9
    assert op_bytes(key) == 4 * (64 * 64 * 64 + 64 * 64 * 9 + 64 + 2 * 64 * 64 * 64)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("conv(cin=64)", "needs fields"),
        ("gemm(rows=1)", "not an op key"),
        (CONV.replace("n=1,cin=64", "cin=64,n=1"), "not canonical"),
        (CONV.replace("act=relu", "act=gelu"), "act must be one of"),
        (CONV.replace("k=3", "k=-3"), "non-negative integer"),
        (CONV.replace("add=1", "add=2"), "add must be 0 or 1"),
        (CONV + " ", "not an op key"),
        (CONV.replace("s=1", "s=1,s=1"), "repeated"),
    ],
)
def test_bad_keys_are_refused_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(LatencyTableError, match=problem):
        OpKey.parse(text)


def _layers_run(model: nn.Module, size: tuple[int, int]) -> tuple[Counter, Counter]:
    convs: Counter = Counter()
    linears: Counter = Counter()

    def conv_hook(m: nn.Conv2d, inputs: tuple[torch.Tensor, ...], _: object) -> None:
        n, c, h, w = inputs[0].shape
        convs[(n, c, m.out_channels, m.kernel_size[0], m.stride[0], m.groups, h, w)] += 1

    def linear_hook(m: nn.Linear, inputs: tuple[torch.Tensor, ...], _: object) -> None:
        linears[(m.in_features, m.out_features)] += 1

    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(conv_hook)
        elif isinstance(module, nn.Linear):
            module.register_forward_hook(linear_hook)
    with torch.no_grad():
        model.eval()([torch.rand(3, *size)])
    return convs, linears


@pytest.mark.parametrize(
    "family, arch_code, size",
    [
        ("fasterrcnn", "basic:24|24:16x1,24x1|40:32x2|64:48x1|96:64x1", (96, 96)),
        ("retinanet", "bottleneck:16|48:16x1|64:24x2|96:32x1|128:48x1", (80, 112)),
        ("fcos", "bottleneck/g8:16|32:16x2|64:32x1|96:48x1|128:64x1", (96, 64)),
    ],
)
def test_lowering_lists_exactly_the_convolutions_and_linears_the_detector_runs(
    family: str, arch_code: str, size: tuple[int, int]
) -> None:
    spec = tiny_spec(family)
    arch = Arch.parse(arch_code)
    convs, linears = _layers_run(build(spec, arch), size)
    lowered = lower(spec, arch, size).counts()
    want_convs: Counter = Counter()
    want_linears: Counter = Counter()
    for key, count in lowered.items():
        f = key.as_dict()
        if key.kind == "conv":
            want_convs[tuple(f[x] for x in ("n", "cin", "cout", "k", "s", "g", "h", "w"))] += count
        elif key.kind == "linear":
            want_linears[(f["fin"], f["fout"])] += count
    assert convs == want_convs
    assert linears == want_linears


def test_detector_input_follows_torchvisions_resize_and_padding() -> None:
    spec = tiny_spec(min_size=96, max_size=128)
    assert detector_input(spec, (96, 96)) == (96, 96, 96, 96)
    assert detector_input(spec, (200, 400)) == (64, 128, 64, 128)
    assert detector_input(spec, (100, 130)) == (96, 124, 96, 128)
    model = build(spec).eval()
    images, _ = model.transform([torch.rand(3, 100, 130)])
    assert tuple(images.image_sizes[0]) == (96, 124) and tuple(images.tensors.shape[-2:]) == (96, 128)


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", "resnext50_32x4d"])
def test_every_arch_of_a_space_lowers_to_reachable_ops(backbone: str) -> None:
    spec = tiny_spec("retinanet" if backbone == "resnet50" else "fasterrcnn", backbone=backbone)
    space = SearchSpace(standard_arch(backbone), width_ratios=(0.5, 0.75, 1.0))
    reachable = set(reachable_ops(spec, space, (96, 96)))
    for seed in range(40):
        arch = space.sample(seed)
        assert arch in space
        ops = set(lower(spec, arch, (96, 96)).counts())
        ops.discard(lower(spec, arch, (96, 96)).fixed)
        assert ops <= reachable, sorted(map(str, ops - reachable))[:3]
