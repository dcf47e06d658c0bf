"""The evaluation protocol's three disjoint splits: ``train``, ``select`` and ``test``.

``train`` trains (the base, candidates, the final student, BatchNorm recalibration); ``select`` is
the only split any choice may look at (ranking candidates, early stopping, choosing a teacher);
``test`` is read once, for the final numbers. A search that ranks on the images it reports on
flatters its winner; keeping ``test`` out of every choice is what makes the result honest.

A folder made before the protocol has ``train`` and ``val`` only. :func:`load_protocol_splits`
then cuts ``val`` in two by image id (sorted ids, alternating: even positions ``select``, odd
positions ``test``), deterministically, and logs that it did; the two halves are disjoint and
about the same size and difficulty.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .._args import as_path
from ..errors import ArgumentError, DataError
from .coco import CocoDetection, find_split, load_split

__all__ = [
    "PROTOCOL_SPLITS",
    "check_given_splits",
    "ProtocolSplits",
    "split_val",
    "load_protocol_splits",
    "load_any_split",
    "check_disjoint",
    "image_keys",
]

log = logging.getLogger(__name__)

#: The splits of the protocol, in the order they are used.
PROTOCOL_SPLITS: tuple[str, ...] = ("train", "select", "test")

ProtocolSplits = tuple[CocoDetection, CocoDetection, CocoDetection]


def split_val(val: CocoDetection) -> tuple[CocoDetection, CocoDetection]:
    """``(select, test)``: ``val`` cut in two disjoint halves by image id (sorted ids; even
    positions go to ``select``, odd ones to ``test``). The same ``val`` always gives the same halves."""
    ids = sorted(val.image_ids())
    if len(ids) < 2:
        raise DataError(
            f"{val.annotation_file} holds {len(ids)} image(s): cutting it into select and test halves "
            "needs at least 2; add images or give select and test splits"
        )
    return val.subset(ids[0::2]), val.subset(ids[1::2])


def _has(root: str | os.PathLike[str], split: str) -> bool:
    try:
        find_split(root, split)
    except DataError:
        return False
    return True


def _cuts_val(base: Path) -> bool:
    """Whether the protocol's select and test of ``base`` are the halves of its val split (the rule of
    :func:`load_protocol_splits`): a folder without both select and test splits, with a val split."""
    return not (_has(base, "select") and _has(base, "test")) and _has(base, "val")


def load_protocol_splits(root: str | os.PathLike[str], **kwargs: Any) -> ProtocolSplits:
    """``(train, select, test)`` of the dataset folder ``root``.

    A folder with ``select`` and ``test`` splits gives them as they are; a folder with only ``val``
    (made before the protocol) gives ``val`` cut in two halves by :func:`split_val`, and says so in
    the log. ``kwargs`` go to every :class:`CocoDetection` (e.g. ``with_masks=True``)."""
    base = as_path(root, "dataset folder")
    train = load_split(base, "train", **kwargs)
    if _cuts_val(base):  # one rule with load_any_split
        val = load_split(base, "val", **kwargs)
        select, test = split_val(val)
        log.info(
            "%s has no select/test splits: its val split (%d images) is cut in two by image id, %d select "
            "(choices) and %d test (final numbers); `jdnas data synth --select N --test N` writes all three",
            base,
            len(val),
            len(select),
            len(test),
        )
    elif _has(base, "select") and _has(base, "test"):
        select, test = load_split(base, "select", **kwargs), load_split(base, "test", **kwargs)
    else:
        raise DataError(
            f"{base} has neither select and test splits nor a val split to cut into them; make a dataset "
            f"with `jdnas data synth --out {base} --select 100 --test 100`"
        )
    check_disjoint(train=train, select=select, test=test)
    return train, select, test


def load_any_split(root: str | os.PathLike[str], split: str, **kwargs: Any) -> CocoDetection:
    """The split ``split`` of ``root`` as the rest of the SDK sees it: the folder's own split where it
    has one; ``select`` or ``test`` of a folder with only ``val`` is that half of :func:`split_val`
    (the images a compress run chose on or reported on), so ``jdnas eval --split test`` reproduces
    a result's test AP on any folder."""
    base = as_path(root, "dataset folder")
    if split in ("select", "test") and _cuts_val(base):  # the same rule as load_protocol_splits
        select, test = split_val(load_split(base, "val", **kwargs))
        log.info("%s has no %s split: using that half of its val split, as compress does", base, split)
        return select if split == "select" else test
    return load_split(base, split, **kwargs)


