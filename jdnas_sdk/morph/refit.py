"""Refit after a removed tower conv: the conv beside the gap takes up its function, by least squares.

Removing a trained conv from a one-stage head tower (RetinaNet, FCOS) changes what every later
layer reads, and no weight-only rule keeps the function: on the benchmark RetinaNet (R18-FPN64,
trained), a student with one conv fewer per tower scores 0 select AP untrained whichever conv goes,
6.9 after the search's 30 fine-tuning steps, and folding two convs into one (their composition, the
ReLU between ignored) did worse. :func:`refit_towers` instead solves for the weights of the conv
after the removed ones (before them, when the tower's last convs go) so that, on a few *training*
images, its output matches the parent's pre-activation at the same point: ridge regression of the
parent's output on the patches of what the student's conv now reads (the reconstruction step of
channel pruning, He et al. 2017, applied to a removed layer). Measured ad hoc on that base (60
select images): 51.0 select AP untrained, 54.5 after 30 steps.

It applies where the student is its parent with tower convs removed and the kept convs unchanged
(the depth move of :mod:`jdnas_sdk.morph.heads`; other moves in the same step may change the
backbone, FPN and other settings, as long as the kept tower convs are the parent's own and the
feature maps have the parent's sizes); elsewhere it changes nothing and says why. The search runs
it between the two detectors of the depth step itself (``morph(after_step=...)``).

:func:`refit_narrowed` does the same after a tower-*width* step: every layer reading channels the
importance dropped (the tower convs after the first, the predictors) is refit, in forward order, to
give the parent's output on the channels it kept (the reconstruction of He et al. 2017 proper).
Measured (``benchmarks/tower_refit.py``, same base, 250 select images): towers at 48 of 64 channels
scored 21.0 AP cut and 38.0 refit untrained, but 42.9 and 42.3 after the search's 30 steps; at 32,
9.8 / 9.3 untrained and 23.5 / 16.5 after: no better once trained, so the search does not use it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .apply import AfterStep
from .heads import SetHead, _convs, _kept
from .inherit import IndexMap

__all__ = ["Refit", "refit_towers", "refit_narrowed", "training_images", "depth_refit_hook"]

log = logging.getLogger(__name__)

_SIDES = ("classification_head", "regression_head")


@dataclass(frozen=True)
class Refit:
    """One refit conv: its name in the student, and the squared error of its output against the
    parent's, relative to that output's variance, before and after (on the refit images)."""

    conv: str
    error_before: float
    error_after: float


def training_images(data: object, count: int) -> list[Tensor]:
    """The first ``count`` images of a detection dataset (``data[i]`` is ``(image, target)``)."""
    return [data[i][0] for i in range(min(count, len(data)))]  # type: ignore[index, arg-type]


def _towers(model: nn.Module) -> dict[str, list[nn.Conv2d]]:
    head = getattr(model, "head", None)
    found = {}
    for side in _SIDES:
        tower = getattr(getattr(head, side, None), "conv", None)
        if isinstance(tower, nn.Module):
            found[side] = _convs(tower)
    return found


def _plan(parent: list[nn.Conv2d], student: list[nn.Conv2d]) -> list[tuple[int, int]] | str:
    """``(student conv, parent conv whose output it must give)`` per refit, or why none applies."""
    if len(student) >= len(parent):
        return "no conv removed"
    keep = _kept(parent, len(student))
    if any(k is None for k in keep):
        return "convs added"
    for j, k in enumerate(keep):
        if student[j].weight.shape != parent[k].weight.shape or not torch.equal(student[j].weight, parent[k].weight):
            return "the kept convs are not the parent's own (another tower move in the same step)"
        if student[j].groups != 1:
            return "grouped convs"
    plan = []
    runs: list[list[int]] = []
    for i in range(len(parent)):
        if i not in keep:
            if runs and runs[-1][-1] == i - 1:
                runs[-1].append(i)
            else:
                runs.append([i])
    for run in runs:
        after = run[-1] + 1
        if after < len(parent):  # the conv after the gap now reads what the first removed one read
            plan.append((keep.index(after), after))
        else:  # the tower's last convs went: the conv before them gives the parent's last output
            plan.append((keep.index(run[0] - 1), len(parent) - 1))
    return plan


def _patches(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """``x``'s patches as ``conv`` reads them: one row per output position, plus a bias column."""
    cols = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=conv.padding, stride=conv.stride)
    rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return torch.cat([rows, rows.new_ones(len(rows), 1)], 1)


