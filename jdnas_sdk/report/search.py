"""The compression report: base vs student, the Pareto front, the search trajectory, the teachers,
the latency breakdown, and the table's source and device, as Markdown and HTML (with PNG plots).

``jdnas report WORKDIR`` (and :func:`compress`) write it from the files a search leaves behind
(``result.json``), so it can be regenerated at any time.
"""

from __future__ import annotations

import html
import io
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._args import as_path
from .._io import atomic_write_bytes, atomic_write_text
from ..errors import SearchError
from ..search.archive import Candidate, pareto_front
from .markdown import code_cell
from .result import check_result

__all__ = ["write_report", "check_result"]


def _plots(result: dict[str, Any], work: Path) -> tuple[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cands = [Candidate.from_json(c) for c in result["history"]]
    front = pareto_front(cands)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ok = [c for c in cands if c.ok]
    ax.scatter([c.latency_ms for c in ok], [100 * c.ap for c in ok], s=14, color="grey", label="candidates")
    ax.plot([c.latency_ms for c in front], [100 * c.ap for c in front], "o-", color="C0", label="Pareto front")
    chosen = cands[result["chosen"]]
    ax.scatter([cands[0].latency_ms], [100 * cands[0].ap], marker="s", s=60, color="C3", label="base")
    ax.scatter([chosen.latency_ms], [100 * chosen.ap], marker="*", s=140, color="C2", label="student")
    ax.axvline(result["target_ms"], color="k", lw=0.8, ls="--", label="target")
    ax.set_xlabel(f"estimated latency on {result['target']} (ms)")
    ax.set_ylabel("COCO AP (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, work / "pareto.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    idx = [c.index for c in cands]
    ax.plot(idx, [c.latency_ms for c in cands], "o-", label="estimated latency (ms)")
    bounds = [c.bound_ms if c.bound_ms is not None else c.latency_ms for c in cands]
    ax.plot(idx, bounds, "--", color="k", lw=0.8, label="latency bound (ms)")
    ax2 = ax.twinx()
    ax2.plot(idx, [100 * c.ap for c in cands], "s-", color="C1", label="AP (%)")
    ax.set_xlabel("candidate")
    ax.set_ylabel("ms")
    ax2.set_ylabel("AP (%)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    _save_figure(fig, work / "trajectory.png")
    plt.close(fig)
    return "pareto.png", "trajectory.png"


def _timeline(cands: list[Candidate], work: Path) -> list[str]:
    """Which worker trained each candidate and when: a plot (``timeline.png``) and a table per worker;
    nothing for archives without the times (made before they were recorded)."""
    timed = [c for c in cands[1:] if c.worker and c.started is not None and c.ended is not None]
    if not timed:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workers = sorted({c.worker for c in timed})
    t0 = min(c.started for c in timed)  # type: ignore[type-var]
    fig, ax = plt.subplots(figsize=(6.5, 0.6 + 0.45 * len(workers)))
    for c in timed:
        row = workers.index(c.worker)
        ax.barh(row, c.ended - c.started, left=c.started - t0, color="C3" if c.error else "C0", edgecolor="k", lw=0.5)
        ax.text(
            c.started - t0 + (c.ended - c.started) / 2,
            row,
            str(c.index),
            ha="center",
            va="center",
            fontsize=7,
            color="w",
        )
    ax.set_yticks(range(len(workers)), workers, fontsize=7)
    ax.set_xlabel("seconds since the first candidate started (red: failed)")
    fig.tight_layout()
    _save_figure(fig, work / "timeline.png")
    plt.close(fig)
    lines = [
        "",
        "## Timeline: who trained what",
        "",
        "![timeline](timeline.png)",
        "",
        "| worker | candidates | busy (s) | failed |",
        "|---|---|---|---|",
    ]
    for worker in workers:
        mine = [c for c in timed if c.worker == worker]
        lines.append(
            f"| {worker} | {', '.join(str(c.index) for c in mine)} | {sum(c.wall_s for c in mine):.1f} | "
            f"{sum(1 for c in mine if c.error)} |"
        )
    return lines


def _save_figure(fig: Any, path: Path) -> None:
    """A plot written atomically (a killed report never leaves half a PNG)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())


def _markdown(result: dict[str, Any], plots: tuple[str, str], timeline: Sequence[str] = ()) -> str:
    m = result["metrics"]
    label = (
        "**MODELLED** (roofline from published peaks and assumed efficiencies, not measured)"
        if result["modelled"]
        else "measured"
    )
    cands = [Candidate.from_json(c) for c in result["history"]]
    chosen = cands[result["chosen"]]

    def row(name: str, key: str, fmt: str) -> str:
        values = [m[w].get(key) for w in ("base", "student")]
        return f"| {name} | " + " | ".join("n/a" if v is None else fmt.format(v) for v in values) + " |"

    lines = [
        f"# Compression report: {result['method']} search on `{result['target']}`",
        "",
        f"Latency table: {label}; device: {result['device']}. Input "
        f"{result['input_size'][0]}x{result['input_size'][1]}, "
        f"target {result['target_ms']:.2f} ms (estimated). Wall time {result['wall_s'] / 60:.1f} min"
        + _sittings(result.get("sittings"))
        + (f" Table that answered: {result['table']}." if isinstance(result.get("table"), str) else "")
        + _confirmation(result.get("latency_confirmation")),
        "",
        "| | base | student |",
        "|---|---|---|",
        row("AP", "ap", "{:.3f}"),
        row("AP50", "ap50", "{:.3f}"),
        row("AP75", "ap75", "{:.3f}"),
        row("estimated latency (ms)", "estimated_ms", "{:.2f}"),
        row("measured latency (ms, full detection load)", "measured_ms", "{:.2f}"),
        row("parameters", "params", "{:,}"),
        row("MACs", "macs", "{:,}"),
        "| FLOPs (2 x MACs) | " + " | ".join(f"{2 * m[w]['macs']:,}" for w in ("base", "student")) + " |",
        f"| backbone | {code_cell(m['base']['arch'])} | {code_cell(m['student']['arch'])} |",
        f"| heads | {code_cell(m['base'].get('heads', '-'))} | {code_cell(m['student'].get('heads', '-'))} |",
        "",
        *_protocol_lines(result),
        f"Chosen: candidate {chosen.index}, teacher `{chosen.teacher}`, lineage "
        + " <- ".join(str(i) for i in _lineage(cands, chosen.index))
        + "."
        + _final_line(m["student"]),
        "",
        "## Latency by stage (estimated, ms)",
        "",
        "| stage | base | student |",
        "|---|---|---|",
    ]
    for stage, value in result["breakdown"]["base"].items():
        lines.append(f"| {stage} | {value:.2f} | {result['breakdown']['student'][stage]:.2f} |")
    lines += [
        "",
        "## Pareto front and trajectory",
        "",
        f"![Pareto front]({plots[0]})",
        "",
        f"![trajectory]({plots[1]})",
        "",
        "| # | parent | est. ms | bound | AP | teacher | actions |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in cands:
        bound = "" if c.bound_ms is None else f"{c.bound_ms:.2f}"
        ap = f"failed: {c.error.splitlines()[0][:120]}".replace("|", "\\|") if c.error else f"{100 * c.ap:.1f}"
        lines.append(
            f"| {c.index} | {'' if c.parent is None else c.parent} | {c.latency_ms:.2f} | {bound} | {ap} | "
            f"{c.teacher or ''} | {'; '.join(c.actions)}{' (free: untrained)' if c.free else ''} |"
        )
    return "\n".join([*lines, *timeline]) + "\n"


def _sittings(sittings: object) -> str:
    """`` over N sittings (resumed after a stop).`` where the run was resumed; ``.`` otherwise (and for a
    result.json written before the field)."""
    if isinstance(sittings, int) and not isinstance(sittings, bool) and sittings > 1:
        return f" over {sittings} sittings (resumed after a stop)."
    return "."


def _confirmation(record: Any) -> str:
    """One sentence on the candidates the search confirmed by measuring (empty where it did not)."""
    if not isinstance(record, dict) or not record.get("confirmed"):
        return ""
    return (
        f" Candidates confirmed by measurement: {record['confirmed']} ({record.get('entries_measured', 0)} table "
        f"entries measured in {record.get('seconds', 0.0):.0f} s this run)."
    )


def _protocol_lines(result: dict[str, Any]) -> list[str]:
    """Test and select AP of base, student and controls, and the claim (results made before the
    protocol have none: nothing)."""
    m = result["metrics"]
    if "test_ap" not in m["student"]:
        return []
    splits = result.get("splits", {})
    lines = [
        "## Protocol: held-out test images, controls",
        "",
        f"Choices were made on {splits.get('select', '?')} select images; the AP above and below is on "
        f"{splits.get('test', '?')} test images no choice saw ({splits.get('train', '?')} training images). "
        + (
            "The control is the base trained as many more steps as the student received, same schedule, no teacher."
            if "control" in m
            else "No control was trained (control=False): the student stands against the base alone."
        ),
        "",
        "| | test AP | select AP | steps |",
        "|---|---|---|---|",
    ]
    for name in ("base", "student", "control", "arch_control"):
        if name in m:
            row = m[name]
            lines.append(
                f"| {name} | {100 * row['test_ap']:.1f} | {100 * row['select_ap']:.1f} | {row.get('steps', '')} |"
            )
    if m.get("control", {}).get("trained_as") == "final":
        lines += [
            "",
            "The student is the base with settings only inference reads changed (e.g. fewer proposals), trained "
            "with no teacher: its final training was the control's step for step, so the two hold the same "
            "weights (trained once) and differ only in those settings.",
        ]
    return [*lines, "", f"**{result['claim']}**" if result.get("claim") else "", ""]


def _final_line(student: dict[str, Any]) -> str:
    if not student.get("final_steps"):
        return ""
    teacher = f"teacher `{student['final_teacher']}`" if student.get("final_teacher") else "no teacher"
    race = ""
    if student.get("race"):
        runners = ", ".join(f"{c['candidate']} ({_race_ap(c['race_select_ap'])})" for c in student["race"])
        race = (
            f" It won a final race of the search's best within the target (select AP after "
            f"{student['race'][0]['race_steps']} of the final steps: {runners}) and went on from there."
        )
    return (
        f" Then trained {student['final_steps']} more steps with {teacher}: AP {100 * student['search_ap']:.1f} after "
        f"the search, {100 * student['ap']:.1f} at the end (the plots and the table below show the search's APs)."
        + race
    )


def _race_ap(ap: float | None) -> str:
    return "failed" if ap is None else f"{100 * ap:.1f}"


def _lineage(cands: list[Candidate], index: int) -> list[int]:
    out = [index]
    while cands[out[-1]].parent is not None:
        out.append(cands[out[-1]].parent)  # type: ignore[arg-type]
    return out


def _html(markdown: str) -> str:
    body = []
    in_table = False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [
                html.escape(c.strip().replace("\\|", "|")).replace("`", "")
                for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))
            ]
            if set(line) <= set("|-"):
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("!["):
            src = line[line.index("(") + 1 : -1]
            body.append(f'<p><img src="{html.escape(src)}" alt="{html.escape(src)}"></p>')
        elif line:
            body.append(f"<p>{html.escape(line).replace('**', '')}</p>")
    if in_table:
        body.append("</table>")
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "td{border:1px solid #ccc;padding:2px 6px}table{border-collapse:collapse}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>jdnas "
        f"report</title><style>{style}</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )


def write_report(workdir: str | os.PathLike[str]) -> Path:
    """Write ``report.md``, ``report.html`` and the plots into ``workdir``; returns the HTML's path."""
    work = as_path(workdir, "workdir")
    source = work / "result.json"
    if not work.is_dir():
        what = "is a file, not a compress workdir" if work.exists() else "does not exist"
        raise SearchError(f"{work} {what}: give the --workdir of a compress run (its folder holds result.json)")
    if not source.is_file() and (work / "search").is_dir():
        raise SearchError(
            f"{work} holds a compress run that has not finished (its search, no result yet): rerun the same "
            "compress command to finish it, then report"
        )
    if not source.is_file():
        raise SearchError(
            f"{work} holds no result.json: run `jdnas compress` (or jdnas_sdk.compress) with this workdir first"
        )
    try:
        result = json.loads(source.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise SearchError(f"{source} is corrupt ({exc}); rerun compress with the same workdir to rewrite it") from exc
    check_result(result, origin=str(source))
    try:
        plots = _plots(result, work)
        markdown = _markdown(result, plots, _timeline([Candidate.from_json(c) for c in result["history"]], work))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise SearchError(
            f"{source} is damaged (field {exc}); rerun compress with the same workdir to rewrite it"
        ) from exc
    atomic_write_text(work / "report.md", markdown)
    return atomic_write_text(work / "report.html", _html(markdown))
