"""``export``: the whole detector as ONNX (checked, and compared with PyTorch), and as a TensorRT engine.

The ONNX graph holds pre-processing, backbone, heads and NMS (see
:mod:`jdnas_sdk.detectors.onnx`); it must pass ``onnx.checker`` and, run in ONNX Runtime on a
probe image, give PyTorch's boxes, scores and labels: the largest difference is reported. The
TensorRT engine is built from that ONNX through TensorRT's Python API where TensorRT is installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from .._args import as_input_size, as_path
from .._io import atomic_path
from ..detectors import detector_onnx, spec_of
from ..errors import ExportError
from ..latency.backends import OrtBackend, tensorrt_available
from ..latency.probe import full_load, probe_image
from .rcnn_export import RcnnSplitExport, build_rcnn_engines, export_rcnn_split

__all__ = ["ExportResult", "export", "onnx_parity"]


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote and checked. ``max_abs_diff`` compares ONNX Runtime's outputs
    with PyTorch's on a probe image (boxes in pixels and scores over paired detections, and the
    fraction paired, see :func:`onnx_parity`); ``detections`` is how many boxes each returned. Where
    the detector keeps nothing at its own score threshold, the same graph is compared at full
    detection load instead (``max_abs_diff["full_load"] == 1``): 0 against 0 boxes checks nothing."""

    onnx_path: Path
    engine_path: Path | None
    input_size: tuple[int, int]
    max_abs_diff: dict[str, float]
    detections: tuple[int, int]
    split: RcnnSplitExport | None = None

    def summary(self) -> str:
        d = self.max_abs_diff
        diffs = (
            (
                f"boxes {d.get('boxes', 0):.2e} px, scores {d.get('scores', 0):.2e}, "
                f"{100 * d.get('matched', 1):.1f}% of detections paired"
            )
            if d and max(self.detections)
            else ("nothing detected on the probe image even at full load: boxes not compared" if d else "not checked")
        )
        if d.get("full_load"):
            diffs += " (at full detection load: none kept at the detector's own score threshold)"
        engine = f"; TensorRT engine {self.engine_path}" if self.engine_path else ""
        split = ""
        if self.split is not None:
            s = self.split
            split = (
                f"; for TensorRT, dense graphs {s.dense_path} and {s.box_head_path} (anchors, proposals, RoI align "
                f"and NMS in torch), split vs PyTorch: {s.detections[0]} vs {s.detections[1]} detections, "
                f"boxes {s.max_abs_diff.get('boxes', 0):.2e} px"
                + (" (at full detection load)" if s.max_abs_diff.get("full_load") else "")
                + (" (nothing detected: not compared)" if s.max_abs_diff and not max(s.detections) else "")
            )
        return (
            f"ONNX {self.onnx_path} ({self.input_size[0]}x{self.input_size[1]}); ONNX Runtime vs PyTorch: "
            f"{self.detections[0]} vs {self.detections[1]} detections, largest differences {diffs}{split}{engine}"
        )


def onnx_parity(
    model: nn.Module, onnx_model: bytes | str | os.PathLike[str], image: torch.Tensor
) -> tuple[dict[str, float], tuple[int, int]]:
    """ONNX Runtime's outputs against PyTorch's on ``image``.

    Detections are paired by label and box overlap (IoU > 0.99; among near-identical boxes, the closest
    score, then the most overlap: :func:`_pairs`), since two detections with equal
    scores may come in either order and an NMS decision on a box at exactly the overlap threshold
    may flip with the last bit of a float. Returns the largest box and score differences over the
    pairs, the fraction of detections paired (``matched``, the smaller of both directions), the
    largest difference between the two sorted score lists (``ranked_scores``: blind to which of
    several tied boxes was kept), and both detection counts.
    """
    session = OrtBackend().session(onnx_model if isinstance(onnx_model, bytes) else Path(onnx_model).read_bytes())
    outputs = session.run(None, {session.get_inputs()[0].name: image.numpy()})
    got = dict(zip([o.name for o in session.get_outputs()], outputs))
    with torch.no_grad():
        want = {k: v.numpy() for k, v in model.eval()([image])[0].items()}
    counts = (int(got["boxes"].shape[0]), int(want["boxes"].shape[0]))
    if not min(counts):
        return {"boxes": 0.0, "scores": 0.0, "ranked_scores": 0.0, "matched": float(counts[0] == counts[1])}, counts
    iou = _iou(got["boxes"], want["boxes"])
    iou[got["labels"][:, None] != want["labels"][None, :]] = 0
    best, paired = _pairs(iou, got["scores"], want["scores"])
    box_diff = np.abs(got["boxes"][paired] - want["boxes"][best[paired]]).max() if paired.any() else np.inf
    score_diff = np.abs(got["scores"][paired] - want["scores"][best[paired]]).max() if paired.any() else np.inf
    matched = min(paired.mean(), (iou.max(axis=0) > 0.99).mean())
    ranked = float(np.abs(np.sort(got["scores"]) - np.sort(want["scores"])).max()) if counts[0] == counts[1] else np.inf
    return {
        "boxes": float(box_diff),
        "scores": float(score_diff),
        "ranked_scores": ranked,
        "matched": float(matched),
    }, counts


