"""The recipe's ablation, read from finished ``compress_synth`` results: what each change moved.

Each argument is a ``compress_synth.json`` (a results file with its machine), in the order the
changes were made. Per (family, method, seed) row, the table shows what changed from the previous
file's row of the same family, method and seed (``settings`` that differ, the table's file name
included; a base of another test AP: one trained on under the same file name), the student's test
and select AP, the base's and the control's test AP, the student's gap to the best of them, and the
measured latency ratio. Nothing is measured here: the numbers are the files'. Changes made one
after another on one seed are a path, not a factorial ablation; the table says which files and
seeds each line rests on.

Usage::

    python benchmarks/ablation_table.py benchmarks/results/epyc29/compress_synth_retina_cycles.json \\
        benchmarks/results/epyc30/compress_synth_retina_sizes1.json ... --out ablation.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["changes", "table", "main"]


def changes(before: dict[str, Any] | None, after: dict[str, Any]) -> str:
    """The settings ``after`` was made with that differ from ``before``'s (``"start"`` without one);
    paths are compared by file name."""
    if before is None:
        return "start"

    def norm(v: Any) -> Any:
        return Path(v).name if isinstance(v, str) and "/" in v else v

    names = sorted(set(before) | set(after))
    diff = [
        f"{n} {norm(before.get(n))} -> {norm(after.get(n))}" for n in names if norm(before.get(n)) != norm(after.get(n))
    ]
    return "; ".join(diff) or "same settings"


def table(files: list[Path]) -> str:
    """The markdown table of ``files`` (see the module doc)."""
    lines = [
        "| file | family | method | seed | change from the previous file | student test / select | base | control "
        "| student - best | measured ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    last: dict[tuple[str, str, int], tuple[dict[str, Any], float]] = {}
    sources = []
    for path in files:
        data = json.loads(path.read_text())
        machine = data.get("machine", {})
        sources.append(
            f"- {path.parent.name}/{path.name}: {data.get('date', '?')}, {machine.get('cpu', '?')} "
            f"({machine.get('cores', '?')} cores)"
        )
        for row in data["results"]:
            if "student" not in row:
                continue
            key = (row["family"], row["method"], row["seed"])
            settings = row.get("settings", {})
            control = row.get("control", {}).get("test_ap", float("nan"))
            ratio, base = row.get("measured_ratio"), row["base"]["test_ap"]
            best = max(base, -1.0 if control != control else control)
            change = "start" if key not in last else changes(last[key][0], settings)
            if key in last and abs(last[key][1] - base) >= 0.0005:  # another base under the same file name
                change = f"base test AP {100 * last[key][1]:.1f} -> {100 * base:.1f}" + (
                    "" if change == "same settings" else f"; {change}"
                )
            lines.append(
                f"| {path.parent.name}/{path.name} | {row['family']} | {row['method']} | {row['seed']} "
                f"| {change} "
                f"| {100 * row['student']['test_ap']:.1f} / {100 * row['student']['select_ap']:.1f} "
                f"| {100 * row['base']['test_ap']:.1f} | {100 * control:.1f} "
                f"| {100 * (row['student']['test_ap'] - best):+.1f} | {'' if ratio is None else f'{ratio:.2f}'} |"
            )
            last[key] = (settings, base)
    head = "Read from (each row's numbers are that file's; nothing measured here):\n\n" + "\n".join(sources)
    return head + "\n\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path, help="compress_synth.json files, in the order of the changes")
    p.add_argument("--out", type=Path, help="markdown file to write (default: print)")
    args = p.parse_args(argv)
    text = table(args.files)
    if args.out:
        args.out.write_text(text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
