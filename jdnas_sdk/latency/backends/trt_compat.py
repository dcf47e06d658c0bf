"""Which TensorRT release can do what: version guards, target compatibility, buffer sizing.

Pure logic, importable without TensorRT, so that every rule here is tested on any machine.

Facts this module encodes (from TensorRT's release notes and API):

- Volta (compute capability 7.0, the V100 of target ``v100-trt``) was deprecated in TensorRT 10.0
  and removed in 10.5: a V100 table needs TensorRT 10.0-10.4. Turing and newer take 10.x or 11.x.
- TensorRT 11 has only strongly typed networks: ``BuilderFlag.FP16`` (weak typing, the builder
  picks FP16 kernels where it likes) is gone, and so is ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH``
  (implicit since 10); 11.x networks are always strongly typed (its C++ headers deprecate and
  ignore ``kSTRONGLY_TYPED``). An FP16 engine on 11.x is built from an FP16 ONNX graph (see
  :mod:`jdnas_sdk.detectors.onnx_fp16`); uses of names that exist in one major only sit under
  ``if trt_major(trt) ...`` guards, which ``tests/test_tensorrt_api.py`` recognises.
- TensorRT's NMS layer considers at most 5,000 boxes per batch item (its TopK limit; 2,000 on SM
  5.3/6.2), where ONNX Runtime's NonMaxSuppression considers every box: a TensorRT fixed entry
  at full load is not comparable with an ONNX Runtime one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ...errors import LatencyTableError

__all__ = [
    "trt_version",
    "trt_major",
    "TargetRequirement",
    "TARGET_REQUIREMENTS",
    "target_support",
    "check_target",
    "output_bytes",
    "NMS_TOPK_LIMIT",
    "network_mode",
    "grow_capacity",
    "LayerSplit",
    "split_layers",
    "layer_names_from_inspector",
]

#: Boxes TensorRT's NMS considers per batch item (TopK limit; 2,000 on SM 5.3 and 6.2).
NMS_TOPK_LIMIT = 5000


def trt_version(trt_or_text: Any) -> tuple[int, int]:
    """(major, minor) of a tensorrt module or of a version string such as ``"10.3.0"``."""
    text = trt_or_text if isinstance(trt_or_text, str) else str(getattr(trt_or_text, "__version__", ""))
    parts = text.split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError as exc:
        raise ValueError(f"not a TensorRT version: {text!r}") from exc


def trt_major(trt_or_text: Any) -> int:
    """The major version: the guard ``if trt_major(trt) >= 11`` marks 11-only API uses."""
    return trt_version(trt_or_text)[0]


@dataclass(frozen=True)
class TargetRequirement:
    """A shipped GPU target's device and the TensorRT releases that support it
    (``max_version`` exclusive; ``None``: no upper bound known)."""

    target: str
    gpu: str
    compute_capability: tuple[int, int]
    min_version: tuple[int, int]
    max_version: tuple[int, int] | None
    reason: str = ""

    def describe(self) -> str:
        """``"a T4 (SM 7.5) with TensorRT 10.0 or newer"``, the range and its reason where bounded."""
        low = f"{self.min_version[0]}.{self.min_version[1]}"
        if self.max_version is None:
            versions = f"TensorRT {low} or newer"
        else:
            versions = f"TensorRT {low} to before {self.max_version[0]}.{self.max_version[1]}"
        reason = f" ({self.reason})" if self.reason else ""
        article = "an" if self.gpu[:1] in "AEIOU" else "a"
        major, minor = self.compute_capability
        return f"{article} {self.gpu} (SM {major}.{minor}) with {versions}{reason}"


TARGET_REQUIREMENTS: dict[str, TargetRequirement] = {
    "v100-trt": TargetRequirement(
        "v100-trt", "Tesla V100", (7, 0), (10, 0), (10, 5), "Volta support was removed in TensorRT 10.5"
    ),
    "t4-trt": TargetRequirement("t4-trt", "T4", (7, 5), (10, 0), None),
    "a100-trt": TargetRequirement("a100-trt", "A100", (8, 0), (10, 0), None),
}


def target_support(target: str, version: tuple[int, int] | str) -> str | None:
    """``None`` when TensorRT ``version`` can profile ``target``, else why not. Targets this module
    does not list (CPU targets, user tables) have no TensorRT requirement."""
    requirement = TARGET_REQUIREMENTS.get(target)
    if requirement is None:
        return None
    have = trt_version(version) if isinstance(version, str) else version
    if have < requirement.min_version or (requirement.max_version is not None and have >= requirement.max_version):
        return f"TensorRT {have[0]}.{have[1]} cannot profile target {target}, which needs {requirement.describe()}"
    return None


def check_target(target: str, version: tuple[int, int] | str) -> None:
    """Raise :class:`LatencyTableError` (before any work) when ``version`` cannot profile ``target``."""
    reason = target_support(target, version)
    if reason:
        raise LatencyTableError(
            f"{reason}: install a supported TensorRT (pip install 'tensorrt>=10.0,<10.5' for "
            "Volta) or profile into another --target"
        )


def network_mode(major: int, precision: str) -> tuple[bool, bool]:
    """(strongly typed network, weakly typed FP16 builder flag) for a TensorRT major and precision.

    TensorRT 11 builds strongly typed networks only (the graph's own dtypes decide, so FP16 needs
    an FP16 graph); 10.x keeps the weakly typed FP16 flag that lets the builder choose."""
    if precision not in ("fp16", "fp32"):
        raise ValueError(f"precision must be fp16 or fp32, got {precision!r}")
    if major >= 11:
        return True, False
    return False, precision == "fp16"


def output_bytes(shape: tuple[int, ...], itemsize: int, *, alignment: int = 256) -> int:
    """Bytes for an output of ``shape`` (no ``-1`` left: a data-dependent dimension must already
    be resolved by TensorRT) rounded up to ``alignment``; at least one aligned block, since a
    zero-size output still needs a valid address."""
    if any(d < 0 for d in shape):
        raise ValueError(f"shape {shape} still has a data-dependent dimension (-1): ask TensorRT for its size")
    if alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"alignment must be a power of two, got {alignment}")
    size = math.prod(shape) * itemsize
    return max(alignment, -(-size // alignment) * alignment)


def grow_capacity(requested: int, capacity: int, *, alignment: int = 256) -> int:
    """The capacity an output allocator holds after TensorRT asks for ``requested`` bytes: the
    current one when it suffices (no reallocation inside timed runs), else the request rounded up
    to ``alignment`` and at least doubled, so a growing output reallocates a few times only."""
    if requested < 0 or capacity < 0:
        raise ValueError(f"sizes must be >= 0, got {requested}, {capacity}")
    if requested <= capacity:
        return capacity
    return max(output_bytes((requested,), 1, alignment=alignment), 2 * capacity)


@dataclass(frozen=True)
class LayerSplit:
    """An engine's layers sorted for an op's entry: the op's own, the input producers' (left
    out, as ONNX Runtime leaves them out) and reformatting copies (left out: the detector keeps
    one layout between its layers)."""

    op: tuple[str, ...]
    producers: tuple[str, ...]
    reformats: tuple[str, ...]


def split_layers(names: list[str], producer_mark: str) -> LayerSplit:
    """Sort engine layer names (as the profiler and the engine inspector give them; a fused layer
    is named after its nodes joined by ``" + "``). A layer that fuses a producer with a node of
    the op cannot be split in two: it raises, since its time is neither the op's nor not."""
    op, producers, reformats = [], [], []
    for name in names:
        if "reformat" in name.lower():
            reformats.append(name)
            continue
        parts = [part.strip() for part in name.split(" + ")]
        marked = [producer_mark in part for part in parts]
        if all(marked):
            producers.append(name)
        elif any(marked):
            raise LatencyTableError(
                f"TensorRT fused an input producer into the op's layer {name!r}: the op's time cannot be separated "
                "from it; report this layer pattern (the op's ONNX can be saved with jdnas_sdk.latency.kernels.op_onnx)"
            )
        else:
            op.append(name)
    return LayerSplit(tuple(op), tuple(producers), tuple(reformats))


def layer_names_from_inspector(info: str) -> list[str]:
    """Layer names from ``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)``:
    with ``ProfilingVerbosity.DETAILED`` each layer is an object with a ``Name``; with less
    detail, a bare string."""
    import json

    data = json.loads(info)
    layers = data.get("Layers", []) if isinstance(data, dict) else []
    return [layer["Name"] if isinstance(layer, dict) else str(layer) for layer in layers]
