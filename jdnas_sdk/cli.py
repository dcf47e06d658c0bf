"""The ``jdnas`` command: one verb per job, each a thin call into the library.

Run ``jdnas --help`` or ``jdnas VERB --help``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .arch import BACKBONES, FAMILIES, DetectorSpec
from .errors import JdnasError

__all__ = ["main", "build_parser"]

log = logging.getLogger("jdnas_sdk.cli")

_EPILOG = """\
a typical session:
  jdnas data synth --out data/shapes --train 600 --val 100 --size 256
  jdnas train --data data/shapes --model fasterrcnn_resnet18 --out base.pt --steps 300
  jdnas eval  --model base.pt --data data/shapes
  jdnas info  --model base.pt
  jdnas latency --model base.pt --target cpu-ort --measure
  jdnas profile --target cpu-ort --model base.pt --input-size 256
or all of it at once, on a fresh machine:  jdnas demo
"""


def _parse_model_name(text: str) -> tuple[str, str]:
    """``FAMILY_BACKBONE`` (``fasterrcnn_resnet18``, ``retinanet_resnet50_fpn``) -> (family, backbone)."""
    name = text.removesuffix("_fpn")
    family, _, backbone = name.partition("_")
    if family not in FAMILIES or backbone not in BACKBONES:
        raise JdnasError(
            f"--model {text!r} is neither a detector file nor FAMILY_BACKBONE; families: "
            f"{', '.join(FAMILIES)}; backbones: {', '.join(BACKBONES)} (e.g. fasterrcnn_resnet18)"
        )
    return family, backbone


def _anchor_sizes(text: str, family: str, input_size: int) -> tuple[int, ...] | None:
    if family == "fcos" or text == "torchvision":
        return None
    if text == "auto":
        return (16, 32, 64, 128, 256) if input_size <= 512 else None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as exc:
        raise JdnasError(f"--anchor-sizes must be auto, torchvision or comma-separated integers, got {text!r}") from exc


# -- verbs --------------------------------------------------------------------------------------
def cmd_data_synth(args: argparse.Namespace) -> int:
    from .data import SynthConfig, make_synthetic_dataset

    cfg = SynthConfig(size=args.size, image_format=args.format)
    root = make_synthetic_dataset(args.out, train=args.train, val=args.val, size=args.size, seed=args.seed, config=cfg)
    print(f"dataset written to {root} (train: {args.train} images, val: {args.val} images, {args.size} px)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .data import load_split
    from .detectors import build_detector, load_detector, spec_of
    from .train import TrainConfig, checkpoint_path, train_to_file

    out = Path(args.out)
    ckpt = checkpoint_path(out)
    if out.exists() and not ckpt.exists() and not args.force:
        raise JdnasError(f"{out} already exists; pass --force to train again and replace it, or choose another --out")
    data = load_split(args.data, args.split, with_masks=args.model.startswith("maskrcnn"))
    if Path(args.model).is_file():
        model = load_detector(args.model)
        data.check_compatible(spec_of(model))
    else:
        family, backbone = _parse_model_name(args.model)
        if family == "keypointrcnn":
            raise JdnasError("training keypointrcnn needs keypoint annotations, which this loader does not read yet")
        spec = DetectorSpec(
            family=family, backbone=backbone, num_classes=data.num_classes,
            min_size=args.input_size, max_size=args.input_size, fpn_channels=args.fpn_channels,
            representation_size=args.representation_size,
            anchor_sizes=_anchor_sizes(args.anchor_sizes, family, args.input_size),
            category_ids=data.category_ids, class_names=data.class_names,
        )
        model = build_detector(spec)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                         weight_decay=args.weight_decay, warmup_steps=args.warmup, seed=args.seed,
                         checkpoint_every=args.checkpoint_every, num_workers=args.workers)
    result = train_to_file(model, data, out, config=config, metadata={"data": str(args.data)})
    how = f"resumed at step {result.resumed_from}" if result.resumed_from else "from scratch"
    print(f"trained {config.steps} steps ({how}) in {result.wall_s:.0f} s, final loss {result.final_loss:.3f}; saved {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .data import load_split
    from .detectors import load_detector
    from .evaluate import evaluate

    model = load_detector(args.model)
    data = load_split(args.data, args.split)
    result = evaluate(model, data, batch_size=args.batch_size)
    print(f"{args.model} on {args.data} [{args.split}, {result.images} images]: {result.summary()}")
    if args.json:
        from ._io import atomic_write_json

        atomic_write_json(args.json, result.to_dict())
        print(f"metrics written to {args.json}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .detectors import read_detector_file

    payload = read_detector_file(args.model)
    params = sum(v.numel() for k, v in payload["state_dict"].items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    print(json.dumps({"spec": payload["spec"], "metadata": payload["metadata"], "parameters": params,
                      "sdk_version": payload["sdk_version"]}, indent=1))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ._io import atomic_write_json
    from .api import compress
    from .data import load_split, make_synthetic_dataset
    from .detectors import build_detector, load_detector
    from .evaluate import evaluate
    from .export import export
    from .train import TrainConfig, train_to_file

    began = time.perf_counter()
    work = Path(args.workdir)
    data_dir = work / "data"
    if not (data_dir / "annotations" / "instances_val.json").is_file():
        print(f"[1/5] making a synthetic COCO dataset in {data_dir}")
        make_synthetic_dataset(data_dir, train=args.train_images, val=args.val_images, size=args.size, seed=args.seed)
    else:
        print(f"[1/5] reusing the synthetic dataset in {data_dir}")
    train_set, val_set = load_split(data_dir, "train"), load_split(data_dir, "val")
    base = work / "base.pt"
    if base.is_file():
        print(f"[2/5] reusing the trained base detector {base}")
        model = load_detector(base)
    else:
        print(f"[2/5] training a small Faster R-CNN (ResNet-18 FPN) from scratch for {args.steps} steps (AdamW)")
        spec = DetectorSpec(family="fasterrcnn", backbone="resnet18", num_classes=train_set.num_classes,
                            min_size=args.size, max_size=args.size, fpn_channels=64, representation_size=256,
                            anchor_sizes=(16, 32, 64, 128, 256), category_ids=train_set.category_ids,
                            class_names=train_set.class_names)
        model = build_detector(spec)
        config = TrainConfig(steps=args.steps, optimizer="adamw", lr=1e-3, weight_decay=0.05, seed=args.seed)
        train_to_file(model, train_set, base, config=config)
    print("[3/5] evaluating the base on the validation split (COCO mAP, pycocotools)")
    metrics = evaluate(model, val_set)
    atomic_write_json(work / "base_metrics.json", metrics.to_dict())
    print(f"      base: {metrics.summary()}")
    print(f"[4/5] compressing for {args.target}: joint search, {args.candidates} candidates x {args.finetune_steps} "
          f"fine-tuning steps, teachers from a {args.pool_steps}-step elastic pool, latency {args.latency}x the base, "
          f"then {args.final_steps} more steps for the chosen student")
    result = compress(model, target=args.target, train_data=train_set, val_data=val_set, latency=args.latency,
                      budget=args.candidates, workdir=work / "compress", finetune_steps=args.finetune_steps,
                      final_steps=args.final_steps, pool_steps=args.pool_steps, seed=args.seed)
    _print_result(result)
    print("[5/5] exporting the student to ONNX (pre- and post-processing included)")
    exported = export(result.student, work / "student.onnx")
    print(f"      {exported.summary()}")
    print(f"\nfiles: dataset {data_dir}/, base {base}, student {result.student_file}, ONNX {exported.onnx_path}, "
          f"report {result.report} (and report.md)")
    print(f"done in {time.perf_counter() - began:.0f} s")
    return 0


def _input_size(text: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in text.lower().replace("x", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 32:
        raise JdnasError(f"--input-size must be SIZE or HEIGHTxWIDTH with sides >= 32, got {text!r}")
    return parts[0], parts[1]


def cmd_profile(args: argparse.Namespace) -> int:
    from .arch import standard_arch
    from .detectors import load_detector
    from .detectors.inspect import describe
    from .latency import make_backend, open_table, profile, reachable_ops
    from .latency.backends import Timing
    from .space import SearchSpace

    sizes = [_input_size(t) for t in args.input_size]
    model = None
    if args.model:
        if args.family or args.backbone:
            raise JdnasError("give either --model FILE or --family/--backbone, not both")
        model = load_detector(args.model)
        spec, base = describe(model)
    elif args.family and args.backbone:
        spec = DetectorSpec(family=args.family, backbone=args.backbone, num_classes=args.num_classes,
                            min_size=min(min(s) for s in sizes), max_size=max(max(s) for s in sizes),
                            fpn_channels=args.fpn_channels, representation_size=args.representation_size,
                            anchor_sizes=_anchor_sizes("auto", args.family, max(max(s) for s in sizes)))
        base = standard_arch(args.backbone)
    else:
        raise JdnasError("name the detector to profile around: --model FILE, or --family F --backbone B")
    ratios = tuple(float(r) for r in args.width_ratios.split(",")) if args.width_ratios else None
    space = SearchSpace(base, width_ratios=ratios) if ratios else SearchSpace(base)
    if args.dry_run:
        ops = {k for size in sizes for k in reachable_ops(spec, space, size)}
        print(f"{len(ops)} ops reachable around {spec.family} {base} at {', '.join(f'{h}x{w}' for h, w in sizes)}")
        return 0
    timing = Timing(min_runs=args.min_runs, min_time_s=args.min_time)
    backend = make_backend(args.backend, threads=args.threads, device=args.device, precision=args.precision, timing=timing)
    out = Path(args.out) if args.out else Path("latency_tables") / f"{args.target}.json"
    table = open_table(out, args.target, backend)
    print(f"profiling {args.target} on [{backend.fingerprint().describe()}] into {out} ({len(table)} entries already there)")
    students = []
    if model is not None and args.fixed_students:
        import random

        from .morph import morph_to

        rng = random.Random(10_000_019 + args.seed)  # a stream of its own, apart from benchmark seeds
        students = [morph_to(model, space.sample(rng)) for _ in range(args.fixed_students)]
    profile(table, backend, spec, base=base, input_sizes=sizes, space=space, model=model, fixed_models=students)
    print(f"{out}: {len(table)} entries")
    return 0


def cmd_latency(args: argparse.Namespace) -> int:
    from .arch import Arch
    from .detectors import load_detector
    from .detectors.inspect import describe
    from .latency import Estimator, load_table

    model = load_detector(args.model)
    spec, arch = describe(model)
    if args.arch:
        arch = Arch.parse(args.arch)
    size = _input_size(args.input_size) if args.input_size else (spec.min_size, spec.min_size)
    table = load_table(args.target)
    estimator = Estimator(table, spec, size, on_miss=args.on_miss)
    estimate = estimator.estimate(arch)
    print(estimate)
    report: dict[str, object] = {"estimate": estimate.to_dict()}
    if args.measure:
        backend = estimator.backend
        if backend is None:
            raise JdnasError(
                f"--measure runs the detector on this machine, but target {table.target!r} is "
                f"[{table.fingerprint.describe()}]; measure on that device, or estimate without --measure"
            )
        if args.arch:
            from .detectors import build_detector

            model = build_detector(spec, arch)
        measured = backend.measure_detector(model, size)
        error = 100 * (estimate.total_ms - measured.median_ms) / measured.median_ms
        print(f"measured on this machine: {measured.median_ms:.2f} ms (IQR {measured.spread_ms:.2f} ms, "
              f"{measured.samples} runs, full detection load); estimate error {error:+.1f}%")
        report["measured_ms"] = measured.median_ms
    if args.json:
        from ._io import atomic_write_json

        atomic_write_json(args.json, report)
    return 0


def _ratios(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) <= 0:
        raise JdnasError(f"{what} must be comma-separated positive numbers, got {text!r}")
    return values


def _phases(text: str) -> tuple[float, float, float]:
    try:
        a, b, c = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise JdnasError(f"--phases must be three fractions summing to 1, e.g. 0.2,0.3,0.5; got {text!r}") from exc
    return a, b, c


def cmd_teachers_train(args: argparse.Namespace) -> int:
    from .data import load_split
    from .detectors import build_detector, load_detector, spec_of, thaw
    from .teachers import ShrinkConfig, TeacherPool, train_pool_to_file
    from .train import TrainConfig, checkpoint_path

    out = Path(args.out)
    ckpt = checkpoint_path(out)
    if out.exists() and not ckpt.exists() and not args.force:
        raise JdnasError(f"{out} already exists; pass --force to train again and replace it, or choose another --out")
    data = load_split(args.data, args.split)
    if args.base:
        if args.family or args.backbone:
            raise JdnasError("give either --base FILE or --family/--backbone, not both")
        base = thaw(load_detector(args.base))
        data.check_compatible(spec_of(base))
    elif args.family and args.backbone:
        spec = DetectorSpec(family=args.family, backbone=args.backbone, num_classes=data.num_classes,
                            min_size=args.input_size, max_size=args.input_size, fpn_channels=args.fpn_channels,
                            anchor_sizes=_anchor_sizes("auto", args.family, args.input_size),
                            category_ids=data.category_ids, class_names=data.class_names)
        base = build_detector(spec)
    else:
        raise JdnasError("name the pool's base: --base FILE (a trained detector, recommended), or --family F --backbone B")
    pool = TeacherPool.from_base(base, widths=_ratios(args.widths, "--widths"), depth_delta=args.depth_delta)
    config = ShrinkConfig(train=TrainConfig(steps=args.steps, batch_size=args.batch_size, optimizer="adamw", lr=args.lr,
                                            weight_decay=0.05, warmup_steps=min(10, args.steps // 5), seed=args.seed,
                                            checkpoint_every=args.checkpoint_every),
                          phases=_phases(args.phases), inplace_kd=args.inplace_kd)
    print(f"pool: base {pool.base_arch}; largest teacher {pool.max_arch}; "
          f"{sum(1 for _ in pool.configs())} teachers (depth +-{pool.depth_delta}, widths {pool.widths})")
    result = train_pool_to_file(pool, data, out, config=config, metadata={"data": str(args.data)})
    how = f"resumed at step {result.resumed_from}" if result.resumed_from else "from the start"
    print(f"trained the pool {args.steps} steps ({how}) in {result.wall_s:.0f} s; saved {out}")
    return 0


def cmd_teachers_report(args: argparse.Namespace) -> int:
    from ._io import atomic_write_json
    from .data import load_split
    from .report import pool_report
    from .teachers import TeacherPool

    pool = TeacherPool.load(args.pool)
    report = pool_report(pool, val_data=load_split(args.data, args.split), calibration=load_split(args.data, "train"),
                         target=args.target, count=args.count, seed=args.seed, progress=True)
    text = report.to_markdown()
    print(text)
    if args.md:
        Path(args.md).write_text(text, encoding="utf-8")
    if args.json:
        atomic_write_json(args.json, report.to_dict())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .detectors import load_detector
    from .errors import ExportError
    from .export import export

    model = load_detector(args.model)
    size = _input_size(args.input_size) if args.input_size else None
    try:
        result = export(model, args.onnx, engine=args.engine, precision=args.precision, input_size=size)
    except ExportError as exc:
        raise JdnasError(str(exc)) from exc
    print(result.summary())
    if args.measure:
        from .latency import Estimator, load_table

        table = load_table(args.target)
        from .detectors.inspect import describe

        spec, arch = describe(model)
        estimator = Estimator(table, spec, result.input_size)
        if estimator.backend is None:
            raise JdnasError(f"--measure runs on this machine, which is not {table.target!r} [{table.fingerprint.describe()}]")
        measured = estimator.backend.measure_detector(model, result.input_size)
        estimated = estimator.total_ms(arch)
        print(f"{table.target}: measured {measured.median_ms:.2f} ms (full detection load), estimated "
              f"{estimated:.2f} ms ({100 * (estimated - measured.median_ms) / measured.median_ms:+.1f}%)")
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from .api import compress
    from .data import load_split
    from .detectors import load_detector

    model = load_detector(args.model)
    train_set, val_set = load_split(args.data, "train"), load_split(args.data, args.val_split)
    if args.val_images:
        val_set = val_set.head(args.val_images)
    budget: int | str = int(args.budget) if args.budget.isdigit() else args.budget
    result = compress(model, target=args.target, train_data=train_set, val_data=val_set,
                      latency=None if args.ms else args.latency, ms=args.ms, budget=budget, workdir=args.workdir,
                      method=args.method, pool=args.pool, teacher=args.teacher, finetune_steps=args.finetune_steps,
                      final_steps=args.final_steps, pool_steps=args.pool_steps, seed=args.seed)
    _print_result(result)
    return 0


def _print_result(result: object) -> None:
    m = result.metrics  # type: ignore[attr-defined]
    for name in ("base", "student"):
        row = m[name]
        measured = f", measured {row['measured_ms']:.2f} ms" if "measured_ms" in row else ""
        print(f"{name:8s} AP {100 * row['ap']:5.1f}  AP50 {100 * row['ap50']:5.1f}  estimated {row['estimated_ms']:.2f} ms"
              f"{measured}  {row['arch']}")
    print(f"student: {result.student_file}; report: {result.report}")  # type: ignore[attr-defined]


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    out = write_report(args.workdir)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


# -- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jdnas", description="Make object detectors faster on a target without losing accuracy.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"jdnas_sdk {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    data = verbs.add_parser("data", help="datasets: make a synthetic one")
    data_verbs = data.add_subparsers(dest="data_verb", metavar="ACTION", required=True)
    synth = data_verbs.add_parser("synth", formatter_class=fmt, help="write a synthetic COCO-format dataset",
                                  description="Write a synthetic COCO-format shapes dataset (images + instances JSON), deterministic by seed.")
    synth.add_argument("--out", required=True, help="folder to write (images/, annotations/)")
    synth.add_argument("--train", type=int, default=600, help="number of training images")
    synth.add_argument("--val", type=int, default=100, help="number of validation images")
    synth.add_argument("--size", type=int, default=256, help="image side in pixels")
    synth.add_argument("--seed", type=int, default=0, help="random seed")
    synth.add_argument("--format", choices=("jpg", "png"), default="jpg", help="image file format")
    synth.set_defaults(func=cmd_data_synth)

    tr = verbs.add_parser("train", formatter_class=fmt, help="train a detector on a COCO-format dataset",
                          description="Train a detector. Killed? Run the same command again: it resumes from OUT.ckpt.")
    tr.add_argument("--data", required=True, help="dataset folder (images/<split>/ + annotations/instances_<split>.json, or COCO's layout)")
    tr.add_argument("--model", required=True, help="FAMILY_BACKBONE (e.g. fasterrcnn_resnet18, retinanet_resnet50) or a detector file to fine-tune")
    tr.add_argument("--out", required=True, help="detector file to write")
    tr.add_argument("--split", default="train", help="split to train on")
    tr.add_argument("--steps", type=int, default=300, help="optimisation steps")
    tr.add_argument("--batch-size", type=int, default=4, help="images per step")
    tr.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd",
                    help="sgd (momentum 0.9), or adamw: faster from scratch on small data (use --lr 1e-3 --weight-decay 0.05)")
    tr.add_argument("--lr", type=float, default=0.02, help="peak learning rate after warm-up; cosine decay follows")
    tr.add_argument("--weight-decay", type=float, default=1e-4, help="weight decay")
    tr.add_argument("--warmup", type=int, default=50, help="linear warm-up steps")
    tr.add_argument("--input-size", type=int, default=256, help="longest image side fed to the detector")
    tr.add_argument("--fpn-channels", type=int, default=256, help="FPN width (torchvision: 256)")
    tr.add_argument("--representation-size", type=int, default=1024, help="R-CNN box-head width (torchvision: 1024)")
    tr.add_argument("--anchor-sizes", default="auto", help="base anchor size per level: auto (halved below 512 px), torchvision, or e.g. 16,32,64,128,256")
    tr.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints")
    tr.add_argument("--workers", type=int, default=0, help="data-loading worker processes")
    tr.add_argument("--seed", type=int, default=0, help="random seed")
    tr.add_argument("--force", action="store_true", help="replace an existing --out")
    tr.set_defaults(func=cmd_train)

    ev = verbs.add_parser("eval", formatter_class=fmt, help="COCO mAP of a detector file on a dataset")
    ev.add_argument("--model", required=True, help="detector file")
    ev.add_argument("--data", required=True, help="dataset folder")
    ev.add_argument("--split", default="val", help="split to evaluate on")
    ev.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    ev.add_argument("--json", help="also write the metrics to this JSON file")
    ev.set_defaults(func=cmd_eval)

    info = verbs.add_parser("info", help="show what a detector file holds")
    info.add_argument("--model", required=True, help="detector file")
    info.set_defaults(func=cmd_info)

    pr = verbs.add_parser(
        "profile", formatter_class=fmt, help="measure a target's per-op latency table",
        description="Measure every op the search space around a detector can reach, on this machine, into a "
                    "latency table. Killed? Run the same command again: done entries are kept.",
        epilog="examples:\n  jdnas profile --target cpu-ort --model base.pt --input-size 256\n"
               "  jdnas profile --target my-gpu-trt --backend tensorrt --precision fp16 --family fasterrcnn "
               "--backbone resnet50 --input-size 800x1344",
    )
    pr.add_argument("--target", required=True, help="target name (the table is TARGET.json)")
    pr.add_argument("--model", help="detector file whose neighbourhood to profile (its weights time the fixed entry)")
    pr.add_argument("--family", choices=sorted(FAMILIES), help="or: a detector family ...")
    pr.add_argument("--backbone", choices=BACKBONES, help="... and its standard backbone")
    pr.add_argument("--num-classes", type=int, default=9, help="with --family: classes including background")
    pr.add_argument("--fpn-channels", type=int, default=256, help="with --family: FPN width")
    pr.add_argument("--representation-size", type=int, default=1024, help="with --family: R-CNN box-head width")
    pr.add_argument("--input-size", nargs="+", default=["256"], help="image size(s): SIZE or HEIGHTxWIDTH")
    pr.add_argument("--width-ratios", help="width grid of the search space, e.g. 0.5,0.75,1 (default: 0.25..1.5)")
    pr.add_argument("--backend", choices=("ort", "torch", "tensorrt", "roofline"), default="ort",
                    help="what runs the ops; roofline MODELS them for --device v100-trt|t4-trt|a100-trt (a modelled table)")
    pr.add_argument("--threads", type=int, default=1, help="CPU threads (1 gives repeatable numbers)")
    pr.add_argument("--device", default="cpu", help="torch backend: cpu or cuda; roofline backend: the device model")
    pr.add_argument("--precision", choices=("fp32", "fp16"), help="fp16: torch on CUDA, tensorrt (its default)")
    pr.add_argument("--min-runs", type=int, default=10, help="timed runs per op, at least")
    pr.add_argument("--min-time", type=float, default=0.25, help="seconds of timed runs per op, at least")
    pr.add_argument("--out", help="table file (default: latency_tables/TARGET.json)")
    pr.add_argument("--dry-run", action="store_true", help="only count the ops to measure")
    pr.add_argument("--fixed-students", type=int, default=8,
                    help="with --model: students of the space (the model morphed to random archs) whose timings "
                         "average into the fixed entry, beside the model's own")
    pr.add_argument("--seed", type=int, default=0, help="seed of those students' architectures")
    pr.set_defaults(func=cmd_profile)

    la = verbs.add_parser(
        "latency", formatter_class=fmt, help="estimate a detector's latency on a target",
        description="Estimate a detector's latency from a target's table: total, breakdown by stage, misses. "
                    "With --measure, also run it on this machine (the target must be this machine).",
    )
    la.add_argument("--model", required=True, help="detector file")
    la.add_argument("--target", default="cpu-ort", help="target name or table file")
    la.add_argument("--arch", help="estimate this backbone code instead of the file's (same heads)")
    la.add_argument("--input-size", help="SIZE or HEIGHTxWIDTH (default: the detector's min_size square)")
    la.add_argument("--on-miss", choices=("auto", "measure", "interpolate", "model", "error"), default="auto",
                    help="ops the table lacks: auto measures them on the table's own device, models them on a "
                         "modelled table, else interpolates")
    la.add_argument("--measure", action="store_true", help="also measure the whole detector here (ONNX Runtime)")
    la.add_argument("--json", help="also write the estimate (and measurement) to this JSON file")
    la.set_defaults(func=cmd_latency)

    te = verbs.add_parser("teachers", help="the elastic teacher pool: train it, report on it")
    te_verbs = te.add_subparsers(dest="teachers_verb", metavar="ACTION", required=True)
    tt = te_verbs.add_parser(
        "train", formatter_class=fmt, help="train an elastic teacher pool by progressive shrinking",
        description="Grow a trained detector into an elastic pool (deeper, wider; function-preserving) and train "
                    "every teacher in it at once. Killed? Run the same command again: it resumes from OUT.ckpt.",
    )
    tt.add_argument("--data", required=True, help="dataset folder")
    tt.add_argument("--base", help="trained detector file the pool grows from (recommended)")
    tt.add_argument("--family", choices=sorted(FAMILIES), help="or: a family to build from scratch ...")
    tt.add_argument("--backbone", choices=BACKBONES, help="... with this backbone")
    tt.add_argument("--out", required=True, help="pool file to write")
    tt.add_argument("--split", default="train", help="split to train on")
    tt.add_argument("--steps", type=int, default=300, help="optimisation steps (each runs up to 3 teachers)")
    tt.add_argument("--batch-size", type=int, default=4, help="images per step")
    tt.add_argument("--lr", type=float, default=2e-4, help="AdamW peak learning rate")
    tt.add_argument("--widths", default="0.75,1,1.25", help="teacher width ratios per stage, relative to the base")
    tt.add_argument("--depth-delta", type=int, default=1, help="teachers' blocks per stage: base depth +- this")
    tt.add_argument("--phases", default="0.2,0.3,0.5", help="step fractions: largest only, + depth, + width")
    tt.add_argument("--inplace-kd", type=float, default=1.0, help="weight of smaller teachers imitating the largest")
    tt.add_argument("--input-size", type=int, default=256, help="with --family: image side")
    tt.add_argument("--fpn-channels", type=int, default=256, help="with --family: FPN width")
    tt.add_argument("--checkpoint-every", type=int, default=20, help="steps between checkpoints")
    tt.add_argument("--seed", type=int, default=0, help="random seed")
    tt.add_argument("--force", action="store_true", help="replace an existing --out")
    tt.set_defaults(func=cmd_teachers_train)
    tr_ = te_verbs.add_parser("report", formatter_class=fmt, help="mAP and estimated latency of sampled teachers")
    tr_.add_argument("--pool", required=True, help="pool file")
    tr_.add_argument("--data", required=True, help="dataset folder (train split recalibrates BatchNorm)")
    tr_.add_argument("--split", default="val", help="split to evaluate on")
    tr_.add_argument("--target", default="cpu-ort", help="latency table")
    tr_.add_argument("--count", type=int, default=6, help="teachers: largest, base, smallest, then random")
    tr_.add_argument("--seed", type=int, default=0, help="seed of the random teachers")
    tr_.add_argument("--md", help="also write the Markdown report here")
    tr_.add_argument("--json", help="also write the report as JSON here")
    tr_.set_defaults(func=cmd_teachers_report)

    ex = verbs.add_parser(
        "export", formatter_class=fmt, help="write a detector as ONNX (and a TensorRT engine)",
        description="Export the whole detector (pre-processing and NMS included) to ONNX, check it with "
                    "onnx.checker and against PyTorch in ONNX Runtime, and build a TensorRT engine where TensorRT is installed.",
    )
    ex.add_argument("--model", required=True, help="detector file")
    ex.add_argument("--onnx", required=True, help="ONNX file to write")
    ex.add_argument("--engine", help="TensorRT engine file to write (needs TensorRT and a GPU)")
    ex.add_argument("--precision", choices=("fp16", "fp32"), default="fp16", help="TensorRT engine precision")
    ex.add_argument("--input-size", help="SIZE or HEIGHTxWIDTH the graph is traced for (default: min_size square)")
    ex.add_argument("--measure", action="store_true", help="also time it on this machine beside the table's estimate")
    ex.add_argument("--target", default="cpu-ort", help="with --measure: the table to compare with")
    ex.set_defaults(func=cmd_export)

    co = verbs.add_parser(
        "compress", formatter_class=fmt, help="search a faster student of a detector for a target",
        description="The joint search (student morphism + dynamic distillation from a teacher pool), or the naive "
                    "pipeline baseline. Killed? Run the same command again: finished candidates are kept.",
        epilog="example:\n  jdnas compress --model base.pt --data data/shapes --target cpu-ort --latency 0.8 --budget 8",
    )
    co.add_argument("--model", required=True, help="trained detector file")
    co.add_argument("--data", required=True, help="dataset folder (train split to fine-tune, --val-split to evaluate)")
    co.add_argument("--target", default="cpu-ort", help="latency table: target name or file")
    co.add_argument("--latency", type=float, default=0.5, help="wanted fraction of the base's estimated latency")
    co.add_argument("--ms", type=float, help="or an absolute latency bound in ms")
    co.add_argument("--budget", default="12", help="candidates (12) or wall time (90s, 30m, 2h)")
    co.add_argument("--workdir", default="runs/compress", help="where candidates, archive, student and report go")
    co.add_argument("--method", choices=("joint", "pipeline"), default="joint", help="joint search or the naive pipeline")
    co.add_argument("--teacher", choices=("pool", "base", "none"), default="pool", help="where teachers come from")
    co.add_argument("--pool", help="a trained pool file (default: train one in WORKDIR)")
    co.add_argument("--pool-steps", type=int, default=100, help="steps of the pool trained when none is given")
    co.add_argument("--finetune-steps", type=int, default=50, help="fine-tuning steps per candidate")
    co.add_argument("--final-steps", type=int, default=200,
                    help="more training steps for the chosen student, with its teacher (0: none)")
    co.add_argument("--val-split", default="val", help="split that measures accuracy")
    co.add_argument("--val-images", type=int, default=0, help="use only the first N validation images (0: all)")
    co.add_argument("--seed", type=int, default=0, help="random seed (same seed, same search)")
    co.set_defaults(func=cmd_compress)

    rp = verbs.add_parser("report", help="write the HTML/Markdown report of a compress workdir")
    rp.add_argument("workdir", help="the --workdir of a compress run")
    rp.set_defaults(func=cmd_report)

    demo = verbs.add_parser("demo", formatter_class=fmt, help="the whole job on a synthetic dataset, on this machine",
                            description="Make a synthetic dataset, train a small detector, compress it for this "
                                        "machine's CPU (cpu-ort), export the student to ONNX and write the report. "
                                        "Reuses what a previous run left in WORKDIR.")
    demo.add_argument("--workdir", default="runs/demo", help="where everything is written")
    demo.add_argument("--steps", type=int, default=400, help="training steps of the base detector")
    demo.add_argument("--train-images", type=int, default=600, help="synthetic training images")
    demo.add_argument("--val-images", type=int, default=100, help="synthetic validation images")
    demo.add_argument("--size", type=int, default=256, help="image side in pixels")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--target", default="cpu-ort", help="latency table to compress for")
    demo.add_argument("--latency", type=float, default=0.8, help="wanted fraction of the base's latency")
    demo.add_argument("--candidates", type=int, default=3, help="students the search evaluates")
    demo.add_argument("--finetune-steps", type=int, default=20, help="fine-tuning steps per student")
    demo.add_argument("--final-steps", type=int, default=30, help="more training steps for the chosen student")
    demo.add_argument("--pool-steps", type=int, default=10, help="progressive-shrinking steps of the teacher pool")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jdnas`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except JdnasError as exc:
        print(f"jdnas {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jdnas {args.verb}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
