"""A whole student's shape: the backbone :class:`~jdnas_sdk.arch.Arch` and the head settings the search may change.

:class:`Heads` holds the detector-level knobs, each a :class:`~jdnas_sdk.arch.DetectorSpec`
field: the FPN width, the input size (``min_size``/``max_size``; anchors are kept), and the
family's own ``head_settings`` — R-CNN proposals kept at test time and box-head width, Mask
R-CNN's mask-head width, RetinaNet/FCOS convolutions per head tower, their width and the boxes
kept per level before NMS (``topk``; ``None`` is torchvision's 1000, so codes written before the
knob existed read the same).
:class:`Student` pairs it with the backbone. Both are frozen and round-trip through one code::

    basic:64|64:64x2|128:128x2|256:256x2|512:512x2@fpn64,in256x256,p300,b256

(the backbone's code, ``@``, then the heads: ``fpnN`` FPN width, ``inMINxMAX`` input size, ``pN`` or
``pPRE/POST`` proposals, ``bN`` box head, ``mN`` mask head, ``cN`` tower convs, ``wN`` tower width,
``kN`` one-stage boxes per level before NMS, written only where not 1000). A backbone-only code (no
``@``) still parses: its heads are the spec's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from .arch import MAX_BLOCKS, MAX_INPUT_SIDE, MAX_WIDTH, Arch, DetectorSpec
from .errors import ArchError
from .families import get_family
from .families.retinanet import TOPK

__all__ = ["Heads", "Student", "as_student", "HEAD_FIELDS"]

#: Each :class:`Heads` field with its code prefix and the spec fields it sets. ``None`` on a
#: Heads field means the family has no such head.
HEAD_FIELDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "fpn": ("fpn", ("fpn_channels",)),
    "proposals": ("p", ("rpn_post_nms_top_n_test",)),
    "pre": ("", ("rpn_pre_nms_top_n_test",)),  # written inside the ``p`` token: pPRE/POST
    "box": ("b", ("representation_size",)),
    "mask": ("m", ("mask_head_width",)),
    "convs": ("c", ("head_convs",)),
    "width": ("w", ("head_width",)),
    "topk": ("k", ("topk_candidates",)),
}
_TOKEN = re.compile(r"^(fpn|in|p|b|m|c|w|k)(\d{1,6})(?:[x/](\d{1,6}))?$", re.ASCII)  # 0-9 only


def _letters(has: Any) -> str:
    """The student-code parts of the head settings a family has (``fpn``, ``in``, ``p``, ``b``, ...)."""
    parts = [f"{letter}N" for name, (letter, (field, *_)) in HEAD_FIELDS.items() if name != "fpn" and field in has]
    return ", ".join(["fpnN", "inMINxMAX", *(p for p in parts if p != "N")])  # pre is written inside pPRE/POST


#: The largest value of each head setting that allocates with it, as :class:`~jdnas_sdk.arch.DetectorSpec` holds
#: them (widths as a backbone's, sizes as an input's side, tower convs as a stage's blocks); counts of
#: proposals and boxes allocate nothing of their own and have none.
HEAD_LIMITS: dict[str, int] = {
    **dict.fromkeys(("fpn", "box", "mask", "width"), MAX_WIDTH),
    **dict.fromkeys(("min_size", "max_size"), MAX_INPUT_SIDE),
    "convs": MAX_BLOCKS,
}


@dataclass(frozen=True)
class Heads:
    """The head settings of one student (see the module doc); build one with :meth:`of`."""

    fpn: int
    min_size: int
    max_size: int
    proposals: int | None = None
    pre: int | None = None
    box: int | None = None
    mask: int | None = None
    convs: int | None = None
    width: int | None = None
    topk: int | None = None

    def __post_init__(self) -> None:
        if self.topk == TOPK:  # torchvision's default is spelled None, so that equal heads compare equal
            object.__setattr__(self, "topk", None)
        for name in ("fpn", "min_size", "max_size", "proposals", "pre", "box", "mask", "convs", "width", "topk"):
            value = getattr(self, name)
            if value is None and name not in ("fpn", "min_size", "max_size"):
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ArchError(f"head setting {name} must be a positive integer, got {value!r}")
            if value > HEAD_LIMITS.get(name, value):  # a typo, not a detector: here, not as torch out of memory
                raise ArchError(
                    f"head setting {name}={value} is above the most a detector may have ({HEAD_LIMITS[name]}); "
                    "check it (or the student code) for a typo"
                )
        if (self.proposals is None) != (self.pre is None):
            raise ArchError("head settings proposals and pre (R-CNN proposals after/before the RPN's NMS) go together")
        if (self.convs is None) != (self.width is None):
            raise ArchError("head settings convs and width (one-stage head towers) go together")

    def value(self, knob: str) -> int | None:
        """Setting ``knob`` as a search grid spells it: ``size`` is ``min_size``, a ``topk`` of
        ``None`` is torchvision's 1000; ``None`` where the family has no such head."""
        if knob == "size":
            return self.min_size
        if knob == "topk":
            return TOPK if self.topk is None else self.topk
        return getattr(self, knob)

    @classmethod
    def of(cls, spec: DetectorSpec) -> Heads:
        """The head settings of ``spec`` (only those its family has)."""
        has = get_family(spec.family).head_settings
        values: dict[str, Any] = {"fpn": spec.fpn_channels, "min_size": spec.min_size, "max_size": spec.max_size}
        for name, (_, (field, *_)) in HEAD_FIELDS.items():
            if name != "fpn" and field in has:
                values[name] = getattr(spec, field)
        return cls(**values)

    def apply(self, spec: DetectorSpec) -> DetectorSpec:
        """``spec`` with these head settings (anchors, classes and the rest kept). A setting the
        spec's family has no head for raises :class:`ArchError`."""
        has = get_family(spec.family).head_settings
        changes: dict[str, Any] = {"fpn_channels": self.fpn, "min_size": self.min_size, "max_size": self.max_size}
        if "topk_candidates" in has:
            changes["topk_candidates"] = self.value("topk")
        for name, (_, fields_) in HEAD_FIELDS.items():
            value = getattr(self, name)
            if name == "fpn" or value is None:
                continue
            if fields_[0] not in has:
                raise ArchError(
                    f"head setting {name}={value} (the code's '{HEAD_FIELDS[name][0]}{value}') does not apply to "
                    f"{spec.family}; remove it from the student code (a {spec.family} has: {_letters(has)})"
                )
            changes.update(dict.fromkeys(fields_, value))
        optional = ("fpn", "topk")  # topk None is torchvision's 1000
        missing = [n for n, (_, f) in HEAD_FIELDS.items() if n not in optional and f[0] in has]
        missing = [n for n in missing if getattr(self, n) is None]
        if missing:
            raise ArchError(
                f"head settings {missing} are needed for {spec.family}; add them to the student code "
                f"({', '.join(HEAD_FIELDS[n][0] + 'N' for n in missing if HEAD_FIELDS[n][0])})"
            )
        return replace(spec, **changes)

    def __str__(self) -> str:
        parts = [f"fpn{self.fpn}", f"in{self.min_size}x{self.max_size}"]
        if self.proposals is not None:
            parts.append(f"p{self.proposals}" if self.pre == self.proposals else f"p{self.pre}/{self.proposals}")
        for name in ("box", "mask", "convs", "width", "topk"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{HEAD_FIELDS[name][0]}{value}")
        return ",".join(parts)

    @classmethod
    def parse(cls, code: str) -> Heads:
        """Read a code written by ``str(heads)``; anything else raises :class:`ArchError`."""
        values: dict[str, int] = {}
        seen: set[str] = set()
        names = {"fpn": "fpn", "b": "box", "m": "mask", "c": "convs", "w": "width", "k": "topk"}
        for token in code.split(","):
            match = _TOKEN.match(token.strip())
            if not match:
                raise ArchError(f"head code {code!r}: bad part {token!r}; example: fpn64,in256x256,p300,b256")
            prefix, first, second = match.group(1), int(match.group(2)), match.group(3)
            if prefix in seen:  # two values for one setting: which was meant cannot be told
                raise ArchError(f"head code {code!r}: {prefix!r} is given twice; give each setting once")
            seen.add(prefix)
            if prefix == "in":
                values["min_size"], values["max_size"] = first, int(second or first)
            elif prefix == "p":
                values["pre"], values["proposals"] = first, int(second or first)
            elif second is None:
                values[names[prefix]] = first
            else:
                raise ArchError(f"head code {code!r}: part {token!r} takes one number")
        missing = [n for n in ("fpn", "min_size") if n not in values]
        if missing:
            raise ArchError(f"head code {code!r} lacks {missing} (fpnN and inMINxMAX are always written)")
        return cls(**values)


@dataclass(frozen=True)
class Student:
    """A whole student: backbone ``arch`` and head settings ``heads`` (``None``: the spec's own)."""

    arch: Arch
    heads: Heads | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.arch, Arch) or not (self.heads is None or isinstance(self.heads, Heads)):
            raise ArchError("a Student is an Arch and Heads (or None)")

    @classmethod
    def of(cls, spec: DetectorSpec, arch: Arch) -> Student:
        """The student a detector of ``spec`` with backbone ``arch`` is (heads written out)."""
        return cls(arch, Heads.of(spec))

    def spec(self, base: DetectorSpec) -> DetectorSpec:
        """``base`` with this student's head settings."""
        return base if self.heads is None else self.heads.apply(base)

    def __str__(self) -> str:
        return str(self.arch) + ("" if self.heads is None else f"@{self.heads}")

    @classmethod
    def parse(cls, code: str) -> Student:
        """Read a student code, or a backbone-only :class:`Arch` code (heads ``None``)."""
        if not isinstance(code, str):
            raise ArchError(f"a student code is a string, got {type(code).__name__}")
        arch_code, sep, heads = code.strip().partition("@")
        return cls(Arch.parse(arch_code), Heads.parse(heads) if sep else None)


def as_student(spec: DetectorSpec, code: str | Arch | Student | None, default: Arch) -> tuple[DetectorSpec, Arch]:
    """``(spec with the student's heads, its backbone)`` for a student code, :class:`Student`,
    :class:`Arch` (the spec's heads) or ``None`` (``default`` backbone, the spec's heads)."""
    if code is None:
        return spec, default
    if isinstance(code, Arch):
        return spec, code
    student = Student.parse(code) if isinstance(code, str) else code
    if not isinstance(student, Student):
        raise ArchError(f"a student is a code, an Arch or a Student, got {type(code).__name__}")
    return student.spec(spec), student.arch
