"""A description of the machine a measurement ran on, so every number carries its context."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["cpu_model", "machine_info", "command_line"]


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux), or the platform's best guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * size / 2**30, 1)


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, OS, Python, torch (and CUDA device, if any) as plain JSON values."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover - a dependency
        pass
    return info


def command_line(script: str, argv: Sequence[str] | None = None) -> str:
    """The command that reproduces a result: ``python SCRIPT ARGS``, with the arguments ``main(argv)``
    was given, or, where it read them from the command line (``argv`` ``None``), the process's own."""
    return shlex.join(["python", script, *(sys.argv[1:] if argv is None else argv)])
