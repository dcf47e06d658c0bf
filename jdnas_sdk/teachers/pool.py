"""The elastic teacher pool: one detector, larger than the base, holding every teacher as a slice.

A teacher is a :class:`TeacherConfig`: per stage, a depth (the first *d* blocks of the elastic
stage) and a width ratio relative to the base (the first channels of every layer, OFA style).
The largest network is grown from the base without changing its function (the base's weights
in the leading slices, added channels feeding nothing, added blocks starting as identities), so
the base is itself a teacher of the pool, its channels are the leading ones, and training starts
from the base's accuracy rather than from scratch. :meth:`TeacherPool.sample` extracts a
standalone torchvision detector holding the active slice, with BatchNorm statistics
recalibrated on a few batches.

Pools are saved as detector files of the largest network (so they load with
``weights_only=True`` like any detector file) with the pool's shape in the metadata.
"""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import product
from math import lcm
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._seed import seeded, stable_seed
from ..arch import Arch, DetectorSpec, Stage
from ..detectors import build_detector, describe, load_detector, read_detector_file, save_detector
from ..errors import ArchError, DetectorFileError
from ..morph import snap
from ..train import recalibrate_bn

__all__ = [
    "TeacherConfig",
    "TeacherPool",
    "DEFAULT_TEACHER_WIDTHS",
    "POOL_KIND",
    "recalibrate_bn",
    "reorder_by_importance",
]

#: Width ratios (relative to the base) a teacher's stages may take by default.
DEFAULT_TEACHER_WIDTHS: tuple[float, ...] = (0.75, 1.0, 1.25)
POOL_KIND = "jdnas-teacher-pool"


#: The widest teacher a pool may hold, as a ratio of the base's widths.
MAX_WIDTH_RATIO = 4.0
#: The most blocks a pool may add to (or remove from) each stage of the base.
MAX_DEPTH_DELTA = 8


@dataclass(frozen=True, order=True)
class TeacherConfig:
    """One teacher of a pool: blocks per stage and width ratio per stage (relative to the base).

    ``str(config)`` is a short code, ``d3.4.6.3-w1.25,1,1,0.75``, that :meth:`parse` reads back.
    """

    depths: tuple[int, int, int, int]
    widths: tuple[float, float, float, float]

    def __str__(self) -> str:
        return "d" + ".".join(map(str, self.depths)) + "-w" + ",".join(f"{w:g}" for w in self.widths)

    @classmethod
    def parse(cls, code: str) -> TeacherConfig:
        try:
            d, w = code.strip().split("-w")
            depths = tuple(int(x) for x in d.removeprefix("d").split("."))
            widths = tuple(float(x) for x in w.split(","))
        except ValueError as exc:
            raise ArchError(f"teacher config {code!r} must look like d2.2.2.2-w1,1,1.25,1") from exc
        if len(depths) != 4 or len(widths) != 4:
            raise ArchError(f"teacher config {code!r} needs 4 depths and 4 widths")
        return cls(depths, widths)  # type: ignore[arg-type]


def _leading(tensor: Tensor, shape: torch.Size) -> tuple[slice, ...]:
    if tensor.dim() != len(shape) or any(s > t for s, t in zip(shape, tensor.shape)):
        raise ArchError(f"a teacher's {tuple(shape)} weight does not fit in the pool's {tuple(tensor.shape)}")
    return tuple(slice(0, s) for s in shape)


