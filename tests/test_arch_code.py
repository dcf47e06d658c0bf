from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jdnas_sdk import Arch, ArchError, Stage, standard_arch
from jdnas_sdk.arch import BACKBONES, MAX_BLOCKS


@pytest.mark.parametrize("name", BACKBONES)
def test_standard_codes_round_trip(name: str) -> None:
    arch = standard_arch(name)
    assert Arch.parse(str(arch)) == arch and hash(arch) == hash(Arch.parse(str(arch)))


def test_code_is_readable() -> None:
    assert str(standard_arch("resnet50")) == "bottleneck:64|256:64x3|512:128x4|1024:256x6|2048:512x3"
    arch = Arch.parse("bottleneck/g32:64|256:128x2,96x1|512:256x4|1024:512x6|2048:1024x3")
    assert arch.groups == 32 and arch.stages[0].mids == (128, 128, 96) and arch.depths == (3, 4, 6, 3)


@st.composite
def archs(draw: st.DrawFn) -> Arch:
    block = draw(st.sampled_from(["basic", "bottleneck"]))
    groups = draw(st.sampled_from([1, 2, 4, 32])) if block == "bottleneck" else 1
    stages = tuple(
        Stage(
            width=draw(st.integers(1, 4096)),
            mids=tuple(groups * draw(st.integers(1, 64)) for _ in range(draw(st.integers(1, 8)))),
        )
        for _ in range(4)
    )
    return Arch(block=block, stem=draw(st.integers(1, 512)), stages=stages, groups=groups)


@given(archs())
@settings(max_examples=200, deadline=None)
def test_random_archs_round_trip(arch: Arch) -> None:
    assert Arch.parse(str(arch)) == arch


# any text, and near-misses built from the code's own alphabet
_TEXTS = st.text(max_size=80) | st.lists(st.sampled_from(list("bascilotenk/g:|x,0123456789")), max_size=60).map("".join)


@given(_TEXTS)
@settings(max_examples=1000, deadline=None)
def test_random_strings_raise_arch_error_only(text: str) -> None:
    """Parsing either raises ArchError or gives an arch that round-trips; nothing else escapes."""
    try:
        arch = Arch.parse(text)
    except ArchError:
        return
    assert Arch.parse(str(arch)) == arch


@pytest.mark.parametrize(
    ("code", "needle"),
    [
        ("bottleneck:64|256:64x3|512:128x4|1024:256x6", "5 '|'-separated parts"),
        ("conv:64|64:64x2|128:128x2|256:256x2|512:512x2", "block type"),
        ("basic/g2:64|64:64x2|128:128x2|256:256x2|512:512x2", "needs bottleneck"),
        ("bottleneck/g32:64|256:100x3|512:256x4|1024:512x6|2048:1024x3", "multiple of groups"),
        ("basic:0|64:64x2|128:128x2|256:256x2|512:512x2", "stem width"),
        ("basic:64|64:64x0|128:128x2|256:256x2|512:512x2", "1..64 blocks"),
        (f"basic:64|64:64x{MAX_BLOCKS + 1}|128:128x2|256:256x2|512:512x2", "1..64 blocks"),
        ("basic:64|64:-64x2|128:128x2|256:256x2|512:512x2", "positive integer"),
        ("basic:64|64|128:128x2|256:256x2|512:512x2", "WIDTH:MIDxCOUNT"),
        ("basic:64|64:64*2|128:128x2|256:256x2|512:512x2", "MIDxCOUNT"),
        ("basic:64|64:９x2|128:128x2|256:256x2|512:512x2", "positive integer"),
    ],
)
def test_invalid_codes_say_what_is_wrong(code: str, needle: str) -> None:
    with pytest.raises(ArchError, match=needle):
        Arch.parse(code)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(ArchError, match="string"):
        Arch.parse(42)  # type: ignore[arg-type]
