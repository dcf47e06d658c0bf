"""Does a teacher stronger than the control turn the Faster R-CNN tie into a win? A probe.

On the held-out benchmark the joint search's Faster R-CNN student is the base at 300 proposals
(0.35x measured) trained 400 more steps without a teacher: bit for bit the extra-steps control's
training, so it can only tie the control (``compress_synth.md``). Distilling from the base cost 1.6
AP (a teacher weaker than the control pulls the student back to the base). The paper's lever is a
teacher *stronger* than what the student competes with, trained once and amortised. This probe
measures that lever alone, no search:

* the teacher: the base trained ``--teacher-steps`` more steps on the train split (the recipe's
  final schedule, its own seed), trained once and reused by every seed; its select and test AP
  are reported, and it must beat the base on select or the probe stops;
* per seed, the student (the base's weights kept at ``--proposals`` proposals, 300 by default,
  as the joint search chose) trained ``--steps`` steps on the recipe's final schedule *with* the teacher (the
  recipe's distillation terms), beside the extra-steps control: the base trained the same steps on
  the same schedule and seed without a teacher, exactly as ``compress`` trains it.

The only choice, the teacher's check, sees ``select``; ``test`` gives the numbers. Both rows are
reported as trained (``compress``'s keep-better rule would swap a row for its start where its
training lost select AP; the table says where it would). Each model is saved in ``--workdir`` as
it finishes, so a killed probe resumes (by step count, seed and KD weights: another ``--base`` or
``--data`` needs another ``--workdir``); results with the machine in
``benchmarks/results/NAME.{json,md}``. The recorded runs (``teacher_probe``: features 1, scores 0.5,
the default then; ``_kd01``: 0.1 / 0.1; ``_scores``: scores 1 alone):

    python benchmarks/teacher_probe.py --base runs/bench/base_fasterrcnn_resnet18.pt \\
        --data runs/bench/shapes_2000_500_256_s0 --teacher-steps 1200 --steps 400 --seeds 0 1 \\
        --feature-weight 1 --head-weight 0.5
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from jdnas_sdk import load_detector
from jdnas_sdk._io import atomic_write_json
from jdnas_sdk.data import load_protocol_splits
from jdnas_sdk.detectors import describe, read_detector_file, thaw
from jdnas_sdk.distill import finetune
from jdnas_sdk.finish import final_schedule
from jdnas_sdk.machine import command_line, machine_info
from jdnas_sdk.morph import morph_to
from jdnas_sdk.protocol import Recipe, score, train_control
from jdnas_sdk.search import SearchConfig
from jdnas_sdk.student import Heads, Student

HERE = Path(__file__).resolve().parent
TEACHER_SEED = 4242


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, default=Path("runs/bench/base_fasterrcnn_resnet18.pt"))
    p.add_argument("--data", type=Path, default=Path("runs/bench/shapes_2000_500_256_s0"))
    p.add_argument("--workdir", type=Path, default=Path("runs/teacher_probe"))
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--teacher-steps", type=int, default=1200, help="the teacher: the base trained this many more steps")
    p.add_argument("--steps", type=int, default=400, help="the student's and the control's training steps")
    p.add_argument("--proposals", type=int, default=300, help="the student's R-CNN proposals at test time")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--feature-weight", type=float, default=None, help="KD feature weight (default: the recipe's)")
    p.add_argument("--head-weight", type=float, default=None, help="KD score weight (default: the recipe's)")
    p.add_argument("--box-weight", type=float, default=None, help="KD box-delta weight (default: the recipe's)")
    p.add_argument("--name", default="teacher_probe", help="results file stem")
    args = p.parse_args(argv)
    args.command = command_line("benchmarks/teacher_probe.py", argv)  # what reproduces its results
    return args


def _student(base: Any, proposals: int) -> tuple[Any, str]:
    """The base's weights with ``proposals`` kept at test time (no weight changes)."""
    spec, arch = describe(base)
    heads = Heads.of(spec)
    code = Student(arch, replace(heads, proposals=proposals, pre=proposals))
    return morph_to(base, code), str(code)


def _trained(path: Path, start: Any, train: Any, steps: int, schedule: Any, teacher: Any, kd: Any) -> Any:
    """``start`` trained ``steps`` with ``teacher`` (saved at ``path``; loaded when done with the same
    steps, seed and KD weights)."""
    weights = {f"probe_{k}": getattr(kd, k) for k in ("feature_weight", "head_weight", "box_weight")}
    wanted = {"probe_steps": steps, "probe_seed": schedule.seed, **weights}
    if path.is_file() and wanted.items() <= read_detector_file(path)["metadata"].items():
        return load_detector(path).eval()
    finetune(start, data=train, steps=steps, teacher=teacher, kd=kd, config=schedule, out=path, metadata=wanted)
    return start.eval()


