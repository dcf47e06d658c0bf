"""What the verbs share: parent parsers for the common flags and small parse helpers.

A verb's parser takes the common flags from here (``parents=[seed(), force()]``) so each is spelled
once; ``help=`` and ``default=`` may differ per verb where the flag means something narrower there.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from ..arch import BACKBONES, FAMILIES
from ..compress import CompressResult
from ..data.checks import unread_targets
from ..errors import JdnasError
from ..families import get_family

__all__ = [
    "FMT",
    "anchor_sizes",
    "check_outputs",
    "check_trainable",
    "data",
    "force",
    "head_grid",
    "heads",
    "input_side",
    "input_size",
    "local_table",
    "model",
    "parse_input_size",
    "parse_model_name",
    "phases",
    "print_result",
    "ratios",
    "refuse_given",
    "ray_cluster",
    "seed",
    "target",
    "verbosity",
    "wait",
]


class _DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default after its help, where it has one to show: not ``(default: None)`` after
    a help that already says what happens without it, nor ``(default: False)`` after a switch. A
    description or epilog with line breaks (the examples) keeps its lines."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action) or ""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:  # an example block: its lines as written (argparse would join and re-wrap them)
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


#: the help formatter of every verb: defaults shown after each option's help
FMT = _DefaultsShown


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def seed(help: str = "random seed") -> argparse.ArgumentParser:
    """``--seed N`` (default 0)."""
    p = _parent()
    p.add_argument("--seed", type=int, default=0, help=help)
    return p


def wait(what: str = "another run on this workdir") -> argparse.ArgumentParser:
    """``--wait``: wait for the run holding the lock instead of refusing."""
    p = _parent()
    p.add_argument("--wait", action="store_true", help=f"wait for {what} to finish instead of refusing")
    return p


def force() -> argparse.ArgumentParser:
    """``--force``: replace an existing ``--out``."""
    p = _parent()
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    return p


def target(default: str = "cpu-ort", help: str = "latency table: target name or file") -> argparse.ArgumentParser:
    """``--target NAME`` (a table name or file); ``default=None`` makes it required."""
    p = _parent()
    if default is None:
        p.add_argument("--target", required=True, help=help)
    else:
        p.add_argument("--target", default=default, help=help)
    return p


def data(help: str = "dataset folder") -> argparse.ArgumentParser:
    """``--data FOLDER`` (required)."""
    p = _parent()
    p.add_argument("--data", required=True, help=help)
    return p


def model(help: str = "detector file", required: bool = True) -> argparse.ArgumentParser:
    """``--model FILE``."""
    p = _parent()
    p.add_argument("--model", required=required, help=help)
    return p


def input_side(help: str = "longest image side fed to the detector") -> argparse.ArgumentParser:
    """``--input-size N``: one image side in pixels (default 256)."""
    p = _parent()
    p.add_argument("--input-size", type=int, default=256, help=help)
    return p


def input_size(help: str = "SIZE or HEIGHTxWIDTH (default: the detector's min_size square)") -> argparse.ArgumentParser:
    """``--input-size SIZE|HxW`` (optional; read with :func:`parse_input_size`)."""
    p = _parent()
    p.add_argument("--input-size", help=help)
    return p


def ray_cluster(what: str) -> argparse.ArgumentParser:
    """``--executor local|ray`` and ``--address ADDR`` (the Ray cluster; default: a local Ray for the run)."""
    p = _parent()
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help=f"where {what}: in this process, or as Ray tasks (pip install -e '.[ray]')",
    )
    p.add_argument(
        "--address",
        help="with --executor ray: the cluster (auto, HOST:6379 or ray://HOST:10001; "
        "default: start a local Ray for this run)",
    )
    return p


def verbosity(*, top: bool) -> argparse.ArgumentParser:
    """``-v/--verbose`` (debug messages) and ``-q/--quiet`` (warnings only). Given after a verb they
    must not reset what was given before it, hence SUPPRESS there."""
    p = _parent()
    default: Any = False if top else argparse.SUPPRESS
    p.add_argument("-v", "--verbose", action="store_true", default=default, help="log debug messages")
    p.add_argument("-q", "--quiet", action="store_true", default=default, help="log warnings and errors only")
    return p


def parse_input_size(text: str) -> tuple[int, int]:
    """``"256"`` or ``"200x320"`` -> (height, width); sides of at least 32."""
    try:
        parts = [int(v) for v in text.lower().replace("x", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 32:
        raise JdnasError(f"--input-size must be SIZE or HEIGHTxWIDTH with sides >= 32, got {text!r}")
    return parts[0], parts[1]


def parse_model_name(text: str) -> tuple[str, str]:
    """``FAMILY_BACKBONE`` (``fasterrcnn_resnet18``, ``retinanet_resnet50_fpn``) -> (family, backbone)."""
    name = text.removesuffix("_fpn")
    family, _, backbone = name.partition("_")
    if family not in FAMILIES or backbone not in BACKBONES:
        raise JdnasError(
            f"--model {text!r} is neither a detector file nor FAMILY_BACKBONE; families: "
            f"{', '.join(FAMILIES)}; backbones: {', '.join(BACKBONES)} (e.g. fasterrcnn_resnet18)"
        )
    return family, backbone


def anchor_sizes(text: str, family: str, input_size: int) -> tuple[int, ...] | None:
    """``--anchor-sizes``: auto (halved below 512 px), torchvision (None) or comma-separated integers;
    None for a family without anchors (its family says so)."""
    if not get_family(family).takes_anchor_sizes or text == "torchvision":
        return None
    if text == "auto":
        return (16, 32, 64, 128, 256) if input_size <= 512 else None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as exc:
        raise JdnasError(f"--anchor-sizes must be auto, torchvision or comma-separated integers, got {text!r}") from exc


def check_trainable(family: str) -> None:
    """Refuse a family ``jdnas train`` cannot train from this loader's annotations (it reads boxes
    and masks; the family names the targets it needs)."""
    unread = unread_targets(family)
    if unread:
        raise JdnasError(
            f"training {family} needs {', '.join(unread)} annotations, which this loader does not read "
            "yet; train it elsewhere and pass the trained file with --model"
        )


def heads(what: str = "the space") -> argparse.ArgumentParser:
    """``--heads KNOB=V,V ...``: the head grid of the space (:func:`head_grid` reads it)."""
    p = _parent()
    p.add_argument(
        "--heads",
        nargs="+",
        metavar="KNOB=V,V",
        help=f"head grid of {what}, e.g. fpn=0.5,1 size=1 proposals=300,1000 topk=300,1000 (ratios of the base's "
        "value; proposals, topk and convs are counts; unnamed knobs: jdnas_sdk.space.DEFAULT_HEAD_GRID)",
    )
    return p


def head_grid(items: list[str] | None) -> dict[str, tuple[float, ...]]:
    """``{knob: values}`` from ``--heads KNOB=V,V ...`` (empty: the default grid)."""
    from ..space import DEFAULT_HEAD_GRID

    grid: dict[str, tuple[float, ...]] = {}
    for item in items or ():
        knob, sep, values = item.partition("=")
        if not sep or knob not in DEFAULT_HEAD_GRID:
            raise JdnasError(f"--heads takes KNOB=V,V with KNOB one of {sorted(DEFAULT_HEAD_GRID)}, got {item!r}")
        grid[knob] = ratios(values, f"--heads {knob}")
    return grid


def ratios(text: str, what: str) -> tuple[float, ...]:
    """Comma-separated positive numbers (``--widths 0.75,1,1.25``)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise JdnasError(f"{what} must be comma-separated positive numbers, got {text!r}")
    return values