def image_keys(dataset: Any) -> set[tuple[str, Any]]:
    """What identifies each image of ``dataset`` across splits: its file (folder and name) for a
    :class:`CocoDetection`; ``("index", i)`` for other datasets (which cannot be compared)."""
    if isinstance(dataset, CocoDetection):  # the file itself: './a.jpg' is 'a.jpg', a link is what it links to
        return {("file", str(file)) for file in dataset.image_files()}
    return {("index", i) for i in range(len(dataset))}


def check_given_splits(
    train: Any, select: Any, test: Any, *, names: tuple[str, str] = ("select_data", "test_data")
) -> None:
    """Datasets a caller hands compress in memory, checked before any work: ``select`` and ``test``
    (passed as ``names``) are :class:`CocoDetection` s (AP is scored against their COCO ground truth);
    ``train`` is one, or any dataset whose samples are ``(float CHW image tensor, {"boxes": Nx4,
    "labels": N})``, as the SDK's loader gives them (its first sample is read to check)."""
    how = (
        "load one with jdnas_sdk.data.load_split(FOLDER, SPLIT) or load_protocol_splits(FOLDER), "
        "or cut one with .subset(ids)"
    )
    for name, split in zip(names, (select, test)):
        if not isinstance(split, CocoDetection):
            raise ArgumentError(
                f"{name} must be a jdnas_sdk.data.CocoDetection (AP is scored against its COCO ground truth), "
                f"got {type(split).__module__}.{type(split).__qualname__}: {how}"
            )
    if isinstance(train, CocoDetection) or len(train) == 0:  # an empty one is named by the checks after
        return
    wrong = _sample_problems(train[0])
    if wrong:
        raise ArgumentError(
            "train_data's samples must be (float image tensor 3xHxW in [0, 1], {'boxes': Nx4 xyxy tensor, "
            f"'labels': N tensor}}), as jdnas_sdk.data.CocoDetection gives them; its first has {'; '.join(wrong)}"
        )


def _sample_problems(sample: Any) -> list[str]:
    """What a training sample gets wrong against the loader's ``(image, target)`` (empty: nothing)."""
    import torch

    if not (isinstance(sample, (tuple, list)) and len(sample) == 2):
        return [f"a {type(sample).__name__}, not an (image, target) pair"]
    image, target = sample
    if not isinstance(image, torch.Tensor):
        wrong = [f"an image of type {type(image).__name__} (convert it, e.g. torchvision's to_tensor)"]
    elif image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
        wrong = [f"an image of shape {tuple(image.shape)} and dtype {image.dtype}"]
    else:
        wrong = []
    if not isinstance(target, dict):
        return [*wrong, f"a target of type {type(target).__name__}"]
    for key in ("boxes", "labels"):
        if not isinstance(target.get(key), torch.Tensor):
            wrong.append(f"target[{key!r}] of type {type(target.get(key)).__name__}")
    return wrong


def check_disjoint(**splits: Any) -> None:
    """Raise a DataError naming the first two of ``splits`` (name -> dataset) that share an image.
    Only :class:`CocoDetection` s are compared; other datasets are taken as the caller gave them."""
    named = [(name, image_keys(data)) for name, data in splits.items() if isinstance(data, CocoDetection)]
    for i, (a, keys_a) in enumerate(named):
        for b, keys_b in named[i + 1 :]:
            shared = keys_a & keys_b
            if shared:
                example = sorted(shared)[0][1]
                raise DataError(
                    f"the {a} and {b} splits share {len(shared)} image(s) (e.g. {example}); they must be "
                    "disjoint: choices are made on select, the final numbers read on test only"
                )
