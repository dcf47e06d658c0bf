"""A Faster R-CNN as two dense graphs for an inference engine and its data-dependent steps in torch.

TensorRT's ONNX parser rejects the whole torchvision R-CNN graph: RoI pooling exports an ``If``
whose branches differ in rank (NVIDIA/TensorRT issue 3034). Two ways out were weighed:

- graph surgery (onnx-graphsurgeon / ``polygraphy surgeon sanitize``) to fold the ``If`` away,
  which keeps RPN proposal selection, RoI alignment (as the ``ROIAlign_TRT`` plugin) and NMS in
  the engine; but TensorRT's NMS layer considers at most 5,000 boxes per batch item where ONNX
  Runtime's and torchvision's consider all, so at full load (the RPN's NMS sees every anchor)
  the engine would do less work than the other backends, and the fixed entry would not compare;
- the split used here: the engine runs what the search changes and the table's op entries
  describe (backbone, FPN, RPN head: :class:`RcnnDense`; box head and predictor:
  :class:`RcnnBoxHead`, with a dynamic number of proposals), torch runs anchors, proposal
  decoding and NMS, RoI alignment and detection post-processing, on the same GPU, identically
  for every backend. It needs no extra tool, and is testable without TensorRT: the same split,
  exported to ONNX and run in ONNX Runtime, must give PyTorch's detections.

Only Faster R-CNN is split: Mask and Keypoint R-CNN have more heads (not split yet).
"""

from __future__ import annotations

import io
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection.rpn import concat_box_prediction_layers

from ..errors import UnsupportedModelError
from .onnx import ONNX_OPSET

__all__ = [
    "RcnnDense",
    "RcnnBoxHead",
    "split_rcnn",
    "SplitRcnn",
    "split_onnx",
    "BOX_FEATURES",
    "PROPOSALS_DIM",
    "BOX_OUTPUTS",
    "dense_output_names",
    "fpn_levels",
]

#: Name of the box head's input (RoI-aligned features) and its dynamic proposal dimension.
BOX_FEATURES = "box_features"
PROPOSALS_DIM = "proposals"
#: The box head graph's outputs, in order.
BOX_OUTPUTS = ["class_logits", "box_regression"]

#: Runs a dense part on its inputs and returns its outputs in order (torch, ONNX Runtime or TensorRT).
DenseRun = Callable[[Tensor], Sequence[Tensor]]


class RcnnDense(nn.Module):
    """Backbone, FPN and RPN head: the normalised, resized image batch -> every FPN level, then
    the RPN's objectness and box deltas per level."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = model.backbone, model.rpn.head

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        features = list(self.backbone(images).values())
        objectness, deltas = self.head(features)
        return (*features, *objectness, *deltas)


class RcnnBoxHead(nn.Module):
    """Box head and predictor: RoI-aligned features (N x C x 7 x 7) -> class logits, box deltas."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.box_head, self.box_predictor = model.roi_heads.box_head, model.roi_heads.box_predictor

    def forward(self, box_features: Tensor) -> tuple[Tensor, Tensor]:
        return self.box_predictor(self.box_head(box_features))


def fpn_levels(model: nn.Module) -> int:
    """Feature maps the R-CNN's FPN returns (its inner blocks, plus the extra pooled level)."""
    fpn = model.backbone.fpn
    return len(fpn.inner_blocks) + (1 if fpn.extra_blocks is not None else 0)


def dense_output_names(levels: int) -> list[str]:
    """The dense graph's outputs, in order: features, then RPN objectness, then RPN deltas, per level."""
    return [f"{kind}_{i}" for kind in ("feature", "objectness", "deltas") for i in range(levels)]


