"""``jdnas report``: rewrite the HTML/Markdown report of a compress workdir."""

from __future__ import annotations

import argparse
from typing import Any

from . import common

__all__ = ["add_parser", "run"]


def add_parser(verbs: Any) -> None:
    """Add ``report``."""
    rp = verbs.add_parser(
        "report", help="write the HTML/Markdown report of a compress workdir", parents=[common.verbosity(top=False)]
    )
    rp.add_argument("workdir", help="the --workdir of a compress run")
    rp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report import write_report

    out = write_report(args.workdir)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0
