"""ONNX parity on trained detectors and real images: ONNX Runtime against PyTorch.

Each detector is exported (whole: resize, backbone, heads, NMS) for several image sizes, square
and not, and run on validation images resized to that size; detections are paired by label and
box overlap (``jdnas_sdk.deploy.onnx_parity``). Records, per detector and size, the largest box and
score differences over all images, the fraction paired and the detection counts, with the machine,
in ``benchmarks/results/export_parity.{json,md}``.

    python benchmarks/export_parity.py                 # the bench detectors and, if run, compress_synth's students
    python benchmarks/export_parity.py --models a.pt b.pt --sizes 256x256 320x192 --images 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from jdnas_sdk import load_detector
from jdnas_sdk._io import atomic_write_json
from jdnas_sdk.data import load_split
from jdnas_sdk.deploy import onnx_parity
from jdnas_sdk.detectors import detector_onnx
from jdnas_sdk.machine import command_line, machine_info

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    default = sorted(Path("runs/bench").glob("base_*.pt")) + sorted(Path("runs/compress_synth").glob("*/student.pt"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", type=Path, default=default)
    p.add_argument("--data", type=Path, default=Path("runs/bench/shapes_2000_500_256_s0"))
    p.add_argument("--sizes", nargs="+", default=["256x256", "200x320", "311x173"], help="HxW the graph is traced for")
    p.add_argument("--images", type=int, default=5, help="validation images per size (spread over the split)")
    p.add_argument("--results", type=Path, default=HERE / "results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.models:
        sys.exit("export_parity: no detectors found; give --models FILE ...")
    torch.set_num_threads(1)
    val = load_split(args.data, "val")
    picks = [round(i * (len(val) - 1) / max(1, args.images - 1)) for i in range(args.images)]
    rows: list[dict[str, Any]] = []
    for path in args.models:
        model = load_detector(path).eval()
        for text in args.sizes:
            size = tuple(int(v) for v in text.lower().split("x"))
            graph = detector_onnx(model, size)
            row: dict[str, Any] = {
                "model": str(path),
                "size": list(size),
                "boxes_px": 0.0,
                "scores": 0.0,
                "matched": 1.0,
                "counts": [],
            }
            for i in picks:
                image = F.interpolate(val[i][0][None], size=size, mode="bilinear", align_corners=False)[0]
                diff, counts = onnx_parity(model, graph, image)
                row["boxes_px"] = max(row["boxes_px"], diff["boxes"])
                row["scores"] = max(row["scores"], diff["scores"])
                row["matched"] = min(row["matched"], diff["matched"])
                row["counts"].append(list(counts))
            rows.append(row)
            print(row, file=sys.stderr)
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "command": command_line("benchmarks/export_parity.py", argv),
        "images": picks,
        "rows": rows,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.results / "export_parity.json", report)
    lines = [
        "# ONNX export parity (ONNX Runtime vs PyTorch)",
        "",
        f"Run {report['date']} on {report['machine']['cpu']}; `{report['command']}`; validation images {picks} "
        "resized to each size. Differences are the largest over every paired detection of every image.",
        "",
        "| detector | traced size | detections (ORT = PyTorch) | paired | boxes (px) | scores |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        same = all(a == b for a, b in row["counts"])
        counts = ", ".join(str(a) for a, _ in row["counts"]) + ("" if same else " (counts differ)")
        lines.append(
            f"| {row['model']} | {row['size'][0]}x{row['size'][1]} | {counts} | {100 * row['matched']:.0f}% | "
            f"{row['boxes_px']:.1e} | {row['scores']:.1e} |"
        )
    text = "\n".join(lines) + "\n"
    (args.results / "export_parity.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
