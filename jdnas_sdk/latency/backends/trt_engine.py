"""Building TensorRT engines from ONNX: one builder, one timing cache, plugins registered,
optimisation profiles for dynamic inputs, and the network typing each TensorRT major needs.

A search space has thousands of ops, each one engine: creating a builder per engine and tuning
every convolution's tactics from scratch made each build seconds long. :class:`EngineBuilder`
keeps one ``IBuilder`` and one timing cache for all of them, saved to a file (beside the table)
so that a resumed profile does not tune again.

TensorRT objects are held in variables named after their type (``builder``, ``network``,
``parser``, ``config``, ``timing_cache``, ``opt_profile``, ``runtime``, ``engine``, ``context``,
``inspector``, ``trt_logger``, ``tensor``) and the module as ``trt``: ``tests/test_tensorrt_api.py``
checks every attribute used on them against the names of TensorRT 10.3 and 11.4, and accepts a
name of one major only under ``if trt_major(trt) ...``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..._io import atomic_path
from ...detectors.onnx_fp16 import to_fp16
from ...errors import ExportError
from .trt_compat import network_mode, trt_major

__all__ = ["load_tensorrt", "EngineBuilder", "build_engine", "deserialize_engine", "Shapes"]

logger = logging.getLogger(__name__)

#: Input name -> (min, opt, max) shapes of an optimisation profile.
Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]

_LOGGER: Any = None


def load_tensorrt() -> tuple[Any, Any]:
    """``(trt, trt_logger)``: the tensorrt module and one shared trt_logger, with TensorRT's plugins
    registered (``init_libnvinfer_plugins``), before any ONNX is parsed: torchvision's RoiAlign
    imports as the ``ROIAlign_TRT`` plugin and fails to parse without it."""
    global _LOGGER
    import tensorrt as trt

    if _LOGGER is None:
        trt_logger = trt.Logger(trt.Logger.WARNING)
        if not trt.init_libnvinfer_plugins(trt_logger, ""):
            raise ExportError("TensorRT could not register its plugins (libnvinfer_plugin): check the TensorRT install")
        _LOGGER = trt_logger
    return trt, _LOGGER


class EngineBuilder:
    """Serialised engines from ONNX at ``precision`` (``fp16``/``fp32``), sharing one builder and
    one timing cache; ``cache_path`` loads the cache if it exists and :meth:`save_cache` writes it."""

    def __init__(
        self, *, precision: str = "fp16", cache_path: str | os.PathLike[str] | None = None, workspace_mib: int = 2048
    ) -> None:
        trt, trt_logger = load_tensorrt()
        self.trt, self.trt_logger = trt, trt_logger
        self.strongly_typed, self.weak_fp16 = network_mode(trt_major(trt), precision)
        self.precision, self.workspace_mib = precision, workspace_mib
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.builder = trt.Builder(trt_logger)
        config = self.builder.create_builder_config()
        data = self.cache_path.read_bytes() if self.cache_path is not None and self.cache_path.is_file() else b""
        self.timing_cache = config.create_timing_cache(data)
        self.builds = 0

    def _config(self) -> Any:
        trt = self.trt
        config = self.builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mib << 20)
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        if not config.set_timing_cache(self.timing_cache, False):
            raise ExportError(
                f"TensorRT refused the timing cache {self.cache_path} (made by another TensorRT or GPU?): delete it"
            )
        if self.weak_fp16 and trt_major(trt) < 11:
            config.set_flag(trt.BuilderFlag.FP16)
        return config

    def _network(self, onnx: bytes) -> tuple[Any, Any]:
        trt = self.trt
        # no creation flags: 10.x builds weakly typed networks (FP16 by the builder flag); 11.x networks
        # are always strongly typed (its headers deprecate and ignore STRONGLY_TYPED), FP16 from the graph
        network = self.builder.create_network(0)
        parser = trt.OnnxParser(network, self.trt_logger)
        source = to_fp16(onnx) if self.strongly_typed and self.precision == "fp16" else onnx
        if not parser.parse(source):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ExportError(f"TensorRT could not parse the ONNX model: {errors}")
        return network, parser

    def build(self, onnx: bytes, *, shapes: Shapes | None = None) -> bytes:
        """A serialised engine of ``onnx``. Every input with a dynamic dimension needs its
        (min, opt, max) shapes in ``shapes`` (an optimisation profile); static inputs need none."""
        network, parser = self._network(onnx)
        config = self._config()
        dynamic = {}
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            if any(int(d) < 0 for d in tensor.shape):
                dynamic[tensor.name] = tuple(int(d) for d in tensor.shape)
        missing = sorted(set(dynamic) - set(shapes or {}))
        if missing:
            raise ExportError(
                f"inputs {missing} have dynamic dimensions {[dynamic[m] for m in missing]}: pass their "
                "(min, opt, max) shapes, or export with static shapes"
            )
        if dynamic:
            opt_profile = self.builder.create_optimization_profile()
            for name in dynamic:
                low, opt, high = (shapes or {})[name]
                opt_profile.set_shape(name, low, opt, high)
            config.add_optimization_profile(opt_profile)
        serialized = self.builder.build_serialized_network(network, config)
        if serialized is None:
            raise ExportError("TensorRT failed to build an engine (see the TensorRT log above)")
        self.builds += 1
        del parser
        return bytes(serialized)

    def save_cache(self) -> Path | None:
        """Write the timing cache to ``cache_path`` (atomically); ``None`` without a path."""
        if self.cache_path is None:
            return None
        data = bytes(self.timing_cache.serialize())
        with atomic_path(self.cache_path) as tmp:
            Path(tmp).write_bytes(data)
        logger.info("saved TensorRT timing cache %s (%d bytes, %d builds)", self.cache_path, len(data), self.builds)
        return self.cache_path


def build_engine(
    onnx: bytes,
    *,
    precision: str = "fp16",
    workspace_mib: int = 2048,
    shapes: Shapes | None = None,
    cache_path: str | os.PathLike[str] | None = None,
) -> bytes:
    """One serialised engine (a builder of its own; profiling uses one :class:`EngineBuilder`)."""
    engines = EngineBuilder(precision=precision, cache_path=cache_path, workspace_mib=workspace_mib)
    try:
        return engines.build(onnx, shapes=shapes)
    finally:
        engines.save_cache()


def deserialize_engine(data: bytes) -> tuple[Any, Any]:
    """``(runtime, engine)`` from a serialised engine; raises :class:`ExportError` when TensorRT
    returns no engine (built by another TensorRT version, or for another GPU)."""
    trt, trt_logger = load_tensorrt()
    runtime = trt.Runtime(trt_logger)
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise ExportError(
            f"TensorRT {trt.__version__} could not deserialise the engine ({len(data)} bytes): it was "
            "built by another TensorRT version or for another GPU; rebuild it here"
        )
    return runtime, engine