def split_rcnn(model: nn.Module) -> tuple[RcnnDense, RcnnBoxHead]:
    """The two dense parts of a Faster R-CNN (shared weights, eval mode)."""
    heads = getattr(model, "roi_heads", None)
    if heads is None or not hasattr(model, "rpn"):
        raise UnsupportedModelError(
            f"{type(model).__name__} is not an R-CNN; export it whole (jdnas_sdk.detectors.detector_onnx)"
        )
    if getattr(heads, "mask_head", None) is not None or getattr(heads, "keypoint_head", None) is not None:
        raise UnsupportedModelError(
            "only Faster R-CNN is split for TensorRT; Mask and Keypoint R-CNN heads are not split yet"
        )
    model.eval()
    return RcnnDense(model).eval(), RcnnBoxHead(model).eval()


class SplitRcnn:
    """Faster R-CNN inference with its dense parts run by ``dense`` and ``box_head`` (default: the
    torch modules) and the rest in torch, as :meth:`GeneralizedRCNN.forward` does in eval mode."""

    def __init__(self, model: nn.Module, *, dense: DenseRun | None = None, box_head: DenseRun | None = None) -> None:
        self.model = model.eval()
        parts = split_rcnn(model)
        self.levels = fpn_levels(model)
        self.dense = dense or parts[0]
        self.box_head = box_head or parts[1]

    @torch.no_grad()
    def __call__(self, image: Tensor) -> dict[str, Tensor]:
        model = self.model
        original = [tuple(image.shape[-2:])]
        images, _ = model.transform([image])
        outputs = list(self.dense(images.tensors))
        n = self.levels
        if len(outputs) != 3 * n:
            raise UnsupportedModelError(
                f"the dense part returned {len(outputs)} tensors, expected {3 * n} "
                f"({n} feature levels, objectness and deltas per level)"
            )
        features = OrderedDict((str(i), t) for i, t in enumerate(outputs[:n]))
        objectness, deltas = outputs[n : 2 * n], outputs[2 * n :]
        rpn = model.rpn
        anchors = rpn.anchor_generator(images, list(features.values()))
        per_level = [int(o[0].shape[0] * o[0].shape[1] * o[0].shape[2]) for o in objectness]
        flat_objectness, flat_deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = rpn.box_coder.decode(flat_deltas, anchors).view(1, -1, 4)
        boxes, _ = rpn.filter_proposals(proposals, flat_objectness, images.image_sizes, per_level)
        heads = model.roi_heads
        pooled = heads.box_roi_pool(features, boxes, images.image_sizes)
        class_logits, box_regression = self.box_head(pooled)
        found, scores, labels = heads.postprocess_detections(class_logits, box_regression, boxes, images.image_sizes)
        result = [{"boxes": found[0], "labels": labels[0], "scores": scores[0]}]
        return model.transform.postprocess(result, images.image_sizes, original)[0]


def _export(module: nn.Module, example: Tensor, name: str, outputs: list[str], axes: dict | None) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            buffer,
            input_names=[name],
            output_names=outputs,
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,
            dynamic_axes=axes,
        )
    return buffer.getvalue()


def split_onnx(model: nn.Module, image_size: tuple[int, int]) -> tuple[bytes, bytes, tuple[int, ...], int]:
    """The two dense parts as ONNX for an ``image_size`` (H, W) input: ``(dense, box_head,
    dense input shape, proposals at full load)``. The dense graph takes the batch the detector's
    transform makes of such an image (static); the box head's first dimension (proposals) is
    dynamic, 1 to ``post_nms_top_n``, for an engine's optimisation profile."""
    dense, box_head = split_rcnn(model)
    images, _ = model.transform([torch.rand(3, *image_size, generator=torch.Generator().manual_seed(0))])
    dense_onnx = _export(dense, images.tensors, "images", dense_output_names(fpn_levels(model)), None)
    heads = model.roi_heads
    size = heads.box_roi_pool.output_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    channels = model.backbone.out_channels
    top_n = int(model.rpn.post_nms_top_n())
    example = torch.rand(top_n, channels, *size, generator=torch.Generator().manual_seed(1))
    head_onnx = _export(box_head, example, BOX_FEATURES, BOX_OUTPUTS, {BOX_FEATURES: {0: PROPOSALS_DIM}})
    return dense_onnx, head_onnx, tuple(images.tensors.shape), top_n
