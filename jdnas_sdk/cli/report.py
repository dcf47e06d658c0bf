"""``jdnas report``: rewrite the HTML/Markdown report of a compress workdir."""

from __future__ import annotations

import argparse
from typing import Any

from . import common

__all__ = ["add_parser", "run"]


def add_parser(verbs: Any) -> None:
    """Add ``report``."""
    rp = verbs.add_parser(
        "report",
        formatter_class=common.FMT,
        help="write the HTML/Markdown report of a compress workdir",
        description="(Re)write report.html and report.md of a compress run from its workdir (the search archive "
        "and result.json): the Pareto front, every candidate's lineage, teachers and latency, the claim.",
        epilog="example:\n  jdnas report runs/compress",
        parents=[common.verbosity(top=False)],
    )
    rp.add_argument("workdir", help="the --workdir of a compress run")
    rp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report import write_report

    out = write_report(args.workdir)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0
