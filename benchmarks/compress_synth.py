"""Joint search vs the naive pipeline on the benchmark detectors, for cpu-ort, under the honest protocol.

Protocol (issue 13): the dataset's ``train`` split trains, ``select`` decides every choice (ranking
candidates), ``test`` gives the final numbers only (a folder with only ``val`` has it cut into
select/test halves by image id). Each (detector, method, seed) runs ``compress`` with the same
candidates, fine-tuning steps, final steps and latency target, and reports base, student and the
extra-steps control (the base trained as many more steps as the student received, same
schedule, no teacher), each with test and select AP; ``--arch-control`` adds the student's
architecture cut from the base and trained the same steps. One teacher pool per detector is
trained once and reused by every run (its wall time reported on its own). Latencies are measured
end to end in ONNX Runtime after each row's training (rows run one after another, so nothing
else runs): the row's base and student side by side in interleaved rounds, each kept at the median
of its rounds (``jdnas_sdk.measured.interleaved_ms``, as ``compress`` times its claim), so that the
ratio is of timings taken together.

``--ablation`` runs the joint method once per recipe variant (full recipe, then each part switched
off) on the first detector: which part moved test AP by how much.

Resumable: each finished row is a JSON file under ``WORKDIR/rows/``; a rerun skips them (and each
compress resumes from its workdir). A row's ``wall_s`` is its time over all its sittings (kept beside
it in ``rows/*.wall.json`` while it runs, removed once the row is written; ``sitting_wall_s``: its last
sitting's compress alone).
Partial results are written after every row to ``benchmarks/results/compress_synth.{json,md}``
(``--ablation``: ``compress_ablation.*``).

    python benchmarks/compress_synth.py --seeds 0 1                       # all defaults (hours on 2 cores)
    # the committed rows ran without a teacher; each results file's ``command`` is its exact call, e.g.
    python benchmarks/compress_synth.py --seeds 0 1 --teacher none --grow-teacher-steps 0 --search-lr-ratio 1.0
    python benchmarks/compress_synth.py --candidates 2 --finetune-steps 2 --final-steps 2 --pool-steps 2 \\
        --select-images 8 --test-images 8 --seeds 0 --results /tmp/smoke    # smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from jdnas_sdk import JdnasError, load_detector
from jdnas_sdk._io import atomic_write_json
from jdnas_sdk._stopwatch import Stopwatch
from jdnas_sdk.compress import Recipe, compress, teacher_pool
from jdnas_sdk.data import load_protocol_splits
from jdnas_sdk.detectors import read_detector_file, spec_of
from jdnas_sdk.distill import KDConfig
from jdnas_sdk.finish import split_images
from jdnas_sdk.latency import load_table
from jdnas_sdk.latency.backends import OrtBackend
from jdnas_sdk.machine import command_line, machine_info
from jdnas_sdk.measured import ROUNDS, interleaved_ms
from jdnas_sdk.preflight import TEACHER_SOURCES, validate_request

HERE = Path(__file__).resolve().parent
METHODS = ("joint", "pipeline")
#: Recipe variants of ``--ablation``: name -> (recipe edits, teacher override)
ABLATION: dict[str, tuple[dict[str, Any], str | None]] = {
    "full recipe": ({}, None),
    "no LR rewinding (a fifth of the rate)": ({"lr_rewind": False}, None),
    "no adaptive BN": ({"bn_images": 0}, None),
    "old KD (raw features, all rows, no ramp, 0.1 each)": (
        {
            "kd": KDConfig(
                feature_weight=0.1, head_weight=0.1, foreground=0.0, normalize=False, ramp=0.0, positives_only=False
            )
        },
        None,
    ),
    "no KD": ({}, "none"),
    "random teacher mutation instead of the capacity gap": ({"teacher_gap": None}, None),
    "gradual morphism (<= 15% per step)": ({"max_step_share": 0.15}, None),
    "no grown teacher (progressive shrinking alone)": ({"grow_teacher_steps": 0}, None),
    "no free moves first (proposals and input size only as random moves)": ({"free_moves": False}, None),
    "candidates at a tenth of the final rate (search_lr_ratio 0.1)": ({"search_lr_ratio": 0.1}, None),
    "final training kept whatever select says": ({"keep_better": False}, None),
    "no tower refit": ({"refit_images": 0}, None),  # last: a row's file names its variant by index
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--models",
        nargs="+",
        type=Path,
        default=[Path("runs/bench/base_retinanet_resnet18.pt"), Path("runs/bench/base_fasterrcnn_resnet18.pt")],
    )
    p.add_argument("--data", type=Path, default=Path("runs/bench/shapes_2000_500_256_s0"))
    p.add_argument("--workdir", type=Path, default=Path("runs/compress_synth"))
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--target", default="cpu-ort")
    p.add_argument("--latency", type=float, default=0.5, help="wanted fraction of the base's estimated latency")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--finetune-steps", type=int, default=30)
    p.add_argument("--final-steps", type=int, default=400, help="more training for the chosen student")
    p.add_argument("--pool-steps", type=int, default=40)
    p.add_argument(
        "--grow-teacher-steps",
        type=int,
        default=300,
        help="the pool's largest trains alone on train, judged on select, for at most this many steps before "
        "shrinking, and is frozen as the largest teacher (0: shrinking alone)",
    )
    p.add_argument(
        "--teacher",
        default="pool",
        help="pool, base, none, or a detector file every student distils from (one detector in --models)",
    )
    p.add_argument("--select-images", type=int, default=0, help="first N select images rank candidates (0: all)")
    p.add_argument("--test-images", type=int, default=0, help="first N test images give the final numbers (0: all)")
    p.add_argument(
        "--arch-control", action="store_true", help="also the student's arch trained from the base, no lineage"
    )
    p.add_argument("--ablation", action="store_true", help="recipe ablation on the first detector (joint method)")
    p.add_argument("--base-lr", type=float, default=1e-3, help="the bases' peak learning rate (LR rewinding)")
    p.add_argument(
        "--search-lr-ratio", type=float, default=None, help="candidates' rate / the final one's (default: the recipe's)"
    )
    p.add_argument(
        "--final-race",
        type=int,
        default=1,
        help="the search's K best candidates within the target race the first --race-share of the final steps (1: off)",
    )
    p.add_argument("--race-share", type=float, default=0.25, help="with --final-race: share of the final steps raced")
    p.add_argument(
        "--parent-reach",
        type=float,
        default=None,
        help="a candidate over the search's latency bound may be a parent when cutting this share brings it within",
    )
    p.add_argument(
        "--refit-images",
        type=int,
        default=16,
        help="training images for the least-squares refit beside a removed tower conv (0: off, as rows before it)",
    )
    p.add_argument(
        "--sizes",
        type=float,
        nargs="+",
        default=None,
        help="input sizes the search may give, as ratios of the base's (1.0: keep the base's; default: the "
        "space's grid, 0.5 to 1.25)",
    )
    p.add_argument(
        "--topk",
        type=int,
        nargs="+",
        default=None,
        help="one-stage boxes kept per level before NMS the search may give (counts, e.g. 300 1000; default: the "
        "base's, torchvision's 1000); the target table needs their fixed entries (jdnas profile --heads topk=...)",
    )
    args = p.parse_args(argv)
    args.digests = {}  # each model file's content digest by name, filled by _preflight
    return args


def _rival(row: dict[str, Any]) -> float:
    return max(row["base"]["test_ap"], row.get("control", {}).get("test_ap", -1.0))


def _base_training(model_file: Path) -> dict[str, Any]:
    """How the base was trained, from its file's metadata (``train_base.py``, ``jdnas train
    --until-converged``): the steps in its weights and its rewound cycles, so a reader sees whether
    the schedule the control gets could still improve it. Empty for a file without that record."""
    meta = read_detector_file(model_file)["metadata"]  # its values are strings
    record: dict[str, Any] = {}
    if str(meta.get("steps", "")).isdigit():
        record["steps"] = int(meta["steps"])
    if "converged" in meta:
        record["converged"] = str(meta["converged"]) == "True"
    for key in ("cooldown", "cycles"):
        if isinstance(meta.get(key), str):
            record[key] = json.loads(meta[key])
    return record


def run_one(
    model_file: Path,
    method: str,
    seed: int,
    variant: str | None,
    pool: Any,
    args: argparse.Namespace,
    splits: tuple[Any, Any, Any],
) -> dict[str, Any]:
    """One compress run as a results row (``error`` when it was refused or failed)."""
    model = load_detector(model_file)
    edits, teacher = ABLATION[variant] if variant else ({}, None)
    ratio = {} if args.search_lr_ratio is None else {"search_lr_ratio": args.search_lr_ratio}
    search = {"final_race": args.final_race, "race_share": args.race_share, "parent_reach": args.parent_reach}
    search["refit_images"] = args.refit_images
    recipe = Recipe(base_lr=args.base_lr, grow_teacher_steps=args.grow_teacher_steps, **ratio, **search)
    recipe = replace(recipe, **edits)
    teacher = teacher or args.teacher
    tag = f"{model_file.stem}_{method}_s{seed}" + (f"_{list(ABLATION).index(variant)}" if variant else "")
    tag += _teacher_tag(args.teacher) + _race_tag(args.final_race)
    row: dict[str, Any] = {
        "family": spec_of(model).family,
        "detector": model_file.stem,
        "method": method,
        "seed": seed,
        "target_ratio": args.latency,
        "teacher": teacher,
        **({"ablation": variant} if variant else {}),
        "settings": _run_settings(args),
        "model_sha256": args.digests[model_file.stem],  # the detector file's content: a rerun on another refuses
        "base_training": _base_training(model_file),
    }
    t0 = time.monotonic()
    try:
        result = compress(
            model,
            target=args.target,
            train_data=splits[0],
            select_data=splits[1],
            test_data=splits[2],
            latency=args.latency,
            budget=args.candidates,
            workdir=args.workdir / tag,
            method=method,
            pool=pool if teacher == "pool" else None,
            teacher=teacher,
            finetune_steps=args.finetune_steps,
            final_steps=args.final_steps,
            seed=seed,
            recipe=recipe,
            heads=_heads(args),
            arch_control=args.arch_control,
            measure=False,
            progress=False,
        )
    except JdnasError as exc:
        row.update(error=str(exc), wall_s=time.monotonic() - t0)
        return row
    keys = ("test_ap", "select_ap", "ap50", "estimated_ms", "kept", "trained_select_ap", "final_kept")
    for name in ("base", "student", "control", "arch_control"):
        if name in result.metrics:
            row[name] = {k: result.metrics[name][k] for k in keys if k in result.metrics[name]}
    row.update(
        steps=result.metrics["student"]["steps"],
        wall_s=time.monotonic() - t0,
        student_file=str(result.student_file),
        arch=str(result.arch),
        heads=result.metrics["student"].get("heads"),  # the student's head settings (input size, towers, ...)
        race=result.metrics["student"].get("race"),
        candidates=len(result.history) - 1,
        recipe=recipe.to_json(),
        chosen_teacher=result.metrics["student"].get("final_teacher"),
        search_s=sum(c.get("wall_s") or 0.0 for c in result.history),
    )
    return row


def _heads(args: argparse.Namespace) -> dict[str, tuple[float, ...]] | None:
    """The head grid of ``--sizes`` and ``--topk`` (the rest as the default space's); None: the default."""
    grid = {k: tuple(v) for k, v in (("size", args.sizes), ("topk", args.topk)) if v}
    return grid or None


def measure(rows: list[dict[str, Any]], models: dict[str, Path], *, rounds: int = ROUNDS) -> None:
    """End-to-end ms of each row's base and student, after all training, timed side by side in
    ``rounds`` interleaved rounds and kept at the median of their rounds (each round's timing kept
    too, as ``measured_rounds_ms``); a row measured before keeps its measurement."""
    backend = OrtBackend()
    for row in rows:
        if "student" not in row or "measured_ms" in row["student"]:
            continue
        base = load_detector(models[row["detector"]])
        size = (base.transform.min_size[0],) * 2
        pair = {"base": base, "student": load_detector(row["student_file"])}
        for name, samples in interleaved_ms(pair, backend, size, rounds=rounds).items():
            row[name].update(measured_ms=statistics.median(samples), measured_rounds_ms=samples)
        row["measured_ratio"] = row["student"]["measured_ms"] / row["base"]["measured_ms"]


def _summary(rows: list[dict[str, Any]]) -> list[str]:
    """Mean and spread over seeds per (family, method), and whether the promise held in every seed."""
    out = [
        "",
        "| family | method | seeds | student test AP | base | control | student - rival | measured ratio | held |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if "student" in row and "ablation" not in row:
            groups.setdefault((row["family"], row["method"]), []).append(row)

    def ms(values: list[float]) -> str:
        mean = 100 * statistics.fmean(values)
        return f"{mean:.1f} ± {100 * statistics.pstdev(values):.1f}" if len(values) > 1 else f"{mean:.1f}"

    for (family, method), group in groups.items():
        gap = [r["student"]["test_ap"] - _rival(r) for r in group]
        ratio = [r.get("measured_ratio") for r in group]
        held = all(g >= 0 for g in gap) and all(x is not None and x <= 0.55 for x in ratio)
        out.append(
            f"| {family} | {method} | {len(group)} | {ms([r['student']['test_ap'] for r in group])} | "
            f"{ms([r['base']['test_ap'] for r in group])} | "
            f"{ms([r['control']['test_ap'] for r in group if 'control' in r] or [float('nan')])} | {ms(gap)} | "
            + ", ".join("n/a" if x is None else f"{x:.2f}" for x in ratio)
            + f" | {'yes' if held else 'no'} |"
        )
    return out


def markdown(report: dict[str, Any]) -> str:
    title = "Recipe ablation" if report["ablation"] else "Joint search vs pipeline"
    lines = [
        f"# {title} (compress_synth, honest protocol)",
        "",
        f"Run {report['date']} on {report['machine']['cpu']} ({report['machine'].get('cores', '?')} cores); "
        f"`{report['command']}`. Target {report['target']} at {report['latency']}x the base's estimated latency; "
        f"{report['candidates']} candidates x {report['finetune_steps']} steps, then {report['final_steps']} final "
        f"steps; splits: {report['splits']}. AP is COCO AP on the **test** split (choices saw only select); the "
        "control is the base trained as many more steps as the student received. Status: "
        f"{'complete' if report['complete'] else 'PARTIAL (rerun the command to resume)'}.",
        "",
        f"Teacher pools (trained once, reused by every row): {report['pools']}",
        "",
        "| family | method | seed | variant | base test/select | student test/select | control test/select | "
        "steps | measured ms base / student (ratio) | wall (min) | student heads |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    races = []
    for r in report["results"]:
        head = f"| {r['family']} | {r['method']} | {r['seed']} | {r.get('ablation', '')} |"
        if "error" in r:
            lines.append(f"{head} failed: {r['error'][:200]} | | | | | {r['wall_s'] / 60:.1f} |")
            continue
        cell = lambda m: f"{100 * m['test_ap']:.1f} / {100 * m['select_ap']:.1f}" if m else "n/a"  # noqa: E731
        timing = (
            f"{r['base']['measured_ms']:.1f} / {r['student']['measured_ms']:.1f} ({r['measured_ratio']:.2f})"
            if "measured_ms" in r["student"]
            else "not yet"
        )
        lines.append(
            f"{head} {cell(r['base'])} | {cell(r['student'])} | {cell(r.get('control'))} | {r['steps']} | "
            f"{timing} | {r['wall_s'] / 60:.1f} | {r.get('heads') or ''} |"
        )
        if r.get("race"):
            runners = ", ".join(
                f"{c['candidate']}{' (won)' if c['won'] else ''}: {100 * c['search_select_ap']:.1f} -> "
                f"{100 * c['race_select_ap']:.1f}"
                for c in r["race"]
            )
            races.append(
                f"- {r['family']} {r['method']} seed {r['seed']}: select AP search -> after "
                f"{r['race'][0]['race_steps']} race steps: {runners}"
            )
    if races:
        lines += ["", "Final races (candidate: select AP after the search -> after its race steps):", "", *races]
    bases = {r["detector"]: r["base_training"] for r in report["results"] if r.get("base_training")}
    if bases:
        lines += ["", "Bases (steps in the kept weights; rewound cycles: select AP, gain over the best before):", ""]
        for name, b in bases.items():
            cycles = ", ".join(f"{100 * c['select_ap']:.1f} ({100 * c['gain']:+.1f})" for c in b.get("cycles", []))
            lines.append(f"- {name}: {b.get('steps', '?')} steps; cycles: {cycles or 'none'}")
    return "\n".join(lines + _summary(report["results"])) + "\n"


def _write(
    args: argparse.Namespace, rows: list[dict[str, Any]], pools: dict[str, Any], splits: Any, argv: Any, complete: bool
) -> None:
    name = "compress_ablation" if args.ablation else "compress_synth"
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "command": command_line("benchmarks/compress_synth.py", argv),
        "target": args.target,
        "latency": args.latency,
        "candidates": args.candidates,
        "finetune_steps": args.finetune_steps,
        "final_steps": args.final_steps,
        "pool_steps": args.pool_steps,
        "splits": {k: len(v) for k, v in zip(("train", "select", "test"), splits)},
        "split_images": split_images(splits),  # each split's image files: disjoint, as loading checked
        "ablation": args.ablation,
        "complete": complete,
        "pools": pools,
        "results": rows,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.results / f"{name}.json", report)
    (args.results / f"{name}.md").write_text(markdown(report), encoding="utf-8")


def _pool(model_file: Path, grow: int, args: argparse.Namespace, splits: Any, pools: dict[str, Any]) -> Any:
    """The detector's teacher pool, trained once (its largest first grown on select for at most
    ``grow`` steps) and reused by every row; its wall time and the grown teacher's select AP against
    the base's are kept in ``pools``."""
    # the file's content in the name: a pool grown from another detector of the same name is never reused
    name = f"{model_file.stem}_{args.digests[model_file.stem][:8]}_pool" + ("" if grow else "_shrink_only")
    t0, pool_file = time.monotonic(), args.workdir / f"{name}.pt"
    reused = pool_file.is_file()
    pool = teacher_pool(
        load_detector(model_file),
        splits[0],
        path=pool_file,
        steps=args.pool_steps,
        seed=0,
        select_data=splits[1],
        grow_steps=grow,
    )
    record: dict[str, Any] = {"wall_s": None if reused else time.monotonic() - t0, "largest": str(pool.max_arch)}
    if pool.frozen_largest is not None:
        meta = read_detector_file(pool.frozen_largest)["metadata"]
        record["grown_teacher"] = {
            "select_ap": meta.get("best_select_ap"),
            "base_select_ap": meta.get("base_select_ap"),
            "steps": meta.get("trained_steps"),
        }
    pools.setdefault(name, record)
    return pool


def _teacher_tag(teacher: str) -> str:
    """``""`` for the named teachers, else the teacher file's name: rows and workdirs of a run with
    a teacher file of one's own never reuse those made with another teacher."""
    return "" if teacher in TEACHER_SOURCES else f"_t-{Path(teacher).stem}"


#: The options that shape a row besides its (detector, method, seed, variant, teacher, race) key.
_SETTINGS = (
    "data", "target", "latency", "candidates", "finetune_steps", "final_steps", "pool_steps", "grow_teacher_steps",
    "select_images", "test_images", "arch_control", "base_lr", "search_lr_ratio", "race_share", "parent_reach",
    "refit_images", "sizes", "topk",
)  # fmt: skip


def _run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What a finished row was made with, kept in it: a rerun with other options refuses to reuse it."""
    return {name: str(v) if isinstance(v := getattr(args, name), Path) else v for name in _SETTINGS}


def _reused(key: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The finished row in ``key``, refused when it was made with other options than ``args`` (a row
    from before rows recorded their options is taken as it is)."""
    row = json.loads(key.read_text())
    digest = args.digests.get(row.get("detector"))
    if row.get("model_sha256") not in (None, digest):  # a row from before rows recorded it: taken as it is
        raise SystemExit(
            f"{key} was made from another detector file named {row.get('detector')} (sha256 {row['model_sha256']}..., "
            f"now {digest}...); rerun with another --workdir"
        )
    made, now = row.get("settings"), _run_settings(args)
    if made is not None and any(made.get(k) != v for k, v in now.items()):  # an option newer than the row: None
        changed = ", ".join(f"{k}: {made.get(k)!r} -> {now[k]!r}" for k in now if made.get(k) != now[k])
        raise SystemExit(f"{key} was made with other options ({changed}); rerun with another --workdir")
    return row


def _race_tag(final_race: int) -> str:
    """``""`` without a final race, else ``_raceK``: rows and workdirs of runs with and without one
    (or with another K) never stand for each other."""
    return f"_race{final_race}" if final_race > 1 else ""


def _row_file(
    rows_dir: Path, detector: str, method: str, seed: int, variant: str | None, args: argparse.Namespace
) -> Path:
    """Where one (detector, method, seed[, ablation variant], teacher, race) row is kept once finished."""
    return rows_dir / (
        f"{detector}_{method}_s{seed}"
        + (f"_{list(ABLATION).index(variant)}" if variant else "")
        + _teacher_tag(args.teacher)
        + _race_tag(args.final_race)
        + ".json"
    )


def _preflight(args: argparse.Namespace) -> dict[str, str]:
    """Every argument checked before any work (a bad one ends the run in seconds with one line, not
    after a pool or a row has trained): the teacher, the request, the target's table, each model file
    (a detector); returns each model's content digest, which ties its rows and pool to that file."""
    if args.teacher not in TEACHER_SOURCES and not (Path(args.teacher).is_file() and len(args.models) == 1):
        raise SystemExit(
            f"--teacher {args.teacher}: pool, base, none, or a detector file with one detector in --models"
        )
    try:
        validate_request(
            latency=args.latency,
            ms=None,
            budget=args.candidates,
            finetune_steps=args.finetune_steps,
            final_steps=args.final_steps,
            pool_steps=args.pool_steps,
        )
        load_table(args.target)
        for model_file in args.models:
            spec_of(load_detector(model_file))
    except JdnasError as exc:
        raise SystemExit(f"compress_synth: {exc}") from None
    digests = {str(f): hashlib.sha256(Path(f).read_bytes()).hexdigest()[:16] for f in args.models}
    stems = [Path(f).stem for f in digests]
    if len(set(stems)) < len(stems):  # rows and pools are named by the file's stem
        raise SystemExit(f"--models: two files share a name ({', '.join(map(str, args.models))}); rename one")
    return {Path(f).stem: d for f, d in digests.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # the library's phase lines (search rounds, race, final training, control) with their times: a long row's
    # log shows where it is, not only each row's end
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args.digests = _preflight(args)
    try:
        train, select, test = load_protocol_splits(args.data)
    except JdnasError as exc:
        raise SystemExit(f"compress_synth: {exc}") from None
    splits = (
        train,
        select.head(args.select_images) if args.select_images else select,
        test.head(args.test_images) if args.test_images else test,
    )
    (rows_dir := args.workdir / "rows").mkdir(parents=True, exist_ok=True)
    models = {f.stem: f for f in args.models}
    plan = (
        [(f, "joint", s, v) for f in args.models[:1] for s in args.seeds for v in ABLATION]
        if args.ablation
        else [(f, m, s, None) for f in args.models for m in args.methods for s in args.seeds]
    )
    keys = [_row_file(rows_dir, f.stem, m, s, v, args) for f, m, s, v in plan]
    # finished rows first, so that a partial report written after the next row still holds them all
    files = [key for key in keys if key.is_file()]  # each row's file, beside it in ``rows``
    rows: list[dict[str, Any]] = [_reused(key, args) for key in files]
    pools: dict[str, Any] = {}
    for (model_file, method, seed, variant), key in zip(plan, keys):
        if key.is_file():
            continue
        grow = (ABLATION[variant][0] if variant else {}).get("grow_teacher_steps", args.grow_teacher_steps)
        pool = _pool(model_file, grow, args, splits, pools) if args.teacher == "pool" else None
        with Stopwatch(key.with_suffix(".wall.json")) as watch:  # the row's time over all its sittings
            row = run_one(model_file, method, seed, variant, pool, args, splits)
            measure([row], models)  # its training is over and nothing else runs: a killed plan keeps measured rows
        row.update(sitting_wall_s=row["wall_s"], wall_s=watch.elapsed(), sittings=watch.sittings)
        atomic_write_json(key, row)
        key.with_suffix(".wall.json").unlink(missing_ok=True)  # its time is in the row now
        rows.append(row)
        files.append(key)
        print(
            {k: v for k, v in row.items() if k in ("detector", "method", "seed", "ablation", "error", "wall_s")},
            file=sys.stderr,
        )
        _write(args, rows, pools, splits, argv, complete=False)
    measure(rows, models)  # rows recorded before rows were measured one by one
    for key, row in zip(files, rows, strict=True):  # keep the measurements with the rows: a rerun does not time them
        atomic_write_json(key, row)
    _write(args, rows, pools, splits, argv, complete=True)
    print((args.results / ("compress_ablation.md" if args.ablation else "compress_synth.md")).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
