"""The ``jdnas`` command: one verb per module, each a thin call into the library.

Each verb module has ``add_parser(verbs)`` (its options, beside its code) and ``run(args)``;
:mod:`.common` holds the flags they share. Run ``jdnas --help`` or ``jdnas VERB --help``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .._version import __version__
from ..errors import JdnasError
from . import common, compress, data, demo, doctor, eval, export, info, latency, profile, report, teachers, train

__all__ = ["VERBS", "build_parser", "configure_logging", "main"]

#: the verb modules, in the order ``jdnas --help`` lists them
VERBS = (data, train, eval, info, doctor, profile, latency, teachers, export, compress, report, demo)

_EPILOG = """\
a typical session:
  jdnas data synth --out data/shapes --train 600 --select 100 --test 100 --size 256
  jdnas train --data data/shapes --model fasterrcnn_resnet18 --out base.pt --until-converged --steps 3000
  jdnas eval  --model base.pt --data data/shapes          # on the test split
  jdnas info  --model base.pt
  jdnas doctor                      # what this machine can measure (GPU, CUDA, TensorRT, targets)
  jdnas latency --model base.pt --target cpu-ort --measure
  jdnas profile --target cpu-ort --model base.pt --input-size 256
  jdnas compress --model base.pt --data data/shapes --target cpu-ort --latency 0.5
or all of it at once, on a fresh machine:  jdnas demo
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``jdnas`` parser: the top-level flags, then each verb module's own parser."""
    parser = argparse.ArgumentParser(
        prog="jdnas",
        description="Make object detectors faster on a target without losing accuracy.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common.verbosity(top=True)],
    )
    parser.add_argument("--version", action="version", version=f"jdnas_sdk {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in VERBS:
        verb.add_parser(verbs)
    return parser


class _CliHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure_logging` installs (one at a time, whatever main() ran before); it
    writes to whatever ``sys.stderr`` is when a message comes, so a redirected stderr gets it."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(*, verbose: bool = False, quiet: bool = False) -> logging.Handler:
    """The library's log on stderr, message only: INFO by default, DEBUG with -v, WARNING with -q.
    Replaces the handler an earlier call installed; returns the new one."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _CliHandler)]:
        root.removeHandler(handler)
    handler = _CliHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jdnas`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose and args.quiet:
        parser.error("-v/--verbose and -q/--quiet exclude each other")
    root = logging.getLogger()
    level = root.level
    handler = configure_logging(verbose=args.verbose, quiet=args.quiet)
    try:
        return int(args.func(args))
    except JdnasError as exc:
        print(f"jdnas {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jdnas {args.verb}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    finally:  # called in-process (tests, notebooks): leave the logging as it was
        root.removeHandler(handler)
        root.setLevel(level)