def _row(name: str, seed: int | None, model: Any, select: Any, test: Any, began: float, **extra: Any) -> dict[str, Any]:
    row = {"run": name, "seed": seed, **score(model, select, test), **extra, "wall_s": time.perf_counter() - began}
    print(f"{name} seed {seed}: select {100 * row['select_ap']:.1f} test {100 * row['test_ap']:.1f}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    train, select, test = load_protocol_splits(args.data)
    recipe = Recipe()
    weights = {"feature_weight": args.feature_weight, "head_weight": args.head_weight, "box_weight": args.box_weight}
    kd = replace(recipe.kd, **{k: v for k, v in weights.items() if v is not None})
    suffix = f"_f{kd.feature_weight:g}_h{kd.head_weight:g}" + (f"_b{kd.box_weight:g}" if kd.box_weight else "")
    began = time.perf_counter()
    rows = [_row("base", None, load_detector(args.base).eval(), select, test, began)]
    start, code = _student(thaw(load_detector(args.base)), args.proposals)
    rows.append(_row("start", None, start.eval(), select, test, time.perf_counter(), code=code))
    t0 = time.perf_counter()
    teacher_schedule = replace(recipe.train_config(), seed=TEACHER_SEED)
    teacher = train_control(
        args.workdir / "teacher.pt", thaw(load_detector(args.base)), train, args.teacher_steps, teacher_schedule
    )
    rows.append(_row("teacher", None, teacher, select, test, t0, steps=args.teacher_steps))
    if rows[-1]["select_ap"] <= rows[0]["select_ap"]:  # the rule: it must beat the base on select
        _write(args, rows, complete=False)
        print("the teacher is not stronger than the base on select: no probe", file=sys.stderr)
        return 1
    for seed in args.seeds:
        schedule = final_schedule(recipe, SearchConfig(seed=seed))
        t0 = time.perf_counter()
        control = train_control(
            args.workdir / f"control_s{seed}.pt", thaw(load_detector(args.base)), train, args.steps, schedule
        )
        rows.append(_row("control", seed, control, select, test, t0, steps=args.steps))
        start, code = _student(thaw(load_detector(args.base)), args.proposals)
        t0 = time.perf_counter()
        student = _trained(
            args.workdir / f"student_s{seed}{suffix}.pt", start, train, args.steps, schedule, teacher, kd
        )
        name = (
            f"student (KD from the teacher, features {kd.feature_weight:g}, scores {kd.head_weight:g}, "
            f"boxes {kd.box_weight:g})"
        )
        rows.append(_row(name, seed, student, select, test, t0, steps=args.steps, code=code))
        _write(args, rows, complete=False)
    _write(args, rows, complete=True)
    return 0


def _write(args: argparse.Namespace, rows: list[dict[str, Any]], *, complete: bool) -> None:
    command = args.command
    out = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "command": command,
        "teacher_steps": args.teacher_steps,
        "steps": args.steps,
        "complete": complete,
        "rows": rows,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.results / f"{args.name}.json", out)
    lines = [
        "# A teacher stronger than the base, distilled into the joint search's Faster R-CNN student (no search)",
        "",
        f"Run {out['date']} on {out['machine'].get('cpu', '?')}; `{command}`. Status: "
        f"{'complete' if complete else 'partial'}.",
        "",
        f"Teacher: the base trained {args.teacher_steps} more steps (trained once, every seed reuses it). Student: "
        f"the base's weights at {args.proposals} proposals, {args.steps} steps with KD from the teacher; control: the "
        f"base, {args.steps} steps on the same schedule and seed, no teacher. AP on test; select beside it.",
        "",
        "| run | seed | test AP | select AP | steps | keep-better would keep | wall (min) |",
        "|---|---|---|---|---|---|---|",
    ]
    starts = {r["run"]: r["select_ap"] for r in rows if r["seed"] is None}  # base, start
    for r in rows:
        seed = "" if r["seed"] is None else r["seed"]
        against = starts.get("base" if r["run"] == "control" else "start") if r["seed"] is not None else None
        kept = "" if against is None else ("trained" if r["select_ap"] >= against else "its start")
        lines.append(
            f"| {r['run']} | {seed} | {100 * r['test_ap']:.1f} | {100 * r['select_ap']:.1f} | {r.get('steps', '')} | "
            f"{kept} | {r['wall_s'] / 60:.1f} |"
        )
    gaps = []
    for seed in args.seeds:
        got = {r["run"].split(" ")[0]: r for r in rows if r["seed"] == seed}
        if {"control", "student"} <= got.keys():
            gaps.append(f"seed {seed}: {100 * (got['student']['test_ap'] - got['control']['test_ap']):+.2f}")
    if gaps:
        lines += ["", "Student - control, test AP: " + ", ".join(gaps) + "."]
    (args.results / f"{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
