"""Which weights should a new head setting's fixed entry be timed on? NMS loads of trained students
against their stand-ins: the base morphed to the student (untrained at its shape) and random weights.

A latency table's fixed entry (pre/post-processing) is the residual of one whole-detector timing, and
post-processing's work follows the weights: how many candidates the final NMS tests (its *load*,
:func:`jdnas_sdk.latency.nms_load.nms_load`, counted on the probe image, no timing). A search meets
head settings the table lacks and must time them before any student of that setting is trained: on
random weights (until stop 45), on the base morphed to the candidate, or on that morph with the
search's tower refit (a removed tower conv's neighbour refit on training images). This benchmark
samples students of the base's default space, makes each as the search makes its candidates (the
refit morph from the thawed base), trains it ``--steps`` steps (the recipe's rate, warm-up and cosine
decay, no teacher), and counts the NMS load of the trained student, of the refit morph and of the plain
morph before training, and of ``--random-seeds`` detectors of random weights of the same code; the
trained student's select AP says what it became. Counts are exact and repeatable, so it may run beside
other work. With ``--target`` (or ``--ms-per-test``) the load differences are also given in ms at a
fitted cost per IoU test (**modelled**: a slope, not a timing of these detectors).

    python benchmarks/fixed_entry_weights.py --base runs/bench/base_retinanet_resnet18.pt \\
        --data runs/bench/shapes_2000_500_256_s0 --students 6 --steps 300
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from pathlib import Path
from typing import Any

from jdnas_sdk import build_detector, load_detector
from jdnas_sdk._io import atomic_write_json, atomic_write_text
from jdnas_sdk._seed import seeded, stable_seed
from jdnas_sdk.data import load_protocol_splits
from jdnas_sdk.detectors import describe, thaw
from jdnas_sdk.distill import finetune
from jdnas_sdk.errors import ArchError
from jdnas_sdk.evaluate import evaluate
from jdnas_sdk.latency import load_table
from jdnas_sdk.latency.nms_load import nms_load, nms_ms_per_test
from jdnas_sdk.machine import command_line, machine_info
from jdnas_sdk.morph import morph_to
from jdnas_sdk.morph.refit import depth_refit_hook
from jdnas_sdk.protocol import Recipe
from jdnas_sdk.report.markdown import code_cell
from jdnas_sdk.space import SearchSpace
from jdnas_sdk.student import Student

HERE = Path(__file__).resolve().parent
TRAIN = "AdamW at the recipe's rate, warm-up and cosine decay (Recipe().train_config()), no teacher"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, required=True, help="the trained base detector file")
    p.add_argument("--data", type=Path, required=True, help="its dataset folder (the train split trains the students)")
    p.add_argument("--students", type=int, default=6, help="students sampled from the base's default space")
    p.add_argument("--steps", type=int, default=300, help="training steps of each student from its morph")
    p.add_argument("--random-seeds", type=int, default=3, help="detectors of random weights per student")
    p.add_argument("--target", default=None, help="a table whose fitted cost per IoU test converts loads to ms")
    p.add_argument(
        "--ms-per-test", type=float, default=None, help="or that cost given (e.g. a benchmarks/nms_cost.py fit)"
    )
    p.add_argument("--workdir", type=Path, default=Path("runs/fixed_entry_weights"), help="trained students")
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--name", default="fixed_entry_weights", help="results file stem")
    args = p.parse_args(argv)
    if args.students < 1 or args.steps < 1 or args.random_seeds < 1:
        p.error("--students, --steps and --random-seeds must be >= 1")
    if args.target and args.ms_per_test is not None:
        p.error("give --target or --ms-per-test, not both")
    args.command = command_line("benchmarks/fixed_entry_weights.py", argv)
    return args


def loads(
    base: Any, student: Student, splits: tuple[Any, Any], args: argparse.Namespace, size: tuple[int, int]
) -> dict[str, Any]:
    """The NMS loads of ``student``: trained as the search makes its candidates (morphed from the thawed
    base with a depth step's tower refit, then trained), of the plain morph (what `jdnas latency --arch`
    times), of the refit morph before training (what a search's confirmation times), and of random
    weights (what both timed before stop 45); and the trained one's AP."""
    train, select = splits
    untrained = nms_load(morph_to(base, student), size)
    refits: list[Any] = []
    refit = morph_to(thaw(base), student, after_step=depth_refit_hook(train, Recipe().refit_images, refits))
    refit_load = nms_load(refit, size)
    key = stable_seed(args.base.resolve(), args.base.stat().st_size, args.base.stat().st_mtime_ns)
    out = args.workdir / f"{stable_seed(key, args.data.resolve(), student, args.steps, TRAIN):x}.pt"
    if not out.is_file():  # trained once, checkpointed beside it: a killed run resumes
        out.parent.mkdir(parents=True, exist_ok=True)
        finetune(refit, data=train, steps=args.steps, config=Recipe().train_config(), out=out, progress=False)
    randoms = []
    for seed in range(args.random_seeds):
        with seeded(stable_seed("random", student, seed)):
            randoms.append(nms_load(build_detector(describe(base)[0], student), size))
    trained = load_detector(out)
    return {
        "trained": nms_load(trained, size),
        "morph": untrained,
        "refit_morph": refit_load,
        "random": randoms,
        "trained_select_ap": evaluate(trained, select, progress=False).ap,
        "towers_refit": len(refits),
    }


def row_of(student: Student, counted: dict[str, Any], ms_per_test: float | None) -> dict[str, Any]:
    """A row: the loads, each stand-in's error against the trained student's load (and in ms, modelled);
    ``None`` where a detector made no NMS call the probe saw."""
    trained = counted["trained"]
    randoms = [x for x in counted["random"] if x is not None]
    random_mean = statistics.fmean(randoms) if randoms else None
    row: dict[str, Any] = {"code": str(student), **counted, "random_mean": random_mean}
    for name, load in (("morph", counted["morph"]), ("refit_morph", counted["refit_morph"]), ("random", random_mean)):
        known = bool(trained) and load is not None
        row[f"{name}_error"] = (load - trained) / trained if known else None
        if ms_per_test is not None:
            row[f"{name}_ms_modelled"] = (load - trained) * ms_per_test if known else None
    return row


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median absolute relative error of each stand-in (and in ms, modelled), how often the morph is over
    the trained load, and how often it is closer than the mean of the random draws and than each draw."""
    usable = [r for r in rows if r["morph_error"] is not None and r["random_error"] is not None]
    out: dict[str, Any] = {"students": len(usable)}
    for name in ("morph", "refit_morph", "random"):
        errors = [abs(r[f"{name}_error"]) for r in usable if r[f"{name}_error"] is not None]
        out[f"{name}_median_abs_error"] = statistics.median(errors) if errors else None
        shifts = [abs(r[f"{name}_ms_modelled"]) for r in usable if r.get(f"{name}_ms_modelled") is not None]
        out[f"{name}_median_abs_ms_modelled"] = statistics.median(shifts) if shifts else None
    out["morph_over"] = sum(r["morph_error"] > 0 for r in usable)
    out["morph_closer"] = sum(abs(r["morph_error"]) < abs(r["random_error"]) for r in usable)
    draws = [(r, x) for r in usable for x in r["random"] if x is not None]
    out["random_draws"] = len(draws)
    out["morph_closer_than_draw"] = sum(abs(r["morph"] - r["trained"]) < abs(x - r["trained"]) for r, x in draws)
    return out


def markdown(report: dict[str, Any]) -> str:
    m, s, ms = report["machine"], report["summary"], report["ms_per_test"]
    lines = [
        "# Fixed entries: which weights stand in for a trained student (NMS loads, exact counts)",
        "",
        f"Run {report['date']} on {m['cpu']} ({m['cores']} cores); `{report['command']}`. Base `{report['base']}`, "
        f"{len(report['results'])} students sampled from its default space, each morphed from it as the search makes "
        f"its candidates (a depth step's tower refit) and trained {report['steps']} steps ({report['training']}); "
        f"NMS loads are IoU tests on the probe image at {report['input_size']}, the trained student's select AP in "
        "brackets."
        + (f" ms: **modelled**, at {ms:.3g} ms per test (not a timing of these detectors)." if ms is not None else ""),
        "",
        "| student | trained (select AP) | morph (error) | refit morph, untrained (error) | random, mean of "
        f"{report['random_seeds']} (error) | morph / random off by (ms, modelled) |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        err = {n: _pct(r[f"{n}_error"], sign=True) for n in ("morph", "refit_morph", "random")}
        lines.append(
            f"| {code_cell(r['code'])} | {_n(r['trained'])} ({100 * r['trained_select_ap']:.1f}) | "
            f"{_n(r['morph'])} ({err['morph']}) | {_n(r['refit_morph'])} ({err['refit_morph']}) | "
            f"{_n(r['random_mean'])} ({err['random']}) | {_ms(r.get('morph_ms_modelled'))} / "
            f"{_ms(r.get('random_ms_modelled'))} |"
        )
    modelled = s.get("morph_median_abs_ms_modelled")
    lines += [
        "",
        f"Median absolute error: morph {_pct(s['morph_median_abs_error'])}, refit morph "
        f"{_pct(s['refit_morph_median_abs_error'])}, random {_pct(s['random_median_abs_error'])}"
        + (f" (modelled: {modelled:.2f} ms against {s['random_median_abs_ms_modelled']:.2f})" if modelled else "")
        + f". The morph is over the trained load for {s['morph_over']} of {s['students']} students, closer than the "
        f"random mean for {s['morph_closer']} of {s['students']} and than a single random draw for "
        f"{s['morph_closer_than_draw']} of {s['random_draws']}."
        + (f" Skipped (morphing cannot reach them): {', '.join(report['skipped'])}." if report["skipped"] else "")
        + f" Status: {'complete' if report['complete'] else 'PARTIAL (rerun the command to resume)'}.",
    ]
    return "\n".join(lines) + "\n"


def _pct(value: float | None, *, sign: bool = False) -> str:
    return "n/a" if value is None else f"{100 * value:{'+' if sign else ''}.1f}%"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def _n(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began, clock = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), time.perf_counter()
    base = load_detector(args.base).eval()
    spec, arch = describe(base)
    size = (spec.min_size, spec.min_size)
    train, select, _ = load_protocol_splits(args.data)  # test images are not used
    ms_per_test = nms_ms_per_test(load_table(args.target)) if args.target else args.ms_per_test
    space = SearchSpace(arch, spec=spec)
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for i in range(args.students):
        student = space.sample_student(i)
        try:
            counted = loads(base, student, (train, select), args, size)
        except ArchError as exc:  # a code morphing cannot reach has no trained student here
            print(f"{student}: skipped ({exc})")
            skipped.append(str(student))
        else:
            rows.append(row_of(student, counted, ms_per_test))
            print(f"{student}: trained {counted['trained']}, morph {counted['morph']}, random {counted['random']}")
        report = {
            "date": began,
            "machine": machine_info(),
            "command": args.command,
            "base": str(args.base),
            "data": str(args.data),
            "steps": args.steps,
            "training": TRAIN,
            "random_seeds": args.random_seeds,
            "input_size": list(size),
            "ms_per_test": ms_per_test,
            "ms_per_test_from": args.target or ("--ms-per-test" if args.ms_per_test is not None else None),
            "results": rows,
            "skipped": skipped,
            "summary": summary(rows),
            "wall_s_this_sitting": round(time.perf_counter() - clock, 1),
            "complete": i + 1 == args.students,
        }
        args.results.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.results / f"{args.name}.json", report)
        atomic_write_text(args.results / f"{args.name}.md", markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
