"""Record (or check) the estimator's and the cost model's numbers on fixed detectors.

A refactor of the lowering, the estimator or the cost model must not change a number: this
script writes ``tests/data/estimate_fingerprint.json`` (``--write``) from the benchmark
detectors (Faster R-CNN and RetinaNet, ResNet-18 FPN-64 at 256 px, 9 classes) and 30 archs
sampled from each one's :class:`SearchSpace` (seed 0), estimated on the shipped ``cpu-ort``
table, plus :func:`detector_cost` of every family on several backbones and input sizes;
``tests/test_estimate_stable.py`` compares with the file to 1e-9.

    PYTHONPATH=$PWD python benchmarks/estimate_fingerprint.py --write
"""

from __future__ import annotations

import argparse
import json
import random
import warnings
from pathlib import Path
from typing import Any

from jdnas_sdk import DetectorSpec, SearchSpace, standard_arch
from jdnas_sdk.cost import detector_cost
from jdnas_sdk.latency import Estimator, load_table
from jdnas_sdk.latency.table import table_path

FILE = Path(__file__).resolve().parents[1] / "tests" / "data" / "estimate_fingerprint.json"
ANCHORS = (16, 32, 64, 128, 256)


def benchmark_spec(family: str) -> DetectorSpec:
    """The benchmark detector's spec (benchmarks/train_base.py defaults on the 9-class shapes)."""
    return DetectorSpec(
        family=family,
        backbone="resnet18",
        num_classes=9,
        min_size=256,
        max_size=256,
        fpn_channels=64,
        representation_size=256,
        anchor_sizes=ANCHORS,
    )


def estimates() -> dict[str, Any]:
    """Per benchmark family: the base and 30 sampled archs' totals and per-stage breakdowns."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = load_table(str(table_path("cpu-ort")))  # the shipped file: a name would resolve to this machine's
    out: dict[str, Any] = {}
    for family in ("fasterrcnn", "retinanet"):
        spec = benchmark_spec(family)
        base = standard_arch("resnet18")
        rng = random.Random(0)
        archs = [base] + [SearchSpace(base).sample(rng) for _ in range(30)]
        rows = []
        estimator = Estimator(table, spec, (256, 256), on_miss="interpolate", save=False)
        for arch in archs:
            fresh = Estimator(table, spec, (256, 256), on_miss="interpolate", save=False)
            full = fresh.estimate(arch)
            rows.append(
                {
                    "arch": str(arch),
                    "total_ms": estimator.total_ms(arch),
                    "first_total_ms": fresh.total_ms(arch),
                    "estimate_ms": full.total_ms,
                    "by_stage": full.by_stage,
                }
            )
        out[family] = rows
    return out


#: Spec fields added with the detector-level search space, and the defaults they take for a
#: detector that does not change them: left out of the record when at those values, so that a
#: spec recorded before them still compares equal.
_LATER_FIELDS = {
    "rpn_pre_nms_top_n_test": 1000,
    "rpn_post_nms_top_n_test": 1000,
    "mask_head_width": 256,
    "head_convs": 4,
    "topk_candidates": 1000,
}


def _spec_record(spec: DetectorSpec) -> dict[str, Any]:
    out = spec.to_dict()
    for name, default in _LATER_FIELDS.items():
        if out.get(name) == default:
            del out[name]
    if out.get("head_width") in (0, spec.fpn_channels):  # 0 or the FPN width: torchvision's towers
        del out["head_width"]
    return out


def costs() -> list[dict[str, Any]]:
    """detector_cost of every family on several backbones, sampled archs and input sizes."""
    rows = []
    families = ("fasterrcnn", "maskrcnn", "keypointrcnn", "retinanet", "fcos")
    for i, family in enumerate(families):
        for backbone in ("resnet18", "resnet50", "resnext50_32x4d"):
            spec = DetectorSpec(
                family=family,
                backbone=backbone,
                num_classes=5 + i,
                min_size=320,
                max_size=512,
                fpn_channels=96 if family != "fcos" else 64,
                representation_size=384,
            )
            base = standard_arch(backbone)
            archs = [base, SearchSpace(base).sample(i)]
            for arch in archs:
                for size in (None, (224, 224), (300, 517)):
                    cost = detector_cost(spec, arch, input_size=size)
                    rows.append(
                        {
                            "spec": _spec_record(spec),
                            "arch": str(arch),
                            "input_size": size,
                            "params": cost.params,
                            "macs": cost.macs,
                        }
                    )
        rows_spec = benchmark_spec(family) if family != "fcos" else None
        if rows_spec is not None:
            cost = detector_cost(rows_spec, standard_arch("resnet18"), input_size=(256, 256))
            rows.append(
                {
                    "spec": _spec_record(rows_spec),
                    "arch": str(standard_arch("resnet18")),
                    "input_size": [256, 256],
                    "params": cost.params,
                    "macs": cost.macs,
                }
            )
    return rows


def fingerprint() -> dict[str, Any]:
    return {"estimates": estimates(), "costs": costs()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", action="store_true", help=f"write {FILE} instead of comparing with it")
    args = p.parse_args(argv)
    now = json.loads(json.dumps(fingerprint()))
    if args.write:
        FILE.parent.mkdir(parents=True, exist_ok=True)
        FILE.write_text(json.dumps(now, indent=1) + "\n")
        print(f"wrote {FILE}")
        return 0
    print("same" if now == json.loads(FILE.read_text()) else "DIFFERENT (see tests/test_estimate_stable.py)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
