"""Does a trained detector gain from a larger test input, untrained? The probe behind the search's size-up step.

The search space's input size used to stop at the base's. On the benchmark's Faster R-CNN the joint
search reaches 0.35x by keeping fewer proposals, under a 0.5x target: latency it cannot spend,
since every other head knob only shrinks the detector. A larger input is the one knob that can buy
accuracy back without training a new weight (anchors are kept; the FPN sees the objects larger).
This probe scores each detector file at each ``--sizes`` (``min_size``; ``max_size`` scales with
it) and ``--proposals``, no training, on the ``select`` and ``test`` splits; results with the
machine in ``benchmarks/results/size_probe.{json,md}``.

``--train-steps N`` also trains each file N steps at each size (the final student's schedule: AdamW
at the recipe's rate, warm-up and cosine decay) and scores it again: what a size leaves within
reach. A student at a smaller input than its base is held to the base's accuracy at the base's
size, so the base's own accuracy after training at the smaller size is the ceiling to compare.

    python benchmarks/size_probe.py --models runs/bench/base_fasterrcnn_resnet18.pt \\
        --data runs/bench/shapes_2000_500_256_s0 --sizes 256 288 320 384 --proposals 300
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from jdnas_sdk import load_detector
from jdnas_sdk._io import atomic_write_json
from jdnas_sdk.data import load_protocol_splits
from jdnas_sdk.detectors import describe
from jdnas_sdk.distill import finetune
from jdnas_sdk.machine import command_line, machine_info
from jdnas_sdk.morph import morph_to
from jdnas_sdk.protocol import Recipe, score
from jdnas_sdk.student import Heads, Student

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", type=Path, default=[Path("runs/bench/base_fasterrcnn_resnet18.pt")])
    p.add_argument("--data", type=Path, default=Path("runs/bench/shapes_2000_500_256_s0"))
    p.add_argument("--sizes", nargs="+", type=int, default=[256, 288, 320, 384], help="min_size values to score")
    p.add_argument(
        "--proposals", type=int, default=None, help="R-CNN proposals kept at test time (default: each file's)"
    )
    p.add_argument(
        "--train-steps", type=int, default=0, help="also train each file this many steps at each size (0: untrained)"
    )
    p.add_argument("--workdir", type=Path, default=Path("runs/size_probe"), help="with --train-steps: trained files")
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--name", default="size_probe", help="results file stem")
    args = p.parse_args(argv)
    args.command = command_line("benchmarks/size_probe.py", argv)  # what reproduces its results
    return args


def at_size(model: Any, size: int, proposals: int | None) -> tuple[Any, str]:
    """``model``'s weights at input ``size`` (``max_size`` scaled with it) and, for an R-CNN given
    ``proposals``, that many proposals kept; no weight changes. Returns the student and its code."""
    spec, arch = describe(model)
    heads = Heads.of(spec)
    heads = replace(heads, min_size=size, max_size=max(size, round(heads.max_size * size / heads.min_size)))
    if proposals is not None and heads.proposals is not None:
        heads = replace(heads, proposals=proposals, pre=proposals)
    code = Student(arch, heads)
    return morph_to(model, code), str(code)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    train, select, test = load_protocol_splits(args.data)
    rows: list[dict[str, Any]] = []
    for path in args.models:
        base_size = describe(load_detector(path))[0].min_size
        for size in args.sizes:
            began = time.perf_counter()
            student, code = at_size(load_detector(path).eval(), size, args.proposals)
            row = {
                "model": path.name,
                "size": size,
                "base_size": base_size,
                "code": code,
                **score(student, select, test),
            }
            if args.train_steps:
                trained = _trained(student, train, args.train_steps, args.workdir / f"{path.stem}_{size}")
                row["trained"] = {"steps": args.train_steps, **score(trained, select, test)}
            row["wall_s"] = time.perf_counter() - began
            rows.append(row)
            print(f"{path.name} at {size} px: select {100 * row['select_ap']:.1f} test {100 * row['test_ap']:.1f}")
            _write(args, rows, complete=False)
    _write(args, rows, complete=True)
    return 0


def _trained(student: Any, train: Any, steps: int, out: Path) -> Any:
    """``student`` trained ``steps`` steps on the final student's schedule into ``out`` (a detector
    file, checkpointed beside it while it trains: a killed run resumes; a finished one is loaded)."""
    out = out.with_suffix(f".s{steps}.pt")
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        finetune(student, data=train, steps=steps, config=Recipe().train_config(), out=out, progress=False)
    return load_detector(out)


def _write(args: argparse.Namespace, rows: list[dict[str, Any]], *, complete: bool) -> None:
    out = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "command": args.command,
        "proposals": args.proposals,
        "complete": complete,
        "rows": rows,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.results / f"{args.name}.json", out)
    lines = [
        "# A trained detector at larger (and smaller) test inputs, untrained (the search's size step)",
        "",
        f"Run {out['date']} on {out['machine'].get('cpu', '?')}; `{out['command']}`. Status: "
        f"{'complete' if complete else 'partial'}. Each file's own weights, "
        "only the input size (and, where given, the proposals kept) changed; AP on test, select beside it.",
        "",
        "| model | input (px) | vs its base size | test AP | select AP | AP50 | AP75 | change in test AP "
        "| trained: steps | test AP | select AP |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    at_base = {r["model"]: r["test_ap"] for r in rows if r["size"] == r["base_size"]}
    for r in rows:
        ref = at_base.get(r["model"])
        change = "" if ref is None else f"{100 * (r['test_ap'] - ref):+.1f}"
        lines.append(
            f"| {r['model']} | {r['size']} | {r['size'] / r['base_size']:.2f}x | {100 * r['test_ap']:.1f} | "
            f"{100 * r['select_ap']:.1f} | {100 * r['ap50']:.1f} | {100 * r['ap75']:.1f} | {change} | "
            + (
                f"{r['trained']['steps']} | {100 * r['trained']['test_ap']:.1f} | "
                f"{100 * r['trained']['select_ap']:.1f} |"
                if "trained" in r
                else "| | |"
            )
        )
    (args.results / f"{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