def _pairs(iou: np.ndarray, got: np.ndarray, want: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each of ONNX Runtime's detections' partner among PyTorch's and whether it has one (IoU > 0.99):
    among near-identical boxes (a dense head at full load keeps dozens of one label) the closest score,
    so that a tie between boxes is not read as a score difference; else the most overlapping box."""
    close = iou > 0.99
    gap = np.abs(got[:, None].astype(np.float64) - want[None, :]) + 1e-12 * (1 - iou)  # equal scores: most overlap
    gap = np.where(close, gap, np.inf)
    best = np.where(close.any(axis=1), gap.argmin(axis=1), iou.argmax(axis=1))
    return best, close[np.arange(len(best)), best]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU; boxes equal to 1e-4 px count as 1, so that a degenerate box (zero width or height,
    which an untrained or narrow student can output) pairs with itself rather than scoring 0/0."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(axis=1)
    iou = inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)
    same = np.abs(a[:, None, :] - b[None, :, :]).max(axis=2, initial=0.0) <= 1e-4
    return np.where(same, 1.0, iou)


def export(
    model: nn.Module,
    onnx_path: str | os.PathLike[str],
    *,
    engine: str | os.PathLike[str] | None = None,
    precision: str = "fp16",
    input_size: tuple[int, int] | None = None,
    check: bool = True,
    split: bool | None = None,
) -> ExportResult:
    """Write ``model`` as ONNX to ``onnx_path`` (and a TensorRT engine to ``engine``).

    ``input_size`` is the image (height, width) the graph is traced for, by default the
    detector's ``min_size`` square. ``check`` runs ``onnx.checker`` and the parity comparison.
    ``split`` (default: for a Faster R-CNN when an engine is asked for) also writes its dense
    graphs for TensorRT (:mod:`.rcnn_export`; TensorRT cannot parse the whole R-CNN graph) and
    builds the engines from them (``engine``'s ``.dense`` and ``.box_head`` files).
    Asking for an engine where TensorRT cannot run raises :class:`ExportError` with the reason,
    after the ONNX files are written.
    """
    onnx_path = as_path(onnx_path, "onnx_path")
    engine = None if engine is None else as_path(engine, "engine")
    input_size = as_input_size(input_size)
    if precision not in ("fp16", "fp32"):
        raise ExportError(f"precision must be fp16 or fp32, got {precision!r}")
    rcnn = getattr(model, "roi_heads", None) is not None
    split = (rcnn and engine is not None) if split is None else split
    if split and not rcnn:
        raise ExportError(f"split export is for R-CNNs; {type(model).__name__} exports whole (TensorRT parses it)")
    spec = spec_of(model)
    size = input_size or (spec.min_size, spec.min_size)
    model = model.eval()
    data = detector_onnx(model, size, onnx_path)
    diffs: dict[str, float] = {}
    counts = (0, 0)
    if check:
        try:
            onnx.checker.check_model(onnx.load_from_string(data))
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"the exported graph fails onnx.checker: {exc}") from exc
        diffs, counts = onnx_parity(model, data, probe_image(*size))
        if not max(counts):  # nothing kept at its own thresholds: compare the same graph at full load instead
            loaded = full_load(model)
            diffs, counts = onnx_parity(loaded, detector_onnx(loaded, size), probe_image(*size))
            diffs["full_load"] = 1.0
    parts = export_rcnn_split(model, onnx_path, input_size=size, check=check) if split else None
    engine_path = None
    if engine is not None:
        reason = tensorrt_available()
        if reason:
            raise ExportError(f"wrote {onnx_path}, but no TensorRT engine: {reason}")
        from ..latency.backends.tensorrt_backend import build_engine

        if parts is not None:
            engine_path = build_rcnn_engines(parts, engine, precision=precision)[0]
        else:
            engine_path = Path(engine)
            with atomic_path(engine_path) as tmp:
                tmp.write_bytes(build_engine(data, precision=precision))
    return ExportResult(
        onnx_path=Path(onnx_path),
        engine_path=engine_path,
        input_size=size,
        max_abs_diff=diffs,
        detections=counts,
        split=parts,
    )
