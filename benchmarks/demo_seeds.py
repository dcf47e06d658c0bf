"""The demo's promise over seeds: ``jdnas demo`` (``run_demo``, its defaults) once per seed.

Each seed makes its own synthetic dataset (disjoint train / select / test), trains its own base
until its select AP stops improving or 300 steps, compresses it for this CPU (``cpu-ort``, 0.5x
the base) with choices on select, and reports base, student and the extra-steps control on test,
with the base's and the student's latency measured end to end here. A seed whose workdir holds a
finished demo is resumed (nothing retrained; scores re-evaluated, latencies re-measured), so the
wall time recorded is this run's; the demo's own time on a fresh machine is in the README.

Results, with the machine: ``benchmarks/results/demo_seeds.{json,md}``; ``results`` holds one
object per seed in the schema of ``compress_synth.json`` (``base`` / ``student`` / ``control``
each with ``test_ap``, ``select_ap``, ``measured_ms`` where measured).

    python benchmarks/demo_seeds.py        # seeds 0 and 1 in runs/demo_seeds/seed{N} (about 12 min each on 2 cores)
    python benchmarks/demo_seeds.py --seeds 0 --root /tmp/d --steps 2 --final-steps 1   # smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from jdnas_sdk._io import atomic_write_json
from jdnas_sdk.demo import run_demo
from jdnas_sdk.machine import command_line, machine_info
from jdnas_sdk.protocol import claim, claim_gap

HERE = Path(__file__).resolve().parent
#: run_demo's defaults: the demo as `jdnas demo` runs it
DEFAULTS = {name: p.default for name, p in inspect.signature(run_demo).parameters.items()}


def demo_row(seed: int, metrics: dict[str, Any], wall_s: float) -> dict[str, Any]:
    """One demo's row in ``compress_synth.json``'s schema, from its compress ``metrics``."""
    base, student, control = metrics["base"], metrics["student"], metrics.get("control", {})

    def part(m: dict[str, Any]) -> dict[str, Any]:
        return {k: m[k] for k in ("test_ap", "select_ap", "measured_ms", "estimated_ms") if k in m}

    return {
        "family": "fasterrcnn",
        "method": "joint",
        "seed": seed,
        "target_ratio": DEFAULTS["latency"],
        "base": part(base),
        "student": {**part(student), "arch": student["arch"], "heads": student["heads"]},
        "control": part(control),
        "steps": student.get("steps"),
        "teacher": student.get("final_teacher"),
        "measured_ratio": student["measured_ms"] / base["measured_ms"] if "measured_ms" in student else None,
        "claim": claim(metrics),
        "gap": claim_gap(metrics)[1],
        "wall_s": wall_s,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--root", type=Path, default=Path("runs/demo_seeds"), help="one workdir per seed: ROOT/seed{N}")
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--steps", type=int, default=None, help="the base's most steps (default: the demo's)")
    p.add_argument("--final-steps", type=int, default=None, help="(default: the demo's)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    extra = {k: v for k, v in (("steps", args.steps), ("final_steps", args.final_steps)) if v is not None}
    rows = []
    for seed in args.seeds:
        began = time.perf_counter()
        result = run_demo(args.root / f"seed{seed}", seed=seed, progress=False, **extra)
        rows.append(demo_row(seed, result.compressed.metrics, time.perf_counter() - began))
        _write(args.results, rows, extra, command_line("benchmarks/demo_seeds.py", argv))
    return 0


def _write(out: Path, rows: list[dict[str, Any]], extra: dict[str, Any], command: str) -> None:
    report = {
        "benchmark": "demo_seeds",
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "command": command,
        "settings": {"demo_defaults": True, **extra},
        "results": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "demo_seeds.json", report)
    lines = [
        f"# The demo over seeds ({report['when']})",
        "",
        f"Machine: {report['machine'].get('cpu')}, {report['machine'].get('cores')} cores. "
        "`jdnas demo` defaults ("
        + ", ".join(f"{k}={DEFAULTS[k]}" for k in ("size", "steps", "latency", "candidates", "final_steps", "teacher"))
        + ")"
        + (f", overridden: {extra}" if extra else "")
        + ". Torch at its default thread count, as `jdnas demo` runs.",
        "",
        "| seed | base test AP | student test AP | control test AP | student select AP | control select AP "
        "| base ms | student ms | ratio | steps | teacher | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b, s, c = r["base"], r["student"], r["control"]
        lines.append(
            f"| {r['seed']} | {100 * b['test_ap']:.1f} | {100 * s['test_ap']:.1f} "
            f"| {100 * c.get('test_ap', float('nan')):.1f} "
            f"| {100 * s['select_ap']:.1f} | {100 * c.get('select_ap', float('nan')):.1f} "
            f"| {b.get('measured_ms', float('nan')):.1f} | {s.get('measured_ms', float('nan')):.1f} "
            f"| {r['measured_ratio'] or float('nan'):.2f} | {r['steps']} | {r['teacher'] or 'none'} "
            f"| {r['wall_s']:.0f} |"
        )
    if len(rows) > 1:
        gap = [r["gap"] for r in rows]
        lines += [
            "",
            f"Student minus the best of base and control, test AP: mean {statistics.mean(gap):+.1f}, "
            f"per seed {', '.join(f'{g:+.1f}' for g in gap)}.",
        ]
    (out / "demo_seeds.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
