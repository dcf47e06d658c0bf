"""Probe: how far a small detector gets from scratch in a few hundred steps, by optimiser.

    python benchmarks/optimizer_probe.py fasterrcnn 300 0.001 DATA adamw 0.05
    python benchmarks/optimizer_probe.py fcos 800 0.01 DATA sgd 1e-4

DATA is a synthetic dataset folder (``jdnas data synth --out DATA --train 600 --val 100 --seed 1``).
Prints seconds per step (1 torch thread) and COCO mAP on the validation split. This is the probe
behind the choice of AdamW for the demo; it writes no results file.
"""

from __future__ import annotations

import sys
import time

import torch

import jdnas_sdk as j
from jdnas_sdk.data import load_split
from jdnas_sdk.evaluate import evaluate
from jdnas_sdk.train import TrainConfig, train


def main(argv: list[str]) -> None:
    family, steps, lr, data = argv[0], int(argv[1]), float(argv[2]), argv[3]
    optimizer = argv[4] if len(argv) > 4 else "sgd"
    weight_decay = float(argv[5]) if len(argv) > 5 else 1e-4
    torch.set_num_threads(1)
    train_set, val_set = load_split(data, "train"), load_split(data, "val")
    anchors = {} if family == "fcos" else {"anchor_sizes": (16, 32, 64, 128, 256)}
    spec = j.DetectorSpec(
        family=family,
        backbone="resnet18",
        num_classes=train_set.num_classes,
        min_size=256,
        max_size=256,
        fpn_channels=64,
        representation_size=256,
        category_ids=train_set.category_ids,
        **anchors,
    )
    model = j.build_detector(spec)
    began = time.time()
    result = train(
        model,
        train_set,
        config=TrainConfig(steps=steps, batch_size=4, lr=lr, optimizer=optimizer, weight_decay=weight_decay),
        progress=False,
    )
    print(family, steps, lr, optimizer, "s/step", (time.time() - began) / steps, "final loss", result.final_loss)
    print(evaluate(model, val_set, progress=False).summary())


if __name__ == "__main__":
    main(sys.argv[1:])
