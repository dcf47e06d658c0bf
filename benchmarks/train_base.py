"""Train the base detectors that later benchmarks compress, until they converge, and record what that cost and gave.

On a synthetic COCO-format dataset (generated here: nothing is downloaded) this trains each
requested family on a ResNet-FPN backbone from scratch under the protocol of issue 13: the
``train`` split trains, the ``select`` half of ``val`` decides when to stop (every ``--eval-every``
steps; stop after ``--patience`` evaluations without a gain once the line through the last
``--trend-window`` evaluations has stopped rising, or at ``--steps``; the best weights
are kept) and the ``test`` half gives the reported AP. The curve is kept beside each detector file
(``*.pt.curve.json``) and in ``benchmarks/results/train_base.{json,md}``, with the machine it ran on.
Killed? Run the same command: datasets are reused and training resumes from its checkpoints.

    python benchmarks/train_base.py                                  # the defaults below, an hour or more here
    # a quick smoke run, away from the real bases and results:
    python benchmarks/train_base.py --workdir /tmp/smoke --results /tmp/smoke \\
        --steps 40 --eval-every 20 --train 100 --val 50 --cooldown 0 --cycle-steps 0
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from pathlib import Path

import torch

from jdnas_sdk import DetectorSpec, build_detector
from jdnas_sdk._io import atomic_write_json
from jdnas_sdk._stopwatch import Stopwatch
from jdnas_sdk.converge import ConvergeConfig, train_until_converged
from jdnas_sdk.data import load_protocol_splits, make_synthetic_dataset
from jdnas_sdk.evaluate import evaluate
from jdnas_sdk.families import get_family
from jdnas_sdk.machine import command_line, machine_info
from jdnas_sdk.train import TrainConfig

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--workdir", type=Path, default=Path("runs/bench"), help="dataset and detector files (not committed)"
    )
    p.add_argument("--results", type=Path, default=HERE / "results", help="where the JSON and Markdown results go")
    p.add_argument("--families", default="fasterrcnn,retinanet", help="comma-separated detector families")
    p.add_argument("--backbone", default="resnet18", help="torchvision ResNet backbone")
    p.add_argument("--fpn-channels", type=int, default=64)
    p.add_argument("--representation-size", type=int, default=256)
    p.add_argument("--train", type=int, default=2000, help="synthetic training images")
    p.add_argument("--val", type=int, default=500, help="synthetic validation images")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--steps", type=int, default=3000, help="the most training steps per detector")
    p.add_argument("--eval-every", type=int, default=100, help="steps between select evaluations")
    p.add_argument("--patience", type=int, default=3, help="evaluations without a gain before stopping")
    p.add_argument(
        "--trend-window",
        type=int,
        default=8,
        help="patience stops only once the line through the last this many evaluations rises < 1 AP (0: patience "
        "alone, as the recorded bases were trained)",
    )
    p.add_argument(
        "--cooldown", type=int, default=300, help="steps of decaying rate after the plateau (kept if select gains)"
    )
    p.add_argument(
        "--cycle-steps",
        type=int,
        default=1600,
        help="then rewound cycles of this many steps (the peak rate again, cosine decay: what an extra-steps "
        "control trains) while one gains --cycle-min-gain select AP; match compress_synth's --final-steps (0: none)",
    )
    p.add_argument("--max-cycles", type=int, default=3)
    p.add_argument("--cycle-min-gain", type=float, default=1.0, help="AP points a cycle must gain to go on")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--optimizer", default="adamw", choices=("sgd", "adamw"))
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # the library's convergence lines (select AP per evaluation, cycles kept or not) with their times
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.threads:
        torch.set_num_threads(args.threads)
    data = args.workdir / f"shapes_{args.train}_{args.val}_{args.size}_s{args.seed}"
    if not (data / "annotations" / "instances_val.json").is_file():
        make_synthetic_dataset(data, train=args.train, val=args.val, size=args.size, seed=args.seed)
    train_set, select_set, test_set = load_protocol_splits(data)
    rows = []
    families = args.families.split(",")
    for number, family in enumerate(families, 1):
        out = args.workdir / f"base_{family}_{args.backbone}.pt"
        spec = DetectorSpec(
            family=family,
            backbone=args.backbone,
            num_classes=train_set.num_classes,
            min_size=args.size,
            max_size=args.size,
            fpn_channels=args.fpn_channels,
            representation_size=args.representation_size,
            anchor_sizes=(16, 32, 64, 128, 256) if get_family(family).takes_anchor_sizes else None,
            category_ids=train_set.category_ids,
            class_names=train_set.class_names,
        )
        config = TrainConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            optimizer=args.optimizer,
            lr=args.lr,
            weight_decay=args.weight_decay,
            seed=args.seed,
        )
        model = build_detector(spec)
        converge = ConvergeConfig(
            eval_every=args.eval_every,
            patience=args.patience,
            max_steps=args.steps,
            cooldown_steps=args.cooldown,
            trend_window=args.trend_window,
            cycle_steps=args.cycle_steps,
            max_cycles=args.max_cycles,
            cycle_min_gain=args.cycle_min_gain / 100,
        )
        # the training's time over all its sittings (a kill loses at most 5 s of it)
        with Stopwatch(out.with_name(out.name + ".wall.json")) as watch:
            curve = train_until_converged(model, train_set, select_set, out, config=config, converge=converge)
        wall = watch.elapsed()
        metrics = evaluate(model, test_set)
        params = sum(p.numel() for p in model.parameters())
        rows.append(
            {
                "family": family,
                "backbone": args.backbone,
                "fpn_channels": args.fpn_channels,
                "parameters": params,
                "steps": curve.best_weights_steps,
                "trained_steps": curve.steps,
                "converged": curve.converged,
                "curve": curve.curve,
                "select_ap": curve.best_ap,
                "cooldown": curve.cooldown,
                "cycles": curve.cycles,
                "stopping_rule": curve.rule,  # None: trained before the trend rule, by patience alone
                "batch_size": args.batch_size,
                "optimizer": args.optimizer,
                "lr": args.lr,
                "weight_decay": args.weight_decay,
                "train_wall_s": wall,
                "train_sittings": watch.sittings,
                "metrics": metrics.to_dict(),
                "detector_file": str(out),
            }
        )
        print(f"{family}: test {metrics.summary()}", file=sys.stderr)
        # after each family: a kill during the next one keeps this row (the rerun reuses its trained file)
        _write_results(args, argv, data, (train_set, select_set, test_set), rows, complete=number == len(families))
    print(json.dumps(rows, indent=1))
    return 0


def _write_results(
    args: argparse.Namespace, argv: list[str] | None, data: Path, splits: tuple, rows: list[dict], *, complete: bool
) -> None:
    """``train_base.{json,md}`` with ``rows`` and the rows of other families from earlier runs
    (``complete``: every family of this command is in)."""
    train_set, select_set, test_set = splits
    results_file = args.results / "train_base.json"
    if results_file.is_file():  # keep the rows of families measured by earlier runs under this protocol
        earlier = json.loads(results_file.read_text()).get("results", [])
        done = {(r["family"], r["backbone"]) for r in rows}
        rows = [r for r in earlier if (r["family"], r["backbone"]) not in done and "curve" in r] + rows
    report = {
        "benchmark": "train_base",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line("benchmarks/train_base.py", argv),
        "note": "rows from earlier runs of this script are kept; each row records its own steps and settings",
        "machine": machine_info(),
        "dataset": {
            "path": str(data),
            "train": len(train_set),
            "select": len(select_set),
            "test": len(test_set),
            "size": args.size,
            "seed": args.seed,
        },
        "protocol": "select decides when to stop (best select AP kept); test reports",
        "complete": complete,
        "results": rows,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results_file, report)
    lines = [
        "# train_base: base detectors trained from scratch on synthetic shapes",
        "",
        f"- machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, torch "
        f"{report['machine']['torch']}",
        f"- dataset: {len(train_set)} train / {len(select_set)} select / {len(test_set)} test images, {args.size} px, "
        f"seed {args.seed}; select decides when to stop (every {args.eval_every} steps, patience {args.patience}, "
        f"trend window {args.trend_window} (each row's own rule: the JSON's `stopping_rule`), "
        f"at most {args.steps} steps; then {args.cooldown} steps with the rate decayed, kept if select gains; then "
        f"up to {args.max_cycles} rewound cycles of {args.cycle_steps} steps while one gains {args.cycle_min_gain:g} "
        "select AP), test reports",
        f"- command: `{report['command'].strip()}`" + ("" if complete else " (**partial**: still running or stopped)"),
        "",
        "| family | backbone | params | best step / trained | converged | cool-down select AP | rewound cycles "
        "(select AP) | optimizer, lr | wall (min) | select AP | test AP | AP50 | AP75 | APs | APm | APl |",
        "| --- | --- | ---: | ---: | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        m = r["metrics"]
        cells = [
            f"{100 * m[k]:.1f}" if m[k] is not None else "n/a"
            for k in ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")
        ]
        lines.append(
            f"| {r['family']} | {r['backbone']}-FPN{r['fpn_channels']} | {r['parameters'] / 1e6:.1f}M | "
            f"{r['steps']} / {r['trained_steps']} | {'yes' if r['converged'] else 'no (step limit)'} | "
            f"{_cooldown(r.get('cooldown'))} | {_cycles(r.get('cycles'), args.cycle_min_gain / 100)} | "
            f"{r['optimizer']} {r['lr']:g} | {r['train_wall_s'] / 60:.1f} | {100 * r['select_ap']:.1f} | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", "Select AP curves (step: AP):", ""]
    for r in rows:
        points = ", ".join(f"{p['step']}: {100 * p['select_ap']:.1f}" for p in r["curve"])
        lines.append(f"- {r['family']}: {points}")
    (args.results / "train_base.md").write_text("\n".join(lines) + "\n")


def _cooldown(record: dict | None) -> str:
    if not record:
        return "none"
    return f"{100 * record['select_ap']:.1f} after {record['steps']} ({'kept' if record['kept'] else 'not kept'})"


def _cycles(records: list[dict] | None, min_gain: float) -> str:
    if not records:
        return "none"
    text = ", ".join(f"{100 * c['select_ap']:.1f} ({'kept' if c['kept'] else 'not kept'})" for c in records)
    return text + (" **still gaining at the last**" if records[-1]["gain"] >= min_gain else "")


if __name__ == "__main__":
    raise SystemExit(main())
