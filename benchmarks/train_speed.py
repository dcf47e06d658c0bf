"""What a training step of the benchmark detectors costs on this machine, with the optimiser's
fused kernel (what :func:`jdnas_sdk.train.make_optimizer` takes) and with the per-tensor loop torch
picks on a CPU when none is asked for (what it took before).

Each detector (ResNet-18-FPN64, 256 px, batch 4, the benchmarks' bases) trains through the SDK's own
:func:`jdnas_sdk.train.train` on a synthetic dataset, from the same weights, in interleaved rounds:
``--steps`` steps with the loop, then the same steps with the kernel, and so on, so that the
machine's drift falls on both alike. A round's time per step leaves out its first step (warm-up).
The optimiser and the gradient clipping are the only difference (``jdnas_sdk.train._fusable``
patched to ``False`` gives the old path).

    python benchmarks/train_speed.py                  # both families, AdamW (the bases' optimiser)
    python benchmarks/train_speed.py --optimizer sgd --families retinanet --rounds 2 --steps 6

Writes ``RESULTS/train_speed.json`` and ``.md`` with the machine it ran on. Run it alone: it times.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import jdnas_sdk.train as training
from jdnas_sdk import build_detector
from jdnas_sdk._io import atomic_write_json, atomic_write_text
from jdnas_sdk.arch import DetectorSpec
from jdnas_sdk.data import load_split
from jdnas_sdk.data.synth import make_synthetic_dataset
from jdnas_sdk.machine import machine_info

HERE = Path(__file__).resolve().parent
KINDS = ("loop", "fused")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--families", nargs="+", default=["retinanet", "fasterrcnn"])
    p.add_argument("--optimizer", default="adamw", choices=("sgd", "adamw"))
    p.add_argument("--steps", type=int, default=12, help="training steps per round and kind (the first is warm-up)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of both kinds")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--threads", type=int, default=2, help="torch threads (the bases trained with 2)")
    p.add_argument("--results", type=Path, default=HERE / "results", help="where results go")
    args = p.parse_args(argv)
    if args.steps < 2 or args.rounds < 1:
        p.error("--steps must be >= 2 (the first is warm-up) and --rounds >= 1")
    return args


def step_ms(model: torch.nn.Module, data: Any, config: training.TrainConfig, *, fused: bool) -> float:
    """Median ms per training step of ``model`` (a copy trains) over ``config.steps`` steps, the first
    left out, with the fused kernel or torch's default loop."""
    marks: list[float] = []
    real_augment = training.augment

    def augment(*args: Any, **kwargs: Any) -> Any:  # called once per step, before its forward
        marks.append(time.perf_counter())
        return real_augment(*args, **kwargs)

    real_fusable = training._fusable
    training.augment = augment
    training._fusable = real_fusable if fused else (lambda params: False)
    try:
        training.train(copy.deepcopy(model), data, config=config, progress=False)
    finally:
        training.augment, training._fusable = real_augment, real_fusable
    marks.append(time.perf_counter())  # the last step's end
    gaps = [1000 * (b - a) for a, b in zip(marks[1:-1], marks[2:])]
    return statistics.median(gaps)


def measure_family(family: str, data: Any, args: argparse.Namespace) -> dict[str, Any]:
    spec = DetectorSpec(
        family=family, backbone="resnet18", num_classes=9, fpn_channels=64, min_size=args.size, max_size=args.size
    )
    torch.manual_seed(0)
    model = build_detector(spec)
    lr = 1e-3 if args.optimizer == "adamw" else 0.02
    config = training.TrainConfig(steps=args.steps, optimizer=args.optimizer, lr=lr, warmup_steps=1)
    rounds: dict[str, list[float]] = {k: [] for k in KINDS}
    for r in range(args.rounds):
        for kind in KINDS:
            rounds[kind].append(step_ms(model, data, config, fused=kind == "fused"))
            print(f"{family} round {r + 1}/{args.rounds} {kind}: {rounds[kind][-1]:.0f} ms/step", flush=True)
    medians = {k: statistics.median(v) for k, v in rounds.items()}
    return {
        "family": family,
        "detector": f"{family} ResNet-18-FPN{spec.fpn_channels} {args.size} px",
        "spec": str(spec),
        "rounds_ms": rounds,
        "step_ms": medians,
        "speedup": medians["loop"] / medians["fused"],
    }


def write(args: argparse.Namespace, rows: list[dict[str, Any]], began: str, complete: bool) -> None:
    command = "python benchmarks/train_speed.py " + " ".join(sys.argv[1:])
    atomic_write_json(
        args.results / "train_speed.json",
        {
            "date": began,
            "machine": machine_info(),
            "command": command.strip(),
            "optimizer": args.optimizer,
            "steps": args.steps,
            "rounds": args.rounds,
            "batch_size": training.TrainConfig().batch_size,
            "complete": complete,
            "results": rows,
        },
    )
    m = machine_info()
    lines = [
        "# Training step time: fused optimiser kernel vs torch's per-tensor loop (train_speed)",
        "",
        f"Run {began} on {m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch threads); `{command.strip()}`. "
        f"{args.optimizer}, batch {training.TrainConfig().batch_size}, {args.size} px; ms per step at the median of "
        f"{args.steps - 1} steps a round, the median of {args.rounds} interleaved rounds."
        + ("" if complete else " Status: partial."),
        "",
        "| detector | loop ms/step (rounds) | fused ms/step (rounds) | speed-up |",
        "|---|---|---|---|",
    ]
    for row in rows:
        cells = [f"{row['step_ms'][k]:.0f} ({', '.join(f'{v:.0f}' for v in row['rounds_ms'][k])})" for k in KINDS]
        lines.append(f"| {row['detector']} | {cells[0]} | {cells[1]} | {row['speedup']:.2f}x |")
    atomic_write_text(args.results / "train_speed.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    began = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic_dataset(Path(tmp) / "shapes", train=64, val=0, select=8, size=args.size, progress=False)
        data = load_split(root, "train")
        for family in args.families:
            rows.append(measure_family(family, data, args))
            write(args, rows, began, complete=len(rows) == len(args.families))
    for row in rows:
        print(
            f"{row['family']}: loop {row['step_ms']['loop']:.0f} ms/step, fused {row['step_ms']['fused']:.0f}"
            f" ms/step ({row['speedup']:.2f}x)"
        )


if __name__ == "__main__":
    main()