def phases(text: str) -> tuple[float, float, float]:
    """``--phases A,B,C``: three step fractions."""
    try:
        a, b, c = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise JdnasError(f"--phases must be three fractions summing to 1, e.g. 0.2,0.3,0.5; got {text!r}") from exc
    return a, b, c


def check_outputs(**paths: str | None) -> None:
    """Before any work: each output file given (``check_outputs(json=args.json)``) can be written;
    one :class:`~jdnas_sdk.errors.StorageError` line naming the flag otherwise, not after the work."""
    from .._io import check_output_file

    for flag, path in paths.items():
        if path is not None:
            check_output_file(path, what=f"--{flag.replace('_', '-')}")


def refuse_given(flags: dict[str, object], why: str) -> None:
    """Refuse, before any work, the ``flags`` (``{"--flag": value}``) that were given (not ``None``)
    where they would do nothing: one line naming them and ``why``."""
    given = [flag for flag, value in flags.items() if value is not None]
    if given:
        raise JdnasError(f"{', '.join(given)} {why}")


def local_table(target: str) -> Any:
    """``--measure``: the target's table, refused before any work unless this machine is its device
    (the measurement would time another device than the estimate)."""
    from ..latency import load_table
    from ..latency.backends import backend_for

    table = load_table(target)
    if table.modelled or backend_for(table.fingerprint) is None:
        raise JdnasError(
            f"--measure runs the detector on this machine, but target {table.target!r} is "
            f"[{table.fingerprint.describe()}]; measure on that device, or leave out --measure"
        )
    return table


def print_result(result: CompressResult) -> None:
    """Base vs student and where the files are (MODELLED when the table is)."""
    print(result.summary())
