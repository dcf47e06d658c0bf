"""Detector files: one file per detector, loaded without executing anything from it.

The format is specified in ``FORMAT.md`` beside this module.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._args import as_path
from .._io import CorruptFile, atomic_torch_save, first_line, torch_load
from .._version import __version__
from ..arch import Arch, DetectorSpec, standard_arch
from ..errors import ArchError, DetectorFileError
from ..student import Student
from .build import build_detector
from .inspect import describe

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "save_detector", "load_detector", "read_detector_file", "nonfinite_tensor"]

FORMAT_NAME = "jdnas-detector"
FORMAT_VERSION = 2

_META_TYPES = (str, int, float, bool, type(None))


def save_detector(model: nn.Module, path: str | os.PathLike[str], *, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (any supported torchvision detector) to ``path`` atomically."""
    path = as_path(path, "path")
    spec, arch = describe(model)
    meta = dict(metadata or {})
    bad = {k: type(v).__name__ for k, v in meta.items() if not isinstance(k, str) or not isinstance(v, _META_TYPES)}
    if bad:
        raise DetectorFileError(f"metadata values must be str/int/float/bool/None, got {bad}")
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "sdk_version": __version__,
        "spec": spec.to_dict(),
        "arch": str(arch),
        "student": str(Student.of(spec, arch)),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metadata": meta,
    }
    return atomic_torch_save(path, payload)


def read_detector_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated top-level mapping of a detector file (weights not yet loaded into a model)."""
    file = as_path(path, "path")
    if not file.is_file():
        hint = "it is a directory" if file.is_dir() else "no such file"
        raise DetectorFileError(
            f"cannot read detector file {file}: {hint}; pass the .pt written by `jdnas train` or save_detector()"
        )
    try:
        payload = torch_load(file)
    except CorruptFile as exc:  # not an archive, a part failing its checksum, or a pickle of other objects
        fix = {
            "checksum": "; copy the file again from where it was written",
            "pickle": "; re-save the detector with jdnas_sdk.save_detector() where it was made",
        }
        raise DetectorFileError(f"{file} {exc}{fix.get(exc.kind, '')}") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DetectorFileError(f"{file} is corrupt, truncated or not a PyTorch file ({first_line(exc)})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        what = (
            "a bare state_dict"
            if isinstance(payload, dict) and all(isinstance(v, torch.Tensor) for v in payload.values())
            else type(payload).__name__
        )
        raise DetectorFileError(
            f"{file} is not a jdnas detector file (found {what}); build the model in Python, load its "
            "weights, and save it with jdnas_sdk.save_detector()"
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise DetectorFileError(
            f"{file} has detector format version {version!r}; this jdnas_sdk ({__version__}) reads "
            f"versions 1..{FORMAT_VERSION}: upgrade jdnas-sdk"
        )
    for key, kind in (("spec", dict), ("state_dict", dict), ("metadata", dict)):
        if not isinstance(payload.get(key), kind):
            raise DetectorFileError(f"{file} is damaged: field {key!r} is missing or not a {kind.__name__}")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload["state_dict"].items()):
        raise DetectorFileError(f"{file} is damaged: its state_dict holds something other than named tensors")
    bad = nonfinite_tensor(payload["state_dict"])
    if bad is not None:  # evaluated as AP 0, or trained into "loss became nan ... lower the learning rate"
        raise DetectorFileError(
            f"{file} is damaged: its weights hold NaN or inf ({bad}); copy it again from where it was written, or "
            "train it again"
        )
    try:
        json.dumps(payload["metadata"])
    except (TypeError, ValueError) as exc:
        raise DetectorFileError(f"{file} is damaged: its metadata is not plain data ({first_line(exc)})") from exc
    return payload


def nonfinite_tensor(state: dict[str, Any]) -> str | None:
    """The name of the first floating-point tensor of ``state`` (a state_dict) holding NaN or inf, else
    ``None``: what detector files, training checkpoints and best-weights files are refused for."""
    return next(
        (
            k
            for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not v.isfinite().all()
        ),
        None,
    )


def load_detector(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild the detector stored at ``path``; returned in eval mode on CPU."""
    payload = read_detector_file(path)
    try:
        spec = DetectorSpec.from_dict(payload["spec"])
    except ArchError as exc:
        raise DetectorFileError(f"{path} has an invalid detector spec: {exc}") from exc
    try:
        arch = Arch.parse(payload["arch"]) if payload.get("arch") is not None else standard_arch(spec.backbone)
    except ArchError as exc:
        raise DetectorFileError(f"{path} has an invalid architecture code: {exc}") from exc
    state = payload["state_dict"]
    wanted = _meta_state(spec, arch, path)  # shapes only: nothing allocated until they fit the file's tensors
    missing = sorted(set(wanted) - set(state))
    unexpected = sorted(set(state) - set(wanted))
    shapes = sorted(
        k
        for k, v in state.items()
        if k in wanted and (not isinstance(v, torch.Tensor) or tuple(v.shape) != tuple(wanted[k].shape))
    )
    if missing or unexpected or shapes:
        raise DetectorFileError(
            f"{path}: weights do not fit its {spec.family}/{spec.backbone} spec (missing "
            f"{missing[:3]}, unexpected {unexpected[:3]}, wrong shape or type {shapes[:3]})"
        )
    model = build_detector(spec, arch)  # as large as the file's own tensors: they fit
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def _meta_state(spec: DetectorSpec, arch: Arch, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state_dict shapes of ``(spec, arch)``, built on the meta device (no memory): a damaged
    file with absurd sizes (a billion classes, a million-channel FPN) is refused here rather than
    allocating hundreds of GB."""
    try:
        with torch.device("meta"):
            return build_detector(spec, arch).state_dict()
    except (ArchError, ValueError, RuntimeError, TypeError, OverflowError) as exc:
        raise DetectorFileError(
            f"{path}: its spec and architecture do not describe a buildable detector ({first_line(exc)})"
        ) from exc