def _capture(module: nn.Module, what: str, store: list[Tensor]):
    def hook(_m: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        # a copy: the ReLU after a tower conv works in place, and the target is the pre-activation
        store.append((inputs[0] if what == "input" else output).detach().clone())

    return module.register_forward_hook(hook)


@torch.no_grad()
def refit_towers(
    student: nn.Module,
    parent: nn.Module,
    images: Sequence[Tensor],
    *,
    ridge: float = 1e-3,
    max_rows: int = 2048,
    seed: int = 0,
) -> list[Refit]:
    """Refit, in place, the student's tower convs beside removed ones (see the module docstring)
    on ``images`` (training images: the images that score must not tune weights); the refits
    made. ``ridge``: the regularisation, relative to the mean diagonal of the patches' Gram matrix;
    ``max_rows``: the most output positions drawn per image and level (at random, ``seed``).
    A refit is kept only where it lowers the error."""
    s_towers, p_towers = _towers(student), _towers(parent)
    if not images or not s_towers or set(s_towers) != set(p_towers):
        return []
    plans = {side: _plan(p_towers[side], s_towers[side]) for side in s_towers}
    for side, plan in plans.items():
        if isinstance(plan, str) and plan != "no conv removed":
            log.info("[refit] %s: not refit (%s)", side, plan)
    plans = {side: plan for side, plan in plans.items() if not isinstance(plan, str)}
    if not plans:
        return []
    modes = student.training, parent.training
    student.eval(), parent.eval()
    try:
        s_feats, p_feats = _features(student, images), _features(parent, images)
        if [f.shape[-2:] for f in s_feats] != [f.shape[-2:] for f in p_feats]:
            log.info("[refit] not refit: the student's feature maps differ in size from the parent's")
            return []
        names = {id(m): n for n, m in student.named_modules()}
        done = []
        for side, plan in plans.items():
            s_tower = getattr(student.head, side).conv
            p_tower = getattr(parent.head, side).conv
            for j, target in plan:
                conv = s_towers[side][j]
                target_conv = p_towers[side][target]
                refit = _solve(conv, s_tower, p_tower, target_conv, None, s_feats, p_feats, ridge, max_rows, seed)
                if refit is not None:
                    done.append(Refit(names[id(conv)], *refit))
                    log.info("[refit] %s: relative error %.3f -> %.3f", names[id(conv)], *refit)
        return done
    finally:
        student.train(modes[0]), parent.train(modes[1])


def _features(model: nn.Module, images: Sequence[Tensor]) -> list[Tensor]:
    """The FPN levels of ``images`` (one batch per level, images along the batch)."""
    batch, _ = model.transform(list(images))
    return list(model.backbone(batch.tensors).values())


def _solve(
    conv: nn.Conv2d,
    s_tower: nn.Module,
    p_tower: nn.Module,
    target: nn.Conv2d,
    channels: IndexMap | None,
    s_feats: list[Tensor],
    p_feats: list[Tensor],
    ridge: float,
    max_rows: int,
    seed: int,
) -> tuple[float, float] | None:
    """Ridge-regress ``target``'s output in the parent (its ``channels``; None: all) on the
    patches ``conv`` reads in the student, over every level, running each level through
    ``s_tower`` and ``p_tower``; set ``conv``'s weights where that lowers the error."""
    if conv.bias is None:
        return None
    gen = torch.Generator().manual_seed(seed)
    width = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1] + 1
    gram = torch.zeros(width, width, dtype=torch.float64)
    cross = torch.zeros(width, conv.out_channels, dtype=torch.float64)
    y_sum = torch.zeros(conv.out_channels, dtype=torch.float64)
    y_sq, count = 0.0, 0
    for s_feat, p_feat in zip(s_feats, p_feats):
        ins: list[Tensor] = []
        outs: list[Tensor] = []
        hooks = [_capture(conv, "input", ins), _capture(target, "output", outs)]
        try:
            s_tower(s_feat)
            p_tower(p_feat)
        finally:
            for h in hooks:
                h.remove()
        for x, y in zip(ins[0], outs[0]):  # image by image
            rows = _patches(x[None], conv).double()
            ys = (y if channels is None else y[channels]).flatten(1).T.double()
            if len(rows) != len(ys):
                return None
            if len(rows) > max_rows:
                pick = torch.randperm(len(rows), generator=gen)[:max_rows]
                rows, ys = rows[pick], ys[pick]
            gram += rows.T @ rows
            cross += rows.T @ ys
            y_sum += ys.sum(0)
            y_sq += float(ys.pow(2).sum())
            count += len(ys)
    if not count:
        return None
    spread = y_sq - float(y_sum.pow(2).sum()) / count  # total squared deviation of the targets

    def error(w: Tensor) -> float:  # sum of squared residuals from the accumulated moments
        sse = float((w * (gram @ w)).sum() - 2 * (w * cross).sum()) + y_sq
        return max(sse, 0.0) / max(spread, 1e-12)

    current = torch.cat([conv.weight.detach().flatten(1), conv.bias.detach()[:, None]], 1).T.double()
    regular = gram + ridge * float(gram.diagonal().mean()) * torch.eye(width, dtype=gram.dtype)
    solved = torch.linalg.solve(regular, cross)
    before, after = error(current), error(solved)
    if not after < before:
        return None
    conv.weight.copy_(solved[:-1].T.reshape_as(conv.weight).to(conv.weight.dtype))
    conv.bias.copy_(solved[-1].to(conv.bias.dtype))
    return before, after


