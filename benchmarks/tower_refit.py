"""Does the least-squares refit rescue a one-stage tower cut? Drop vs refit, untrained and fine-tuned.

From a trained one-stage base (``benchmarks/train_base.py`` writes it), each tower loses one or
two convs by the depth move (:func:`jdnas_sdk.morph.heads.morph_heads`: the convs closest to the
identity go), or is narrowed by the width move (channels by importance); the student is then
scored as it is (**drop**) or after :func:`jdnas_sdk.morph.refit.refit_towers` (depth) or
:func:`~jdnas_sdk.morph.refit.refit_narrowed` (width) on the first ``--refit-images`` *training*
images (**refit**), untrained and after ``--steps`` fine-tuning steps on the search's candidate schedule
(``Recipe().search_train_config()``, as ``run_candidate`` trains them), once per seed. COCO AP on
the ``select`` and ``test`` halves of the validation images (nothing here is chosen). Results,
with the machine and wall times, go to ``benchmarks/results/tower_refit.{json,md}``.

    python benchmarks/train_base.py --families retinanet     # once: the base
    python benchmarks/tower_refit.py --base runs/bench/base_retinanet_resnet18.pt
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from jdnas_sdk import Heads, describe, load_detector
from jdnas_sdk.compress import Recipe
from jdnas_sdk.data import load_protocol_splits
from jdnas_sdk.distill import finetune
from jdnas_sdk.evaluate import evaluate
from jdnas_sdk.machine import command_line, machine_info
from jdnas_sdk.morph import morph_heads, refit_towers
from jdnas_sdk.morph.heads import head_maps
from jdnas_sdk.morph.refit import refit_narrowed, training_images

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, default=Path("runs/bench/base_retinanet_resnet18.pt"))
    p.add_argument("--data", type=Path, default=Path("runs/bench/shapes_2000_500_256_s0"))
    p.add_argument("--depths", type=int, nargs="+", default=[3, 2], help="tower depths to cut to")
    p.add_argument("--widths", type=int, nargs="*", default=[48, 32], help="tower widths to narrow to")
    p.add_argument("--steps", type=int, default=30, help="fine-tuning steps (the search's candidates train 30)")
    p.add_argument("--refit-images", type=int, default=16)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--out", type=Path, default=HERE / "results" / "tower_refit")
    args = p.parse_args(argv)
    base = load_detector(args.base).eval()
    spec, _ = describe(base)
    heads = Heads.of(spec)
    if heads.convs is None:
        raise SystemExit(f"{args.base} has no head towers (a {spec.family}): give a one-stage base (RetinaNet, FCOS)")
    train_set, select_set, test_set = load_protocol_splits(args.data)

    def score(model: torch.nn.Module) -> dict[str, float]:
        return {
            "select_ap": evaluate(model, select_set, progress=False).ap,
            "test_ap": evaluate(model, test_set, progress=False).ap,
        }

    rows: list[dict] = []
    base_scores = score(base)
    cuts = [("depth", d, replace(heads, convs=d)) for d in args.depths]
    cuts += [("width", w, replace(heads, width=w)) for w in args.widths]
    for knob, value, cut in cuts:
        for how in ("drop", "refit"):
            started = time.monotonic()
            student = morph_heads(base, cut)
            images = training_images(train_set, args.refit_images)
            if how == "drop":
                refits = []
            elif knob == "depth":
                refits = refit_towers(student, base, images)
            else:
                refits = refit_narrowed(student, base, images, head_maps(base, cut))
            refit_s = time.monotonic() - started
            untrained = score(student.eval())
            state = {k: v.clone() for k, v in student.state_dict().items()}
            for seed in args.seeds:
                student.load_state_dict(state)
                torch.manual_seed(seed)
                t0 = time.monotonic()
                config = replace(Recipe().search_train_config(), steps=args.steps, seed=seed)
                finetune(student, data=train_set, steps=args.steps, config=config, progress=False)
                rows.append(
                    {
                        "cut": knob,
                        "value": value,
                        "how": how,
                        "seed": seed,
                        "untrained": untrained,
                        "trained": score(student.eval()),
                        "refits": [r.__dict__ for r in refits],
                        "refit_s": refit_s,
                        "train_s": time.monotonic() - t0,
                    }
                )
                print(
                    f"{knob} {value} {how} seed {seed}: select AP untrained {100 * untrained['select_ap']:.1f}, after "
                    f"{args.steps} steps {100 * rows[-1]['trained']['select_ap']:.1f}",
                    flush=True,
                )
    report = {
        "benchmark": "tower_refit",
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_info(),
        "command": command_line("benchmarks/tower_refit.py", argv),
        "base": str(args.base),
        "base_code_heads": str(heads),
        "base_scores": base_scores,
        "splits": {"train": len(train_set), "select": len(select_set), "test": len(test_set)},
        "steps": args.steps,
        "refit_images": args.refit_images,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        "# Tower cut: drop vs least-squares refit",
        "",
        f"Run {report['date']} on {report['machine'].get('cpu')} ({report['machine'].get('cores')} cores); base "
        f"`{args.base}` (heads `{heads}`): select / test AP {100 * base_scores['select_ap']:.1f} / "
        f"{100 * base_scores['test_ap']:.1f}. Refit on {args.refit_images} training images; fine-tuned "
        f"{args.steps} steps on the search's candidate schedule; {len(select_set)} select / {len(test_set)} test "
        "images (nothing chosen here).",
        "",
        "| tower cut | how | seed | untrained select / test AP | after steps select / test AP | refit error "
        "(relative, before -> after) | morph + refit s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cell = lambda m: f"{100 * m['select_ap']:.1f} / {100 * m['test_ap']:.1f}"  # noqa: E731
        errors = ", ".join(f"{f['error_before']:.2f} -> {f['error_after']:.2f}" for f in r["refits"]) or "-"
        lines.append(
            f"| {r['cut']} {r['value']} | {r['how']} | {r['seed']} | {cell(r['untrained'])} | {cell(r['trained'])} | "
            f"{errors} | {r['refit_s']:.1f} |"
        )
    lines += ["", f"Command: `{report['command']}`"]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
