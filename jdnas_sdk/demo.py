"""The whole job on a fresh machine, as ``jdnas demo`` runs it: a synthetic dataset, a small Faster
R-CNN trained from scratch, its COCO mAP, compression for a target, the student's ONNX export and
the report. Every step reuses what an earlier run left in the work folder, so a killed demo resumes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._io import atomic_write_json
from ._lock import holds_workdir
from ._seed import seeded
from .arch import DetectorSpec
from .compress import CompressResult, compress
from .data import load_split, make_synthetic_dataset
from .deploy import ExportResult, export
from .detectors import build_detector, load_detector
from .evaluate import EvalResult, evaluate
from .train import TrainConfig, train_to_file

__all__ = ["DemoResult", "run_demo"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoResult:
    """Where the demo's files are and what it measured."""

    data_dir: Path
    base_file: Path
    base_metrics: EvalResult
    compressed: CompressResult
    exported: ExportResult
    wall_s: float

    def files(self) -> str:
        """One line naming every file the demo wrote."""
        return (f"files: dataset {self.data_dir}/, base {self.base_file}, student {self.compressed.student_file}, "
                f"ONNX {self.exported.onnx_path}, report {self.compressed.report} (and report.md)")


@holds_workdir  # one demo per workdir; a failed start leaves no folder
def run_demo(
    workdir: str | Path = "runs/demo",
    *,
    steps: int = 400,
    train_images: int = 600,
    val_images: int = 100,
    size: int = 256,
    seed: int = 0,
    target: str = "cpu-ort",
    latency: float = 0.8,
    candidates: int = 3,
    finetune_steps: int = 20,
    final_steps: int = 30,
    pool_steps: int = 10,
    say: Callable[[str], None] = log.info,
    progress: bool = True,
) -> DemoResult:
    """Run the five steps in ``workdir`` and report each through ``say`` (the CLI passes ``print``);
    ``progress``: tqdm bars on the long steps."""
    began = time.perf_counter()
    work = Path(workdir)
    data_dir = work / "data"
    if not (data_dir / "annotations" / "instances_val.json").is_file():
        say(f"[1/5] making a synthetic COCO dataset in {data_dir}")
        make_synthetic_dataset(data_dir, train=train_images, val=val_images, size=size, seed=seed, progress=progress)
    else:
        say(f"[1/5] reusing the synthetic dataset in {data_dir}")
    train_set, val_set = load_split(data_dir, "train"), load_split(data_dir, "val")
    base = work / "base.pt"
    if base.is_file():
        say(f"[2/5] reusing the trained base detector {base}")
        model = load_detector(base)
    else:
        say(f"[2/5] training a small Faster R-CNN (ResNet-18 FPN) from scratch for {steps} steps (AdamW)")
        spec = DetectorSpec(family="fasterrcnn", backbone="resnet18", num_classes=train_set.num_classes,
                            min_size=size, max_size=size, fpn_channels=64, representation_size=256,
                            anchor_sizes=(16, 32, 64, 128, 256), category_ids=train_set.category_ids,
                            class_names=train_set.class_names)
        with seeded(seed):  # same seed, same base, in any process
            model = build_detector(spec)
        config = TrainConfig(steps=steps, optimizer="adamw", lr=1e-3, weight_decay=0.05, seed=seed)
        train_to_file(model, train_set, base, config=config, progress=progress)
    say("[3/5] evaluating the base on the validation split (COCO mAP, pycocotools)")
    metrics = evaluate(model, val_set, progress=progress)
    atomic_write_json(work / "base_metrics.json", metrics.to_dict())
    say(f"      base: {metrics.summary()}")
    say(f"[4/5] compressing for {target}: joint search, {candidates} candidates x {finetune_steps} "
        f"fine-tuning steps, teachers from a {pool_steps}-step elastic pool, latency {latency}x the base, "
        f"then {final_steps} more steps for the chosen student")
    result = compress(model, target=target, train_data=train_set, val_data=val_set, latency=latency,
                      budget=candidates, workdir=work / "compress", finetune_steps=finetune_steps,
                      final_steps=final_steps, pool_steps=pool_steps, seed=seed, progress=progress)
    say(result.summary())
    say("[5/5] exporting the student to ONNX (pre- and post-processing included)")
    exported = export(result.student, work / "student.onnx")
    say(f"      {exported.summary()}")
    return DemoResult(data_dir=data_dir, base_file=base, base_metrics=metrics, compressed=result, exported=exported,
                      wall_s=time.perf_counter() - began)
