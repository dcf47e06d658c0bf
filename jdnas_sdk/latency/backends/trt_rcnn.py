"""A Faster R-CNN timed in TensorRT: engines for its dense parts, the rest in torch on the GPU.

See :mod:`jdnas_sdk.detectors.rcnn_split` for why the detector is split rather than
graph-surgered. The box head's engine has an optimisation profile over the number of proposals
(1 to the RPN's ``post_nms_top_n``) and is bound at ``post_nms_top_n`` rows, the full-load count;
fewer proposals are zero-padded and the padding's outputs dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ...detectors.rcnn_split import BOX_FEATURES, BOX_OUTPUTS, SplitRcnn, dense_output_names, split_onnx
from .trt_engine import EngineBuilder
from .trt_runner import EngineRunner

__all__ = ["rcnn_runner", "tensorrt_split_rcnn"]


def _dense_run(runner: EngineRunner, name: str, outputs: list[str]) -> Callable[[Tensor], Sequence[Tensor]]:
    def run(x: Tensor) -> list[Tensor]:
        runner.feed(name, x.to(runner.dtypes[name]))
        runner.run()
        return [runner.output(o).float() for o in outputs]

    return run


def _padded_run(runner: EngineRunner, rows: int) -> Callable[[Tensor], Sequence[Tensor]]:
    def run(x: Tensor) -> list[Tensor]:
        n = x.shape[0]
        if n < rows:
            x = torch.cat([x, x.new_zeros((rows - n, *x.shape[1:]))])
        runner.feed(BOX_FEATURES, x.to(runner.dtypes[BOX_FEATURES]))
        runner.run()
        return [runner.output(o).float()[:n] for o in BOX_OUTPUTS]

    return run


def tensorrt_split_rcnn(model: nn.Module, image_size: tuple[int, int], engines: EngineBuilder) -> SplitRcnn:
    """``model`` (on the GPU, eval) as a :class:`SplitRcnn` whose dense parts are TensorRT engines
    built by ``engines`` for ``image_size`` inputs."""
    model = model.cuda().eval()
    dense_onnx, head_onnx, _, top_n = split_onnx(model.cpu(), image_size)
    model = model.cuda()
    pooled = model.roi_heads.box_roi_pool.output_size
    pooled = (pooled, pooled) if isinstance(pooled, int) else tuple(pooled)
    channels = model.backbone.out_channels
    head_shape = (top_n, channels, *pooled)
    dense = EngineRunner(engines.build(dense_onnx))
    head = EngineRunner(
        engines.build(head_onnx, shapes={BOX_FEATURES: ((1, *head_shape[1:]), head_shape, head_shape)}),
        input_shapes={BOX_FEATURES: head_shape},
    )
    split = SplitRcnn(model, box_head=_padded_run(head, top_n))
    split.dense = _dense_run(dense, "images", dense_output_names(split.levels))
    return split


def rcnn_runner(
    model: nn.Module, image_size: tuple[int, int], engines: EngineBuilder, image: Tensor
) -> Callable[[], object]:
    """A callable running one full inference of ``model`` on ``image`` (on the GPU) for timing."""
    split = tensorrt_split_rcnn(model, image_size, engines)
    return lambda: split(image)
