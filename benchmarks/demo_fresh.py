"""The README's first command as a new user meets it: a fresh clone of this repository, a new
virtual environment, an empty jdnas cache (no latency table of this machine yet), and nothing else.

It clones the commit (default: ``HEAD``) into ``ROOT/clone``, runs the first command of README.md
there (``bash -c``, as written; ``JDNAS_CACHE=ROOT/cache``), and records its exit code, its wall
time with the install, the demo's own ``done in N s``, and the demo's result (base, student and the
extra-steps control on the test images, measured latencies, each split's image files, which show
the splits are disjoint) read from the clone's ``runs/demo/compress/result.json``. The whole output is
kept in ``ROOT/demo.log``.

    python benchmarks/demo_fresh.py --root /tmp/demo_fresh     # about 12-15 minutes on 2 cores
    python benchmarks/demo_fresh.py --root R --results benchmarks/results/epyc45

Writes ``RESULTS/demo_fresh.{json,md}`` with the machine it ran on. Run it alone: it times. A
killed run is not resumed: pass a new ``--root`` (the demo itself resumes; this records a fresh one).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from jdnas_sdk._io import atomic_write_json, atomic_write_text, read_json
from jdnas_sdk.machine import command_line, machine_info

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_seeds import DEFAULTS, demo_row  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def readme_command(readme: Path) -> str:
    """The first line of README's first fenced block: the command a new user runs first."""
    match = re.search(r"^```[a-z]*\n(.+)$", readme.read_text(), flags=re.M)
    if match is None:
        raise SystemExit(f"{readme} has no fenced code block; its first command cannot be found")
    return match.group(1).strip()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", type=Path, required=True, help="a new folder: the clone, the cache and the log go here")
    p.add_argument("--commit", default="HEAD", help="the commit of this repository to clone")
    p.add_argument("--results", type=Path, default=HERE / "results", help="where results go")
    args = p.parse_args(argv)
    args.root = args.root.resolve()
    if args.root.exists() and any(args.root.iterdir()):
        p.error(f"--root {args.root} is not empty: this records a fresh run; pass a new folder")
    return args


def clone(commit: str, where: Path) -> str:
    """Clone this repository's ``commit`` into ``where``; its full hash."""
    full = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", commit], check=True, capture_output=True, text=True
    ).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(REPO), str(where)], check=True)
    subprocess.run(["git", "-C", str(where), "checkout", "--quiet", full], check=True)
    return full


def run(command: str, clone_dir: Path, cache: Path, log: Path) -> tuple[int, float]:
    """Run ``command`` in ``clone_dir`` with its own empty cache; (exit code, wall seconds)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env = {k: v for k, v in env.items() if not k.startswith("JDNAS_")}  # no table folder, cache or device of ours
    env["JDNAS_CACHE"] = str(cache)
    began = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(["bash", "-c", command], cwd=clone_dir, env=env, stdout=out, stderr=subprocess.STDOUT)
    return code.returncode, time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    began = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    commit = clone(args.commit, args.root / "clone")
    command = readme_command(args.root / "clone" / "README.md")
    print(f"running in {args.root / 'clone'}: {command}", flush=True)
    code, wall = run(command, args.root / "clone", args.root / "cache", args.root / "demo.log")
    text = args.root.joinpath("demo.log").read_text(errors="replace")
    done = re.findall(r"^done in (\d+) s$", text, flags=re.M)
    result_file = args.root / "clone" / "runs" / "demo" / "compress" / "result.json"
    result = read_json(result_file) if code == 0 and result_file.exists() else None
    demo_s = float(done[-1]) if done else wall
    report = {
        "benchmark": "demo_fresh",
        "when": began,
        "machine": machine_info(),
        "command": command_line("benchmarks/demo_fresh.py", argv),
        "commit": commit,
        "readme_command": command,
        "exit_code": code,
        "wall_s_with_install": wall,
        "demo_done_s": int(done[-1]) if done else None,  # the row's wall_s: the demo's own, as demo_seeds' rows
        "log_tail": text[-3000:] if code != 0 or result is None else None,
        "results": [] if result is None else [demo_row(DEFAULTS["seed"], result["metrics"], demo_s)],
        "splits": None if result is None else result["splits"],
        "split_images": None if result is None else result["split_images"],
        "claim": None if result is None else result["claim"],
    }
    atomic_write_json(args.results / "demo_fresh.json", report)
    atomic_write_text(args.results / "demo_fresh.md", markdown(report))
    print(markdown(report))
    return 0 if code == 0 and result is not None else 1


def _ms(part: dict[str, Any]) -> str:
    return f"{part['measured_ms']:.2f}" if "measured_ms" in part else "-"


def markdown(report: dict[str, Any]) -> str:
    m, nan = report["machine"], math.nan
    ratio = report["results"][0]["measured_ratio"] if report["results"] else None
    lines = [
        f"# The README's first command in a fresh clone ({report['when']})",
        "",
        f"Machine: {m.get('cpu')}, {m.get('cores')} cores. Commit `{report['commit'][:10]}`; "
        f"`{report['readme_command']}` in a fresh clone, empty jdnas cache. Exit code **{report['exit_code']}**, "
        f"**{report['wall_s_with_install']:.0f} s** with the install, the demo's own `done in "
        f"{report['demo_done_s']} s`.",
        "",
    ]
    if report["results"]:
        r = report["results"][0]
        b, s, c = r["base"], r["student"], r["control"]
        files = {k: set(v or ()) for k, v in (report["split_images"] or {}).items()}
        shared = len(files.get("select", set()) & files.get("test", set())) + len(
            files.get("train", set()) & (files.get("select", set()) | files.get("test", set()))
        )
        lines += [
            "| | test AP | select AP | measured ms |",
            "|---|---|---|---|",
            *(
                f"| {name} | {100 * part.get('test_ap', nan):.1f} | {100 * part.get('select_ap', nan):.1f} "
                f"| {_ms(part)} |"
                for name, part in (("base", b), ("student", s), ("control (extra steps)", c))
            ),
            "",
            f"Student at **{ratio or nan:.2f}x** the base's measured latency; {r['steps']} training steps "
            f"(the control as many). Splits {report['splits']}; image files in two splits: {shared}. "
            f"Claim: {report['claim']}",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
