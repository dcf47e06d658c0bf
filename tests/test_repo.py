"""The README's promise: it opens with exactly two commands, and CI runs the second one."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _opening_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    head = text.split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", head, flags=re.S)


def test_readme_opens_with_the_two_commands() -> None:
    commands = _opening_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    demo, tests = commands
    assert demo.startswith("python3 -m venv .venv") and demo.endswith("jdnas demo")
    assert tests.startswith("python3 -m venv .venv") and "pytest" in tests


def test_ci_runs_the_readme_test_command() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    pattern = re.search(r"grep -m1 -A0 '(.*?)' README.md", script)
    assert pattern is not None
    found = subprocess.run(["grep", "-m1", pattern.group(1), str(ROOT / "README.md")], capture_output=True, text=True)
    assert found.stdout.strip() == _opening_commands()[1]