@torch.no_grad()
def refit_narrowed(
    student: nn.Module,
    parent: nn.Module,
    images: Sequence[Tensor],
    maps: dict[str, tuple[IndexMap | None, IndexMap | None]],
    *,
    ridge: float = 1e-3,
    max_rows: int = 2048,
    seed: int = 0,
) -> list[Refit]:
    """After a tower-width step (``student`` is ``parent`` with narrower towers, ``maps`` the
    channel maps it was made with: :func:`~jdnas_sdk.morph.heads.head_maps`), refit, in place and in
    forward order, every tower layer that reads narrowed channels (each tower conv after the first,
    and the class and box predictors) so that it gives the parent's pre-activation on the channels
    it kept, from what it now reads: importance drops channels, the reconstruction step of channel
    pruning (He et al. 2017) makes their consumers do without them. Widened towers (new channels)
    and detectors without towers are left alone."""
    s_towers, p_towers = _towers(student), _towers(parent)
    if not images or not s_towers or set(s_towers) != set(p_towers):
        return []
    if any(len(s_towers[side]) != len(p_towers[side]) for side in s_towers):
        return []  # a depth change: refit_towers' case
    modes = student.training, parent.training
    student.eval(), parent.eval()
    try:
        s_feats, p_feats = _features(student, images), _features(parent, images)
        if [f.shape[-2:] for f in s_feats] != [f.shape[-2:] for f in p_feats]:
            return []
        names = {id(m): n for n, m in parent.named_modules()}
        done = []
        for side in s_towers:
            s_side, p_side = getattr(student.head, side), getattr(parent.head, side)
            layers = list(zip(s_towers[side][1:], p_towers[side][1:]))
            layers += [
                (getattr(s_side, name), getattr(p_side, name))
                for name in ("cls_logits", "bbox_reg", "bbox_ctrness")
                if isinstance(getattr(p_side, name, None), nn.Conv2d)
            ]
            for s_layer, p_layer in layers:
                out_map, in_map = maps.get(f"{names[id(p_layer)]}.weight", (None, None))
                if in_map is None or -1 in in_map or (out_map is not None and -1 in out_map):
                    continue  # reads what the parent's layer read, or new channels
                refit = _solve(
                    s_layer, _Side(s_side), _Side(p_side), p_layer, out_map, s_feats, p_feats, ridge, max_rows, seed
                )
                if refit is not None:
                    done.append(Refit(names[id(p_layer)], *refit))
                    log.info("[refit] %s: relative error %.3f -> %.3f", names[id(p_layer)], *refit)
        return done
    finally:
        student.train(modes[0]), parent.train(modes[1])


class _Side(nn.Module):
    """A head side run on one level: its tower, then every predictor reading the tower's output."""

    def __init__(self, side: nn.Module) -> None:
        super().__init__()
        self.side = side

    def forward(self, x: Tensor) -> None:
        out = self.side.conv(x)
        for name in ("cls_logits", "bbox_reg", "bbox_ctrness"):
            layer = getattr(self.side, name, None)
            if isinstance(layer, nn.Conv2d):
                layer(out)


def depth_refit_hook(train_data: object, images: int, refits: list[Refit]) -> AfterStep:
    """The ``after_step`` hook of :func:`~jdnas_sdk.morph.morph` that refits a tower beside the
    convs a depth step removed, between the two detectors of that step (same input size and
    channels, whatever the other moves), on the first ``images`` training images (read once, when a
    depth step first needs them); what it refit is appended to ``refits``. The search's candidates
    are made with it, and so are the latency benchmark's students (their NMS load is the search's)."""
    loaded: list[Tensor] = []

    def after_step(before: nn.Module, after: nn.Module, action: object) -> None:
        # depth steps only: refit_narrowed after width steps scored better untrained but no better (48 of
        # 64 channels) or worse (32) after the search's 30 steps (benchmarks/results/epyc29/tower_refit.md)
        if not isinstance(action, SetHead) or action.knob != "convs":
            return
        if not loaded:
            loaded.extend(training_images(train_data, images))
        refits.extend(refit_towers(after, before, loaded))

    return after_step