class TeacherPool:
    """Teachers around ``base_arch`` under the detector head ``spec``.

    Depths per stage range over ``base depth - depth_delta .. base depth + depth_delta`` (at least
    one block); widths over ``widths`` (ratios of the base, snapped to ``multiple``). ``model`` is
    the largest network, whose weights every teacher slices.
    """

    def __init__(
        self,
        spec: DetectorSpec,
        base_arch: Arch,
        *,
        widths: Iterable[float] = DEFAULT_TEACHER_WIDTHS,
        depth_delta: int = 1,
        multiple: int = 8,
        model: nn.Module | None = None,
    ) -> None:
        self.spec, self.base_arch = spec, base_arch
        self.widths = tuple(sorted({float(w) for w in widths}))
        if not self.widths or not all(0 < w <= MAX_WIDTH_RATIO for w in self.widths):  # nan and inf fail too
            raise ArchError(f"teacher widths must be ratios in (0, {MAX_WIDTH_RATIO:g}], got {widths!r}")
        if not isinstance(depth_delta, int) or isinstance(depth_delta, bool) or not 0 <= depth_delta <= MAX_DEPTH_DELTA:
            raise ArchError(f"depth_delta must be an integer from 0 to {MAX_DEPTH_DELTA}, got {depth_delta!r}")
        if not isinstance(multiple, int) or isinstance(multiple, bool) or not 1 <= multiple <= 256:
            raise ArchError(f"multiple must be an integer from 1 to 256, got {multiple!r}")
        self.depth_delta, self.multiple = depth_delta, multiple
        self.max_arch = self.arch_of(self.largest())
        if model is None:
            model = build_detector(spec, self.max_arch)
        got = describe(model)[1]
        if got != self.max_arch:
            raise ArchError(f"the pool's network is {got}, but its configuration needs {self.max_arch}")
        self.model = model
        #: A frozen copy of the largest teacher (:func:`~jdnas_sdk.teachers.grow.grow_teacher`'s
        #: file), given instead of the largest slice: shrinking trains the largest with the rest.
        self.frozen_largest: Path | None = None

    # -- the configuration space --------------------------------------------------------------------
    def depth_choices(self, stage: int) -> tuple[int, ...]:
        base = self.base_arch.stages[stage - 1].depth
        return tuple(range(max(1, base - self.depth_delta), base + self.depth_delta + 1))

    def largest(self) -> TeacherConfig:
        return TeacherConfig(tuple(self.depth_choices(s)[-1] for s in range(1, 5)), (self.widths[-1],) * 4)  # type: ignore[arg-type]

    def smallest(self, *, depth: bool = True, width: bool = True) -> TeacherConfig:
        """The smallest teacher, or the smallest with only depth (or only width) shrunk."""
        top = self.largest()
        depths = tuple(self.depth_choices(s)[0] for s in range(1, 5)) if depth else top.depths
        widths = (self.widths[0],) * 4 if width else top.widths
        return TeacherConfig(depths, widths)  # type: ignore[arg-type]

    def base_config(self) -> TeacherConfig:
        """The configuration that is exactly the base's architecture (when 1.0 is a width choice)."""
        return TeacherConfig(self.base_arch.depths, (1.0,) * 4)  # type: ignore[arg-type]

    def random(self, rng: random.Random, *, depth: bool = True, width: bool = True) -> TeacherConfig:
        """A uniformly drawn teacher; ``depth``/``width`` False keep that dimension at its largest."""
        top = self.largest()
        depths = tuple(rng.choice(self.depth_choices(s)) for s in range(1, 5)) if depth else top.depths
        widths = tuple(rng.choice(self.widths) for _ in range(4)) if width else top.widths
        return TeacherConfig(depths, widths)  # type: ignore[arg-type]

    def configs(self) -> Iterator[TeacherConfig]:
        """Every configuration (the product of per-stage choices)."""
        for depths in product(*(self.depth_choices(s) for s in range(1, 5))):
            for widths in product(self.widths, repeat=4):
                yield TeacherConfig(depths, widths)  # type: ignore[arg-type]

    def check(self, config: TeacherConfig) -> TeacherConfig:
        for s in range(1, 5):
            if config.depths[s - 1] not in self.depth_choices(s):
                raise ArchError(f"teacher {config}: stage {s} depth must be one of {self.depth_choices(s)}")
            if config.widths[s - 1] not in self.widths:
                raise ArchError(f"teacher {config}: stage {s} width must be one of {self.widths}")
        return config

    def mutate(self, config: TeacherConfig, rng: random.Random) -> TeacherConfig:
        """A neighbour: one stage's depth or width moved one step (for the search's teacher moves)."""
        self.check(config)
        for _ in range(32):
            s = rng.randrange(4)
            depths, widths = list(config.depths), list(config.widths)
            if rng.random() < 0.5:
                choices = self.depth_choices(s + 1)
                i = choices.index(depths[s]) + rng.choice((-1, 1))
                if 0 <= i < len(choices):
                    depths[s] = choices[i]
            else:
                i = self.widths.index(widths[s]) + rng.choice((-1, 1))
                if 0 <= i < len(self.widths):
                    widths[s] = self.widths[i]
            new = TeacherConfig(tuple(depths), tuple(widths))  # type: ignore[arg-type]
            if new != config:
                return new
        return config

    def arch_of(self, config: TeacherConfig) -> Arch:
        """The backbone of a teacher: the base's stages resized (mids and stream by the stage ratio)."""
        base = self.base_arch
        stages = []
        for s, (stage, depth, ratio) in enumerate(zip(base.stages, config.depths, config.widths), start=1):
            if depth < 1:
                raise ArchError(f"teacher {config}: stage {s} needs at least one block")
            mids = [snap(m * ratio, lcm(self.multiple, base.groups)) for m in stage.mids]
            mids += [mids[-1]] * (depth - len(mids))
            stages.append(Stage(width=snap(stage.width * ratio, self.multiple), mids=tuple(mids[:depth])))
        tied = base.stem == base.stages[0].width
        stem = stages[0].width if tied else base.stem
        return Arch(block=base.block, stem=stem, stages=tuple(stages), groups=base.groups)

    # -- teachers as detectors ----------------------------------------------------------------------
    def slices(self, sub: nn.Module) -> list[tuple[nn.Parameter | Tensor, Tensor, tuple[slice, ...]]]:
        """(pool tensor, sub tensor, leading slices) for every parameter and buffer of ``sub``."""
        pool_state = dict(self.model.named_parameters()) | dict(self.model.named_buffers())
        out = []
        for name, tensor in list(sub.named_parameters()) + list(sub.named_buffers()):
            source = pool_state[name]
            out.append((source, tensor, _leading(source, tensor.shape) if tensor.dim() else ()))
        return out

    @torch.no_grad()
    def extract(self, config: TeacherConfig) -> nn.Module:
        """The teacher as a standalone detector holding copies of the active slices (no recalibration)."""
        sub = build_detector(self.spec, self.arch_of(self.check(config)))
        for source, target, index in self.slices(sub):
            target.copy_(source[index] if index else source)
        sub.train(self.model.training)
        return sub

    def sample(
        self, config: TeacherConfig, *, calibration: Any = None, batches: int = 50, batch_size: int = 4
    ) -> nn.Module:
        """The teacher, eval mode, BatchNorm statistics recalibrated on ``batches`` of ``calibration``
        (a dataset of (image, target) pairs; without one the pool's statistics are sliced). The
        default, 50 batches of 4, is 200 images: a sub-network's statistics differ from the
        largest network's, and a few batches leave them noisy."""
        if self.frozen_largest is not None and self.check(config) == self.largest():
            return load_detector(self.frozen_largest).eval()  # its own statistics: it trained whole
        teacher = self.extract(config)
        if calibration is not None:
            recalibrate_bn(teacher, calibration, batches=batches, batch_size=batch_size)
        return teacher.eval()

    @torch.no_grad()
    def accumulate_grads(self, sub: nn.Module) -> None:
        """Add ``sub``'s parameter gradients into the pool's, at the slices ``sub`` was extracted from."""
        for source, target, index in self.slices(sub):
            if isinstance(target, nn.Parameter) and target.grad is not None:
                if source.grad is None:
                    source.grad = torch.zeros_like(source)
                source.grad[index] += target.grad

    # -- files ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, metadata: dict[str, Any] | None = None) -> None:
        frozen = {}
        if self.frozen_largest is not None:  # named relative to the pool's folder, and kept inside it
            if Path(self.frozen_largest).resolve().parent != Path(path).resolve().parent:
                raise DetectorFileError(
                    f"the frozen largest teacher {self.frozen_largest} must sit beside the pool file {path}"
                )
            frozen = {"frozen_largest": Path(self.frozen_largest).name}
        save_detector(
            self.model,
            path,
            metadata={
                **(metadata or {}),
                **frozen,
                "kind": POOL_KIND,
                "base_arch": str(self.base_arch),
                "teacher_widths": ",".join(f"{w:g}" for w in self.widths),
                "depth_delta": self.depth_delta,
                "multiple": self.multiple,
            },
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TeacherPool:
        """Read a pool file (a detector file, ``weights_only`` loading; its metadata must describe a pool)."""
        meta = read_detector_file(path)["metadata"]
        if meta.get("kind") != POOL_KIND:
            raise DetectorFileError(
                f"{path} is a detector file but not a teacher pool (train one with `jdnas teachers train`)"
            )
        try:
            base = Arch.parse(str(meta["base_arch"]))
            widths = tuple(float(w) for w in str(meta["teacher_widths"]).split(","))
            delta, multiple = int(meta["depth_delta"]), int(meta["multiple"])
            if (
                not all(0 < w <= MAX_WIDTH_RATIO for w in widths)
                or not 0 <= delta <= MAX_DEPTH_DELTA
                or not 1 <= multiple <= 256
            ):
                raise ValueError(
                    f"teacher_widths {meta['teacher_widths']!r}, depth_delta {delta}, multiple {multiple} "
                    "are out of range (zero, nan or inf)"
                )
        except (KeyError, ValueError, TypeError, OverflowError, ArchError) as exc:
            raise DetectorFileError(
                f"{path}: the teacher-pool metadata is damaged ({exc}); retrain the pool with `jdnas teachers train`"
            ) from exc
        model = load_detector(path)
        spec, _ = describe(model)
        try:
            pool = cls(spec, base, widths=widths, depth_delta=delta, multiple=multiple, model=model)
        except ArchError as exc:
            raise DetectorFileError(f"{path}: the teacher-pool metadata does not fit its network ({exc})") from exc
        if "frozen_largest" in meta:
            frozen = _beside(Path(path), str(meta["frozen_largest"]))
            frozen_spec, frozen_arch = describe(load_detector(frozen))
            if frozen_spec != spec or frozen_arch != pool.arch_of(pool.largest()):
                raise DetectorFileError(
                    f"{path}: its frozen largest teacher {frozen.name} is not the pool's largest network "
                    f"({frozen_spec.family} {frozen_arch} beside {spec.family} {pool.arch_of(pool.largest())}); "
                    "retrain the pool with `jdnas teachers train`"
                )
            pool.frozen_largest = frozen
        return pool

    @classmethod
    @torch.no_grad()
    def from_base(
        cls,
        base: nn.Module,
        *,
        widths: Iterable[float] = DEFAULT_TEACHER_WIDTHS,
        depth_delta: int = 1,
        multiple: int = 8,
        seed: int = 0,
        reorder: bool = True,
    ) -> TeacherPool:
        """A pool whose largest network is ``base`` grown without changing its function: every
        weight of the base sits in the leading slice of the larger one (so the base is exactly
        the pool's base teacher), the added channels' outgoing weights are zero, and every added
        block starts as the identity (its last norm zeroed). The added weights are drawn from
        ``seed``: the same base and seed give the same pool in every run. With ``reorder``
        (default), each block's inner channels are first sorted by importance
        (:func:`reorder_by_importance`, a function-preserving permutation), so the leading slices a
        narrower teacher keeps hold the channels that matter most (as OFA re-organises weights
        before elastic width)."""
        if reorder:
            base = copy.deepcopy(base)
            reorder_by_importance(base)
        spec, arch = describe(base)
        if arch.groups > 1 and any(w != 1.0 for w in widths):
            raise ArchError(
                "elastic width is not supported for grouped (ResNeXt) backbones: slicing would regroup "
                "channels; use widths=(1.0,) (depth-elastic pool)"
            )
        with seeded(stable_seed("pool", seed, arch)):
            pool = cls(spec, arch, widths=widths, depth_delta=depth_delta, multiple=multiple)
        grown = dict(pool.model.named_parameters()) | dict(pool.model.named_buffers())
        for name, value in list(base.named_parameters()) + list(base.named_buffers()):
            target = grown[name]
            if value.dim() == 0:
                target.copy_(value)
                continue
            if value.dim() >= 2:
                target[:, value.shape[1] :] = 0  # added input channels feed nothing
            target[_leading(target, value.shape)] = value
        body = pool.model.backbone.body
        for s, stage in enumerate(arch.stages, start=1):
            for block in list(getattr(body, f"layer{s}"))[stage.depth :]:
                last = block.bn2 if arch.block == "basic" else block.bn3
                last.weight.zero_()
                last.bias.zero_()
        pool.model.train(base.training)
        return pool


def _beside(pool_file: Path, name: str) -> Path:
    """The file ``name`` in ``pool_file``'s folder; a name that leads elsewhere, or a missing file, is refused."""
    folder = pool_file.resolve().parent
    file = (folder / name).resolve()
    if file.parent != folder or not file.is_file():
        raise DetectorFileError(
            f"{pool_file}: its frozen largest teacher {name!r} is not a file beside it; put it back or retrain the pool"
        )
    return file


@torch.no_grad()
def reorder_by_importance(model: nn.Module) -> int:
    """Sort the inner channels of every residual block of ``model``'s backbone by importance
    (``|gamma| + |beta|`` of the norm that writes them, largest first), permuting the writer's
    filters and norm and the reader's input channels alike: the network computes exactly what it
    did. Returns the number of blocks reordered. The residual stream is left as it is (every block,
    downsample and FPN lateral of a stage shares it)."""
    count = 0
    for block in model.backbone.body.modules():
        pairs = (
            [("conv1", "bn1", "conv2"), ("conv2", "bn2", "conv3")]
            if hasattr(block, "conv3")
            else [("conv1", "bn1", "conv2")]
            if hasattr(block, "conv2") and hasattr(block, "bn1")
            else []
        )
        for writer, norm_name, reader in pairs:
            conv, norm, nxt = getattr(block, writer), getattr(block, norm_name), getattr(block, reader)
            if nxt.groups != 1:
                continue  # a grouped reader would regroup the channels
            order = torch.argsort(norm.weight.abs() + norm.bias.abs(), descending=True)
            conv.weight.copy_(conv.weight[order])
            for name in ("weight", "bias", "running_mean", "running_var"):
                value = getattr(norm, name, None)
                if value is not None:
                    value.copy_(value[order])
            nxt.weight.copy_(nxt.weight[:, order])
        count += bool(pairs)
    return count
