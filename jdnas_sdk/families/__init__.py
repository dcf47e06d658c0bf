"""Detector families: one module per torchvision family, one registry keyed by name.

``get_family("retinanet")`` or ``family_of(spec_or_model)`` gives the :class:`Family` object
every stage asks for what differs between families (see :mod:`.base`). Adding a family means
adding one module with a :class:`Family` subclass, registering it in :data:`REGISTRY` below, and
its tests; nothing else tests family names.
"""

from __future__ import annotations

from torch import nn

from ..errors import ArchError, UnsupportedModelError
from .base import Family, KDTap, SpecLike
from .fcos import FCOSFamily
from .rcnn import FasterRCNNFamily, KeypointRCNNFamily, MaskRCNNFamily
from .retinanet import RetinaNetFamily

__all__ = ["Family", "SpecLike", "KDTap", "REGISTRY", "get_family", "family_of"]

#: Every family the SDK builds, by name, in the order they are listed to users.
REGISTRY: dict[str, Family] = {
    f.name: f
    for f in (
        FasterRCNNFamily(),
        MaskRCNNFamily(),
        KeypointRCNNFamily(),
        RetinaNetFamily(),
        FCOSFamily(),
    )
}

#: Families ordered for matching a model's class: subclasses (Mask, Keypoint R-CNN) before their bases.
_BY_CLASS: tuple[Family, ...] = tuple(sorted(REGISTRY.values(), key=lambda f: -len(f.model_class.__mro__)))


def get_family(name: str) -> Family:
    """The family called ``name``; an unknown name raises :class:`ArchError` listing the known ones."""
    family = REGISTRY.get(name) if isinstance(name, str) else None
    if family is None:
        raise ArchError(f"unknown detector family {name!r}; supported: {', '.join(REGISTRY)}")
    return family


def family_of(thing: str | SpecLike | nn.Module) -> Family:
    """The family of a name, a spec (its ``family`` field) or a torchvision detector (by class);
    a model of no supported class raises :class:`UnsupportedModelError`."""
    if isinstance(thing, nn.Module):
        for family in _BY_CLASS:
            if isinstance(thing, family.model_class):
                return family
        raise UnsupportedModelError(
            f"model class {type(thing).__module__}.{type(thing).__qualname__} is not a supported detector; "
            f"supported: torchvision {', '.join(f.model_class.__name__ for f in REGISTRY.values())}"
        )
    return get_family(thing if isinstance(thing, str) else thing.family)
