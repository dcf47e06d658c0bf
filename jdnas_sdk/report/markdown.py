"""Markdown pieces the reports share."""

from __future__ import annotations

__all__ = ["code_cell"]


def code_cell(text: str) -> str:
    """``text`` (an arch code) as Markdown code inside a table cell: its ``|`` escaped."""
    return "`" + text.replace("|", "\\|") + "`"
