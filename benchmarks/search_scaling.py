"""How the joint search scales on Ray: the same small search with 1 and 2 workers, and Ray's cost.

One small search (a Faster R-CNN ResNet-18-FPN at 128 px on the synthetic shapes, rounds of
``--parallel`` candidates, the base as teacher, bounded by a modelled slow device so that no op
is timed meanwhile) runs three times with the same seed and round size:

1. ``local``: in this process, one candidate after another (no Ray);
2. ``ray-1``: on a local Ray instance, one worker at a time (each candidate asks for all CPUs);
3. ``ray-2``: on the same Ray instance, two workers at once (one CPU each).

Every candidate trains with 1 intra-op thread, wherever it runs. The archives must be the same
candidate by candidate (checked and recorded). Reported: each run's search wall time, the
candidates' own training time, the speed-up of 2 workers over 1, and Ray's overhead per candidate
((ray-1 - local) / candidates; Ray's start and the workers' warm-up are timed apart). Results, with
the machine, go to ``benchmarks/results/search_scaling.{json,md}``. Run it on an otherwise idle
machine: on 2 cores, any other load eats the second worker's core.

    python benchmarks/search_scaling.py                                      # the recorded run (about 10 min)
    python benchmarks/search_scaling.py --candidates 2 --finetune-steps 1 --images 8 --results /tmp/r   # smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from jdnas_sdk import Arch, DetectorSpec, build
from jdnas_sdk._io import atomic_write_json
from jdnas_sdk.data import load_split, make_synthetic_dataset
from jdnas_sdk.latency import DeviceModel, Estimator, load_table, open_table
from jdnas_sdk.latency.backends import RooflineBackend
from jdnas_sdk.machine import command_line, machine_info
from jdnas_sdk.search import LocalExecutor, RayExecutor, SearchConfig, joint_search
from jdnas_sdk.space import SearchSpace
from jdnas_sdk.train import TrainConfig

HERE = Path(__file__).resolve().parent
BASE = Arch.parse("basic:32|32:32x2|64:64x2|128:128x2|256:256x2")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("runs/search_scaling"))
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--parallel", type=int, default=2, help="round size (candidates proposed per round)")
    p.add_argument("--finetune-steps", type=int, default=20)
    p.add_argument("--images", type=int, default=64, help="synthetic training images (and a quarter for validation)")
    p.add_argument("--size", type=int, default=128, help="image size (px)")
    p.add_argument("--latency", type=float, default=0.85, help="target: this fraction of the base's estimated latency")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _table(workdir: Path) -> Path:
    """A modelled table of a slow device (the backbone dominates, no op is timed during the runs):
    it only shapes the proposals, the same for every run."""
    path = workdir / "slow.json"
    if not path.is_file():
        slow = DeviceModel(
            "a slow modelled device",
            "fp32",
            peak_tflops=0.002,
            bandwidth_gbs=2.0,
            launch_us=0.0,
            postprocess_ms=0.5,
            fixed_kernels=0,
        )
        open_table(path, "slow", RooflineBackend(slow)).save()
    return path


def _search(
    args: argparse.Namespace, name: str, executor: Any, data: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    work = args.workdir / name
    shutil.rmtree(work, ignore_errors=True)  # a measurement, not a resume
    spec = DetectorSpec(
        family="fasterrcnn",
        backbone="resnet18",
        num_classes=9,
        min_size=args.size,
        max_size=args.size,
        fpn_channels=32,
        representation_size=64,
        anchor_sizes=(16, 32, 64, 128, 256),
    )
    torch.manual_seed(args.seed)
    base = build(spec, BASE)
    estimator = Estimator(load_table(str(_table(args.workdir))), spec, (args.size, args.size))
    config = SearchConfig(
        candidates=args.candidates,
        finetune_steps=args.finetune_steps,
        parallel=args.parallel,
        seed=args.seed,
        train=TrainConfig(batch_size=2, optimizer="adamw", lr=1e-4, warmup_steps=0),
    )
    t0 = time.perf_counter()
    archive = joint_search(
        base,
        estimator=estimator,
        target_ms=args.latency * estimator.total_ms(BASE),
        train_data=load_split(data, "train"),
        val_data=load_split(data, "val"),
        workdir=work,
        space=SearchSpace(BASE),
        base_teacher=True,
        config=config,
        executor=executor,
        progress=False,
        log=lambda m: print(f"  {name}: {m}", flush=True),
    )
    wall = time.perf_counter() - t0
    trained = archive.candidates[1:]
    run = {
        "wall_s": wall,
        "candidates": len(trained),
        "train_s": sum(c.wall_s for c in trained),
        "search_s": max(c.ended for c in trained) - min(c.started for c in trained),
        "workers": sorted({c.worker for c in trained}),
    }
    rows = [
        {k: v for k, v in c.to_json().items() if k not in ("wall_s", "worker", "started", "ended")}
        for c in archive.candidates
    ]
    return run, rows


def _ray_start(workers: int) -> float:
    """Start a local Ray instance of ``workers`` CPUs; returns the seconds it took."""
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    return time.perf_counter() - t0


def _warm(workers: int) -> float:
    """Bring ``workers`` Ray workers up with torch and the SDK imported; returns the seconds it took."""
    import ray

    @ray.remote(num_cpus=1)
    def warm(_: int) -> int:
        import os

        import jdnas_sdk.search.executor  # noqa: F401 - the import every candidate needs

        time.sleep(1.0)  # keep each worker busy so the next warm-up lands on another one
        return os.getpid()

    t0 = time.perf_counter()
    ray.get([warm.remote(i) for i in range(workers)])
    return time.perf_counter() - t0


def markdown(report: dict[str, Any]) -> str:
    r, m = report["runs"], report["machine"]
    lines = [
        f"# Search scaling on Ray ({report['date']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m.get('memory_gib')} GiB; torch {m.get('torch')}, "
        f"Ray {report['ray']}. Settings: {json.dumps(report['settings'])}.",
        "",
        "| run | workers | search wall (s) | candidates' training (s) | s per candidate |",
        "|---|---|---|---|---|",
    ]
    for name, run in r.items():
        lines.append(
            f"| {name} | {len(run['workers'])} | {run['wall_s']:.1f} | {run['train_s']:.1f} | "
            f"{run['wall_s'] / run['candidates']:.2f} |"
        )
    lines += [
        "",
        f"- Speed-up of 2 workers over 1 (ray-1 / ray-2 wall): **{report['speedup']:.2f}x**; over the "
        f"in-process search: {report['speedup_vs_local']:.2f}x.",
        f"- Ray's overhead per candidate ((ray-1 - local) / candidates): "
        f"**{report['overhead_per_candidate_s']:.2f} s**; "
        f"Ray's start {report['ray_start']['ray_init_s']:.1f} s and warming 2 workers before each Ray run "
        f"({report['ray_start']['warmup_ray-1_s']:.1f} s, {report['ray_start']['warmup_ray-2_s']:.1f} s) are "
        "not counted above.",
        f"- Same archive candidate by candidate in all three runs: **{report['identical']}**.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    data = args.workdir / f"shapes_{args.images}_{args.size}"
    if not (data / "annotations").is_dir():
        make_synthetic_dataset(
            data, train=args.images, val=max(4, args.images // 4), size=args.size, seed=args.seed, progress=False
        )
    import ray

    runs, archives = {}, {}
    runs["local"], archives["local"] = _search(args, "local", LocalExecutor(threads=1), data)
    ray_start = {"ray_init_s": _ray_start(2)}
    try:
        for name, cpus in (("ray-1", 2), ("ray-2", 1)):
            ray_start[f"warmup_{name}_s"] = _warm(2)  # each run starts with two warm workers
            runs[name], archives[name] = _search(args, name, RayExecutor(num_cpus=cpus, threads=1), data)
    finally:
        ray.shutdown()
    n = runs["local"]["candidates"]
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "ray": ray.__version__,
        "command": command_line("benchmarks/search_scaling.py", argv),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "runs": runs,
        "ray_start": ray_start,
        "speedup": runs["ray-1"]["wall_s"] / runs["ray-2"]["wall_s"],
        "speedup_vs_local": runs["local"]["wall_s"] / runs["ray-2"]["wall_s"],
        "overhead_per_candidate_s": (runs["ray-1"]["wall_s"] - runs["local"]["wall_s"]) / n,
        "identical": archives["local"] == archives["ray-1"] == archives["ray-2"],
    }
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.results / "search_scaling.json", report)
    (args.results / "search_scaling.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 0 if report["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
