"""Batching and sampling for detection data: deterministic, resumable order; flips for training."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["collate", "ResumableSampler", "hflip"]

Sample = tuple[torch.Tensor, dict[str, torch.Tensor]]


def collate(batch: Sequence[Sample]) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Detection batches are lists: images differ in size and in their number of boxes."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)


class ResumableSampler(Sampler[int]):
    """An endless shuffled stream of indices whose position is a single integer.

    Epoch ``e`` is a permutation drawn from ``(seed, e)``, so the stream from any position is the
    same whether training ran straight through or was killed and resumed there.
    """

    def __init__(self, dataset: Dataset[Any], *, seed: int = 0, start: int = 0, shuffle: bool = True) -> None:
        self.size = len(dataset)  # type: ignore[arg-type]
        if self.size == 0:
            raise ValueError("cannot sample from an empty dataset")
        self.seed, self.start, self.shuffle = seed, start, shuffle

    def _epoch(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        position = self.start
        while True:
            epoch, offset = divmod(position, self.size)
            yield from self._epoch(epoch)[offset:]
            position = (epoch + 1) * self.size

    def __len__(self) -> int:  # a DataLoader asks; the stream is endless
        return 2**62


def hflip(image: torch.Tensor, target: dict[str, torch.Tensor]) -> Sample:
    """Mirror an image and its boxes (and masks) left to right."""
    width = image.shape[-1]
    out = dict(target)
    for key in ("boxes", "crowd_boxes"):
        if key in target and target[key].numel():
            boxes = target[key].clone()
            boxes[:, [0, 2]] = width - target[key][:, [2, 0]]
            out[key] = boxes
    if "masks" in target:
        out["masks"] = target["masks"].flip(-1)
    return image.flip(-1), out
